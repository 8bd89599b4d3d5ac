import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xai_train.counterfactual import GANDecoder
from xai_train.counterfactual.ganmex import (
    class_attribution,
    ganmex_loss,
    latent_baseline,
    mass_inside,
    simple_baselines,
    train_translator,
)
from xai_train.data.parts_shapes import make_parts_shapes


def _parts_classifier() -> nn.Module:
    # Module activations only (DeepLift replaces each activation module's gradient).
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, 2, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 2),
    )


def test_ganmex_loss_is_the_papers_objective():
    torch.manual_seed(0)
    classifier, critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    x, candidate, targets = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4), torch.tensor([0, 2, 1, 2])
    expected = (
        (x - candidate).abs().sum(dim=(1, 2, 3))
        - torch.log(torch.sigmoid(critic(candidate)[:, 0]))
        - torch.log(classifier(candidate).softmax(dim=1)[torch.arange(4), targets])
    )
    torch.testing.assert_close(ganmex_loss(x, candidate, classifier, critic, targets), expected, atol=1e-5, rtol=0)


def test_latent_baseline_reaches_the_target_and_stays_close():
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8)))
    generator.latent_dim = 4
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(64, 2, bias=False))
    with torch.no_grad():
        classifier[1].weight.copy_(torch.stack([-torch.ones(64), torch.ones(64)]) * 0.2)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    decoder = GANDecoder(generator)
    z0 = torch.randn(6, 4)
    images = decoder.decode(z0)
    target = classifier(images).argmin(dim=1)
    # sim_weight 0.01: with the summed L1 at weight 1, staying at x beats flipping the class in this toy.
    baseline = latent_baseline(
        classifier, decoder, critic, images, target, latents=z0, steps=200, lr=0.05, sim_weight=0.01
    )
    before = ganmex_loss(images, images, classifier, critic, target, sim_weight=0.01)
    after = ganmex_loss(images, baseline, classifier, critic, target, sim_weight=0.01)
    assert bool((after < before).all())
    assert bool((classifier(baseline).argmax(dim=1) == target).all())


def test_attribution_with_a_baseline_is_complete():
    # IG and DeepLift with the per-image baseline b: attributions sum to f_c(x) − f_c(b).
    torch.manual_seed(0)
    classifier = _parts_classifier().eval()
    x, b = torch.rand(3, 1, 16, 16) * 2 - 1, torch.rand(3, 1, 16, 16) * 2 - 1
    gap = classifier(x)[:, 1] - classifier(b)[:, 1]
    for method, options in (("integrated_gradients", {"n_steps": 200}), ("deeplift", {})):
        attributions = class_attribution(classifier, x, 1, method, baselines=b, **options)
        torch.testing.assert_close(attributions.sum(dim=(1, 2, 3)), gap.detach(), atol=2e-3, rtol=0)


@pytest.mark.slow
def test_ganmex_baseline_puts_attribution_in_the_differing_part():
    # Parts-shapes (dot vs ring, 32×32): classes differ only inside the part region (5% of the image). The
    # translator's baseline for "the other class" puts 0.48 of IG/DeepLift mass there, zero 0.19, blur 0.34,
    # mean 0.35 (measured; λ_sim scaled to 300 and lr 2e-3 for 400 CPU steps); random maps 0.052 = the area.
    data = make_parts_shapes(2564, image_size=32, seed=0)
    images, labels, masks = data.images, data.labels, data.masks
    torch.manual_seed(0)
    classifier = _parts_classifier()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(250):
        batch = torch.randint(0, 2500, (64,), generator=generator)
        loss = F.cross_entropy(classifier(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    classifier.eval().requires_grad_(False)
    translator = train_translator(
        classifier, images[:2500], 2, steps=400, batch_size=32, width=16, lambda_sim=300.0, lr_g=2e-3
    )
    x, y, m = images[2500:], labels[2500:], masks[2500:]
    assert float((classifier(x).argmax(dim=1) == y).float().mean()) > 0.95
    baselines = simple_baselines(x, images[:2500].mean(dim=0))
    baselines["ganmex"] = translator(x, 1 - y)
    assert float((classifier(baselines["ganmex"]).argmax(dim=1) == 1 - y).float().mean()) > 0.9
    for method in ("integrated_gradients", "deeplift"):
        mass = {}
        for name, baseline in baselines.items():
            per_class = [
                mass_inside(class_attribution(classifier, x[y == c], c, method, baselines=baseline[y == c]), m[y == c])
                for c in (0, 1)
            ]
            mass[name] = float(torch.cat(per_class).mean())
        assert mass["ganmex"] > max(mass["zero"], mass["blur"], mass["mean"]) + 0.05, (method, mass)
    random_mass = float(mass_inside(torch.rand(x.shape, generator=generator), m).mean())
    assert abs(random_mass - float(m.mean())) < 0.01


def test_deeplift_shap_over_several_ganmex_baselines_is_their_deeplift_mean():
    # DeepLiftShap with one image's GANMEX baselines (e.g. one per other class) = mean of DeepLift over them.
    torch.manual_seed(0)
    classifier = _parts_classifier().eval()
    x, baselines = torch.rand(1, 1, 16, 16) * 2 - 1, torch.rand(3, 1, 16, 16) * 2 - 1
    shap = class_attribution(classifier, x, 0, "deeplift_shap", baselines=baselines, n_baselines=3)
    each = torch.cat([class_attribution(classifier, x, 0, "deeplift", baselines=b[None]) for b in baselines])
    torch.testing.assert_close(shap, each.mean(dim=0, keepdim=True), atol=1e-5, rtol=1e-4)
