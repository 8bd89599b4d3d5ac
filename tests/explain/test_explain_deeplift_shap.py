"""DeepLiftShap uses every baseline it is given (captum's ``DeepLiftShap`` is the reference), or exactly the
random subset ``n_baselines`` asks for."""

from __future__ import annotations

import pytest
import torch
from captum.attr import DeepLiftShap

from xai_train.explain import attribute

pytestmark = pytest.mark.filterwarnings("ignore:Setting forward, backward hooks")

MANY = torch.randn(20, 2, 16, 16, generator=torch.Generator().manual_seed(3)).clamp(-1, 1)  # > the old cap of 16


def captum_shap(d: torch.nn.Module, images: torch.Tensor, baselines: torch.Tensor) -> torch.Tensor:
    return DeepLiftShap(d.eval()).attribute(images.clone().requires_grad_(), baselines=baselines, target=None)


def test_all_given_baselines_are_used(conv_d, images):
    ours = attribute(conv_d, images, "deeplift_shap", baselines=MANY)
    assert torch.allclose(ours, captum_shap(conv_d, images, MANY), atol=1e-5)
    # A control: the mean over the first 16 only is a different answer, so the test can tell them apart.
    assert not torch.allclose(ours, captum_shap(conv_d, images, MANY[:16]), atol=1e-5)


def test_n_baselines_uses_exactly_the_drawn_subset(conv_d, images):
    ours = attribute(
        conv_d, images, "deeplift_shap", baselines=MANY, n_baselines=5, generator=torch.Generator().manual_seed(9)
    )
    pick = torch.randperm(len(MANY), generator=torch.Generator().manual_seed(9))[:5]
    assert torch.allclose(ours, captum_shap(conv_d, images, MANY[pick]), atol=1e-5)


@pytest.mark.parametrize("bad", [0, -2, True, 2.5])
def test_n_baselines_must_be_a_positive_whole_number(conv_d, images, bad):
    with pytest.raises(ValueError, match="n_baselines must be None"):
        attribute(conv_d, images, "deeplift_shap", baselines=MANY, n_baselines=bad)
