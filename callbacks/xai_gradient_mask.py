"""``XAIGradientMask``: xAI-GAN's explanation-guided generator gradient, as a callback (DESIGN.md §4).

In the generator step it explains D on the fake batch, turns the explanation into a mask ``M ∈ [0, 1]``
and returns a gradient function for the gradient w.r.t. ``fake``: ``g ⊙ (1 + α·M)`` (``rule="scale"``,
the paper's) or ``g ⊙ M`` (``rule="product"``). The callback only decides *when* and *for whom*; the
work is done by ``xai_train.explain`` (explainers, masks, free saliency) and ``xai_train.xaigan`` (rules,
selection, the reference mask), which can be called directly.

In a hand-written Accelerate loop (the ``# New Code #`` lines)::

    callbacks = CallbackList([XAIGradientMask()])                                    # New Code #
    state = TrainState(accelerator, max_steps=max_steps, models={"generator": G})   # New Code #
    ...
    fake = G(z)
    d_fake = D(fake)
    callbacks.on_generator_forward(state, fake, d_fake, accelerator.unwrap_model(D))  # New Code #
    accelerator.backward(generator_loss(d_fake))
    state.step += 1                                                                  # New Code #
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any

import einops
import torch
from torch import Tensor, nn

from xai_train.callback import Callback, GradFn, TrainState
from xai_train.checks import check_discriminator_output, check_generator_output
from xai_train.explain import (
    FREE_METHOD,
    METHODS,
    MaskResult,
    attribute,
    mask_statistics,
    saliency_grad_fn,
    scatter_mask,
    to_mask,
)
from xai_train.xaigan import (
    PRESETS,
    REFERENCE_METHODS,
    alpha_at,
    apply_rule,
    check_xaigan_options,
    is_active,
    reference_mask,
    reference_selection,
    rejected,
)

__all__ = ["PRESETS", "REFERENCE_METHODS", "XAIGradientMask"]


class XAIGradientMask(Callback):
    """Rescales the generator's gradient w.r.t. its output with a mask from an explanation of D.

    Args:
        method: ``"grad"`` (free saliency from the generator's own backward; default) or one of
            ``xai_train.explain.METHODS``. With ``preset="reference"`` the default is ``"saliency"``.
        explainer_options: options of the explainer (``attribute``'s ``bn_mode``/``output`` and the
            method's own, e.g. ``{"baselines": real_batch}`` for ``deeplift_shap``).
        rule: ``"scale"`` (g ⊙ (1 + α·M)) or ``"product"`` (g ⊙ M).
        alpha: α of the scale rule; 0.2 is the paper's value. α in [-1, 0) damps the gradient where the
            mask is high; α < -1 flips its sign there and is an error unless ``allow_sign_flip=True``.
        allow_sign_flip: accept α < -1 (an explicit opt-in; see ``xai_train.xaigan.check_alpha``).
        alpha_warmup_steps: α ramps linearly from ``start_step`` over this many steps (0 = no ramp).
        only_rejected: explain only fakes D rejects (logit < 0, i.e. sigmoid < 0.5); the others keep their
            gradient unchanged under either rule.
        start_step: first step with a mask (the paper starts at half of training).
        every_n_steps: mask every n-th step from ``start_step``; on the other steps the gradient is left
            unchanged (a mask from another batch would mean nothing).
        preset: ``None``, or ``"reference"`` to reproduce the reference code exactly: fakes with
            sigmoid(D) < 0.5 explained only when there are two or more, explanations of sigmoid(D),
            unexplained fakes filled with 1 before one batch-global min-max, NaN -> 0, no channel
            reduction. A reproduction aid for ablations, not a recommendation (it boosts the fakes that
            fooled D most). ``only_rejected`` and the mask options are not used by it; ``rule`` must be
            ``"scale"``; ``method="grad"`` is not possible (its fill value 1 is not scale-free).
        absolute, reduce, blur_sigma, scope: mask options (``xai_train.explain.to_mask``).
        state_key: checkpoint key (unique within a CallbackList).

    Every argument is checked here (``xai_train.xaigan.check_xaigan_options``, the same check as the
    ``xai`` config section): ``XAIGradientMask(0.2)`` is a TypeError, not a method called ``0.2``.
    ``on_generator_forward`` checks that ``fake`` is (B, C, H, W) and ``d_fake`` (B, 1), and warns once if
    ``state.step`` never advances while ``start_step``/``every_n_steps``/``alpha_warmup_steps`` need it.
    Fakes with NaN/Inf are an error (``attribute``); a NaN/Inf map (an fp16 gradient overflow with
    ``"grad"``, or attributions that overflowed) gives that sample an all-zero mask — its gradient is
    left unchanged under ``rule="scale"`` — and is counted in ``samples_degenerate``.

    Attributes:
        last_mask: (B, 1 or C, H, W) mask of the last masked step (zeros for unexplained samples), or None.
        last_fake: (B, C, H, W) the fakes it belongs to (detached).
        last_step: the step it was built in.
        last_stats: dict of floats: mask_mean, mask_entropy, fraction_explained, fraction_degenerate,
            explainer_seconds (wall time; on CUDA without synchronisation, so launch time).

    Example:
        >>> import torch
        >>> from accelerate import Accelerator
        >>> from xai_train import CallbackList, TrainState
        >>> D = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1))
        >>> fake = torch.randn(2, 1, 4, 4, requires_grad=True)
        >>> callbacks = CallbackList([XAIGradientMask()])
        >>> state = TrainState(Accelerator(cpu=True))
        >>> d_fake = D(fake)
        >>> _ = callbacks.on_generator_forward(state, fake, d_fake, D)
        >>> torch.nn.functional.softplus(-d_fake).mean().backward()
        >>> callbacks.callbacks[0].last_mask.shape
        torch.Size([2, 1, 4, 4])
    """

    def __init__(
        self,
        method: str | None = None,
        explainer_options: Mapping[str, Any] | None = None,
        *,
        rule: str = "scale",
        alpha: float = 0.2,
        allow_sign_flip: bool = False,
        alpha_warmup_steps: int = 0,
        only_rejected: bool = False,
        start_step: int = 0,
        every_n_steps: int = 1,
        preset: str | None = None,
        absolute: bool = True,
        reduce: str = "max",
        blur_sigma: float = 0.0,
        scope: str = "sample",
        state_key: str = "xai_gradient_mask",
    ) -> None:
        self.method, self.explainer_options = check_xaigan_options(
            method,
            explainer_options,
            rule=rule,
            alpha=alpha,
            allow_sign_flip=allow_sign_flip,
            alpha_warmup_steps=alpha_warmup_steps,
            only_rejected=only_rejected,
            start_step=start_step,
            every_n_steps=every_n_steps,
            preset=preset,
            absolute=absolute,
            reduce=reduce,
            blur_sigma=blur_sigma,
            scope=scope,
        )
        self.preset = preset
        self.rule = rule
        self.alpha = alpha
        self.alpha_warmup_steps = alpha_warmup_steps
        self.only_rejected = only_rejected
        self.start_step = start_step
        self.every_n_steps = every_n_steps
        self.mask_options = dict(absolute=absolute, reduce=reduce, blur_sigma=blur_sigma, scope=scope)
        self.state_key = state_key
        self._step_seen: tuple[int, int] | None = None  # (state.step, calls at it): a loop must advance it
        self._warned_stuck_step = False
        self.last_mask: Tensor | None = None
        self.last_fake: Tensor | None = None
        self.last_step: int | None = None
        self._last_stats: dict[str, Tensor | float] = {}
        # int or 0-dim tensor (accumulated without synchronising the device; read as ints)
        self.counters: dict[str, int | Tensor] = dict.fromkeys(
            ("masked_steps", "samples_seen", "samples_explained", "samples_degenerate"), 0
        )

    @staticmethod
    def valid_methods() -> tuple[str, ...]:
        """Every ``method`` this callback accepts."""
        return (FREE_METHOD, *METHODS)

    # --- the hook ----------------------------------------------------------------------------------
    def on_generator_forward(
        self, state: TrainState, fake: Tensor, d_fake: Tensor, discriminator: nn.Module
    ) -> GradFn | None:
        """Returns the masking GradFn on active steps, ``None`` otherwise (gradient unchanged)."""
        check_generator_output(fake)
        check_discriminator_output(d_fake, fake.shape[0])
        self._check_step_advances(state)
        if not is_active(state.step, start_step=self.start_step, every_n_steps=self.every_n_steps):
            return None
        alpha = alpha_at(state.step, self.alpha, start_step=self.start_step, warmup_steps=self.alpha_warmup_steps)
        explained = self._select(fake, d_fake)
        self.counters["masked_steps"] += 1
        self.counters["samples_seen"] += fake.shape[0]
        self.last_fake, self.last_step = fake.detach(), state.step
        if self.method == FREE_METHOD:
            return self._free_grad_fn(explained, alpha)

        started = time.perf_counter()
        images = fake.detach()
        if self.preset == "reference":
            subset = images[explained]
            attributions = (
                attribute(discriminator, subset, self.method, **self.explainer_options) if len(subset) else subset
            )
            mask = reference_mask(attributions, explained)
            self._record(
                MaskResult(mask, einops.reduce(mask, "b ... -> b", "max") == 0),
                explained,
                time.perf_counter() - started,
            )
            return (lambda grad: apply_rule(grad, mask, "scale", alpha)) if len(subset) else None
        if self.only_rejected:
            images = images[explained]
            if len(images) == 0:
                self._record(_empty_mask(fake, explained), explained, 0.0)
                return None
        # attribute() refuses non-finite fakes; non-finite attributions of finite fakes are counted as
        # degenerate (zero mask) instead of checked, which would cost a second device sync per step.
        attributions = attribute(discriminator, images, self.method, **self.explainer_options)
        result = to_mask(attributions, nonfinite="flag", **self.mask_options)
        if self.only_rejected:
            result = scatter_mask(result, explained)
        self._record(result, explained, time.perf_counter() - started)
        selected = explained if self.only_rejected else None
        return lambda grad: apply_rule(grad, result.mask, self.rule, alpha, selected)

    def _check_step_advances(self, state: TrainState) -> None:
        """Warns once when a loop calls the hook again and again without advancing ``state.step``.

        Up to ``gradient_accumulation_steps`` calls per step are normal (one per micro-batch).
        """
        schedule = self.start_step > 0 or self.every_n_steps > 1 or self.alpha_warmup_steps > 0
        step, calls = self._step_seen if self._step_seen is not None else (None, 0)
        calls = calls + 1 if step == state.step else 1
        self._step_seen = (state.step, calls)
        allowed = max(1, int(getattr(state.accelerator, "gradient_accumulation_steps", 1) or 1))
        if schedule and calls > allowed and not self._warned_stuck_step:
            self._warned_stuck_step = True
            warnings.warn(
                f"XAIGradientMask: on_generator_forward was called {calls} times at state.step={state.step}; "
                "start_step/every_n_steps/alpha_warmup_steps count steps, so advance state.step once per "
                "generator step (state.step += 1) in your loop",
                stacklevel=3,
            )

    def _select(self, fake: Tensor, d_fake: Tensor) -> Tensor:
        """(B,) bool: the fakes to explain."""
        if self.preset == "reference":
            return reference_selection(d_fake)
        if self.only_rejected:
            return rejected(d_fake)
        return torch.ones(fake.shape[0], dtype=torch.bool, device=fake.device)

    def _free_grad_fn(self, explained: Tensor, alpha: float) -> GradFn | None:
        """Free saliency: the mask is built from the gradient itself, inside the hook."""
        if self.only_rejected and not bool(explained.any()):
            self._record(_empty_mask(self.last_fake, explained), explained, 0.0)
            return None
        selected = explained if self.only_rejected else None
        results: list[MaskResult] = []
        inner = saliency_grad_fn(
            lambda grad, mask: apply_rule(grad, mask, self.rule, alpha, selected),
            explained=selected,
            on_mask=results.append,
            **self.mask_options,
        )

        def grad_fn(grad: Tensor) -> Tensor:
            started = time.perf_counter()
            new_grad = inner(grad)
            self._record(results.pop(), explained, time.perf_counter() - started)
            return new_grad

        return grad_fn

    # --- bookkeeping --------------------------------------------------------------------------------
    def _record(self, result: MaskResult, explained: Tensor, seconds: float) -> None:
        """Keeps the mask and its statistics (as tensors, so that no device synchronisation happens here)."""
        self.last_mask = result.mask.detach()
        self._last_stats = {**mask_statistics(result, explained), "explainer_seconds": seconds}
        self.counters["samples_explained"] += explained.sum()
        self.counters["samples_degenerate"] += (result.degenerate & explained).sum()

    @property
    def last_stats(self) -> dict[str, float]:
        """Statistics of the last mask, as floats (empty before the first one)."""
        return {k: float(v) for k, v in self._last_stats.items()}

    def state_dict(self) -> dict[str, Any]:
        return {k: int(v) for k, v in self.counters.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = sorted(set(state) - set(self.counters))
        if unknown:
            raise KeyError(f"XAIGradientMask.load_state_dict: unknown keys {unknown}; expected {sorted(self.counters)}")
        self.counters.update({k: int(v) for k, v in state.items()})


def _empty_mask(fake: Tensor, explained: Tensor) -> MaskResult:
    """The record of a step where no sample was explained: an all-zero (B, 1, H, W) mask."""
    return MaskResult(fake.new_zeros(fake.shape[0], 1, *fake.shape[2:]), torch.zeros_like(explained))
