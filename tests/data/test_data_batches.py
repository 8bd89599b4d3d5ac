"""TensorBatches: values, epochs, rank slicing == one big batch, exact resume, errors."""

import json
import os
import sys

import pytest
import torch

from xai_train.data import DataError, TensorBatches

N = 50


def identified_images(n: int = N) -> torch.Tensor:
    """(n, 1, 2, 2) float images in [-1, 1]; image i is filled with (i / (n - 1)) * 2 - 1."""
    return torch.linspace(-1, 1, n).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()


def ids(batch: torch.Tensor, n: int = N) -> list[int]:
    """Recovers the sample indices of a batch of ``identified_images``."""
    return ((batch[:, 0, 0, 0] + 1) / 2 * (n - 1)).round().long().tolist()


def test_batches_are_rows_of_the_data_and_each_epoch_is_a_fresh_permutation():
    images = identified_images()
    batches = TensorBatches(images, batch_size=8, seed=0)
    assert batches.steps_per_epoch == 6  # 50 // 8: the last 2 of each permutation are skipped
    epochs = []
    for _ in range(3):
        seen = []
        for _ in range(6):
            batch = batches.next()
            assert batch.shape == (8, 1, 2, 2) and batch.dtype == torch.float32
            assert torch.equal(batch, images[ids(batch)])
            seen += ids(batch)
        epochs.append(seen)
        assert len(set(seen)) == 48 and batches.position == 0  # no sample twice within an epoch
    assert batches.epoch == 3
    assert epochs[0] != epochs[1] != epochs[2]
    assert epochs[0] == batches.epoch_permutation(0)[:48].tolist()
    again = TensorBatches(images, batch_size=8, seed=0)
    other = TensorBatches(images, batch_size=8, seed=1)
    assert ids(again.next()) == epochs[0][:8] and ids(other.next()) != epochs[0][:8]


def test_uint8_images_are_mapped_to_minus_one_one():
    pixels = torch.arange(0, 256, 51, dtype=torch.uint8).view(6, 1, 1, 1)  # 0, 51, ..., 255
    batches = TensorBatches(pixels, batch_size=6, seed=0, labels=torch.arange(6))
    batch, labels = batches.next_with_labels()
    assert batches.images.dtype == torch.uint8  # stored compactly, converted per batch
    torch.testing.assert_close(batch.flatten(), pixels[labels].flatten().float() / 127.5 - 1)
    assert batch.min().item() == -1.0 and batch.max().item() == 1.0


def test_labels_follow_their_images():
    images, labels = identified_images(), torch.arange(N) * 10
    batches = TensorBatches(images, batch_size=5, seed=2, labels=labels)
    for _ in range(12):
        batch, batch_labels = batches.next_with_labels()
        assert (batch_labels // 10).tolist() == ids(batch)
    with pytest.raises(DataError, match="needs TensorBatches"):
        TensorBatches(images, batch_size=5, seed=2).next_with_labels()


def test_ranks_together_give_the_single_process_batch_in_rank_order():
    images, batch, world = identified_images(), 4, 3
    single = TensorBatches(images, batch_size=batch * world, seed=7)
    ranks = []
    for rank in range(world):
        torch.manual_seed(100 + rank)  # ranks never agree on the global RNG; the order must not depend on it
        ranks.append(TensorBatches(images, batch_size=batch, seed=7, rank=rank, world_size=world))
    assert single.steps_per_epoch == ranks[0].steps_per_epoch == 4  # 50 // 12
    for step in range(10):  # crosses two epoch boundaries
        epoch, position = single.epoch, single.position
        permutation = single.epoch_permutation(epoch)
        parts = []
        for rank, stream in enumerate(ranks):
            torch.rand(rank + 1)  # disturb the global RNG differently per rank
            part = stream.next()
            start = position * batch * world + rank * batch
            assert ids(part) == permutation[start : start + batch].tolist()
            parts.append(part)
        assert torch.equal(torch.cat(parts), single.next()), f"step {step}"
        assert all(stream.epoch == single.epoch for stream in ranks)


def test_another_process_computes_the_same_rank_batches(process_groups):
    """A fresh interpreter (other hash seed, other global RNG) gives rank 1 the same batches."""
    code = (
        "import json, torch\n"
        "from xai_train.data import TensorBatches\n"
        "torch.manual_seed(12345)\n"
        f"images = torch.linspace(-1, 1, {N}).view({N}, 1, 1, 1)\n"
        "b = TensorBatches(images, batch_size=4, seed=3, rank=1, world_size=2)\n"
        "print(json.dumps([b.next().flatten().tolist() for _ in range(9)]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "987", "OMP_NUM_THREADS": "1"}
    # the timeout is a hang guard only: a loaded 2-core CI machine runs this many times slower
    result = process_groups.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr
    here = TensorBatches(torch.linspace(-1, 1, N).view(N, 1, 1, 1), batch_size=4, seed=3, rank=1, world_size=2)
    assert json.loads(result.stdout) == [here.next().flatten().tolist() for _ in range(9)]


def test_resume_continues_with_exactly_the_same_batches():
    images = identified_images()
    unbroken = TensorBatches(images, batch_size=8, seed=5)
    expected = [ids(unbroken.next()) for _ in range(20)]
    first = TensorBatches(images, batch_size=8, seed=5)
    got = [ids(first.next()) for _ in range(9)]  # stop mid-way through epoch 1
    state = json.loads(json.dumps(first.state_dict()))  # plain ints survive any serialisation
    assert state == {"epoch": 1, "position": 3, "num_samples": N, "global_batch_size": 8}
    resumed = TensorBatches(images, batch_size=8, seed=5)
    resumed.next()  # whatever it did before loading must not matter
    resumed.load_state_dict(state)
    got += [ids(resumed.next()) for _ in range(11)]
    assert got == expected
    assert (resumed.epoch, resumed.position) == (unbroken.epoch, unbroken.position)


def test_resume_on_more_processes_with_the_same_global_batch():
    images = identified_images()
    single = TensorBatches(images, batch_size=8, seed=1)
    for _ in range(7):
        single.next()
    ranks = [TensorBatches(images, batch_size=4, seed=1, rank=r, world_size=2) for r in range(2)]
    for stream in ranks:
        stream.load_state_dict(single.state_dict())
    for _ in range(8):
        assert torch.equal(torch.cat([stream.next() for stream in ranks]), single.next())


def test_errors_are_clear():
    images = identified_images(10)
    with pytest.raises(DataError, match="10 samples, fewer than one global batch of 12 .*4 x 3 processes"):
        TensorBatches(images, batch_size=4, seed=0, world_size=3)
    with pytest.raises(DataError, match="rank=2, world_size=2"):
        TensorBatches(images, batch_size=2, seed=0, rank=2, world_size=2)
    with pytest.raises(DataError, match="float or uint8"):
        TensorBatches(torch.zeros(10, 4, dtype=torch.int64), batch_size=2, seed=0)
    with pytest.raises(DataError, match=r"labels must have shape \(10,\)"):
        TensorBatches(images, batch_size=2, seed=0, labels=torch.zeros(9))
    batches = TensorBatches(images, batch_size=2, seed=0)
    bigger = TensorBatches(images, batch_size=5, seed=0).state_dict()
    with pytest.raises(DataError, match="saved state has global_batch_size=5, this run has 2"):
        batches.load_state_dict(bigger)
    with pytest.raises(DataError, match="invalid batch state epoch=0, position=5"):
        batches.load_state_dict({"epoch": 0, "position": 5})
