"""Local-file loaders on tiny generated files: IDX (MNIST), CIFAR-10 python batches, image folders."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xai_train.data import (
    DataError,
    build_dataset,
    load_cifar10,
    load_image_folder,
    load_mnist,
    read_cifar_batch,
    read_idx,
)


# --- IDX / MNIST ------------------------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray, type_byte: int = 0x08, compress: bool = False) -> Path:
    header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def mnist_arrays(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Image i is flat with value 40 * i; its label is 9 - i."""
    pixels = (np.arange(n, dtype=np.uint8) * 40)[:, None, None] * np.ones((1, 28, 28), np.uint8)
    return pixels, (9 - np.arange(n)).astype(np.uint8)


def write_mnist(root: Path, prefix: str = "train", compress: bool = False, labels: bool = True) -> None:
    pixels, targets = mnist_arrays()
    suffix = ".gz" if compress else ""
    write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", pixels, compress=compress)
    if labels:
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", targets, compress=compress)


def test_read_idx_parses_the_header_and_big_endian_values(tmp_path):
    values = np.array([[-2, 300], [7, -32768]], dtype=np.int16)
    path = write_idx(tmp_path / "x-idx2-short", values, type_byte=0x0B)
    array = read_idx(path)
    assert array.shape == (2, 2) and array.tolist() == values.tolist()
    floats = np.linspace(0, 1, 5, dtype=np.float32)
    assert read_idx(write_idx(tmp_path / "f.gz", floats, type_byte=0x0D, compress=True)).tolist() == floats.tolist()


def test_mnist_values_labels_and_resizing(tmp_path):
    write_mnist(tmp_path)
    native = load_mnist(tmp_path, image_size=28)
    pixels, targets = mnist_arrays()
    expected = torch.as_tensor(pixels, dtype=torch.float32) / 127.5 - 1
    assert native.images.shape == (6, 1, 28, 28) and native.name == "mnist"
    torch.testing.assert_close(native.images[:, 0], expected, rtol=0, atol=1e-6)
    assert native.labels.tolist() == targets.tolist() and native.class_names[9] == "9"
    rgb = load_mnist(tmp_path, image_size=32, channels=3)  # flat images stay flat when resized
    assert rgb.images.shape == (6, 3, 32, 32)
    torch.testing.assert_close(rgb.images, expected[:, :1, :1].view(6, 1, 1, 1).expand(6, 3, 32, 32))


def test_mnist_gzip_torchvision_layout_missing_labels_and_test_split(tmp_path):
    write_mnist(tmp_path / "plain")
    write_mnist(tmp_path / "zipped", compress=True)
    plain, zipped = load_mnist(tmp_path / "plain"), load_mnist(tmp_path / "zipped")
    assert torch.equal(plain.images, zipped.images) and torch.equal(plain.labels, zipped.labels)
    write_mnist(tmp_path / "tv" / "FashionMNIST" / "raw", prefix="t10k", labels=False)
    fashion = load_mnist(tmp_path / "tv", split="test", dataset="fashion_mnist")
    assert fashion.labels is None and fashion.class_names is None and fashion.name == "fashion_mnist"
    assert torch.equal(fashion.images, plain.images)
    via_build = build_dataset("fashion_mnist", root=tmp_path / "plain")
    assert via_build.class_names[0] == "T-shirt/top" and torch.equal(via_build.images, plain.images)
    subset = build_dataset("mnist", root=tmp_path / "plain", num_samples=3, seed=1)
    assert len(subset) == 3 and torch.equal(subset.images, plain.images[subset.labels.neg() + 9])


def test_mnist_missing_and_malformed_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match="MNIST root folder not found"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(DataError) as err:
        load_mnist(tmp_path)
    assert f"MNIST images file not found: {tmp_path}/train-images-idx3-ubyte(.gz)" in str(err.value)
    assert "expected the IDX files from" in str(err.value)
    pixels, targets = mnist_arrays()
    write_idx(tmp_path / "train-images-idx3-ubyte", targets)  # a labels file under the images name
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: IDX magic number is 2049, expected 2051"):
        load_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DataError, match="train-images-idx3-ubyte is not an IDX file"):
        load_mnist(tmp_path)
    good = write_idx(tmp_path / "train-images-idx3-ubyte", pixels)
    good.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: the IDX header says shape \(6, 28, 28\)"):
        load_mnist(tmp_path)
    write_idx(good, pixels)
    write_idx(tmp_path / "train-labels-idx1-ubyte", targets[:4])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte holds 4 labels but .* holds 6 images"):
        load_mnist(tmp_path)
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot read IDX file .*train-images-idx3-ubyte.gz"):
        load_mnist(tmp_path / "gz")


# --- CIFAR-10 ---------------------------------------------------------------------------------------------
def cifar_batch(offset: int, n: int = 2) -> dict:
    rng = np.random.default_rng(offset)
    return {
        b"batch_label": b"fake",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"labels": [(offset + i) % 10 for i in range(n)],
    }


def write_cifar(folder: Path, protocol: int = 2) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    batches = [cifar_batch(i) for i in range(6)]
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, batch in zip(names, batches, strict=True):
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    return batches


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_pixels_labels_and_layouts(tmp_path, protocol):
    batches = write_cifar(tmp_path / "cifar-10-batches-py", protocol)
    ds = load_cifar10(tmp_path)  # the folder the archive unpacks to is found below root
    assert ds.images.shape == (10, 3, 32, 32) and ds.name == "cifar10" and ds.class_names[0] == "airplane"
    assert ds.labels.tolist() == [label for batch in batches[:5] for label in batch[b"labels"]]
    row = batches[1][b"data"][1]  # second image of data_batch_2: sample 3
    for c, y, x in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        assert ds.images[3, c, y, x].item() == pytest.approx(row[c * 1024 + y * 32 + x] / 127.5 - 1, abs=1e-6)
    test = load_cifar10(tmp_path / "cifar-10-batches-py", split="test")
    assert test.labels.tolist() == batches[5][b"labels"]
    grey = load_cifar10(tmp_path, channels=1)
    luma = torch.einsum("nchw,c->nhw", ds.images, torch.tensor([0.299, 0.587, 0.114]))
    torch.testing.assert_close(grey.images[:, 0], luma)
    small = load_cifar10(tmp_path, image_size=16, num_samples=4)
    assert small.images.shape == (4, 3, 16, 16) and small.images.abs().max() <= 1


