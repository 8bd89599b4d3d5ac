"""The callback protocol: ``Callback``, ``CallbackList`` and ``TrainState`` (DESIGN.md §3).

Hooks are called on every rank, in list order. A hook that returns ``None`` changes nothing; a hook that
changes behaviour returns the change (a gradient function, a noise plan, a loss map) instead of mutating
its arguments. ``CallbackList`` is what the trainers call, and what a hand-written Accelerate loop calls
with about four added lines (see ``recipes/custom_loop.py``).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from einops import rearrange
from torch import Tensor, nn

from xai_train.checks import check_discriminator_output, check_generator_output
from xai_train.errors import UserError

if TYPE_CHECKING:
    from accelerate import Accelerator

GradFn = Callable[[Tensor], Tensor]
"""Maps the gradient w.r.t. ``fake`` (B, C, H, W) to a new one. Must be positively homogeneous."""

CALLBACK_STATE_FILE = "callbacks.pt"


@dataclasses.dataclass(frozen=True)
class NoisePlan:
    """How a diffusion training step noises its clean batch ``x0`` and weighs the denoising loss.

    The trainer (or a hand-written loop) builds ``x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·noise_scale⊙noise`` ONCE, after
    every ``on_diffusion_noise`` hook, stores it in ``noisy`` and hands the plan to ``on_diffusion_noised``.
    The loss is ``mean(timestep_weight · loss_weight · (model(x_t, t) − target)²)`` (before ``on_loss``).
    A callback that sets a factor that is already set multiplies it with the one in the plan, so the result
    does not depend on the callbacks' order.

    Attributes:
        noise: (B, C, H, W) standard Gaussian noise ``ε``.
        timesteps: (B,) integer timesteps.
        noise_scale: per-pixel factor ``g`` on the noise, broadcastable to (B, C, H, W); ``None`` = isotropic.
            ``g < 1`` protects a pixel (importance-scheduled noise), ``g > 1`` amplifies its noise.
        loss_weight: per-pixel weight on the denoising loss, broadcastable to (B, C, H, W); ``None`` = 1.
        timestep_weight: (B,) importance-sampling correction on each sample's loss; ``None`` = 1.
        scaled_target: the training target is built from the scaled noise ``g⊙ε`` (True: consistent with
            ``x_t``) or from ``ε`` itself (False: x_t carries ``g⊙ε`` but the model is asked for ``ε``).
        noisy: (B, C, H, W) ``x_t`` built from the final plan; ``None`` until the trainer fills it. Read it in
            ``on_diffusion_noised`` instead of noising the batch again.
    """

    noise: Tensor
    timesteps: Tensor
    noise_scale: Tensor | None = None
    loss_weight: Tensor | None = None
    timestep_weight: Tensor | None = None
    scaled_target: bool = True
    noisy: Tensor | None = None

    def replace(self, **changes: Any) -> NoisePlan:
        """A copy with ``changes`` (the plan itself is frozen)."""
        return dataclasses.replace(self, **changes)

    def weigh(self, loss_map: Tensor) -> Tensor:
        """``loss_map`` (B, C, H, W) times ``timestep_weight`` (per sample) and ``loss_weight`` (per pixel).

        Example:
            >>> plan = NoisePlan(torch.zeros(2, 1, 1, 1), torch.zeros(2), timestep_weight=torch.tensor([1.0, 2.0]),
            ...     loss_weight=torch.full((2, 1, 1, 1), 3.0))
            >>> plan.weigh(torch.ones(2, 1, 1, 1)).flatten().tolist()
            [3.0, 6.0]
        """
        if self.timestep_weight is not None:
            loss_map = loss_map * rearrange(self.timestep_weight.to(loss_map), "b -> b 1 1 1")
        if self.loss_weight is not None:
            loss_map = loss_map * self.loss_weight.to(loss_map)
        return loss_map


@dataclasses.dataclass
class TrainState:
    """What a hook sees of the training run.

    Attributes:
        accelerator: the run's ``accelerate.Accelerator``.
        step: optimizer steps done (generator steps for a GAN).
        max_steps: planned number of steps.
        models: named models (wrapped as prepared by Accelerate), e.g. ``{"generator": G, "discriminator": D}``.
        epoch: passes over the data so far.
        run_dir: the run directory, or ``None`` if the loop writes nothing.
        ema: EMA copies (diffusers ``EMAModel``) of models, under the model's name in ``models``; whoever
            samples a model uses them through ``xai_train.ema.ema_weights`` (e.g. ``{"generator": ema}``).
    """

    accelerator: Accelerator
    step: int = 0
    max_steps: int = 0
    models: dict[str, nn.Module] = dataclasses.field(default_factory=dict)
    epoch: int = 0
    run_dir: Path | None = None
    ema: dict[str, Any] = dataclasses.field(default_factory=dict)
    stop_requested: bool = False
    checkpoint_requests: list[str] = dataclasses.field(default_factory=list)

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def log_scalars(self, values: Mapping[str, float], step: int | None = None) -> None:
        """Logs scalars to the trackers (main process only; safe to call on every rank)."""
        if not self.is_main_process or not self.accelerator.trackers:
            return
        clean = {k: float(v.item() if isinstance(v, Tensor) else v) for k, v in values.items()}
        self.accelerator.log(clean, step=self.step if step is None else step)

    def log_images(self, images: Mapping[str, Tensor], step: int | None = None) -> None:
        """Logs images (each (N, C, H, W) or (C, H, W), floats in [0, 1]) to TensorBoard, main process only."""
        if not self.is_main_process:
            return
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                batch = {k: (v if v.dim() == 4 else v.unsqueeze(0)).detach().float().cpu() for k, v in images.items()}
                tracker.log_images(batch, step=self.step if step is None else step)

    def request_stop(self) -> None:
        """Asks every rank to stop after this step (goes through ``accelerator.set_trigger``)."""
        self.stop_requested = True
        self.accelerator.set_trigger()

    def request_checkpoint(self, name: str) -> None:
        """Asks the trainer to save a named checkpoint (e.g. "best") after this hook round.

        Saving is collective: call it on every rank alike (decide from values all ranks agree on).
        """
        if name not in self.checkpoint_requests:
            self.checkpoint_requests.append(name)

    def should_stop(self) -> bool:
        """True on every rank once any rank called ``request_stop`` (a collective: call it on all ranks)."""
        if self.accelerator.check_trigger():
            self.stop_requested = True
        return self.stop_requested


class Callback:
    """Base class: every hook is optional and does nothing here.

    Subclasses set ``state_key`` (unique within a list) if they carry state across checkpoints.
    """

    state_key: str | None = None

    def on_train_start(self, state: TrainState) -> None:
        """Once, before the first step (after resuming)."""

    def on_train_end(self, state: TrainState) -> None:
        """Once, after the last step."""

    def on_generator_forward(
        self, state: TrainState, fake: Tensor, d_fake: Tensor, discriminator: nn.Module
    ) -> GradFn | None:
        """GAN generator step, after ``d_fake = D(fake)`` and before the backward.

        Args:
            fake: (B, C, H, W) generator output, part of the autograd graph.
            d_fake: (B, 1) discriminator logits on ``fake``.
            discriminator: the unwrapped D (explain this one, on ``fake.detach()``).

        Returns:
            A GradFn for the gradient w.r.t. ``fake``, or ``None``.
        """
        return None

    def on_diffusion_noise(self, state: TrainState, clean: Tensor, plan: NoisePlan) -> NoisePlan | None:
        """Diffusion step, before the clean batch (B, C, H, W) is noised: decide how to noise it.

        Returns a new plan (noise, timesteps, noise scale, weights) or ``None``. ``plan.noisy`` is ``None`` here.
        """
        return None

    def on_diffusion_noised(self, state: TrainState, clean: Tensor, plan: NoisePlan) -> NoisePlan | None:
        """Diffusion step, after ``plan.noisy`` (x_t, the model's input) was built from the final plan.

        Returns a plan with new ``loss_weight`` / ``timestep_weight`` or ``None``; the noising itself (noise,
        timesteps, noise scale, target, x_t) is fixed by now.
        """
        return None

    def on_loss(self, state: TrainState, loss_map: Tensor, role: str) -> Tensor | None:
        """Unreduced loss (per pixel or per sample) before reduction. ``role``: "generator",
        "discriminator" or "denoiser". Returns a new loss map of the same shape or ``None``."""
        return None

    def on_before_optimizer_step(self, state: TrainState, role: str) -> None:
        """Before ``optimizer.step()`` of ``role`` (gradients are synchronised here)."""

    def on_step_end(self, state: TrainState, logs: dict[str, float]) -> None:
        """After a full training step; ``logs`` holds the step's scalars (already logged)."""

    def on_sample(self, state: TrainState, samples: Tensor) -> None:
        """After the trainer drew its periodic samples (N, C, H, W) in [-1, 1]."""

    def fingerprint(self) -> dict[str, Any]:
        """What this callback adds to the run's environment fingerprint (``summary.json``): anything that
        changes the run's numbers, e.g. ``EvalMetrics``' feature extractor. JSON-ready values only."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores what ``state_dict`` returned."""


def compose_grad_fns(fns: Iterable[GradFn]) -> GradFn | None:
    """Chains gradient functions in order: ``compose([f, g])(x) == g(f(x))``; ``None`` if there are none."""
    chain = [fn for fn in fns if fn is not None]
    if not chain:
        return None
    if len(chain) == 1:
        return chain[0]

    def composed(grad: Tensor) -> Tensor:
        for fn in chain:
            grad = fn(grad)
        return grad

    return composed


def check_callback(callback: object) -> None:
    """Raises a TypeError unless ``callback`` is a ``Callback`` instance (a class passed by mistake is named).

    Example:
        >>> check_callback(Callback)
        Traceback (most recent call last):
        ...
        TypeError: callbacks must be Callback instances; got the class Callback: pass Callback(...)
    """
    if isinstance(callback, type):
        name = callback.__name__
        raise TypeError(f"callbacks must be Callback instances; got the class {name}: pass {name}(...)")
    if not isinstance(callback, Callback):
        raise TypeError(f"callbacks must be Callback instances (subclass xai_train.Callback); got {callback!r}")


class CallbackList:
    """Dispatches hooks to callbacks in order and checkpoints their state.

    Example:
        >>> from accelerate import Accelerator
        >>> callbacks = CallbackList([])
        >>> state = TrainState(Accelerator(cpu=True), max_steps=10)
        >>> callbacks.on_train_start(state)
    """

    def __init__(self, callbacks: Iterable[Callback] = ()):
        self.callbacks: list[Callback] = list(callbacks)
        for callback in self.callbacks:
            check_callback(callback)
        keys = [cb.state_key for cb in self.callbacks if cb.state_key is not None]
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        if duplicated:
            raise ValueError(f"callbacks share the state_key {duplicated}; give each stateful callback its own key")
        self._registered_with: Accelerator | None = None
        self._last_fake: weakref.ref[Tensor] | None = None  # catches a second on_generator_forward on one fake

    def __iter__(self):
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)

    def append(self, callback: Callback) -> None:
        check_callback(callback)
        if callback.state_key is not None and callback.state_key in [cb.state_key for cb in self.callbacks]:
            raise ValueError(f"callbacks share the state_key '{callback.state_key}'; give each its own key")
        self.callbacks.append(callback)

    def fingerprint(self) -> dict[str, Any]:
        """Every callback's ``fingerprint()``, merged in order."""
        merged: dict[str, Any] = {}
        for cb in self.callbacks:
            merged.update(cb.fingerprint())
        return merged

    # --- hooks -------------------------------------------------------------------------------------
    def on_train_start(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_train_start(state)

    def on_train_end(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_train_end(state)

    def on_generator_forward(
        self, state: TrainState, fake: Tensor, d_fake: Tensor, discriminator: nn.Module
    ) -> GradFn | None:
        """Collects every callback's GradFn and registers ONE composed hook on ``fake``.

        Call it once per generator forward: a second call on the same ``fake`` would mask its gradient
        twice (``(1+αM)²``) and is an error. ``fake`` must be (B, C, H, W) and ``d_fake`` (B, 1).

        Returns:
            The composed GradFn that was registered, or ``None`` if no callback returned one.

        Raises:
            UserError: ``fake`` or ``d_fake`` breaks the contract, or this ``fake`` was seen before.
        """
        check_generator_output(fake)
        check_discriminator_output(d_fake, fake.shape[0])
        if self._last_fake is not None and self._last_fake() is fake:
            raise UserError(
                "on_generator_forward was already called for this `fake`: a second call would mask its gradient "
                "twice; call it once per generator forward (fake = G(z); d_fake = D(fake); on_generator_forward)"
            )
        self._last_fake = weakref.ref(fake)
        fns = [cb.on_generator_forward(state, fake, d_fake, discriminator) for cb in self.callbacks]
        grad_fn = compose_grad_fns(fns)
        if grad_fn is not None:
            if not fake.requires_grad:
                raise RuntimeError("on_generator_forward: `fake` does not require grad; call it inside the G step")
            fake.register_hook(grad_fn)
        return grad_fn

    def on_diffusion_noise(self, state: TrainState, clean: Tensor, plan: NoisePlan) -> NoisePlan:
        """Lets every callback change the plan before noising (the caller then fills ``plan.noisy``)."""
        for cb in self.callbacks:
            new_plan = cb.on_diffusion_noise(state, clean, plan)
            if new_plan is not None:
                if new_plan.noisy is not None:
                    raise ValueError(
                        f"{type(cb).__name__}.on_diffusion_noise set `noisy`; x_t is built after this hook, "
                        "from the final plan"
                    )
                plan = new_plan
        return plan

    def on_diffusion_noised(self, state: TrainState, clean: Tensor, plan: NoisePlan) -> NoisePlan:
        """Lets every callback see ``plan.noisy`` (x_t) and change the loss weights only."""
        if plan.noisy is None:
            raise ValueError(
                "on_diffusion_noised needs plan.noisy: call it with "
                "plan.replace(noisy=add_noise(clean, plan.noise, plan.timesteps, alphas_cumprod, plan.noise_scale))"
            )
        for cb in self.callbacks:
            new_plan = cb.on_diffusion_noised(state, clean, plan)
            if new_plan is not None:
                fixed = ("noise", "timesteps", "noise_scale", "scaled_target", "noisy")
                changed = [name for name in fixed if getattr(new_plan, name) is not getattr(plan, name)]
                if changed:
                    raise ValueError(
                        f"{type(cb).__name__}.on_diffusion_noised changed {', '.join(changed)}; x_t is already "
                        "built: change the noising in on_diffusion_noise"
                    )
                plan = new_plan
        return plan

    def on_loss(self, state: TrainState, loss_map: Tensor, role: str) -> Tensor:
        for cb in self.callbacks:
            new_map = cb.on_loss(state, loss_map, role)
            if new_map is not None:
                if new_map.shape != loss_map.shape:
                    raise ValueError(
                        f"{type(cb).__name__}.on_loss returned shape {tuple(new_map.shape)}, "
                        f"expected {tuple(loss_map.shape)}"
                    )
                loss_map = new_map
        return loss_map

    def on_before_optimizer_step(self, state: TrainState, role: str) -> None:
        for cb in self.callbacks:
            cb.on_before_optimizer_step(state, role)

    def on_step_end(self, state: TrainState, logs: dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_step_end(state, logs)

    def on_sample(self, state: TrainState, samples: Tensor) -> None:
        for cb in self.callbacks:
            cb.on_sample(state, samples)

    # --- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {cb.state_key: cb.state_dict() for cb in self.callbacks if cb.state_key is not None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for cb in self.callbacks:
            if cb.state_key is not None and cb.state_key in state:
                cb.load_state_dict(state[cb.state_key])

    def save(self, directory: str | Path) -> None:
        """Writes the callbacks' state to ``directory/callbacks.pt`` (loaded back with ``weights_only=True``)."""
        torch.save(self.state_dict(), Path(directory) / CALLBACK_STATE_FILE)

    def load(self, directory: str | Path) -> None:
        """Restores the callbacks' state written by ``save``; a checkpoint without it is left as is."""
        path = Path(directory) / CALLBACK_STATE_FILE
        if path.is_file():
            self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    def register_for_checkpointing(self, accelerator: Accelerator) -> None:
        """Makes ``accelerator.save_state/load_state`` carry the callbacks' state. Idempotent.

        Accelerate's own ``register_for_checkpointing`` unpickles with ``weights_only=False``; these hooks
        write a tensors-and-primitives file that is read back with ``weights_only=True`` instead.
        """
        if self._registered_with is accelerator:
            return
        self._registered_with = accelerator

        def save_hook(models, weights, output_dir):
            if accelerator.is_main_process:
                self.save(output_dir)

        def load_hook(models, input_dir):
            self.load(input_dir)

        accelerator.register_save_state_pre_hook(save_hook)
        accelerator.register_load_state_pre_hook(load_hook)
