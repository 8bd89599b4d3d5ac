"""Every bad argument of the public API (issue 8 §1) raises one clear exception, before any work.

Config sections built in Python, the xAI-GAN callback, ``attribute``/``to_mask``, a discriminator that does not
return (B, 1) logits, a flat generator output, non-finite batches and hand-written-loop misuse. The CLI side is
``tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from callbacks import XAIGradientMask
from xai_train import CallbackList, TrainState
from xai_train.config import ConfigError
from xai_train.config.common import DataConfig, EvalConfig
from xai_train.config.diffusion import ImportanceNoiseConfig, ImportanceWeightConfig
from xai_train.config.gan import GANExperiment, GANModelConfig, GANTrainConfig, XAIConfig
from xai_train.explain import attribute, to_mask
from xai_train.models import build_gan
from xai_train.trainers import GANTrainer

D_MESSAGE = "the discriminator must return (B, 1) logits, got (B, 2) (B = 4)"


@pytest.mark.parametrize(
    "build, error, pattern",
    [
        (lambda: GANTrainConfig(max_steps=-3), ConfigError, "max_steps=-3: must be >= 1"),
        (lambda: GANTrainConfig(lr_g=-1.0), ConfigError, "lr_g=-1.0: must be a finite number > 0"),
        (lambda: GANTrainConfig(d_steps_per_g_step=0), ConfigError, "d_steps_per_g_step=0"),
        (lambda: GANTrainConfig(loss="mse"), ConfigError, "loss='mse': choose one of 'bce'"),
        (lambda: GANModelConfig(arch="resnet"), ConfigError, "arch='resnet'"),
        (lambda: XAIConfig(method="foo"), ConfigError, "method='foo': unknown explainer"),
        (lambda: XAIConfig(alpha=-3.0), ConfigError, "alpha=-3.0: below -1"),
        (lambda: XAIConfig(preset="paper"), ConfigError, "preset='paper'"),
        (lambda: XAIConfig(every_n_steps=0), ConfigError, "every_n_steps=0"),
        (lambda: EvalConfig(metrics=("bogus",)), ConfigError, "unknown 'bogus'"),
        (lambda: DataConfig(fraction=1.5), ConfigError, "fraction=1.5"),
        (lambda: GANExperiment(data=DataConfig(image_size=48)), ConfigError, "data.image_size=48"),
        (lambda: ImportanceWeightConfig(method="foo"), ConfigError, "method='foo'"),
        (lambda: ImportanceNoiseConfig(method="foo"), ConfigError, "method='foo'"),
        (lambda: XAIGradientMask(0.2), TypeError, r"method=0.2: .*did you mean alpha=0.2"),
        (lambda: XAIGradientMask("foo"), ValueError, "method='foo': unknown explainer"),
        (lambda: XAIGradientMask(alpha=-3), ValueError, "alpha=-3: below -1"),
        (lambda: XAIGradientMask(alpha=float("nan")), ValueError, "alpha=nan: must be finite"),
        (lambda: XAIGradientMask(alpha="0.2"), TypeError, "alpha='0.2': must be a number"),
        (lambda: XAIGradientMask(every_n_steps=0), ValueError, "every_n_steps=0: must be >= 1"),
        (lambda: XAIGradientMask(start_step=2.5), TypeError, "start_step=2.5: must be an integer"),
        (lambda: XAIGradientMask(blur_sigma=-1), ValueError, "blur_sigma=-1"),
        (lambda: XAIGradientMask(explainer_options=[1]), TypeError, "explainer_options=\\[1\\]: must be a mapping"),
        (lambda: XAIGradientMask("saliency", {"n_steps": 3}), TypeError, "explainer_options=.*n_steps"),
        (lambda: build_gan("dcgan", image_size=48, channels=1), ValueError, "supported sizes: 32, 64"),
        (lambda: to_mask(torch.rand(2, 3, 4)), ValueError, r"\(B, C, H, W\)"),
        (lambda: to_mask(torch.rand(2, 1, 4, 4).numpy()), TypeError, "tensor of attributions, got ndarray"),
        (lambda: XAIGradientMask("lime", {"n_samples": -1}), ValueError, "n_samples must be a whole number >= 1"),
        (lambda: XAIGradientMask("saliency", {"abs": "no"}), ValueError, "abs='no' must be true or false"),
        (lambda: DataConfig(name="mnist"), ConfigError, "set data.root=<folder with the MNIST IDX files"),
        (
            lambda: CallbackList([XAIGradientMask]),
            TypeError,
            r"got the class XAIGradientMask: pass XAIGradientMask\(...\)",
        ),
        (lambda: CallbackList([object()]), TypeError, "callbacks must be Callback instances"),
        (lambda: CallbackList().append(XAIGradientMask), TypeError, "got the class XAIGradientMask"),
    ],
)
def test_api_bad_arguments(build, error, pattern):
    with pytest.raises(error, match=pattern):
        build()


def test_api_opt_in_allows_a_sign_flip():
    assert XAIGradientMask(alpha=-3, allow_sign_flip=True).alpha == -3
    assert XAIConfig(alpha=-3.0, allow_sign_flip=True).alpha == -3.0


class TwoLogits(nn.Module):
    """A D that returns two logits per image (a classifier head): breaks the (B, 1) contract."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))

    def forward(self, x):
        return self.net(x)


