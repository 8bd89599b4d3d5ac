"""Gradient rules, selection and schedules of xAI-GAN."""

from __future__ import annotations

import pytest
import torch

from xai_train.xaigan import alpha_at, apply_rule, is_active, product_grad, rejected, scale_grad


@pytest.fixture
def grad() -> torch.Tensor:
    return torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def mask() -> torch.Tensor:
    return torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))


def test_scale_and_product(grad, mask):
    assert torch.equal(scale_grad(grad, mask, 0.2), grad * (1 + 0.2 * mask))
    assert torch.equal(product_grad(grad, mask), grad * mask)
    assert torch.equal(scale_grad(grad, torch.zeros_like(mask), 0.2), grad)


def test_rules_keep_the_gradient_dtype(mask):
    half = torch.randn(3, 2, 4, 4).to(torch.bfloat16)
    assert scale_grad(half, mask, 0.2).dtype == torch.bfloat16


@pytest.mark.parametrize("rule", ["scale", "product"])
def test_rules_are_positively_homogeneous(grad, mask, rule):
    for c in (0.125, 3.0, 1024.0):
        assert torch.allclose(apply_rule(c * grad, mask, rule, 0.2), c * apply_rule(grad, mask, rule, 0.2))


@pytest.mark.parametrize("rule", ["scale", "product"])
def test_unexplained_samples_keep_their_gradient(grad, mask, rule):
    explained = torch.tensor([False, True, False])
    out = apply_rule(grad, mask, rule, 0.5, explained)
    assert torch.equal(out[[0, 2]], grad[[0, 2]])
    assert torch.equal(out[1], apply_rule(grad, mask, rule, 0.5)[1])


def test_unknown_rule(grad, mask):
    with pytest.raises(ValueError, match="unknown rule 'add'; choose one of: scale, product"):
        apply_rule(grad, mask, "add", 0.2)


def test_rejected_is_logit_below_zero():
    assert rejected(torch.tensor([[-0.1], [0.0], [0.1], [-5.0]])).tolist() == [True, False, False, True]


def test_schedule():
    assert [is_active(s, start_step=3, every_n_steps=2) for s in range(8)] == [
        False, False, False, True, False, True, False, True,
    ]  # fmt: skip
    assert alpha_at(0, 0.2) == 0.2
    assert [alpha_at(s, 0.4, start_step=2, warmup_steps=4) for s in (0, 2, 3, 5, 9)] == pytest.approx(
        [0.0, 0.1, 0.2, 0.4, 0.4]
    )
    with pytest.raises(ValueError, match="every_n_steps"):
        is_active(0, every_n_steps=0)
