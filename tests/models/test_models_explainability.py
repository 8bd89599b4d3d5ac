"""What explainers rely on: distinct non-inplace activation modules, DeepLift, Grad-CAM, runnable examples."""

import collections
import copy
import doctest
import importlib

import pytest
import torch
from captum.attr import DeepLift, LayerGradCam
from torch import nn

from xai_train.models import build_gan

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.Softplus, nn.GELU, nn.SiLU)
CONFIGS = [
    pytest.param("dcgan", 32, 1, "batch", id="dcgan32-bn"),
    pytest.param("dcgan", 64, 3, "none", id="dcgan64-plain"),
    pytest.param("paper_mlp", 32, 1, "batch", id="paper_mlp"),
]


def make_pair(arch, image_size, channels, norm):
    torch.manual_seed(0)
    G, D = build_gan(
        arch,
        image_size=image_size,
        channels=channels,
        latent_dim=16,
        g_width=4,
        d_width=4,
        g_norm=norm,
        d_norm=norm,
    )
    return G, D


def count_forward_calls(model, modules, inputs):
    """Run ``model(inputs)`` once and return how often each of ``modules`` was called."""
    calls = collections.Counter()
    handles = [m.register_forward_hook(lambda module, *_: calls.update([id(module)])) for m in modules]
    try:
        model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return [calls[id(m)] for m in modules]


def randomise_(model):
    """Give the model O(1) signals (DCGAN init shrinks them at tiny widths) and non-trivial BN statistics."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=0.2)
            if m.bias is not None:
                nn.init.normal_(m.bias, 0, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("arch, image_size, channels, norm", CONFIGS)
def test_every_activation_is_a_distinct_non_inplace_module_called_once(arch, image_size, channels, norm):
    for model in make_pair(arch, image_size, channels, norm):
        assert not [name for name, m in model.named_modules() if getattr(m, "inplace", False)]
        activations = [m for m in model.modules() if isinstance(m, ACTIVATIONS)]
        assert len(activations) >= 3
        if hasattr(model, "latent_dim"):
            inputs = model.sample_latent(2)
        else:
            inputs = torch.randn(2, channels, image_size, image_size)
        # a module shared by two layers would be called twice
        assert count_forward_calls(model, activations, inputs) == [1] * len(activations)


@pytest.mark.parametrize("arch, image_size, channels, norm", CONFIGS)
def test_no_functional_non_linearity_hides_outside_the_modules(arch, image_size, channels, norm):
    """With every activation module swapped for Identity, the eval-mode network must be affine."""
    for model in make_pair(arch, image_size, channels, norm):
        linearised = copy.deepcopy(randomise_(model)).eval()
        for module in list(linearised.modules()):
            for child_name, child in module.named_children():
                if isinstance(child, ACTIVATIONS):
                    setattr(module, child_name, nn.Identity())
        is_generator = hasattr(model, "latent_dim")
        shape = (3, model.latent_dim) if is_generator else (3, channels, image_size, image_size)
        x, y = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
        f = linearised.double()
        with torch.no_grad():
            torch.testing.assert_close(f(x) + f(y), f(x + y) + f(torch.zeros_like(x)))


@pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning")
@pytest.mark.parametrize("arch, image_size, channels, norm", CONFIGS)
def test_deeplift_runs_and_is_complete_in_eval_mode(arch, image_size, channels, norm):
    _, D = make_pair(arch, image_size, channels, norm)
    D = randomise_(D).eval()
    x = (torch.rand(4, channels, image_size, image_size) * 2 - 1).requires_grad_()
    baseline = torch.zeros_like(x)
    attributions, delta = DeepLift(D).attribute(x, baselines=baseline, return_convergence_delta=True)
    assert attributions.shape == x.shape and torch.isfinite(attributions).all()
    with torch.no_grad():
        gap = (D(x) - D(baseline)).squeeze(1)
    assert gap.abs().min() > 1e-3  # the check below is not vacuous
    # summation-to-delta holds exactly only if DeepLift saw every non-linearity as a module
    torch.testing.assert_close(attributions.sum(dim=(1, 2, 3)), gap, rtol=1e-4, atol=1e-5)
    assert delta.abs().max() < 1e-4
    assert not torch.allclose(attributions, torch.zeros_like(attributions))


@pytest.mark.parametrize("image_size", [32, 64])
def test_grad_cam_on_the_feature_layer_gives_a_4x4_map(image_size):
    _, D = make_pair("dcgan", image_size, 1, "batch")
    D.eval()
    cam = LayerGradCam(D, D.feature_layer).attribute(torch.randn(3, 1, image_size, image_size))
    assert cam.shape == (3, 1, 4, 4) and torch.isfinite(cam).all()


@pytest.mark.parametrize("module", ["base", "build", "dcgan", "init", "mlp", "__init__"])
def test_docstring_examples_run(module):
    name = "xai_train.models" if module == "__init__" else f"xai_train.models.{module}"
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
    assert result.attempted > 0 or module == "base"
