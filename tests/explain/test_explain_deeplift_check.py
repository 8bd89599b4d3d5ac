"""DeepLift refuses a D it cannot explain, and says why."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from xai_train.explain import attribute, check_deeplift, hook_counts
from xai_train.explain.deeplift_check import DEEPLIFT_MODULES


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


def test_owned_module_list_equals_the_installed_captums():
    """The one place that reads captum's private list: if it moved or changed, update DEEPLIFT_MODULES."""
    import importlib

    try:
        private = importlib.import_module("captum.attr._core.deep_lift").SUPPORTED_NON_LINEAR
    except (ImportError, AttributeError) as err:
        pytest.fail(f"captum moved its DeepLift module list ({err}); re-check DEEPLIFT_MODULES by hand")
    assert set(DEEPLIFT_MODULES) == set(private)


@pytest.mark.parametrize(
    "activation", [m for m in DEEPLIFT_MODULES if m not in (nn.Softmax,) and "Pool" not in m.__name__]
)
def test_deeplift_applies_its_multipliers_on_every_owned_activation(activation):
    """Public behaviour, no private import: with a listed activation DeepLift's attributions sum to the score
    difference (its multipliers are in place); with GELU, which is not listed, they do not (plain gradient)."""
    from captum.attr import DeepLift

    def total_and_delta(act: nn.Module) -> tuple[float, float]:
        torch.manual_seed(0)
        d = nn.Sequential(nn.Linear(6, 8), act, nn.Linear(8, 1)).eval()
        x, baseline = torch.randn(1, 6) * 3, torch.zeros(1, 6)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attribution = DeepLift(d).attribute(x, baselines=baseline)
        with torch.no_grad():
            return float(attribution.sum()), float(d(x) - d(baseline))

    total, delta = total_and_delta(activation())
    assert abs(total - delta) <= 1e-4 * max(1.0, abs(delta))
    total, delta = total_and_delta(nn.GELU())
    assert abs(total - delta) > 1e-2
