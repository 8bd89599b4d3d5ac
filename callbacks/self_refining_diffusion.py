"""``SelfRefiningDiffusion``: the authors' self-refining diffusion (arXiv 2512.08774, DESIGN.md §9) as a callback.

Phases: plain training for ``first_process`` steps; then, every ``fam_cycle`` steps, a FAM refresh — samples
from the EMA model, Grad-CAM of the flaw highlighter (FH) on each, the batch mean (all-reduced over processes,
so every rank holds the same map) — and in every step the noise amplified by ``1 + w_n·FAM`` and the UNet's
attention keys/values scaled by ``1 + w_a·proj(FAM)`` (training only; sampling and the exported pipeline
use the plain UNet). At the switch the FH is trained offline on real images vs EMA samples (the authors'
trainer) unless one is given.

The reference preset keeps the authors' ε target, the *un-amplified* noise (their ``q_sample`` rebinds
``noise`` locally); ``target="consistent"`` asks for the amplified noise the input actually carries.

A consistent-target model predicts ``g⊙ε``; ``sampler()`` gives its per-pixel sampler (x_T and every DDIM step
with ``g`` of the current FAM), which the recipe makes the run's sampler (``self_refine.sampler``).

Hand-written loop: call ``on_train_start`` once, ``on_diffusion_noise`` before noising (use the returned plan's
``noise_scale``, and build the ε target from ``noise`` when ``plan.scaled_target`` is False) and
``on_before_optimizer_step`` before the UNet's optimizer step (it steps the projections: on unscaled gradients
under fp16's GradScaler, and not at all on an overflow step, counted in ``srd/projection_overflows``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from xai_train.callback import Callback, NoisePlan, TrainState
from xai_train.data import derive_seed
from xai_train.diffusion import ReplayBuffer, TimestepBound, add_noise
from xai_train.diffusion.importance_schedule import TimeConstantScale
from xai_train.diffusion.samplers import FixedMapSampler
from xai_train.diffusion.self_refine import (
    FamAttention,
    OnlineHighlighter,
    batch_mean_fam,
    build_highlighter,
    check_self_refine_options,
    fam_noise_scale,
    flaw_maps,
    reduce_gradients,
    resolve_sampler,
    train_highlighter,
)
from xai_train.explain.precision import unscale_or_skip

SampleFn = Callable[[int, int, torch.Generator], Tensor]
"""``(num_images, num_inference_steps, generator) -> (N, C, H, W)`` EMA samples in [-1, 1] (``trainer.sample``)."""


class SelfRefiningDiffusion(Callback):
    """Self-refining diffusion: FAM-amplified noise and FAM-modulated attention after a plain base phase.

    Args:
        sample_fn: EMA sampler, ``(n, steps, generator) -> (n, C, H, W)`` (e.g. ``trainer.sample``).
        real_images: (N, C, H, W) training images in [-1, 1]: the FH's real class.
        highlighter: the FH (default: ``FlawHighlighter`` of ``highlighter_width``); ignored for
            ``fam_source="discriminator"``.
        alphas_cumprod: (T,) ᾱ of the schedule; needed by per-sample maps of D on x_t.
        pretrained_highlighter: the FH is already trained (no training at the switch).
        first_process: steps of plain training (the authors: 250k of 500k).
        fam_cycle: steps between FAM refreshes (the authors: 100).
        noise_weight: ``w_n`` (0.01). attention_weight: ``w_a`` (0.025).
        target: ε target, "reference" (un-amplified ε, the authors' quirk) or "consistent" (``g⊙ε``).
        fam_reduce: "batch_mean" (one map from the EMA samples) or "per_sample" (each training image's own
            map, from its clean image for the FH and from its noised ``x_t`` for D).
        fam_source: "highlighter" (the FH) or "discriminator" (the run's time-conditioned D, at t = 0 on
            samples, at the step's t on x_t).
        highlighter_training: "offline" (once, at the switch) or "online" (then one step per training step on
            the real batch vs a replay buffer of the FAM samples).
        direction: "amplify" (flaws get more noise, the paper) or "protect" (less, as our §5 plan).
        method: explainer of the maps (any ``xai_train.explain.METHODS`` name; "gradcam" as the authors).
        evidence: explain the FH's output ("real", the authors' target 0 of a real = 1 sigmoid) or its
            negation ("generated": the evidence for a sample, what a flaw map would mean literally).
        num_samples: EMA samples per process for one FAM (the authors: the batch size).
        sample_steps: their DDIM steps (the authors: 250).
        highlighter_width, highlighter_samples, highlighter_epochs, highlighter_batch_size, highlighter_lr,
            highlighter_held_out: the offline FH (width of the default FH; generated images per process).
        online_lr: AdamW learning rate of the online FH. buffer_capacity: its replay buffer.
        projection_lr: AdamW learning rate of the ``proj`` nets (the authors train them with the UNet's 1e-4).
        projection_bias: conv biases in ``proj`` (the authors: yes).
        seed: FH/proj initialisation and the FAM samples' noise.
        log_every: log the FAM every N steps (0 = never).
        unet_key, discriminator_key: names in ``state.models``.
        explain_options: extra options of the explainer.

    Example:
        >>> callback = SelfRefiningDiffusion(lambda n, steps, g: torch.zeros(n, 1, 32, 32), torch.zeros(8, 1, 32, 32),
        ...     first_process=100)
        >>> callback.phase(99), callback.phase(100)
        ('base', 'refine')
    """

    state_key = "self_refining_diffusion"

    def __init__(
        self,
        sample_fn: SampleFn,
        real_images: Tensor,
        highlighter: nn.Module | None = None,
        *,
        alphas_cumprod: Tensor | None = None,
        pretrained_highlighter: bool = False,
        first_process: int = 1000,
        fam_cycle: int = 100,
        noise_weight: float = 0.01,
        attention_weight: float = 0.025,
        target: Literal["reference", "consistent"] = "reference",
        fam_reduce: Literal["batch_mean", "per_sample"] = "batch_mean",
        fam_source: Literal["highlighter", "discriminator"] = "highlighter",
        highlighter_training: Literal["offline", "online"] = "offline",
        direction: Literal["amplify", "protect"] = "amplify",
        method: str = "gradcam",
        evidence: Literal["real", "generated"] = "real",
        num_samples: int = 32,
        sample_steps: int = 25,
        highlighter_width: int = 16,
        highlighter_samples: int = 256,
        highlighter_epochs: int = 20,
        highlighter_batch_size: int = 16,
        highlighter_lr: float = 2e-3,
        highlighter_held_out: float = 0.1,
        online_lr: float = 2e-4,
        buffer_capacity: int = 256,
        projection_lr: float = 1e-4,
        projection_bias: bool = True,
        seed: int = 0,
        log_every: int = 0,
        unet_key: str = "unet",
        discriminator_key: str = "discriminator",
        explain_options: dict[str, Any] | None = None,
    ):
        options = dict(locals())
        for name in (
            "self",
            "__class__",
            "sample_fn",
            "real_images",
            "highlighter",
            "alphas_cumprod",
            "explain_options",
        ):
            options.pop(name, None)
        check_self_refine_options(**options)
        if real_images.dim() != 4:
            raise ValueError(f"real_images must be (N, C, H, W), got shape {tuple(real_images.shape)}")
        self.__dict__.update(options)
        if fam_reduce == "per_sample" and fam_source == "discriminator" and alphas_cumprod is None:
            raise ValueError("fam_reduce='per_sample' with fam_source='discriminator' maps x_t: pass alphas_cumprod")
        self.sample_fn = sample_fn
        self.real_images = real_images
        self.alphas_cumprod = None if alphas_cumprod is None else alphas_cumprod.detach().cpu()
        self.explain_options = dict(explain_options or {})
        self.highlighter: nn.Module | None = None
        if fam_source == "highlighter":
            _, channels, size, _ = real_images.shape
            self.highlighter = highlighter or build_highlighter(size, channels, highlighter_width, seed=seed)
        self.highlighter_ready = pretrained_highlighter or fam_source == "discriminator"
        self.online: OnlineHighlighter | None = None
        online = highlighter_training == "online" and self.highlighter is not None
        self.buffer = ReplayBuffer(buffer_capacity, fam_cycle) if online else None
        self.buffer_rng = torch.Generator().manual_seed(derive_seed(seed, "srd_buffer"))
        self.attention: FamAttention | None = None
        self.projection_optimizer: torch.optim.Optimizer | None = None
        self.fam: Tensor | None = None  # the batch-mean FAM (1, 1, H, W), equal on every rank
        self.refreshed_at = -1
        self.refresh_seconds = 0.0  # time spent in FAM refreshes and FH training (the benchmark shows it apart)
        self.refreshes = 0
        self.projection_overflows = 0  # fp16 steps whose projection gradients overflowed (skipped, as GradScaler does)
        self.highlighter_accuracy = float("nan")
        self._pending: Mapping[str, Any] | None = None
        self._last_logs: dict[str, float] = {}

    def phase(self, step: int) -> str:
        """The phase at ``step``: "base" before ``first_process`` steps, "refine" from then on."""
        return "base" if step < self.first_process else "refine"

    def refresh_due(self, step: int) -> bool:
        """A batch-mean FAM is recomputed at the switch and every ``fam_cycle`` steps after it."""
        return self.phase(step) == "refine" and (self.fam is None or (step - self.first_process) % self.fam_cycle == 0)

    # --- hooks -------------------------------------------------------------------------------------
    def on_train_start(self, state: TrainState) -> None:
        acc = state.accelerator
        unet = acc.unwrap_model(state.models[self.unet_key])
        self.attention = FamAttention(
            unet, self.attention_weight, bias=self.projection_bias, seed=derive_seed(self.seed, "srd_proj")
        ).install()
        self.projection_optimizer = torch.optim.AdamW(
            self.attention.projections.parameters(), lr=self.projection_lr, weight_decay=0.0
        )
        if self.highlighter is not None:
            self.highlighter.to(acc.device)
            if self.highlighter_training == "online":
                self.online = OnlineHighlighter(self.highlighter, self.online_lr, reduce_grad=self._reducer(acc))
        if self._pending is not None:
            self._load(self._pending, acc.device)
            self._pending = None

    def on_train_end(self, state: TrainState) -> None:
        if self.attention is not None:
            self.attention.remove()

    def on_diffusion_noise(self, state: TrainState, clean: Tensor, plan: NoisePlan) -> NoisePlan | None:
        step = state.step
        if self.phase(step) == "base":
            self._set_attention_fam(None)
            return None
        if not self.highlighter_ready:
            self._train_highlighter(state)
        if self.fam_reduce == "batch_mean":
            if self.refresh_due(step) and self.refreshed_at != step:
                self.refresh_fam(state)
            fam = self.fam
        else:
            fam = self._per_sample_maps(state, clean, plan)
        if self.online is not None and len(self.buffer):
            fake = self.buffer.sample(len(clean), self.buffer_rng).to(clean.device)
            self._last_logs["srd/highlighter_loss"] = self.online.step(clean, fake)
        self._set_attention_fam(fam)
        scale = fam_noise_scale(fam.to(clean.device), self.noise_weight, self.direction)
        if plan.noise_scale is not None:
            scale = plan.noise_scale * scale
        return plan.replace(noise_scale=scale, scaled_target=self.target == "consistent")

    def on_before_optimizer_step(self, state: TrainState, role: str) -> None:
        if role != "denoiser" or self.projection_optimizer is None or self.fam_is_unset():
            return
        if all(p.grad is None for p in self.attention.projections.parameters()):
            return
        reduce_gradients(self.attention.projections, self._reducer(state.accelerator))
        # accelerator.backward scaled the loss under fp16; this optimizer is not prepared, so unscale here and
        # skip an overflow step (after the all-reduce above every rank sees the same inf and skips alike).
        if unscale_or_skip(self.attention.projections.parameters(), getattr(state.accelerator, "scaler", None)):
            self.projection_optimizer.step()
        else:
            self.projection_overflows += 1
        self.projection_optimizer.zero_grad(set_to_none=True)

    def on_step_end(self, state: TrainState, logs: dict[str, float]) -> None:
        if self.log_every <= 0 or state.step % self.log_every or self.fam is None:
            return
        scalars = {k: float(v) for k, v in self._last_logs.items()}
        scalars.update({"srd/fam_mean": float(self.fam.mean()), "srd/refresh_seconds": self.refresh_seconds})
        scalars["srd/projection_overflows"] = float(self.projection_overflows)
        if math.isfinite(self.highlighter_accuracy):
            scalars["srd/highlighter_accuracy"] = self.highlighter_accuracy
        state.log_scalars(scalars)
        state.log_images({"srd/fam": self.fam})

    def sampler(self) -> FixedMapSampler:
        """The sampler of a consistent-target model: the per-pixel sampler with ``g = 1 ± w_n·FAM`` of the current
        FAM (read at call time; plain DDIM before the first). The run's sampler for grids, FAM samples, eval and
        the export, which then carries the last FAM (``FixedMapDiffusionPipeline``).
        """
        resolve_sampler("per_pixel", self.target, self.fam_reduce)  # a one-line error for the other variants
        return FixedMapSampler(lambda: self.fam, TimeConstantScale(self.noise_weight, self.direction))

    # --- pieces ------------------------------------------------------------------------------------
    def fam_is_unset(self) -> bool:
        return self.attention is None or self.attention.fam is None

    def _set_attention_fam(self, fam: Tensor | None) -> None:
        if self.attention is not None:
            self.attention.fam = fam

    @staticmethod
    def _reducer(acc: Any) -> Callable[[Tensor], Tensor] | None:
        return (lambda g: acc.reduce(g, "mean")) if acc.num_processes > 1 else None

    def _samples(self, state: TrainState, count: int, purpose: str) -> Tensor:
        """``count`` EMA samples on this rank (its own noise), in [-1, 1]."""
        acc = state.accelerator
        generator = torch.Generator().manual_seed(derive_seed(self.seed, purpose, state.step, acc.process_index))
        with torch.no_grad():
            return self.sample_fn(count, self.sample_steps, generator).float().clamp(-1, 1)

    def _explained_model(self, state: TrainState, timesteps: Tensor | None = None) -> nn.Module:
        if self.fam_source == "highlighter":
            return self.highlighter
        if self.discriminator_key not in state.models:
            raise KeyError(
                f"fam_source='discriminator' needs state.models['{self.discriminator_key}'] (a D(x_t, t)); "
                "enable the discriminator"
            )
        discriminator = state.accelerator.unwrap_model(state.models[self.discriminator_key])
        device = next(discriminator.parameters()).device
        return TimestepBound(discriminator, torch.zeros((), dtype=torch.long) if timesteps is None else timesteps).to(
            device
        )

    def _maps(self, model: nn.Module, images: Tensor) -> Tensor:
        return flaw_maps(model, images, self.method, evidence=self.evidence, **self.explain_options)

    def _train_highlighter(self, state: TrainState) -> None:
        """The authors' offline FH training, at the switch: real images vs gathered EMA samples."""
        started, acc = time.perf_counter(), state.accelerator
        fake = acc.gather(self._samples(state, self.highlighter_samples, "srd_highlighter").contiguous())
        report = train_highlighter(
            self.highlighter,
            self.real_images.to(acc.device).float(),
            fake.to(acc.device),
            epochs=self.highlighter_epochs,
            batch_size=self.highlighter_batch_size,
            lr=self.highlighter_lr,
            held_out=self.highlighter_held_out,
            seed=derive_seed(self.seed, "srd_highlighter_order"),
        )
        if acc.num_processes > 1:  # identical on CPU; averaged so that GPU non-determinism cannot split the ranks
            for tensor in self.highlighter.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(acc.reduce(tensor.contiguous(), "mean"))
        if self.buffer is not None:
            self.buffer.add(fake, state.step)
        self.highlighter_accuracy = report.best_accuracy
        self.highlighter_ready = True
        self.refresh_seconds += time.perf_counter() - started
        if state.is_main_process:
            state.accelerator.print(
                f"flaw highlighter trained at step {state.step}: held-out accuracy {report.best_accuracy:.3f} "
                f"(epoch {report.best_epoch})"
            )

    def refresh_fam(self, state: TrainState) -> None:
        """A new batch-mean FAM now: this rank's EMA samples → per-sample maps → mean, all-reduced over ranks.

        Called by ``on_diffusion_noise`` when due; public so that a benchmark can time one refresh.
        """
        started, acc = time.perf_counter(), state.accelerator
        samples = self._samples(state, self.num_samples, "srd_fam")
        fam = batch_mean_fam(self._maps(self._explained_model(state), samples))
        if acc.num_processes > 1:
            fam = acc.reduce(fam.contiguous(), "mean")  # equal sample counts: the mean of means is the mean
        self.fam = fam.to(acc.device)
        if self.buffer is not None:
            self.buffer.add(acc.gather(samples.contiguous()), state.step)
        self.refreshed_at = state.step
        self.refreshes += 1
        self.refresh_seconds += time.perf_counter() - started

    def _per_sample_maps(self, state: TrainState, clean: Tensor, plan: NoisePlan) -> Tensor:
        """(B, 1, H, W): each training image's own map (rank-local data, like the other importance callbacks)."""
        if self.fam_source == "highlighter":
            return self._maps(self.highlighter, clean)
        noisy = add_noise(clean, plan.noise, plan.timesteps, self.alphas_cumprod)
        return self._maps(self._explained_model(state, plan.timesteps), noisy)

    # --- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "fam": None if self.fam is None else self.fam.cpu(),
            "refreshed_at": self.refreshed_at,
            "refreshes": self.refreshes,
            "refresh_seconds": self.refresh_seconds,
            "highlighter_ready": self.highlighter_ready,
            "highlighter_accuracy": self.highlighter_accuracy,
            "buffer_rng": self.buffer_rng.get_state(),
        }
        if self.highlighter is not None:
            state["highlighter"] = {k: v.cpu() for k, v in self.highlighter.state_dict().items()}
        if self.attention is not None:
            state["projections"] = {k: v.cpu() for k, v in self.attention.projections.state_dict().items()}
            state["projection_optimizer"] = self.projection_optimizer.state_dict()
        if self.online is not None:
            state["online"] = self.online.state_dict()
        if self.buffer is not None:
            state["buffer"] = self.buffer.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores a checkpoint; the parts that need the UNet wait for ``on_train_start``."""
        if self.attention is None:
            self._pending = state
        else:
            self._load(state, next(self.attention.projections.parameters()).device)

    def _load(self, state: Mapping[str, Any], device: torch.device) -> None:
        self.fam = None if state["fam"] is None else state["fam"].to(device)
        self.refreshed_at = int(state["refreshed_at"])
        self.refreshes = int(state["refreshes"])
        self.refresh_seconds = float(state["refresh_seconds"])
        self.highlighter_ready = bool(state["highlighter_ready"])
        self.highlighter_accuracy = float(state["highlighter_accuracy"])
        self.buffer_rng.set_state(state["buffer_rng"])
        if self.highlighter is not None and "highlighter" in state:
            self.highlighter.load_state_dict(state["highlighter"])
        if "projections" in state:
            self.attention.projections.load_state_dict(state["projections"])
            self.projection_optimizer.load_state_dict(state["projection_optimizer"])
        if self.online is not None and "online" in state:
            self.online.load_state_dict(state["online"])
        if self.buffer is not None and "buffer" in state:
            self.buffer.load_state_dict(state["buffer"], device)  # checkpoints load on the CPU
