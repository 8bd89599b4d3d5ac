"""attribute(): every method's output, and D left exactly as it was."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from captum.attr import DeepLiftShap, KernelShap, LayerGradCam
from torch import nn

from xai_train.explain import METHODS, attribute, hook_counts, patch_feature_mask, to_mask

REAL = torch.randn(5, 2, 16, 16, generator=torch.Generator().manual_seed(7)).clamp(-1, 1)


def options(method: str) -> dict:
    """Small settings that keep each method fast on the tiny D."""
    return {
        "deeplift_shap": {"baselines": REAL, "n_baselines": 4},
        "gradient_shap": {"baselines": REAL},
        "integrated_gradients": {"n_steps": 8},
        "smoothgrad": {"nt_samples": 4},
        "lime": {"n_samples": 48, "patch": 4},
        "kernel_shap": {"n_samples": 48, "patch": 4},
    }.get(method, {})


def d_snapshot(d: nn.Module) -> dict:
    return {
        "state": copy.deepcopy(d.state_dict()),
        "grads": [None if p.grad is None else p.grad.clone() for p in d.parameters()],
        "requires_grad": [p.requires_grad for p in d.parameters()],
        "training": [m.training for m in d.modules()],
        "momentum": [m.momentum for m in d.modules() if isinstance(m, nn.BatchNorm2d)],
        "hooks": hook_counts(d),
    }


def assert_unchanged(before: dict, d: nn.Module) -> None:
    after = d_snapshot(d)
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key  # incl. BN running stats, num_batches_tracked
    for g0, g1 in zip(before["grads"], after["grads"], strict=True):
        assert (g0 is None and g1 is None) or torch.equal(g0, g1)
    for key in ("requires_grad", "training", "momentum", "hooks"):
        assert before[key] == after[key], key


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_gives_finite_maps_and_a_mask_in_range(method, conv_d, images):
    attributions = attribute(conv_d, images, method, **options(method))
    assert attributions.shape == images.shape
    assert torch.isfinite(attributions).all()
    assert not attributions.requires_grad and attributions.grad_fn is None
    result = to_mask(attributions)
    assert result.mask.shape == (6, 1, 16, 16)
    assert result.mask.min() >= 0 and result.mask.max() <= 1
    assert result.num_degenerate == 0
    assert torch.allclose(result.mask.flatten(1).amax(1), torch.ones(6))  # per-sample max is 1


# randomcam's default noise map ignores D by design (a negative control; tests/explain/test_cams.py covers it).
@pytest.mark.parametrize("method", [m for m in METHODS if m != "randomcam"])
def test_map_changes_when_d_changes(method, conv_d, images):
    torch.manual_seed(11)
    before = attribute(conv_d, images, method, **options(method))
    with torch.no_grad():
        conv_d.conv1.weight.copy_(torch.randn_like(conv_d.conv1.weight))
    torch.manual_seed(11)
    after = attribute(conv_d, images, method, **options(method))
    assert not torch.allclose(to_mask(before).mask, to_mask(after).mask, atol=1e-3)


@pytest.mark.parametrize("bn_mode", ["eval", "freeze_stats"])
@pytest.mark.parametrize("method", list(METHODS))
def test_d_is_left_exactly_as_it_was(method, bn_mode, conv_d, images):
    conv_d.train()
    for p in conv_d.parameters():
        p.grad = torch.randn_like(p)
    conv_d.head.weight.requires_grad_(False)  # a mixed state must come back as it was
    before = d_snapshot(conv_d)
    if method in ("deeplift", "deeplift_shap") and bn_mode == "freeze_stats":
        with pytest.raises(ValueError, match="bn_mode='eval'"):
            attribute(conv_d, images, method, bn_mode=bn_mode, **options(method))
    else:
        attribute(conv_d, images, method, bn_mode=bn_mode, **options(method))
    assert_unchanged(before, conv_d)


def test_saliency_is_the_input_gradient_in_the_chosen_mode(conv_d, images):
    def gradient(train: bool) -> torch.Tensor:
        d = copy.deepcopy(conv_d).train(train)
        x = images.clone().requires_grad_()
        (grad,) = torch.autograd.grad(d(x).sum(), x)
        return grad

    assert torch.allclose(attribute(conv_d, images, "saliency"), gradient(False), atol=1e-6)
    assert torch.allclose(attribute(conv_d, images, "saliency", bn_mode="freeze_stats"), gradient(True), atol=1e-6)
    assert torch.allclose(attribute(conv_d, images, "saliency", abs=True), gradient(False).abs(), atol=1e-6)


def test_probability_output_explains_the_sigmoid(conv_d, images):
    logit = conv_d.eval()(images).detach()
    scale = torch.sigmoid(logit) * torch.sigmoid(-logit)  # dσ/dz
    grad_logit = attribute(conv_d, images, "saliency")
    grad_prob = attribute(conv_d, images, "saliency", output="probability")
    assert torch.allclose(grad_prob, grad_logit * scale[:, :, None, None], atol=1e-6)


@pytest.mark.parametrize("method", ["integrated_gradients", "deeplift"])
def test_path_methods_sum_to_the_score_change(method, conv_d, images):
    attributions = attribute(conv_d, images, method, **({"n_steps": 32} if method == "integrated_gradients" else {}))
    d = conv_d.eval()
    with torch.no_grad():
        change = d(images) - d(torch.zeros_like(images))
    assert torch.allclose(attributions.flatten(1).sum(1), change[:, 0], atol=2e-3)


@pytest.mark.filterwarnings("ignore:Setting forward, backward hooks")
def test_chunked_deeplift_shap_equals_captum(conv_d, images):
    baselines = REAL[:4]
    ours = attribute(conv_d, images, "deeplift_shap", baselines=baselines, chunk_size=6)  # one baseline per pass
    d = conv_d.eval()
    x = images.clone().requires_grad_()
    expected = DeepLiftShap(d).attribute(x, baselines=baselines, target=None)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_deeplift_shap_needs_real_baselines(conv_d, images):
    with pytest.raises(ValueError, match="baselines"):
        attribute(conv_d, images, "deeplift_shap")


def linear_patch_contributions(d: nn.Module, images: torch.Tensor, patch: int) -> torch.Tensor:
    """Exact per-patch contribution <w, x> over each patch, broadcast back to pixels."""
    feature_mask = patch_feature_mask(16, 16, patch)
    contribution = (d.weight * images).sum(1)  # (B, H, W)
    per_patch = torch.zeros(images.shape[0], int(feature_mask.max()) + 1).index_add_(
        1, feature_mask.flatten(), contribution.flatten(1)
    )
    return per_patch[:, feature_mask][:, None].expand_as(images)


@pytest.mark.parametrize("method", ["lime", "kernel_shap", "occlusion"])
def test_perturbation_methods_recover_a_linear_d(method, images, tiny):
    torch.manual_seed(0)
    d = tiny.LinearD()
    patch = 4
    opts = {"window": patch} if method == "occlusion" else {"patch": patch, "n_samples": 64}
    attributions = attribute(d, images, method, **opts)
    expected = linear_patch_contributions(d, images, patch)
    if method == "occlusion":  # captum spreads a window's score change over its pixels' count of windows: 1
        assert torch.allclose(attributions, expected.detach(), atol=1e-4)
    else:
        assert torch.allclose(attributions, expected.detach(), atol=1e-3)


def test_kernel_shap_matches_captum_on_one_sample(images, tiny):
    torch.manual_seed(0)
    d = tiny.LinearD()
    feature_mask = patch_feature_mask(16, 16, 8)[None, None].expand(1, 2, 16, 16)
    x = images[:1].clone()
    expected = KernelShap(d).attribute(x, target=None, feature_mask=feature_mask, n_samples=40)
    ours = attribute(d, x, "kernel_shap", patch=8, n_samples=40)
    assert torch.allclose(ours, expected.float(), atol=1e-3)


def test_gradcam_layer_default_and_choice(images, tiny):
    torch.manual_seed(0)
    plain = tiny.warmed_up(tiny.TinyConvD())
    x = images.clone().requires_grad_()
    expected = LayerGradCam(plain.eval(), plain.conv2).attribute(x)  # (B, 1, 4, 4)
    ours = attribute(plain, images, "gradcam", interpolate_mode="nearest")
    assert torch.allclose(ours[:, :1], expected.repeat_interleave(4, -1).repeat_interleave(4, -2), atol=1e-6)
    declared = tiny.FeatureLayerD()
    declared.load_state_dict(plain.state_dict())
    by_property = attribute(declared, images, "gradcam")
    by_option = attribute(plain, images, "gradcam", layer=plain.act1)
    assert torch.allclose(by_property, by_option)


def test_frozen_d_no_grad_caller_and_inference_tensors(conv_d, images):
    for p in conv_d.parameters():
        p.requires_grad_(False)
    expected = attribute(conv_d, images, "saliency")
    with torch.no_grad():
        assert torch.equal(attribute(conv_d, images, "saliency"), expected)
    with torch.inference_mode():
        frozen_images = images.clone()
    assert torch.equal(attribute(conv_d, frozen_images, "saliency"), expected)
    assert all(not p.requires_grad for p in conv_d.parameters())


def test_clear_errors(conv_d, images):
    with pytest.raises(ValueError, match="unknown explainer 'salincy'; choose one of: saliency, "):
        attribute(conv_d, images, "salincy")
    with pytest.raises(TypeError, match="unknown option.*n_step.*n_steps"):
        attribute(conv_d, images, "integrated_gradients", n_step=4)
    with pytest.raises(ValueError, match="bn_mode"):
        attribute(conv_d, images, "saliency", bn_mode="train")
    with pytest.raises(RuntimeError, match="inference_mode"), torch.inference_mode():
        attribute(conv_d, images, "saliency")
    with pytest.raises(ValueError, match=re.escape("the discriminator must return (B, 1) logits, got (B, 3)")):
        attribute(nn.Sequential(nn.Flatten(), nn.Linear(512, 3)), images, "saliency")


def test_a_method_that_fails_leaves_d_as_it_was(conv_d, images):
    conv_d.train()
    before = d_snapshot(conv_d)
    with pytest.raises(ValueError):
        attribute(conv_d, images, "gradcam", layer=conv_d.head)  # a (B, 1) layer output has no map
    assert_unchanged(before, conv_d)
