"""Flaw activation maps and the amplified forward process: exact formulas and known answers."""

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from xai_train.diffusion import add_noise, training_target
from xai_train.diffusion.self_refine import (
    amplified_noise,
    batch_mean_fam,
    build_highlighter,
    cam_layer,
    fam_noise_scale,
    fam_target,
    flaw_maps,
    train_highlighter,
)

ALPHAS = DDPMScheduler(num_train_timesteps=100).alphas_cumprod


def batch(seed=0, size=4):
    g = torch.Generator().manual_seed(seed)
    x0, noise = torch.rand(size, 1, 8, 8, generator=g) * 2 - 1, torch.randn(size, 1, 8, 8, generator=g)
    fam = torch.rand(1, 1, 8, 8, generator=g)
    return x0, noise, torch.tensor([0, 10, 50, 99][:size]), fam


@pytest.mark.parametrize("noise_weight", [0.01, 0.5])
def test_amplified_forward_process_is_exactly_the_formula(noise_weight):
    x0, noise, t, fam = batch()
    a, s = ALPHAS[t].sqrt().view(-1, 1, 1, 1), (1 - ALPHAS[t]).sqrt().view(-1, 1, 1, 1)
    expected = a * x0 + s * ((1 + noise_weight * fam) * noise)
    got = add_noise(x0, noise, t, ALPHAS, fam_noise_scale(fam, noise_weight))
    assert torch.equal(got, expected)
    assert torch.equal(amplified_noise(noise, fam, noise_weight), noise * (1 + noise_weight * fam))


def test_targets_reference_is_plain_noise_consistent_is_amplified():
    x0, noise, t, fam = batch()
    g = fam_noise_scale(fam, 0.2)
    assert torch.equal(fam_target(noise, g, "reference"), noise)
    assert torch.equal(fam_target(noise, g, "consistent"), (1 + 0.2 * fam) * noise)
    # the trainer's target from a plan with scaled_target True/False is the same thing
    assert torch.equal(training_target(x0, noise, t, ALPHAS, "epsilon", None), noise)
    assert torch.equal(training_target(x0, noise, t, ALPHAS, "epsilon", g), (1 + 0.2 * fam) * noise)
    # consistent in x0 form: x0 recovered exactly from x_t and the consistent target
    x_t = add_noise(x0, noise, t, ALPHAS, g)
    a, s = ALPHAS[t].sqrt().view(-1, 1, 1, 1), (1 - ALPHAS[t]).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close((x_t - s * fam_target(noise, g, "consistent")) / a, x0, rtol=0, atol=1e-5)


def test_protect_direction_lowers_the_noise_on_flaws():
    fam = torch.tensor([[[[0.0, 0.5, 1.0]]]])
    assert fam_noise_scale(fam, 0.4, "protect").flatten().tolist() == pytest.approx([1.0, 0.8, 0.6])
    with pytest.raises(ValueError, match="w_n"):
        fam_noise_scale(fam, 1.0, "protect")


def manual_gradcam(model, image, layer):
    """Grad-CAM of one image written out: hook the layer, weights = spatial mean of dY/dA, ReLU, bilinear, min-max."""
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    x = image.unsqueeze(0).clone().requires_grad_(True)
    score = model(x).sum()
    handle.remove()
    (grad,) = torch.autograd.grad(score, store["a"])
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * store["a"]).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=False)
    low, high = cam.min(), cam.max()
    return ((cam - low) / (high - low))[0].detach()


def test_batch_mean_fam_equals_the_mean_of_per_sample_gradcams():
    fh = build_highlighter(32, 1, width=8, seed=3)
    images = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    expected = torch.stack([manual_gradcam(fh, image, cam_layer(fh)) for image in images]).mean(0, keepdim=True)
    got = batch_mean_fam(flaw_maps(fh, images))
    assert got.shape == (1, 1, 32, 32)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def blob_data(count, seed):
    g = torch.Generator().manual_seed(seed)
    plain = torch.rand(count, 1, 32, 32, generator=g) * 0.6 - 0.8
    blob = plain.clone()
    blob[:, :, 8:16, 16:24] += 1.2  # a bright 8x8 square on one cell of the 4x4 CAM grid: the planted "flaw"
    return blob, plain


def blob_share(fam):
    """Share of the FAM's mass inside the blob (the blob covers 1/16 of the image); 0 for an all-zero map."""
    total = float(fam.sum())
    return float(fam[..., 8:16, 16:24].sum()) / total if total > 0 else 0.0


def test_highlighter_trained_on_a_planted_blob_puts_the_fam_peak_on_it_and_a_random_control_does_not():
    blob, plain = blob_data(96, seed=0)
    fh = build_highlighter(32, 1, width=16, seed=0)
    report = train_highlighter(fh, blob, plain, epochs=4, batch_size=16, lr=2e-3, seed=0)
    assert report.best_accuracy == 1.0
    test_blob, _ = blob_data(16, seed=1)
    fam = batch_mean_fam(flaw_maps(fh, test_blob))[0, 0]
    peak = divmod(int(fam.argmax()), 32)
    assert 8 <= peak[0] < 16 and 16 <= peak[1] < 24, f"FAM peak at {peak}, blob at rows 8-15, cols 16-23"
    assert blob_share(fam) > 0.25  # the blob is 1/16 of the image
    # control: the same highlighter trained on labels unrelated to the blob
    control = build_highlighter(32, 1, width=16, seed=0)
    mixed = torch.cat([blob[:48], plain[:48]]), torch.cat([blob[48:], plain[48:]])
    train_highlighter(control, *mixed, epochs=4, batch_size=16, lr=2e-3, seed=0)
    control_fam = batch_mean_fam(flaw_maps(control, test_blob))[0, 0]
    assert blob_share(control_fam) < 0.15


def test_evidence_generated_explains_the_negated_output():
    blob, plain = blob_data(96, seed=0)
    fh = build_highlighter(32, 1, width=16, seed=0)
    train_highlighter(fh, plain, blob, epochs=4, batch_size=16, lr=2e-3, seed=0)  # now the blob means "generated"
    test_blob, _ = blob_data(16, seed=1)
    assert blob_share(batch_mean_fam(flaw_maps(fh, test_blob, evidence="generated"))[0, 0]) > 0.25
    assert blob_share(batch_mean_fam(flaw_maps(fh, test_blob, evidence="real"))[0, 0]) < 0.15