def test_cifar_numpy_1_module_paths_and_str_keys_load(tmp_path):
    blob = pickle.dumps(cifar_batch(0), protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    (tmp_path / "old").write_bytes(blob)
    pixels, labels = read_cifar_batch(tmp_path / "old")
    assert pixels.shape == (2, 3, 32, 32) and labels.tolist() == [0, 1]
    batch = cifar_batch(0)
    (tmp_path / "str_keys").write_bytes(pickle.dumps({"data": batch[b"data"], "labels": batch[b"labels"]}))
    assert np.array_equal(read_cifar_batch(tmp_path / "str_keys")[0], pixels)


class Trap:
    """Unpickling this with plain pickle would create a file: the restricted unpickler must refuse."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_cifar_refuses_code_in_pickles_and_reports_bad_files(tmp_path):
    target = tmp_path / "pwned"
    batch = cifar_batch(0)
    batch[b"labels"] = Trap(target)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match=r"cannot read CIFAR-10 batch .*data_batch_1: refusing to load pathlib"):
        load_cifar10(tmp_path)
    assert not target.exists()
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(cifar_batch(0)))
    with pytest.raises(DataError, match="CIFAR-10 batch not found: .*data_batch_2"):
        load_cifar10(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"CIFAR-10 batch not found: .*empty/data_batch_1 \(nor .*batches-py"):
        load_cifar10(tmp_path / "empty")
    (tmp_path / "list").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DataError, match="list holds a list, not a dict"):
        read_cifar_batch(tmp_path / "list")
    (tmp_path / "shape").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"shape: 'data' is uint8 \(2, 100\)"):
        read_cifar_batch(tmp_path / "shape")
    (tmp_path / "labels").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}))
    with pytest.raises(DataError, match="'labels' must be 2 integers in 0..9"):
        read_cifar_batch(tmp_path / "labels")
    (tmp_path / "junk").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(DataError, match="cannot read CIFAR-10 batch .*junk"):
        read_cifar_batch(tmp_path / "junk")


# --- image folders ----------------------------------------------------------------------------------------
def save(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def test_folder_labels_colours_and_centre_crop(tmp_path):
    save(tmp_path / "red" / "a.png", Image.new("RGB", (30, 20), (255, 0, 0)))
    save(tmp_path / "red" / "deeper" / "b.PNG", Image.new("RGBA", (20, 20), (255, 0, 0, 128)))
    half = Image.new("L", (40, 20), 0)
    half.paste(255, (20, 0, 40, 20))  # left half black, right half white
    save(tmp_path / "split" / "c.jpg", half.convert("RGB"))
    ds = load_image_folder(tmp_path, image_size=16)
    assert ds.images.shape == (3, 3, 16, 16) and ds.class_names == ("red", "split")
    assert ds.labels.tolist() == [0, 0, 1]  # sorted paths: red/a.png, red/deeper/b.PNG, split/c.jpg
    red = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1)
    assert torch.equal(ds.images[0], red.expand(3, 16, 16)) and torch.equal(ds.images[1], red.expand(3, 16, 16))
    # 40x20 -> 32x16, centre crop keeps columns 8..23: the black/white edge stays in the middle.
    split = ds.images[2].mean(0)
    assert split[:, :6].max() < -0.9 and split[:, 10:].min() > 0.9
    grey = load_image_folder(tmp_path, image_size=8, channels=1)
    assert grey.images.shape == (3, 1, 8, 8)
    assert grey.images[0].unique().tolist() == [pytest.approx(76 / 127.5 - 1)]  # BT.601 luma of pure red


def test_folder_without_class_subfolders_and_subsets(tmp_path):
    for i in range(6):
        save(tmp_path / "flat" / f"{i}.png", Image.new("L", (8, 8), 40 * i))
    flat = load_image_folder(tmp_path / "flat", image_size=8, channels=1)
    assert flat.labels is None and flat.class_names is None
    assert flat.images[:, 0, 0, 0].tolist() == pytest.approx([40 * i / 127.5 - 1 for i in range(6)])
    with pytest.raises(DataError, match=r"class_folders=True but .*0.png is not inside a class subfolder"):
        load_image_folder(tmp_path / "flat", class_folders=True)
    for name in ("a", "b", "c"):
        save(tmp_path / "classes" / name / "x.png", Image.new("RGB", (8, 8)))
    one = build_dataset("folder", root=tmp_path / "classes", image_size=8, num_samples=1, seed=0)
    assert len(one) == 1 and one.class_names == ("a", "b", "c")  # classes come from the whole folder
    unlabelled = load_image_folder(tmp_path / "classes", image_size=8, class_folders=False)
    assert unlabelled.labels is None and len(unlabelled) == 3


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="image folder not found: .*missing"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"no images \(.png, .jpg, .jpeg, .bmp\) found under .*empty"):
        load_image_folder(tmp_path / "empty")
    save(tmp_path / "bad" / "good.png", Image.new("RGB", (8, 8)))
    (tmp_path / "bad" / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match="cannot read image .*broken.png: .*expected a PNG, JPEG or BMP file"):
        load_image_folder(tmp_path / "bad")
