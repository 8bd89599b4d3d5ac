"""The CAM suite: equalities to captum and closed forms, batch invariance, targets, errors, D untouched."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam, LayerGradientXActivation
from einops import reduce
from torch import nn

from xai_train.explain import METHODS, attribute, explaining, hook_counts
from xai_train.explain.cams import CAM_METHODS, GRADIENT_CAMS, ablationcam, all_cams, cam, scorecam
from xai_train.explain.cams.base import capture, upsample
from xai_train.explain.cams.gradient import gradient_cams
from xai_train.models.dcgan import DCGANDiscriminator

IMAGES = torch.randn(6, 2, 16, 16, generator=torch.Generator().manual_seed(3)).clamp(-1, 1)


class GapLinear(nn.Module):
    """conv -> ReLU -> global average pool -> linear: Zhou et al.'s CAM is Σ_k w_ck A_k in closed form."""

    def __init__(self, classes: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 5, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(5, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(reduce(self.act(self.conv(x)), "b k h w -> b k", "mean"))


class BatchTiedD(nn.Module):
    """Adds a per-image bias computed from the *input* after the layer, like a time embedding does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, 2, 1)
        self.act = nn.LeakyReLU(0.2)
        self.head = nn.Linear(4 * 8 * 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv(x)) + x.mean((1, 2, 3)).reshape(-1, 1, 1, 1)
        return self.head(h.flatten(1))


def snapshot(d: nn.Module) -> dict:
    return {
        "state": copy.deepcopy(d.state_dict()),
        "grads": [p.grad for p in d.parameters()],
        "flags": [p.requires_grad for p in d.parameters()],
        "training": [m.training for m in d.modules()],
        "hooks": hook_counts(d),
    }


def assert_same(before: dict, d: nn.Module) -> None:
    after = snapshot(d)
    assert all(torch.equal(v, after["state"][k]) for k, v in before["state"].items())
    assert all(g is None for g in after["grads"]) and before["grads"] == after["grads"]
    assert before["flags"] == after["flags"] and before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]


def test_gradcam_equals_captum_layergradcam_with_relu(conv_d):
    maps = all_cams(conv_d, IMAGES, layer=conv_d.conv2)
    with explaining(conv_d):
        x = IMAGES.clone().requires_grad_(True)
        reference = LayerGradCam(conv_d, conv_d.conv2).attribute(x, target=0, relu_attributions=True)
    assert reference.abs().max() > 0
    torch.testing.assert_close(maps["gradcam"], upsample(reference, (16, 16)), rtol=0, atol=1e-7)


def test_hirescam_equals_captum_gradient_x_activation_summed(conv_d):
    maps = all_cams(conv_d, IMAGES, layer=conv_d.conv2, relu=False)
    with explaining(conv_d):
        x = IMAGES.clone().requires_grad_(True)
        reference = LayerGradientXActivation(conv_d, conv_d.conv2).attribute(x, target=0).sum(1, keepdim=True)
    torch.testing.assert_close(maps["hirescam"], upsample(reference, (16, 16)), rtol=0, atol=1e-6)
    relu = all_cams(conv_d, IMAGES, layer=conv_d.conv2)["hirescam"]
    torch.testing.assert_close(relu, upsample(reference.relu(), (16, 16)), rtol=0, atol=1e-6)


def test_gradcam_on_gap_linear_is_relu_of_zhou_cam():
    torch.manual_seed(0)
    model = GapLinear(classes=3)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    maps = all_cams(model, IMAGES, layer=model.act, target=target, relu=True)
    with torch.no_grad():
        activations = model.act(model.conv(IMAGES))
        zhou = torch.einsum("bk,bkhw->bhw", model.head.weight[target], activations).unsqueeze(1)
    # dy/dA_kij = w_k / (h w): Grad-CAM's weights are Zhou's divided by the number of locations.
    torch.testing.assert_close(maps["gradcam"] * 16 * 16, zhou.relu(), rtol=0, atol=1e-6)
    # AblationCAM on the same head: zeroing channel k lowers y_c by w_ck · mean(A_k), exactly.
    with explaining(model):
        ablation = ablationcam(model, IMAGES, layer=model.act, target=target)
        scores = model(IMAGES).gather(1, target[:, None]).squeeze(1)
    drops = model.head.weight[target] * activations.mean((2, 3))
    expected = torch.einsum("bk,bkhw->bhw", drops / scores.abs()[:, None], activations).unsqueeze(1)
    torch.testing.assert_close(ablation, expected, rtol=1e-4, atol=1e-6)


def test_gradcampp_xgradcam_layercam_elementwise_closed_forms(conv_d):
    x = IMAGES.clone().requires_grad_(True)
    with explaining(conv_d):
        got = capture(conv_d, x, conv_d.conv2)  # A and G: the Grad-CAM/HiResCAM tests check them against captum
        maps = gradient_cams(conv_d, x, layer=conv_d.conv2, relu=False, upsampled=False)
    a, g = got.activations, got.gradients
    # Grad-CAM++ written out element by element, for one channel of one image.
    b, k = 2, 3
    s = a[b, k].sum()
    alpha = g[b, k] ** 2 / (2 * g[b, k] ** 2 + s * g[b, k] ** 3)
    alpha = torch.where(g[b, k] != 0, alpha, torch.zeros(()))
    weights = torch.stack(
        [
            ((g[b, j] ** 2 / (2 * g[b, j] ** 2 + a[b, j].sum() * g[b, j] ** 3)).nan_to_num() * g[b, j].relu()).sum()
            for j in range(a.shape[1])
        ]
    )
    assert weights[k] == pytest.approx((alpha * g[b, k].relu()).sum().item(), rel=1e-5)
    torch.testing.assert_close(maps["gradcampp"][b, 0], (weights[:, None, None] * a[b]).sum(0), rtol=1e-4, atol=1e-6)
    x_weights = (g[b] * a[b]).sum((1, 2)) / (a[b].sum((1, 2)) + 1e-7)
    torch.testing.assert_close(maps["xgradcam"][b, 0], (x_weights[:, None, None] * a[b]).sum(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(maps["layercam"][b, 0], (g[b].relu() * a[b]).sum(0), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(maps["gradcam_elementwise"][b, 0], (g[b] * a[b]).relu().sum(0), rtol=1e-5, atol=1e-7)


def test_eigencam_is_the_aligned_first_principal_component(conv_d):
    maps = gradient_cams(conv_d, IMAGES.clone().requires_grad_(True), layer=conv_d.conv2, relu=False, upsampled=False)
    with explaining(conv_d), torch.no_grad():
        a = conv_d.conv2(conv_d.act1(conv_d.conv1(IMAGES)))
    for b in range(len(IMAGES)):
        x = a[b].flatten(1).T.double()
        x = x - x.mean(0)
        _, _, vh = torch.linalg.svd(x)
        projection = (x @ vh[0]).float()
        got = maps["eigencam"][b].flatten()
        # Equal up to the sign, and the sign agrees with Grad-CAM's raw map.
        assert torch.allclose(got, projection, atol=1e-5) or torch.allclose(got, -projection, atol=1e-5)
        reference = maps["gradcam"][b].flatten()
        assert ((got - got.mean()) * (reference - reference.mean())).sum() >= 0


def test_scorecam_equals_a_per_image_per_channel_loop(conv_d):
    layer = conv_d.conv2
    with explaining(conv_d):
        batched = scorecam(conv_d, IMAGES, layer=layer, relu=True, batch_size=7)
        with torch.no_grad():
            a = layer(conv_d.act1(conv_d.conv1(IMAGES)))
            for b in range(len(IMAGES)):
                scores = []
                for k in range(a.shape[1]):
                    m = F.interpolate(a[b : b + 1, k : k + 1], size=(16, 16), mode="bilinear")
                    m = (m - m.min()) / (m.max() - m.min())
                    scores.append(conv_d(IMAGES[b : b + 1] * m)[0, 0])
                w = torch.stack(scores).softmax(0)
                raw = (w[:, None, None] * a[b]).sum(0).relu()  # ReLU at the layer's resolution, then upsample
                expected = F.interpolate(raw[None, None], size=(16, 16), mode="bilinear")
                torch.testing.assert_close(batched[b : b + 1], expected, rtol=1e-4, atol=1e-6)


def test_ablationcam_layer_swap_input_repeat_and_batch_tied_models_agree(conv_d):
    with explaining(conv_d):
        swap = ablationcam(conv_d, IMAGES, layer=conv_d.act2, expand="layer", batch_size=10)
        repeat = ablationcam(conv_d, IMAGES, layer=conv_d.act2, expand="input")
    torch.testing.assert_close(swap, repeat, rtol=1e-4, atol=1e-6)
    torch.manual_seed(0)
    tied = BatchTiedD()
    with explaining(tied):
        auto = ablationcam(tied, IMAGES, layer=tied.act)
        slow = ablationcam(tied, IMAGES, layer=tied.act, expand="input")
        with pytest.raises(ValueError, match="expand='input'"):
            ablationcam(tied, IMAGES, layer=tied.act, expand="layer")
    torch.testing.assert_close(auto, slow)


@pytest.mark.parametrize("method", ["gradcam", *CAM_METHODS])
def test_batch_of_one_equals_batch_of_n_and_d_is_untouched(method, conv_d):
    conv_d.conv2.weight.grad = None
    before = snapshot(conv_d)
    full = cam(conv_d, IMAGES, method)
    assert_same(before, conv_d)
    single = torch.cat([cam(conv_d, IMAGES[i : i + 1], method) for i in range(len(IMAGES))])
    torch.testing.assert_close(full, single, rtol=1e-4, atol=1e-6)
    assert torch.isfinite(full).all() and full.shape == (6, 1, 16, 16)
    if method != "fullgrad":
        assert full.min() >= 0  # the final ReLU of cam()
    if method not in ("gradcam", "fullgrad"):  # attribute's "gradcam" is captum's; fullgrad takes no relu
        via_attribute = attribute(conv_d, IMAGES, method, relu=True)
        torch.testing.assert_close(via_attribute, full.expand(-1, 2, -1, -1), rtol=1e-4, atol=1e-6)
    assert_same(before, conv_d)


def test_every_gradient_cam_from_one_forward_pass(conv_d):
    calls = []
    handle = conv_d.register_forward_hook(lambda *_: calls.append(1))
    try:
        maps = all_cams(conv_d, IMAGES, layer=conv_d.conv2)  # no default-layer probe pass
    finally:
        handle.remove()
    assert sorted(maps) == sorted(GRADIENT_CAMS) and len(calls) == 1


def test_class_targets_pick_the_class_logit():
    torch.manual_seed(1)
    model = GapLinear(classes=3)
    per_class = [cam(model, IMAGES, "layercam", target=c, layer=model.act) for c in range(3)]
    mixed = cam(model, IMAGES, "layercam", target=torch.tensor([2, 1, 0, 2, 1, 0]), layer=model.act)
    for i, c in enumerate([2, 1, 0, 2, 1, 0]):
        torch.testing.assert_close(mixed[i], per_class[c][i])
    assert not torch.allclose(per_class[0], per_class[1])
    predicted = model(IMAGES).argmax(1)
    default = cam(model, IMAGES, "layercam", layer=model.act)
    torch.testing.assert_close(default, torch.stack([per_class[c][i] for i, c in enumerate(predicted.tolist())]))
    with pytest.raises(ValueError, match=r"class index in \[0, 3\)"):
        cam(model, IMAGES, "layercam", target=3, layer=model.act)


def test_one_by_one_layer_is_an_error_and_a_small_layer_warns():
    d = DCGANDiscriminator(image_size=32, channels=1, width=4).eval()
    x = torch.randn(2, 1, 32, 32)
    with pytest.raises(ValueError, match="1×1 map"):
        attribute(d, x, "gradcampp", layer=d.head)
    with pytest.warns(UserWarning, match="2×2"):
        cam(nn.Sequential(nn.Conv2d(1, 2, 4, 4), nn.Flatten(), nn.Linear(8, 1)), torch.randn(2, 1, 8, 8), "layercam")
    default = attribute(d, x, "layercam")  # the feature layer, 4×4: no warning, no error
    assert default.shape == x.shape
    with pytest.raises(ValueError, match="unknown CAM"):
        cam(d, x, "gradcam++")
    assert "gradcampp" in METHODS and "randomcam" in METHODS


def test_fullgrad_sums_the_normalised_input_and_bias_gradient_maps():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16 * 16, 1))
    x = IMAGES.clone().requires_grad_(True)
    hidden = model[0](x)
    y = model[3](model[2](model[1](hidden))).sum()
    dx, dh = torch.autograd.grad(y, [x, hidden])

    def psi(m: torch.Tensor) -> torch.Tensor:  # |m|, min-max per image over channels and pixels, channel sum
        m = m.abs()
        low, high = m.amin((1, 2, 3), keepdim=True), m.amax((1, 2, 3), keepdim=True)
        return ((m - low) / (high - low)).sum(1, keepdim=True)

    expected = psi(x.detach() * dx) + psi(dh * model[0].bias.detach()[None, :, None, None])
    torch.testing.assert_close(cam(model, IMAGES, "fullgrad"), expected, rtol=1e-5, atol=1e-6)


class TwoByTwoD(nn.Module):
    """16×16 -> conv 8×8 -> conv 4×4 -> conv 2×2 -> linear: its last conv is 2×2, no ``feature_layer``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 4, 2, 1)
        self.conv2 = nn.Conv2d(4, 6, 4, 2, 1)
        self.conv3 = nn.Conv2d(6, 8, 4, 2, 1)
        self.head = nn.Linear(8 * 2 * 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = F.leaky_relu(self.conv2(h), 0.2)
        return self.head(F.leaky_relu(self.conv3(h), 0.2).flatten(1))


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_captum_gradcam_and_the_cam_suite_pick_the_same_default_layer_on_a_2x2_last_conv():
    torch.manual_seed(0)
    d = TwoByTwoD().eval()
    captum_map = attribute(d, IMAGES, "gradcam")  # captum LayerGradCam, signed
    batched = attribute(d, IMAGES, "gradcam_batched")  # the CAM suite, signed
    on_conv2 = attribute(d, IMAGES, "gradcam_batched", layer=d.conv2)
    with pytest.warns(UserWarning, match="2×2 map"):
        on_conv3 = attribute(d, IMAGES, "gradcam_batched", layer=d.conv3)
    assert relative_difference(on_conv3, on_conv2) > 0.1  # the layers give different maps ...
    assert relative_difference(captum_map, on_conv2) < 1e-5  # ... and both defaults explain conv2 (4×4)
    assert relative_difference(batched, on_conv2) < 1e-5
    assert not torch.equal(captum_map, torch.zeros_like(captum_map))


def test_a_default_layer_below_4x4_warns_in_captum_gradcam_and_in_the_suite():
    # The only spatial conv maps 8×8 -> 2×2: both paths must fall back to it, and both warn.
    d = nn.Sequential(nn.Conv2d(2, 3, 4, 4), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(12, 1)).eval()
    x = IMAGES[:, :, :8, :8]
    with pytest.warns(UserWarning, match=r"outputs a 2×2 map \(< 4×4\)"):
        captum_map = attribute(d, x, "gradcam")
    with pytest.warns(UserWarning, match=r"outputs a 2×2 map \(< 4×4\)"):
        batched = attribute(d, x, "gradcam_batched")
    assert relative_difference(captum_map, batched) < 1e-5
    with pytest.warns(UserWarning, match=r"2×2 map"):  # an explicit small layer warns as well
        attribute(d, x, "gradcam", layer=d[0])
