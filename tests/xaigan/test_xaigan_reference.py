"""The reference code's mask, against hand-computed cases."""

from __future__ import annotations

import torch

from xai_train.xaigan import reference_mask, reference_selection


def logits(*probabilities: float) -> torch.Tensor:
    p = torch.tensor(probabilities)
    return torch.log(p / (1 - p))[:, None]


def test_selection_needs_two_rejected_fakes():
    assert reference_selection(logits(0.2, 0.7, 0.4, 0.9)).tolist() == [True, False, True, False]
    assert reference_selection(logits(0.2, 0.7, 0.6, 0.9)).tolist() == [False] * 4  # one rejected: none
    assert reference_selection(logits(0.7, 0.6)).tolist() == [False, False]
    assert reference_selection(logits(0.1, 0.3, 0.2)).tolist() == [True, True, True]


def test_hand_computed_mixed_batch():
    # samples 0 and 2 explained; sample 1 is filled with 1; one global min-max over all of it.
    attributions = torch.tensor([[[[0.0, 4.0]]], [[[2.0, 3.0]]]])
    mask = reference_mask(attributions, torch.tensor([True, False, True]))
    # values: [0, 4], [1, 1], [2, 3] -> minus 0, divided by 4
    assert mask.flatten().tolist() == [0.0, 1.0, 0.25, 0.25, 0.5, 0.75]


def test_fill_value_one_is_the_maximum_for_small_attributions():
    # saliency values below 1: the unexplained fake (which fooled D) gets the full boost everywhere.
    attributions = torch.tensor([[[[0.1, 0.3]]], [[[0.2, 0.5]]]])
    mask = reference_mask(attributions, torch.tensor([True, True, False]))
    assert mask[2].flatten().tolist() == [1.0, 1.0]
    assert torch.allclose(mask[0].flatten(), torch.tensor([0.0, 0.2 / 0.9]))


def test_at_most_one_explained_gives_an_all_zero_mask():
    # all ones -> (1 - 1) / 0 = NaN -> 0; the single attribution is never used.
    single = reference_mask(torch.tensor([[[[5.0, 7.0]]]]), torch.tensor([False, True, False]))
    assert single.shape == (3, 1, 1, 2) and (single == 0).all()
    none = reference_mask(torch.zeros(0, 1, 1, 2), torch.tensor([False, False]))
    assert (none == 0).all() and not torch.isnan(none).any()


def test_all_rejected_normalises_the_attributions_alone():
    attributions = torch.tensor([[[[-1.0, 1.0]]], [[[3.0, 0.0]]]])  # signed, as DeepLiftShap gives
    mask = reference_mask(attributions, torch.tensor([True, True]))
    assert mask.flatten().tolist() == [0.0, 0.5, 1.0, 0.25]


def test_constant_attributions_equal_to_the_fill_give_zeros():
    mask = reference_mask(torch.ones(2, 1, 2, 2), torch.tensor([True, True, False]))
    assert (mask == 0).all()
