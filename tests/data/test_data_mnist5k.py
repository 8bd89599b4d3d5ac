"""``mnist5k``: the embedded real MNIST digits, their fixed 4,000 / 1,000 split, and FD against the held-out part."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from callbacks import EvalMetrics
from xai_train.data import DataError, build_dataset, evaluation_split, load_mnist5k, mnist5k_split, read_mnist5k
from xai_train.data import mnist5k as mnist5k_module
from xai_train.metrics import domain_feature_extractor

# The held-out indices of the fixed split (SHA-256 of their int64 bytes): a change of seed, permutation
# algorithm or file would re-draw the reference set and make every mnist5k number incomparable.
HELDOUT_SHA256 = "c5fcdcb72fc19d8cd2bd5d30d4282178c32aeb2edf9aea6506418e78f120c504"


def heldout_digest() -> str:
    _, labels = read_mnist5k()
    return hashlib.sha256(mnist5k_split(labels)["heldout"].astype(np.int64).tobytes()).hexdigest()


def test_file_is_the_real_mnist_sample():
    pixels, labels = read_mnist5k()
    assert pixels.shape == (5000, 28, 28) and pixels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    # real handwriting: mostly background, strokes near 255, the centre of mass near the middle (MNIST is
    # centred by centre of mass in its 28x28 frame)
    assert 0.75 < (pixels == 0).mean() < 0.85 and pixels.max() == 255
    rows = (pixels.astype(np.float64).sum(axis=2) * np.arange(28)).sum(axis=1) / pixels.sum(axis=(1, 2))
    assert abs(float(np.median(rows)) - 13.5) < 1.5


def test_split_is_stratified_and_disjoint():
    _, labels = read_mnist5k()
    split = mnist5k_split(labels)
    train, heldout = split["train"], split["heldout"]
    assert len(train) == 4000 and len(heldout) == 1000
    assert np.bincount(labels[heldout]).tolist() == [100] * 10
    assert np.bincount(labels[train]).tolist() == [400] * 10
    assert len(np.intersect1d(train, heldout)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, heldout])), np.arange(5000))


def test_heldout_images_never_in_training():
    """By content, not only by index: no held-out image (as bytes) appears in the train split or its subsets."""
    train, heldout = load_mnist5k("train"), load_mnist5k("heldout")

    def digests(images: torch.Tensor) -> set[str]:
        return {hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in images}

    held = digests(heldout.images)
    assert len(held) == 1000
    assert not held & digests(train.images)
    for fraction in (0.2, 1.0):
        subset = build_dataset("mnist5k", fraction=fraction, seed=3)
        assert len(subset) == round(4000 * fraction)
        assert not held & digests(subset.images)


def test_split_is_pinned():
    assert heldout_digest() == HELDOUT_SHA256


def test_split_ignores_global_random_state():
    before = heldout_digest()
    torch.manual_seed(123)
    np.random.seed(7)
    assert heldout_digest() == before


def test_same_split_in_every_process():
    """Two fresh interpreters with different hash seeds and thread counts draw the same split."""
    code = textwrap.dedent(
        """
        import hashlib, numpy as np
        from xai_train.data import read_mnist5k, mnist5k_split
        _, labels = read_mnist5k()
        print(hashlib.sha256(mnist5k_split(labels)["heldout"].astype(np.int64).tobytes()).hexdigest())
        """
    )
    outputs = set()
    for hash_seed, threads in (("1", "1"), ("2", "2")):
        env = {"PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": threads, "PATH": ""}
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outputs.add(result.stdout.strip())
    assert outputs == {heldout_digest()}


def test_images_resized_like_the_paper():
    """28 -> 32 bilinear (the paper's Resize(32)), values in [-1, 1], background exactly -1."""
    dataset = load_mnist5k("train")
    assert dataset.images.shape == (4000, 1, 32, 32) and dataset.name == "mnist5k"
    assert dataset.images.min() == -1 and dataset.images.max() <= 1
    pixels, labels = read_mnist5k()
    first = int(mnist5k_split(labels)["train"][0])
    raw = torch.as_tensor(pixels[first], dtype=torch.float32) / 127.5 - 1
    resized = torch.nn.functional.interpolate(raw[None, None], size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(dataset.images[0, 0], resized[0, 0].clamp(-1, 1), atol=1e-6)
    assert dataset.labels[0] == int(labels[first])
    assert load_mnist5k("heldout", image_size=28, channels=3).images.shape == (1000, 3, 28, 28)


def test_bad_split_and_missing_extra(monkeypatch):
    with pytest.raises(DataError, match="has 'train' and 'heldout' splits"):
        build_dataset("mnist5k", split="test")
    with pytest.raises(DataError, match="only 'train'"):
        build_dataset("digits", split="heldout")
    monkeypatch.setattr(mnist5k_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install 'xai-train\[mnist5k\]'"):
        read_mnist5k()


def test_evaluation_compares_against_heldout():
    """EvalMetrics' real set for mnist5k is the held-out 1,000; the shipped extractor never saw them."""
    assert evaluation_split("mnist5k") == "heldout" and evaluation_split("digits") == "train"
    callback = EvalMetrics(dataset="mnist5k", num_samples=10)
    callback._setup(SimpleNamespace(accelerator=Accelerator(cpu=True)))
    assert torch.equal(callback.real_images, load_mnist5k("heldout").images)
    assert callback.reference == "mnist5k/heldout"
    extractor = domain_feature_extractor("mnist5k")
    assert extractor.name == "mnist5k-32-cnn-" + extractor.metadata["sha256"][:8]
    assert extractor.metadata["num_train"] + extractor.metadata["num_holdout"] == 4000  # the train split only
    assert callback.fingerprint()["eval_reference"] == "mnist5k/heldout (1000 images)"
