import torch
import torch.nn.functional as F

from xai_train.generator.iou import (
    candidate_counts,
    information_quality_ratio,
    iou_from_counts,
    iqr_thresholds,
    overlap_counts,
    unit_quantiles,
)


def test_quantile_leaves_the_top_share_above():
    units = torch.randn(50, 3, 4, 4)
    t = unit_quantiles(units, 0.9)
    above = (units > t.view(1, 3, 1, 1)).float().mean(dim=(0, 2, 3))
    torch.testing.assert_close(above, torch.full((3,), 0.1))
    torch.testing.assert_close(t, torch.quantile(units.transpose(0, 1).flatten(1), 0.9, dim=1), atol=0.02, rtol=0)


def test_iou_equals_a_per_pixel_reference():
    torch.manual_seed(0)
    units, masks = torch.rand(7, 5, 4, 4), torch.rand(7, 3, 16, 16) > 0.7
    thresholds = torch.rand(5) * 0.5 + 0.3
    up = F.interpolate(units, size=(16, 16), mode="bilinear", align_corners=False) > thresholds.view(1, 5, 1, 1)
    reference = torch.tensor(
        [[(up[:, k] & masks[:, c]).sum() / (up[:, k] | masks[:, c]).sum() for c in range(3)] for k in range(5)]
    )
    torch.testing.assert_close(iou_from_counts(overlap_counts(units, masks, thresholds)), reference)
    per_concept = thresholds.view(5, 1).expand(5, 3).contiguous()  # the (K, C) path agrees with the (K,) path
    torch.testing.assert_close(iou_from_counts(overlap_counts(units, masks, per_concept)), reference)


def test_iqr_picks_the_candidate_with_the_best_ratio():
    torch.manual_seed(1)
    units, masks = torch.rand(6, 4, 8, 8), torch.rand(6, 2, 8, 8) > 0.8
    levels = (0.5, 0.8, 0.9)
    chosen = iqr_thresholds(units, masks, levels, mode="nearest")
    candidates = unit_quantiles(units, torch.tensor(levels))
    for k in range(4):
        for c in range(2):
            one = units[:, k : k + 1], masks[:, c : c + 1]
            ratios = [information_quality_ratio(overlap_counts(*one, t[k : k + 1], "nearest")) for t in candidates]
            assert chosen[k, c] == candidates[torch.stack(ratios).flatten().argmax(), k]
    counts = candidate_counts(units, masks, candidates, "nearest")
    assert counts["intersection"].shape == (3, 4, 2)


def test_information_quality_ratio_of_independent_masks_is_zero():
    counts = {  # P(A) = P(S) = 1/2, P(A and S) = 1/4
        "intersection": torch.tensor(25.0),
        "unit_area": torch.tensor(50.0),
        "concept_area": torch.tensor(50.0),
        "pixels": torch.tensor(100),
    }
    assert abs(information_quality_ratio(counts).item()) < 1e-6
