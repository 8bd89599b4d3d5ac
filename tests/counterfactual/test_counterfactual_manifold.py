import math

import pytest
import torch
from torch import nn

from xai_train.counterfactual import (
    FlowDecoder,
    GANDecoder,
    checkerboard,
    invert_generator,
    manifold_counterfactuals,
    pixel_adversarial,
    train_flow,
)
from xai_train.counterfactual.oracle import oracle_agreement, train_oracle
from xai_train.counterfactual.toy import HalfPlaneClassifier, circle_distance, sample_circle
from xai_train.data import build_dataset
from xai_train.metrics.classifier import ClassifierRecipe, train_classifier


@pytest.fixture(scope="module")
def circle_flow() -> FlowDecoder:
    flow = train_flow(sample_circle(2000, noise=0.03), num_couplings=8, hidden=64, steps=700, lr=3e-3)
    return FlowDecoder(flow, shape=(1, 1, 2))


def _upper_arc(num: int) -> torch.Tensor:
    angle = torch.linspace(0.6, math.pi - 0.6, num)
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1).reshape(num, 1, 1, 2)


def test_toy_counterfactuals_stay_on_the_circle_and_adversarial_examples_leave_it(circle_flow):
    # The paper's toy: class 1 = upper half. From points on the upper arc to class 0, the flow's counterfactuals
    # walk along the circle (within 0.08 of it; data noise std 0.03); the pixel-space attack, at the same
    # target, goes straight down and ends inside the circle (0.14 or more from it, 0.47 on average).
    points, classifier = _upper_arc(32), HalfPlaneClassifier(sharpness=10.0)
    counterfactual = manifold_counterfactuals(classifier, circle_flow, points, 0, lr=5e-2, max_steps=2000)
    adversarial = pixel_adversarial(classifier, points, 0, lr=1e-2, max_steps=1000)
    assert bool(counterfactual.success.all()) and bool(adversarial.success.all())
    assert bool((counterfactual.counterfactuals[..., 1] < 0).all())  # they really crossed to the lower half
    on_manifold = circle_distance(counterfactual.counterfactuals.reshape(-1, 2))
    off_manifold = circle_distance(adversarial.counterfactuals.reshape(-1, 2))
    assert float(on_manifold.max()) < 0.08
    assert float(off_manifold.min()) > 0.1 and float(off_manifold.mean()) > 0.3


def test_per_image_stopping_makes_results_independent_of_the_batch(circle_flow):
    points, classifier = _upper_arc(6), HalfPlaneClassifier()
    together = manifold_counterfactuals(classifier, circle_flow, points, 0, lr=5e-2, max_steps=2000)
    alone = manifold_counterfactuals(classifier, circle_flow, points[2:3], 0, lr=5e-2, max_steps=2000)
    assert len(set(together.steps.tolist())) > 1  # the images stopped at different steps
    torch.testing.assert_close(together.counterfactuals[2:3], alone.counterfactuals, atol=1e-5, rtol=0)
    assert int(together.steps[2]) == int(alone.steps[0])
    # An image stops as soon as it reaches p >= 0.99: one step earlier it was below.
    assert bool((together.target_probability >= 0.99).all())
    torch.testing.assert_close(
        together.heatmaps, (together.originals - together.counterfactuals).abs().sum(dim=1), atol=0, rtol=0
    )


def test_unknown_target_class_is_a_value_error(circle_flow):
    with pytest.raises(ValueError, match="unknown target class 5"):
        manifold_counterfactuals(HalfPlaneClassifier(), circle_flow, _upper_arc(2), 5)


class TinyGenerator(nn.Module):
    """z (B, 8) -> (B, 1, 8, 8) in [-1, 1]: a small non-linear generator with outputs of unit scale."""

    latent_dim = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8)))
        for param in self.net.parameters():
            nn.init.normal_(param, std=0.5)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def test_gan_inversion_recovers_images_of_the_generator():
    generator = TinyGenerator().eval()
    with torch.no_grad():
        images = generator(torch.randn(6, 8, generator=torch.Generator().manual_seed(1)))
    start = generator(torch.randn(6, 8, generator=torch.Generator().manual_seed(0)))  # inversion's start
    assert bool((((start - images) ** 2).flatten(1).mean(dim=1) > 0.05).all())  # far from the answer at first
    inversion = invert_generator(generator, images, 8, mse_tol=1e-3, max_steps=2000, seed=0)
    assert bool((inversion.mse < 1e-3).all()), inversion.mse
    assert bool((inversion.steps < 2000).all()) and bool((inversion.steps > 0).all())
    torch.testing.assert_close(
        inversion.mse, ((generator(inversion.latents) - images) ** 2).flatten(1).mean(dim=1), atol=1e-7, rtol=0
    )


def test_gan_decoder_counterfactual_reaches_target():
    generator = TinyGenerator()
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(64, 2, bias=False))
    with torch.no_grad():
        classifier[1].weight.copy_(torch.stack([-torch.ones(64), torch.ones(64)]) * 0.3)  # class 1: bright images
    decoder = GANDecoder(generator, max_steps=300)
    images = decoder.decode(torch.randn(4, 8, generator=torch.Generator().manual_seed(2)))
    target = classifier(images).argmin(dim=1)
    result = manifold_counterfactuals(classifier, decoder, images, target, lr=5e-2, max_steps=500)
    assert bool(result.success.all()) and decoder.last_inversion is not None
    assert float(decoder.last_inversion.mse.max()) < 1e-2  # the paper's stopping rule held


@pytest.mark.slow
def test_digits_oracle_agrees_with_manifold_counterfactuals_not_with_adversarial_examples():
    # Explained classifier: the project's CNN (seed 0); oracle: an MLP (seed 1). 32 digits, target (y + 1) % 10.
    digits = build_dataset("digits", image_size=8)
    images, labels = digits.images, digits.labels
    recipe = ClassifierRecipe(width=8, num_features=32, epochs=4, max_steps=200, max_shift=0, seed=0)
    classifier, _ = train_classifier(images, labels, recipe)
    oracle, oracle_accuracy = train_oracle(images, labels, hidden=128, steps=800, seed=1)
    assert oracle_accuracy > 0.9
    flow = train_flow(
        images.flatten(1), hidden=96, steps=600, lr=2e-3, dequantize=2 / 16, mask=checkerboard(8, 8), seed=0
    )
    decoder = FlowDecoder(flow, shape=(1, 8, 8))
    pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:32]
    x, targets = images[pick], (labels[pick] + 1) % 10
    # p_stop 0.9: this briefly trained classifier is rarely 99% sure of anything.
    counterfactual = manifold_counterfactuals(classifier, decoder, x, targets, lr=5e-2, max_steps=300, p_stop=0.9)
    adversarial = pixel_adversarial(classifier, x, targets, lr=5e-3, max_steps=300, p_stop=0.9)
    agree_cf = oracle_agreement(oracle, counterfactual.counterfactuals, targets).float().mean()
    agree_adv = oracle_agreement(oracle, adversarial.counterfactuals, targets).float().mean()
    fooled = (classifier(adversarial.counterfactuals).argmax(dim=1) == targets).float().mean()
    assert float(fooled) > 0.9  # the attack does fool the explained classifier (argmax; p_target may stay < 0.9)
    assert float(agree_cf) > 0.7 and float(agree_adv) < 0.4, (float(agree_cf), float(agree_adv))