def test_d_output_not_b1_gives_the_same_message_everywhere():
    d, images = TwoLogits(), torch.randn(4, 1, 4, 4)
    messages = []
    with pytest.raises(ValueError) as err:
        attribute(d, images, "saliency")
    messages.append(str(err.value))
    state = TrainState(Accelerator(cpu=True))
    for method in ("grad", "saliency"):  # the free-saliency path and the explainer path
        fake = images.clone().requires_grad_()
        with pytest.raises(ValueError) as err:
            XAIGradientMask(method).on_generator_forward(state, fake, d(fake), d)
        messages.append(str(err.value))
    with pytest.raises(ValueError) as err:
        CallbackList([]).on_generator_forward(state, images.clone().requires_grad_(), d(images), d)
    messages.append(str(err.value))
    assert messages == [D_MESSAGE] * 4


def test_d_output_not_b1_stops_the_gan_trainer_at_its_first_step():
    class Generator(nn.Module):
        latent_dim = 3

        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 16)

        def forward(self, z):
            return torch.tanh(self.net(z)).reshape(-1, 1, 4, 4)

    config = GANTrainConfig(batch_size=4, max_steps=2, sample_every=0, checkpoint_every=0)
    trainer = GANTrainer(Generator(), TwoLogits(), torch.rand(8, 1, 4, 4) * 2 - 1, config, cpu=True)
    with pytest.raises(ValueError, match=re.escape(D_MESSAGE)):
        trainer.train()
    assert trainer.state.step == 0


def test_flat_generator_output_is_named_before_the_backward():
    d = nn.Sequential(nn.Linear(784, 1))
    fake = torch.randn(4, 784, requires_grad=True)
    state = TrainState(Accelerator(cpu=True))
    callbacks = CallbackList([XAIGradientMask()])
    with pytest.raises(
        ValueError, match=re.escape("the generator output `fake` must be images (B, C, H, W), got (B, 784)")
    ):
        callbacks.on_generator_forward(state, fake, d(fake), d)
    assert fake.grad is None and fake.grad_fn is None  # nothing was hooked: the error came before any backward


def test_non_finite_batches_are_errors_not_zero_masks():
    d = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    images = torch.randn(4, 1, 4, 4)
    images[2, 0, 1, 1] = float("nan")
    with pytest.raises(
        ValueError, match=r"attribute\(\): the images contain NaN or Inf in 1 of 4 samples \(first: sample 2\)"
    ):
        attribute(d, images, "saliency")
    fake = images.clone().requires_grad_()
    with pytest.raises(ValueError, match=r"the images contain NaN or Inf in 1 of 4 samples"):
        XAIGradientMask("saliency").on_generator_forward(TrainState(Accelerator(cpu=True)), fake, d(fake), d)
    attributions = torch.rand(4, 1, 4, 4)
    attributions[1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"to_mask\(\): the attributions contain NaN or Inf in 1 of 4 samples"):
        to_mask(attributions)
    flagged = to_mask(attributions, nonfinite="flag")  # the documented, counted outcome (free saliency uses it)
    assert flagged.degenerate.tolist() == [False, True, False, False] and flagged.num_degenerate == 1
    assert torch.equal(flagged.mask[0], to_mask(attributions[[0]]).mask[0])  # the other samples are unaffected


