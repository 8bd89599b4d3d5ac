"""to_mask: range, reductions, degenerate maps, scale invariance; mask statistics."""

from __future__ import annotations

import math

import pytest
import torch

from xai_train.explain import gaussian_blur, mask_entropy, mask_statistics, scatter_mask, to_mask


@pytest.fixture
def attributions() -> torch.Tensor:
    return torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_per_sample_min_max_of_absolute_channel_max(attributions):
    result = to_mask(attributions)
    reduced = attributions.abs().amax(1, keepdim=True)
    low = reduced.amin((1, 2, 3), keepdim=True)
    high = reduced.amax((1, 2, 3), keepdim=True)
    assert torch.allclose(result.mask, (reduced - low) / (high - low))
    assert result.mask.dtype == torch.float32 and result.num_degenerate == 0


@pytest.mark.parametrize(("reduce", "channels"), [("max", 1), ("mean", 1), ("none", 3)])
@pytest.mark.parametrize("scope", ["sample", "batch"])
@pytest.mark.parametrize("absolute", [True, False])
def test_shapes_and_range(attributions, reduce, channels, scope, absolute):
    mask = to_mask(attributions, reduce=reduce, scope=scope, absolute=absolute, blur_sigma=0.7).mask
    assert mask.shape == (4, channels, 8, 8)
    assert mask.min() == 0 and mask.max() == 1
    if scope == "sample":
        assert (mask.flatten(1).amax(1) == 1).all()


def test_signed_mask_puts_the_most_negative_value_at_zero():
    a = torch.tensor([[[[-2.0, 0.0], [1.0, 2.0]]]])
    assert to_mask(a, absolute=False).mask.flatten().tolist() == [0.0, 0.5, 0.75, 1.0]


def test_batch_scope_shares_one_range():
    a = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 3.0)])
    a[1, 0, 0, 0] = 5.0
    mask = to_mask(a, scope="batch").mask
    assert mask[0].unique().tolist() == [0.0] and mask[1].flatten().tolist() == [1.0, 0.5, 0.5, 0.5]


def test_degenerate_maps_give_zero_masks_and_are_counted(attributions):
    a = attributions.clone()
    a[0] = 0.7  # constant
    a[1, 0, 0, 0] = float("nan")
    a[2, 1, 3, 3] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or Inf in 2 of 4 samples \(first: sample 1\)"):
        to_mask(a)  # by default: an all-zero mask would look like data
    result = to_mask(a, nonfinite="flag")
    assert result.degenerate.tolist() == [True, True, True, False]
    assert result.num_degenerate == 3
    assert torch.isfinite(result.mask).all()
    assert (result.mask[:3] == 0).all() and result.mask[3].max() == 1
    batch = to_mask(a, scope="batch", nonfinite="flag")
    assert batch.degenerate.tolist() == [
        False,
        True,
        True,
        False,
    ]  # a constant sample is fine in a batch range
    assert torch.isfinite(batch.mask).all() and (batch.mask[1:3] == 0).all()
    assert to_mask(torch.zeros(2, 1, 4, 4), scope="batch").num_degenerate == 2


@pytest.mark.parametrize("scale", [2.0**-12, 0.5, 4.0, 2.0**15])
@pytest.mark.parametrize("scope", ["sample", "batch"])
def test_exactly_invariant_to_power_of_two_scaling(attributions, scale, scope):
    options = dict(scope=scope, blur_sigma=1.0, reduce="mean")
    assert torch.equal(to_mask(attributions * scale, **options).mask, to_mask(attributions, **options).mask)


def test_invariant_to_any_positive_scaling_up_to_rounding(attributions):
    assert torch.allclose(to_mask(attributions * 3.7).mask, to_mask(attributions).mask, atol=1e-6)


def test_blur_preserves_mass_inside_and_spreads(attributions):
    x = torch.zeros(1, 1, 15, 15)
    x[..., 7, 7] = 1
    blurred = gaussian_blur(x, 1.5)
    assert math.isclose(blurred.sum().item(), 1.0, rel_tol=1e-5)
    assert blurred[..., 7, 7] < 1 and blurred[..., 7, 9] > 0
    assert gaussian_blur(x, 0.0) is x


def test_bad_options():
    with pytest.raises(ValueError, match="unknown reduce 'min'"):
        to_mask(torch.rand(1, 1, 2, 2), reduce="min")
    with pytest.raises(ValueError, match="unknown scope"):
        to_mask(torch.rand(1, 1, 2, 2), scope="pixel")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        to_mask(torch.rand(2, 2, 2))


def test_entropy_and_statistics():
    flat = torch.ones(1, 1, 4, 4)
    peak = torch.zeros(1, 1, 4, 4)
    peak[..., 0, 0] = 1
    assert mask_entropy(torch.cat([flat, peak, torch.zeros(1, 1, 4, 4)])).tolist()[:2] == [1.0, 0.0]
    assert math.isnan(mask_entropy(torch.zeros(1, 1, 4, 4)).item())
    a = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    a[1] = 1.0
    result = to_mask(a)
    stats = mask_statistics(result, torch.tensor([True, True, True, False]))
    useful = result.mask[[0, 2]]
    assert math.isclose(stats["mask_mean"].item(), useful.mean().item(), rel_tol=1e-6)
    assert math.isclose(stats["fraction_explained"].item(), 0.75)
    assert math.isclose(stats["fraction_degenerate"].item(), 1 / 3, rel_tol=1e-6)
    assert 0 < stats["mask_entropy"].item() < 1


def test_scatter_puts_zeros_for_unexplained():
    sub = to_mask(torch.rand(2, 1, 3, 3))
    full = scatter_mask(sub, torch.tensor([False, True, False, True]))
    assert torch.equal(full.mask[[1, 3]], sub.mask)
    assert (full.mask[[0, 2]] == 0).all()
    assert full.degenerate.tolist() == [False, False, False, False]
