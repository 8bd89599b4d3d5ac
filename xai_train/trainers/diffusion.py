"""The diffusion trainer: diffusers' UNet, schedulers and EMA on Accelerate, with an optional time-conditioned
discriminator whose explanations the callbacks feed back (DESIGN.md §5).

One ``step`` is one UNet optimizer step over ``grad_accum_steps`` micro-batches; each micro-batch also
updates D inside the same ``accelerator.accumulate(unet, D)``. D sees the standard forward process: real =
the noised training batch, fake = replay-buffer samples (or re-noised x̂0) noised to the same t.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import compute_snr
from torch import Tensor, nn

from xai_train.callback import Callback, CallbackList, NoisePlan, TrainState
from xai_train.checkpoint import CheckpointManager
from xai_train.config.diffusion import DiffusionTrainConfig, DiscriminatorConfig
from xai_train.data import TensorBatches, derive_seed
from xai_train.diffusion import (
    Adversary,
    ExportableSampler,
    ReplayBuffer,
    add_noise,
    ddim_sample,
    saliency_panel,
    snr_loss_weight,
    split_prediction,
    training_target,
)
from xai_train.diffusion.models import build_ema, build_optimization, ddim_for
from xai_train.diffusion.pipeline import export_pipeline
from xai_train.distributed import rank_consistent
from xai_train.ema import ema_weights, load_ema_state
from xai_train.images import make_grid, save_grid, save_png, to_unit_range
from xai_train.tracking import StepTimer, make_accelerator, start_run
from xai_train.trainers.loop import TrainingLoop
from xai_train.trainers.losses import discriminator_loss

Sampler = Callable[..., Tensor]
"""``(unet, ddim_scheduler, batch_size, num_inference_steps, generator) -> (B, C, H, W)`` in [-1, 1]."""


class DiffusionTrainer(TrainingLoop):
    """Trains a ``UNet2DModel`` (and optionally D) with Accelerate, callbacks, EMA and checkpoints.

    Args:
        unet: the denoiser.
        noise_scheduler: the training ``DDPMScheduler`` (its prediction type is the UNet's).
        images: (N, C, H, W) training images in [-1, 1] (or uint8).
        config: training hyperparameters.
        discriminator: a ``D(x_t, t) -> (B, 1)`` to train beside the UNet, or ``None``.
        discriminator_config: D's training settings (used when ``discriminator`` is given).
        callbacks: hooks called on every rank (``ImportanceWeightedLoss``, ``ImportanceNoiseSchedule``, ...).
        sampler: how the model is sampled (grids, D's fakes, export); default plain DDIM. An
            importance-noise run passes ``ImportanceNoiseSchedule.sampler(D)``, an SRD consistent-target run
            ``SelfRefiningDiffusion.sampler()``. The export needs an ``ExportableSampler`` (one with
            ``to_pipeline``); with any other sampler the run writes no pipeline and says so.
        run_dir: where logs, samples, checkpoints and the exported pipeline go; ``None`` writes nothing.
        seed: data order, noise and timestep seed (identical on every rank).
        resume: "", "auto" or a checkpoint folder.
        run_config: the resolved config saved as ``config.yaml``.
        cpu: force the CPU.

    Example:
        >>> from xai_train.diffusion.models import build_noise_scheduler, build_unet
        >>> trainer = DiffusionTrainer(build_unet(8, 1, (16, 32)), build_noise_scheduler(100),
        ...     torch.rand(32, 1, 8, 8) * 2 - 1, DiffusionTrainConfig(batch_size=8, max_steps=2), cpu=True)
        >>> trainer.train()["steps"]
        2
    """

    def __init__(
        self,
        unet: UNet2DModel,
        noise_scheduler: DDPMScheduler,
        images: Tensor,
        config: DiffusionTrainConfig,
        *,
        discriminator: nn.Module | None = None,
        discriminator_config: DiscriminatorConfig | None = None,
        callbacks: Iterable[Callback] = (),
        sampler: Sampler | None = None,
        run_dir: str | Path | None = None,
        seed: int = 0,
        resume: str = "",
        run_config: Mapping[str, Any] | None = None,
        cpu: bool = False,
    ):
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.seed, self.resume, self.sampler = seed, resume, sampler
        self.noise_scheduler = noise_scheduler
        self.prediction_type = noise_scheduler.config.prediction_type
        self.accelerator = acc = make_accelerator(
            self.run_dir,
            mixed_precision=config.mixed_precision,
            grad_accum_steps=config.grad_accum_steps,
            seed=seed,
            cpu=cpu,
        )
        start_run(acc, self.run_dir, run_config)
        self.ema = None
        if config.use_ema:
            self.ema = build_ema(unet, config.ema_max_decay, config.ema_inv_gamma, config.ema_power)
        optimizer, lr_scheduler = build_optimization(
            unet,
            config.lr,
            config.adam_betas,
            config.adam_weight_decay,
            config.adam_epsilon,
            config.lr_scheduler,
            config.lr_warmup_steps,
            config.max_steps,
            acc.num_processes,
        )
        self.unet, self.optimizer, self.lr_scheduler = acc.prepare(unet, optimizer, lr_scheduler)
        self.models = {"unet": self.unet}
        self.adversary = None
        if discriminator is not None:
            d = discriminator_config or DiscriminatorConfig(enabled=True)
            prepared_d, opt_d = acc.prepare(
                discriminator, torch.optim.Adam(discriminator.parameters(), lr=d.lr, betas=d.betas)
            )
            buffer = ReplayBuffer(d.buffer_capacity, d.buffer_refresh_every) if d.fake_source == "samples" else None
            self.adversary = Adversary(
                prepared_d, opt_d, discriminator_loss, d.fake_source, buffer, d.r1_gamma, d.r1_every
            )
            self.d_config = d
            self.models["discriminator"] = prepared_d
        if self.ema is not None:
            self.ema.to(acc.device)
        self.batches = TensorBatches(
            images,
            config.batch_size,
            seed=seed,
            rank=acc.process_index,
            world_size=acc.num_processes,
            device=acc.device,
        )
        # Noise, timesteps and flips come from one generator seeded alike on every rank; each rank keeps its
        # slice of the global batch, so N processes draw what one process with an N-times batch would.
        self.noise_rng = torch.Generator().manual_seed(derive_seed(seed, "diffusion_noise"))
        self.callbacks = CallbackList(callbacks)
        self.callbacks.register_for_checkpointing(acc)
        self.checkpoints = CheckpointManager(
            acc, (self.run_dir or Path(".")) / "checkpoints", keep_last=config.keep_checkpoints
        )
        self.state = TrainState(
            acc,
            max_steps=config.max_steps,
            models=self.models,
            run_dir=self.run_dir,
            ema={"unet": self.ema} if self.ema is not None else {},
        )
        self.timer = StepTimer()

    # --- random draws, identical on every rank --------------------------------------------------------
    def _world_batch(self) -> int:
        return self.config.batch_size * self.accelerator.num_processes

    def _rank_slice(self, everyone: Tensor) -> Tensor:
        batch, rank = self.config.batch_size, self.accelerator.process_index
        return everyone[rank * batch : (rank + 1) * batch].to(self.accelerator.device)

    def _draw_noise(self, like: Tensor) -> Tensor:
        return self._rank_slice(torch.randn((self._world_batch(), *like.shape[1:]), generator=self.noise_rng))

    def _draw_plan(self, clean: Tensor) -> tuple[NoisePlan, Tensor]:
        """This rank's standard noise plan and horizontal-flip mask (B,) for ``clean``."""
        noise = self._draw_noise(clean)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = self._rank_slice(torch.randint(0, steps, (self._world_batch(),), generator=self.noise_rng))
        flip = self._rank_slice(torch.rand(self._world_batch(), generator=self.noise_rng) < 0.5)
        return NoisePlan(noise=noise, timesteps=timesteps), flip

    # --- pieces of a step -----------------------------------------------------------------------------
    def _plan(self, clean: Tensor, plan: NoisePlan) -> NoisePlan:
        """The callbacks' final plan for ``clean``, with ``x_t`` built once (``plan.noisy``)."""
        with rank_consistent(self.accelerator, "on_diffusion_noise"):  # a rank-local refusal stops every rank
            plan = self.callbacks.on_diffusion_noise(self.state, clean, plan)
        if plan.timesteps.dim() != 1:
            raise ValueError("UNet2DModel takes one timestep per sample; a callback returned per-pixel timesteps")
        alphas = self.noise_scheduler.alphas_cumprod
        plan = plan.replace(noisy=add_noise(clean, plan.noise, plan.timesteps, alphas, plan.noise_scale))
        return self.callbacks.on_diffusion_noised(self.state, clean, plan)

    def _denoiser_update(self, clean: Tensor, plan: NoisePlan) -> tuple[Tensor, Tensor]:
        """Weighted MSE on ``plan.noisy``, backward, UNet step. Returns (loss, detached x̂0)."""
        cfg, acc, alphas = self.config, self.accelerator, self.noise_scheduler.alphas_cumprod
        noisy = plan.noisy
        target_scale = plan.noise_scale if plan.scaled_target else None
        target = training_target(clean, plan.noise, plan.timesteps, alphas, self.prediction_type, target_scale)
        with acc.autocast():
            output = self.unet(noisy, plan.timesteps).sample
        loss_map = F.mse_loss(output.float(), target.float(), reduction="none")
        snr = compute_snr(self.noise_scheduler, plan.timesteps)
        sample_weight = snr_loss_weight(snr, self.prediction_type, cfg.loss_weighting, cfg.min_snr_gamma)
        loss_map = plan.weigh(loss_map * sample_weight.view(-1, 1, 1, 1).to(loss_map.device))
        loss = self.callbacks.on_loss(self.state, loss_map, "denoiser").mean()
        acc.backward(loss)
        if acc.sync_gradients:
            self.callbacks.on_before_optimizer_step(self.state, "denoiser")
            if cfg.clip_grad_norm > 0:
                acc.clip_grad_norm_(self.unet.parameters(), cfg.clip_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        x0_hat, _ = split_prediction(output.detach().float(), noisy, plan.timesteps, alphas, self.prediction_type)
        return loss.detach(), x0_hat

    def _discriminator_update(self, clean: Tensor, plan: NoisePlan, x0_hat: Tensor) -> dict:
        alphas, t = self.noise_scheduler.alphas_cumprod, plan.timesteps
        # D models the standard process at level t; reuse the UNet's input when it is that process.
        real = plan.noisy if plan.noise_scale is None else add_noise(clean, plan.noise, t, alphas)
        if self.adversary.buffer is not None:
            fake0 = self._rank_slice(self.adversary.buffer.sample(self._world_batch(), self.noise_rng))
        else:  # "x0_hat": cheap but biased, D learns to tell data from the UNet's blurry one-step estimates
            fake0 = x0_hat.clamp(-1, 1)
        fake = add_noise(fake0, self._draw_noise(clean), t, alphas)
        return self.adversary.update(self.state, self.callbacks, real, fake, t)

    def refresh_replay_buffer(self) -> None:
        """Refills the replay buffer with EMA samples now: every rank makes its share, all keep the union.

        ``train_step`` calls it every ``buffer_refresh_every`` steps; benchmarks call it to time a refill.
        Every rank must call it (it gathers). Requires a discriminator with a replay buffer.
        """
        if self.adversary is None or self.adversary.buffer is None:
            raise ValueError("refresh_replay_buffer: this trainer has no replay buffer (needs a discriminator)")
        d, acc = self.d_config, self.accelerator
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "replay", self.state.step, acc.process_index))
        samples = self.sample(d.buffer_refresh_size, d.sample_steps, generator)
        self.adversary.buffer.add(acc.gather(samples.contiguous()), self.state.step)

    def train_step(self) -> dict[str, Tensor]:
        """One UNet optimizer step (and D's updates). Returns detached step statistics."""
        cfg, acc = self.config, self.accelerator
        if self.adversary is not None and self.adversary.needs_samples(self.state.step):
            self.refresh_replay_buffer()
        stats: dict[str, Tensor] = {}
        for _ in range(cfg.grad_accum_steps):
            clean = self.batches.next()
            plan, flip = self._draw_plan(clean)
            if cfg.random_flip:
                clean = torch.where(flip.view(-1, 1, 1, 1), clean.flip(-1), clean)
            with acc.accumulate(*self.models.values()):
                plan = self._plan(clean, plan)
                stats["loss"], x0_hat = self._denoiser_update(clean, plan)
                if self.adversary is not None:
                    stats.update(self._discriminator_update(clean, plan, x0_hat))
        if self.ema is not None and acc.sync_gradients:
            self.ema.step(acc.unwrap_model(self.unet).parameters())
        return stats

    # --- sampling, maps, export -----------------------------------------------------------------------
    def sample(
        self,
        num_images: int | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """(N, C, H, W) samples in [-1, 1] from the EMA UNet with the run's sampler.

        Defaults: ``num_samples`` images, ``sample_steps`` DDIM steps, the run's fixed sample noise.
        """
        cfg = self.config
        generator = generator or torch.Generator().manual_seed(derive_seed(self.seed, "samples"))
        sampler = self.sampler or ddim_sample
        with ema_weights(self.accelerator.unwrap_model(self.unet), self.ema) as unet:
            images = sampler(
                unet,
                ddim_for(self.noise_scheduler),
                num_images or cfg.num_samples,
                num_inference_steps or cfg.sample_steps,
                generator,
            )
        return images.float()

    def sample_and_log(self, final: bool = False) -> None:
        samples = self.sample()
        self.callbacks.on_sample(self.state, samples)
        images, panel = {"samples": to_unit_range(samples)}, None
        if self.adversary is not None:
            n = min(8, len(samples))
            real = self.batches.images[:n].float()
            real = real / 127.5 - 1 if self.batches.images.dtype == torch.uint8 else real
            discriminator = self.accelerator.unwrap_model(self.adversary.discriminator)
            panel = saliency_panel(discriminator, real, samples[:n].to(real.device))
            images["maps"] = to_unit_range(panel)
        self.state.log_images(images)
        if self.run_dir is not None and self.accelerator.is_main_process:
            save_grid(samples, self.run_dir / "samples" / f"step_{self.state.step:07d}.png")
            if final:
                save_grid(samples, self.run_dir / "samples.png")
                if panel is not None:  # rows: real, S(real), samples, S(samples)
                    save_png(make_grid(to_unit_range(panel), nrow=len(panel) // 4), self.run_dir / "maps.png")

    def export(self, path: str | Path | None = None) -> Path | None:
        """Writes the EMA UNet as a loadable pipeline: ``DDPMPipeline`` with the default sampler, else the
        sampler's own (``ExportableSampler.to_pipeline``); nothing, with a printed line, for any other sampler."""
        path = Path(path) if path is not None else (self.run_dir / "pipeline" if self.run_dir else None)
        if path is None:
            return None
        if self.sampler is not None and not isinstance(self.sampler, ExportableSampler):
            self.accelerator.print(
                f"not exporting a pipeline: the sampler {self.sampler!r} has no to_pipeline (see ExportableSampler)"
            )
            return None
        if self.accelerator.is_main_process:
            with ema_weights(self.accelerator.unwrap_model(self.unet), self.ema) as unet:
                export_pipeline(path, unet, self.noise_scheduler, self.sampler)
        self.accelerator.wait_for_everyone()
        return path

    # --- checkpoints ----------------------------------------------------------------------------------
    def trainer_state(self) -> dict[str, Any]:
        """What a checkpoint needs beyond Accelerate's state (tensors and plain values; equal on every rank)."""
        state: dict[str, Any] = {
            "batches": self.batches.state_dict(),
            "noise_rng": self.noise_rng.get_state(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.adversary is not None:
            state["adversary"] = self.adversary.state_dict()
        return state

    def load_trainer_state(self, state: Mapping[str, Any]) -> None:
        self.batches.load_state_dict(state["batches"])
        self.noise_rng.set_state(state["noise_rng"])
        if self.ema is not None and "ema" in state:
            load_ema_state(self.ema, state["ema"], self.accelerator.unwrap_model(self.unet))
        if self.adversary is not None and "adversary" in state:
            self.adversary.load_state_dict(state["adversary"], self.accelerator.device)

    def progress_postfix(self, logs: Mapping[str, float]) -> dict[str, str]:
        return {"loss": f"{logs['loss']:.4f}"}

    def finish(self) -> None:
        if self.run_dir is not None:
            self.export()

    def step_scalars(self, stats: Mapping[str, Tensor]) -> dict[str, float]:
        logs = {
            "loss": stats["loss"].item(),
            "lr": self.lr_scheduler.get_last_lr()[0],
            "images_per_second": self._world_batch() * self.config.grad_accum_steps / max(self.timer.last, 1e-9),
        }
        if self.ema is not None:
            logs["ema_decay"] = self.ema.cur_decay_value or 0.0
        if self.adversary is not None:
            logs["d_loss"] = stats["d_loss"].item()
            logs["d_real"] = torch.sigmoid(stats["d_real"]).mean().item()
            logs["d_fake"] = torch.sigmoid(stats["d_fake"]).mean().item()
            logs.update(self.adversary.statistics(self.state.step))
        return logs