def test_a_second_on_generator_forward_on_one_fake_is_an_error():
    d = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    fake = torch.randn(2, 1, 4, 4, requires_grad=True)
    out = fake * 1.0
    state = TrainState(Accelerator(cpu=True))
    callbacks = CallbackList([XAIGradientMask(alpha=1.0)])
    callbacks.on_generator_forward(state, out, d(out), d)
    with pytest.raises(ValueError, match="already called for this `fake`"):
        callbacks.on_generator_forward(state, out, d(out), d)
    w = torch.arange(16.0).reshape(1, 1, 4, 4).expand(2, 1, 4, 4)
    (out * w).sum().backward()  # one hook: g ⊙ (1 + αM) with M = w / 15 (free saliency), never (1 + αM)²
    assert torch.allclose(fake.grad, w * (1 + w / 15))
    fresh = fake * 1.0  # the next forward is fine
    assert callbacks.on_generator_forward(state, fresh, d(fresh), d) is not None


def caught_warnings(callback, steps):
    d = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    state = TrainState(Accelerator(cpu=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in steps:
            state.step = step
            fake = torch.randn(2, 1, 4, 4, requires_grad=True)
            callback.on_generator_forward(state, fake, d(fake), d)
    return [w for w in caught if "advance state.step" in str(w.message)]


def test_a_loop_that_never_advances_the_step_warns_once():
    assert len(caught_warnings(XAIGradientMask(start_step=5), [0] * 6)) == 1
    assert len(caught_warnings(XAIGradientMask(every_n_steps=2), [0, 0])) == 1
    assert len(caught_warnings(XAIGradientMask(alpha_warmup_steps=3), [0, 0])) == 1
    assert caught_warnings(XAIGradientMask(start_step=5), range(6)) == []  # a loop that advances it
    assert caught_warnings(XAIGradientMask(), [0] * 6) == []  # nothing depends on the step


@pytest.mark.parametrize(
    "method, options, pattern",
    [
        ("integrated_gradients", {"method": "foo"}, "method='foo' is not one of: riemann_left"),
        ("deeplift_shap", {"baselines": 5}, "baselines must be a tensor, got int 5"),
        ("occlusion", {"baselines": "grey"}, "baselines must be a number or a tensor"),
        ("gradcam", {"layer": "features.3"}, "layer must be a module of D"),
        ("occlusion", {"window": 0}, "window must be None \\(the default\\) or a whole number >= 1; got 0"),
        ("occlusion", {"stride": [2, 2]}, "stride must be None"),
    ],
)
def test_explainer_option_values_are_checked_before_the_call(method, options, pattern):
    _, discriminator = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
    with pytest.raises(ValueError, match=pattern):
        attribute(discriminator, torch.randn(2, 1, 32, 32), method, **options)
    with pytest.raises(ValueError, match=pattern):
        XAIGradientMask(method, options)  # the callback (and xai.explainer_options) fail at construction


def test_integrated_gradients_method_option_reaches_captum():
    """IG's own ``method`` option collided with attribute()'s argument ("got multiple values"); it now passes."""
    from captum.attr import IntegratedGradients
    from captum.attr._utils.approximation_methods import SUPPORTED_METHODS

    from xai_train.explain.base import CHOICE_OPTIONS

    assert set(CHOICE_OPTIONS["integrated_gradients", "method"]) == set(SUPPORTED_METHODS)  # the installed captum
    torch.manual_seed(0)
    _, discriminator = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
    discriminator.eval()
    images = torch.randn(3, 1, 32, 32)
    ours = attribute(discriminator, images, "integrated_gradients", method="riemann_trapezoid", n_steps=5)
    theirs = IntegratedGradients(discriminator).attribute(images, baselines=0.0, n_steps=5, method="riemann_trapezoid")
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    default = attribute(discriminator, images, "integrated_gradients", n_steps=5)  # gausslegendre differs
    assert not torch.allclose(ours, default, atol=1e-6)
