"""DeepLift refuses a D it cannot explain, and says why."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xai_train.explain import attribute, check_deeplift, hook_counts


@pytest.mark.parametrize("method", ["deeplift", "deeplift_shap"])
def test_functional_activation_is_named(method, tiny, images):
    d = tiny.FunctionalD()
    with pytest.raises(ValueError, match=r"F\.leaky_relu in 'D' \(FunctionalD\)"):
        attribute(d, images, method, baselines=images[:2])
    assert sum(hook_counts(d).values()) == 0


def test_reused_activation_is_named(tiny, images):
    with pytest.raises(ValueError, match=r"'D\.act1' \(LeakyReLU\) runs 2 times"):
        attribute(tiny.ReusedD(), images, "deeplift")


def test_unsupported_activation_module_is_named(images):
    d = nn.Sequential(nn.Conv2d(2, 3, 3), nn.GELU(), nn.Flatten(), nn.Linear(3 * 14 * 14, 1))
    with pytest.raises(ValueError, match=r"F\.gelu in 'D\.1' \(GELU\)"):
        attribute(d, images, "deeplift")


def test_hand_written_nonlinearity_fails_summation_to_delta(tiny, images):
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="do not sum to score"):
        attribute(tiny.WhereD(), images, "deeplift")


def test_train_mode_batch_norm_is_refused(tiny, images):
    d = tiny.TinyConvD().train()
    with pytest.raises(ValueError, match="batch statistics"):
        check_deeplift(d, images)


def test_a_supported_d_passes_and_check_can_be_skipped(tiny, images):
    torch.manual_seed(0)
    d = tiny.warmed_up(tiny.TinyConvD()).eval()
    check_deeplift(d, images)
    with_check = attribute(d, images, "deeplift")
    assert torch.equal(attribute(d, images, "deeplift", check=False), with_check)
    assert sum(hook_counts(d).values()) == 0
