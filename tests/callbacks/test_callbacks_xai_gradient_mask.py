"""XAIGradientMask through CallbackList: the hooked gradient, selection, schedule, presets, state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from callbacks import XAIGradientMask
from xai_train import CallbackList, TrainState
from xai_train.explain import attribute, to_mask
from xai_train.xaigan import product_grad, reference_mask, reference_selection, scale_grad


def tiny_d(seed: int = 0) -> nn.Module:
    """(B, 1, 8, 8) -> (B, 1); BatchNorm in train mode, as in a generator step.

    momentum=0 keeps the running statistics fixed across the repeated forwards of a test, so that the
    eval-mode explanation is the same in the reference computation and in the hooked step.
    """
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(4, 8, 4, 2, 1), nn.BatchNorm2d(8, momentum=0.0), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(8 * 2 * 2, 1),
    )  # fmt: skip


def g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-d_fake).mean()


@pytest.fixture
def fake() -> torch.Tensor:
    return torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(3)).tanh()


@pytest.fixture
def state() -> TrainState:
    return TrainState(Accelerator(cpu=True), max_steps=10)


def raw_gradient(d: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    x = fake.clone().requires_grad_()
    g_loss(d(x)).backward()
    return x.grad


def hooked_gradient(callback, d, fake, state) -> tuple[torch.Tensor, object]:
    """What a generator step with ``CallbackList([callback])`` sends into G."""
    x = fake.clone().requires_grad_()
    d_fake = d(x)
    grad_fn = CallbackList([callback]).on_generator_forward(state, x, d_fake, d)
    g_loss(d_fake).backward()
    return x.grad, grad_fn


def test_captum_mask_gives_exactly_g_times_one_plus_alpha_m(fake, state):
    d = tiny_d()
    expected_mask = to_mask(attribute(d, fake, "saliency")).mask  # known before the backward
    g = raw_gradient(d, fake)
    got, _ = hooked_gradient(XAIGradientMask("saliency", alpha=0.3), d, fake, state)
    assert torch.equal(got, g * (1 + 0.3 * expected_mask))


def test_free_saliency_gives_exactly_g_times_one_plus_alpha_m_of_g(fake, state):
    d = tiny_d()
    g = raw_gradient(d, fake)
    callback = XAIGradientMask()  # method "grad"
    got, _ = hooked_gradient(callback, d, fake, state)
    mask = to_mask(g).mask
    assert torch.equal(got, scale_grad(g, mask, 0.2))
    assert torch.equal(callback.last_mask, mask)


@pytest.mark.parametrize("method", ["grad", "saliency"])
def test_product_rule(method, fake, state):
    d = tiny_d()
    g = raw_gradient(d, fake)
    mask = to_mask(g if method == "grad" else attribute(d, fake, "saliency")).mask
    got, _ = hooked_gradient(XAIGradientMask(method, rule="product"), d, fake, state)
    assert torch.equal(got, product_grad(g, mask))


@pytest.mark.parametrize("method", ["grad", "saliency", "gradcam"])
@pytest.mark.parametrize("rule", ["scale", "product"])
def test_only_rejected_leaves_accepted_fakes_unchanged(method, rule, fake, state):
    d = tiny_d(seed=5)
    with torch.no_grad():
        d[-1].bias.fill_(-d(fake).median().item() + d[-1].bias.item())  # about half rejected
    accepted = (d(fake) >= 0).flatten()
    assert 0 < accepted.sum() < len(fake)
    g = raw_gradient(d, fake)
    callback = XAIGradientMask(method, rule=rule, only_rejected=True)
    got, _ = hooked_gradient(callback, d, fake, state)
    assert torch.equal(got[accepted], g[accepted])
    assert not torch.equal(got[~accepted], g[~accepted])
    assert (callback.last_mask[accepted] == 0).all()
    assert callback.last_stats["fraction_explained"] == pytest.approx((~accepted).float().mean().item())


def test_only_rejected_with_nothing_rejected_changes_nothing(fake, state):
    d = tiny_d()
    with torch.no_grad():
        d[-1].bias.fill_(100.0)
    for method in ("grad", "saliency"):
        callback = XAIGradientMask(method, only_rejected=True)
        assert callback.on_generator_forward(state, fake.clone().requires_grad_(), d(fake), d) is None
        assert callback.last_stats["fraction_explained"] == 0.0


def test_start_step_and_every_n_steps_return_none_when_off(fake, state):
    d = tiny_d()
    callback = XAIGradientMask("saliency", start_step=3, every_n_steps=2)
    active = []
    for step in range(8):
        state.step = step
        active.append(callback.on_generator_forward(state, fake.clone().requires_grad_(), d(fake), d) is not None)
    assert active == [False, False, False, True, False, True, False, True]
    state.step = 4
    g = raw_gradient(d, fake)
    got, grad_fn = hooked_gradient(callback, d, fake, state)
    assert grad_fn is None and torch.equal(got, g)


def test_alpha_ramp(fake, state):
    d = tiny_d()
    g = raw_gradient(d, fake)
    mask = to_mask(g).mask
    state.step = 11
    got, _ = hooked_gradient(XAIGradientMask(alpha=0.4, start_step=10, alpha_warmup_steps=4), d, fake, state)
    assert torch.equal(got, scale_grad(g, mask, 0.2))


def test_returned_grad_fn_is_positively_homogeneous(fake, state):
    d = tiny_d()
    g = raw_gradient(d, fake)
    for method in ("grad", "saliency"):
        grad_fn = XAIGradientMask(method, blur_sigma=0.5).on_generator_forward(state, fake.requires_grad_(), d(fake), d)
        for c in (0.5, 2.0**12):
            assert torch.equal(grad_fn(c * g), c * grad_fn(g))


def test_reference_preset_reproduces_the_reference_mask(fake, state):
    d = tiny_d(seed=5)
    with torch.no_grad():
        d[-1].bias.fill_(-d(fake).median().item() + d[-1].bias.item())
    explained = reference_selection(d(fake))
    assert 2 <= explained.sum() < len(fake)
    attributions = attribute(d, fake[explained], "saliency", output="probability", abs=True)
    mask = reference_mask(attributions, explained)
    g = raw_gradient(d, fake)
    callback = XAIGradientMask(preset="reference")
    got, _ = hooked_gradient(callback, d, fake, state)
    assert torch.equal(got, scale_grad(g, mask, 0.2))
    assert torch.equal(callback.last_mask, mask) and callback.last_mask.shape == fake.shape


def test_reference_preset_with_one_rejected_fake_changes_nothing(fake, state):
    d = tiny_d()
    with torch.no_grad():
        d[-1].bias.fill_(0.0)
        d[-1].bias.fill_(-sorted(d(fake).flatten().tolist())[0] * 0.5)  # only the lowest logit stays < 0
    assert (d(fake) < 0).sum() == 1
    assert XAIGradientMask(preset="reference").on_generator_forward(state, fake, d(fake), d) is None


def test_stats_and_state_round_trip(fake, state, tmp_path):
    d = tiny_d()
    callback = XAIGradientMask("saliency")
    for step in range(2):
        state.step = step
        hooked_gradient(callback, d, fake, state)
    stats = callback.last_stats
    assert set(stats) == {
        "mask_mean",
        "mask_entropy",
        "fraction_explained",
        "fraction_degenerate",
        "explainer_seconds",
    }
    assert 0 < stats["mask_mean"] < 1 and 0 < stats["mask_entropy"] <= 1 and stats["fraction_explained"] == 1
    callbacks = CallbackList([callback])
    callbacks.save(tmp_path)
    restored = XAIGradientMask("saliency")
    CallbackList([restored]).load(tmp_path)
    assert restored.state_dict() == callback.state_dict() == {
        "masked_steps": 2, "samples_seen": 16, "samples_explained": 16, "samples_degenerate": 0,
    }  # fmt: skip
    with pytest.raises(KeyError, match="unknown keys"):
        restored.load_state_dict({"steps": 1})


def test_clear_errors():
    with pytest.raises(ValueError, match="method='salincy': unknown explainer; choose one of: grad, saliency"):
        XAIGradientMask("salincy")
    with pytest.raises(ValueError, match="method from: saliency, deeplift_shap"):
        XAIGradientMask("grad", preset="reference")
    with pytest.raises(ValueError, match="rule must be 'scale'"):
        XAIGradientMask(preset="reference", rule="product")
    with pytest.raises(ValueError, match="unknown preset"):
        XAIGradientMask(preset="paper")
    with pytest.raises(ValueError, match="unknown rule"):
        XAIGradientMask(rule="add")
    with pytest.raises(ValueError, match="unknown reduce"):
        XAIGradientMask(reduce="sum")
    assert XAIGradientMask.valid_methods()[:2] == ("grad", "saliency")


def test_explainer_options_are_checked_when_the_callback_is_built():
    with pytest.raises(TypeError, match="unknown option.*n_step"):
        XAIGradientMask("integrated_gradients", {"n_step": 4}, start_step=10_000)
    with pytest.raises(ValueError, match="unknown bn_mode"):
        XAIGradientMask("saliency", {"bn_mode": "train"})
    with pytest.raises(ValueError, match="method 'grad' takes no explainer options"):
        XAIGradientMask("grad", {"abs": True})
