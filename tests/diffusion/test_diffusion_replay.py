import pytest
import torch

from xai_train.diffusion.replay import ReplayBuffer


def test_refresh_schedule_ring_order_and_age():
    buffer = ReplayBuffer(capacity=4, refresh_every=5)
    assert buffer.needs_refresh(0) and len(buffer) == 0
    buffer.add(torch.arange(3.0).view(3, 1, 1, 1), step=0)
    assert not buffer.needs_refresh(4) and buffer.needs_refresh(5)
    buffer.add(torch.arange(10.0, 13.0).view(3, 1, 1, 1), step=5)
    assert len(buffer) == 4
    assert buffer.images.flatten().tolist() == [11.0, 12.0, 2.0, 10.0]
    assert buffer.birth_step.tolist() == [5, 5, 0, 5]
    assert buffer.mean_age(7) == pytest.approx((2 + 2 + 7 + 2) / 4)


def test_sample_draws_stored_images_reproducibly():
    buffer = ReplayBuffer(capacity=8, refresh_every=1)
    buffer.add(torch.arange(5.0).view(5, 1, 1, 1), step=0)
    a = buffer.sample(16, torch.Generator().manual_seed(1))
    b = buffer.sample(16, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and set(a.flatten().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}


def test_state_dict_round_trip():
    buffer = ReplayBuffer(capacity=4, refresh_every=3)
    buffer.add(torch.randn(6, 1, 2, 2), step=3)
    restored = ReplayBuffer(capacity=4, refresh_every=3)
    restored.load_state_dict(buffer.state_dict())
    assert torch.equal(restored.images, buffer.images) and len(restored) == 4
    assert restored.next_index == buffer.next_index and restored.last_refresh == 3
    assert not restored.needs_refresh(5) and restored.needs_refresh(6)
    on_meta = ReplayBuffer(capacity=4, refresh_every=3)
    on_meta.load_state_dict(buffer.state_dict(), device="meta")
    assert on_meta.images.device.type == "meta" and on_meta.images.shape == buffer.images.shape
    empty = ReplayBuffer(capacity=2, refresh_every=1)
    empty.load_state_dict(ReplayBuffer(capacity=2, refresh_every=1).state_dict())
    assert empty.needs_refresh(0)


def test_errors_name_the_problem():
    with pytest.raises(RuntimeError, match="empty"):
        ReplayBuffer(2, 1).sample(1)
    buffer = ReplayBuffer(2, 1)
    buffer.add(torch.zeros(1, 1, 2, 2), step=0)
    with pytest.raises(ValueError, match="shape"):
        buffer.add(torch.zeros(1, 3, 2, 2), step=1)
