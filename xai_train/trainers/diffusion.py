"""The diffusion trainer: diffusers' UNet, schedulers and EMA on Accelerate, with an optional
time-conditioned discriminator whose explanations the callbacks feed back (DESIGN.md §5).

One ``step`` is one UNet optimizer step over ``grad_accum_steps`` micro-batches; each micro-batch also
updates D inside the same ``accelerator.accumulate(unet, D)``. D sees the standard forward process: real =
the noised training batch, fake = replay-buffer samples (or re-noised x̂0) noised to the same t.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr
from torch import Tensor, nn

from xai_train.callback import Callback, CallbackList, NoisePlan, TrainState
from xai_train.checkpoint import CheckpointManager
from xai_train.config.diffusion import DiffusionTrainConfig, DiscriminatorConfig
from xai_train.data import TensorBatches, derive_seed
from xai_train.diffusion import (
    ImportanceSampler,
    ReplayBuffer,
    add_noise,
    ddim_sample,
    importance_map,
    r1_penalty,
    snr_loss_weight,
    split_prediction,
    training_target,
)
from xai_train.diffusion.models import ddim_for
from xai_train.diffusion.pipeline import export_pipeline
from xai_train.images import make_grid, save_grid, save_png, to_unit_range
from xai_train.tracking import StepTimer, make_accelerator, progress_bar, start_run
from xai_train.trainers.losses import discriminator_loss

Sampler = Callable[..., Tensor]
"""``(unet, ddim_scheduler, batch_size, num_inference_steps, generator) -> (B, C, H, W)`` in [-1, 1]."""


class DiffusionTrainer:
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
            importance-noise run passes ``ImportanceNoiseSchedule.sampler(D)``.
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
        self.d_config = discriminator_config or DiscriminatorConfig(enabled=discriminator is not None)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.seed, self.resume = seed, resume
        self.noise_scheduler = noise_scheduler
        self.prediction_type = noise_scheduler.config.prediction_type
        self.sampler = sampler
        self.accelerator = acc = make_accelerator(
            self.run_dir, mixed_precision=config.mixed_precision, grad_accum_steps=config.grad_accum_steps,
            seed=seed, cpu=cpu,
        )
        start_run(acc, self.run_dir, run_config)
        self.ema = None
        if config.use_ema:
            self.ema = EMAModel(
                unet.parameters(), decay=config.ema_max_decay, use_ema_warmup=True, inv_gamma=config.ema_inv_gamma,
                power=config.ema_power, model_cls=type(unet), model_config=unet.config,
            )
        optimizer = torch.optim.AdamW(
            unet.parameters(), lr=config.lr, betas=config.adam_betas, weight_decay=config.adam_weight_decay,
            eps=config.adam_epsilon,
        )
        # Accelerate steps a prepared scheduler once per process per optimizer step: scale the horizon alike.
        lr_scheduler = get_scheduler(
            config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps * acc.num_processes,
            num_training_steps=config.max_steps * acc.num_processes,
        )
        self.unet, self.optimizer, self.lr_scheduler = acc.prepare(unet, optimizer, lr_scheduler)
        self.discriminator = self.opt_d = self.buffer = None
        if discriminator is not None:
            d = self.d_config
            opt_d = torch.optim.Adam(discriminator.parameters(), lr=d.lr, betas=d.betas)
            self.discriminator, self.opt_d = acc.prepare(discriminator, opt_d)
            self.buffer = ReplayBuffer(d.buffer_capacity, d.buffer_refresh_every)
        if self.ema is not None:
            self.ema.to(acc.device)
        self.batches = TensorBatches(
            images, config.batch_size, seed=seed, rank=acc.process_index, world_size=acc.num_processes,
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
        models = {"unet": self.unet}
        if self.discriminator is not None:
            models["discriminator"] = self.discriminator
        self.state = TrainState(accelerator=acc, max_steps=config.max_steps, models=models, run_dir=self.run_dir)
        self.timer = StepTimer()
        self.last_r1 = torch.zeros(())

    # --- pieces of a step -----------------------------------------------------------------------------
    def _global_slice(self, tensor: Tensor) -> Tensor:
        batch, rank = self.config.batch_size, self.accelerator.process_index
        return tensor[rank * batch : (rank + 1) * batch].to(self.accelerator.device)

    def _world_batch(self) -> int:
        return self.config.batch_size * self.accelerator.num_processes

    def _draw_noise(self, like: Tensor) -> Tensor:
        return self._global_slice(torch.randn((self._world_batch(), *like.shape[1:]), generator=self.noise_rng))

    def _draw(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """This rank's (noise, timesteps, flip) for a batch shaped like ``like``."""
        noise = self._draw_noise(like)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (self._world_batch(),), generator=self.noise_rng)
        flip = torch.rand(self._world_batch(), generator=self.noise_rng) < 0.5
        return noise, self._global_slice(timesteps), self._global_slice(flip)

    def _denoiser_update(self, clean: Tensor, plan: NoisePlan) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        cfg, acc, alphas = self.config, self.accelerator, self.noise_scheduler.alphas_cumprod
        if plan.timesteps.dim() != 1:
            raise ValueError("UNet2DModel takes one timestep per sample; a callback returned per-pixel timesteps")
        noisy = add_noise(clean, plan.noise, plan.timesteps, alphas, plan.noise_scale)
        target = training_target(clean, plan.noise, plan.timesteps, alphas, self.prediction_type, plan.noise_scale)
        with acc.autocast():
            output = self.unet(noisy, plan.timesteps).sample
        loss_map = F.mse_loss(output.float(), target.float(), reduction="none")
        sample_weight = snr_loss_weight(
            compute_snr(self.noise_scheduler, plan.timesteps), self.prediction_type, cfg.loss_weighting, cfg.min_snr_gamma
        )
        if plan.timestep_weight is not None:
            sample_weight = sample_weight * plan.timestep_weight
        loss_map = loss_map * sample_weight.view(-1, 1, 1, 1).to(loss_map.device)
        if plan.loss_weight is not None:
            loss_map = loss_map * plan.loss_weight
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
        return {"loss": loss.detach()}, noisy, x0_hat

    def _discriminator_update(self, clean: Tensor, plan: NoisePlan, noisy: Tensor, x0_hat: Tensor) -> dict[str, Tensor]:
        d, acc, alphas = self.d_config, self.accelerator, self.noise_scheduler.alphas_cumprod
        t = plan.timesteps
        # D models the standard process at level t; reuse the UNet's input when it is that process.
        real = noisy if plan.noise_scale is None else add_noise(clean, plan.noise, t, alphas)
        if d.fake_source == "samples":
            fake0 = self._global_slice(self.buffer.sample(self._world_batch(), self.noise_rng))
        else:  # cheap but biased: D learns to tell data from the UNet's blurry one-step estimates
            fake0 = x0_hat.clamp(-1, 1)
        fake = add_noise(fake0, self._draw_noise(clean), t, alphas)
        lazy_r1 = d.r1_gamma > 0 and self.state.step % d.r1_every == 0
        real = real.detach().requires_grad_(lazy_r1)
        # R1 needs an exact input gradient: keep that forward out of fp16 autocast.
        with acc.autocast() if not lazy_r1 else contextlib.nullcontext():
            d_real = self.discriminator(real, t)
            d_fake = self.discriminator(fake, t)
        loss_map = self.callbacks.on_loss(self.state, discriminator_loss(d_real.float(), d_fake.float()), "discriminator")
        loss = loss_map.mean()
        if lazy_r1:
            self.last_r1 = r1_penalty(d_real.float(), real)
            loss = loss + 0.5 * d.r1_gamma * d.r1_every * self.last_r1
        acc.backward(loss)
        if acc.sync_gradients:
            self.callbacks.on_before_optimizer_step(self.state, "discriminator")
        self.opt_d.step()
        self.opt_d.zero_grad(set_to_none=True)
        return {"d_loss": loss.detach(), "d_real": d_real.detach(), "d_fake": d_fake.detach()}

    def _refresh_buffer(self) -> None:
        """Refills the replay buffer with EMA samples; every rank makes its share and all keep the union."""
        d, acc = self.d_config, self.accelerator
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "replay", self.state.step, acc.process_index))
        with self.ema_weights():
            samples = self._sample(d.buffer_refresh_size, d.sample_steps, generator)
        self.buffer.add(acc.gather(samples.contiguous()), self.state.step)

    def train_step(self) -> dict[str, Tensor]:
        """One UNet optimizer step (and D's updates). Returns detached step statistics."""
        cfg, acc = self.config, self.accelerator
        if self.buffer is not None and self.d_config.fake_source == "samples" and self.buffer.needs_refresh(self.state.step):
            self._refresh_buffer()
        stats: dict[str, Tensor] = {}
        models = [self.unet] + ([self.discriminator] if self.discriminator is not None else [])
        for _ in range(cfg.grad_accum_steps):
            clean = self.batches.next()
            noise, timesteps, flip = self._draw(clean)
            if cfg.random_flip:
                clean = torch.where(flip.view(-1, 1, 1, 1), clean.flip(-1), clean)
            with acc.accumulate(*models):
                plan = self.callbacks.on_diffusion_noise(self.state, clean, NoisePlan(noise, timesteps))
                step_stats, noisy, x0_hat = self._denoiser_update(clean, plan)
                stats.update(step_stats)
                if self.discriminator is not None:
                    stats.update(self._discriminator_update(clean, plan, noisy, x0_hat))
        if self.ema is not None and acc.sync_gradients:
            self.ema.step(acc.unwrap_model(self.unet).parameters())
        return stats

    # --- sampling, maps, export -----------------------------------------------------------------------
    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[nn.Module]:
        """The unwrapped UNet in eval mode with the EMA weights swapped in for the block (restored after)."""
        unet = self.accelerator.unwrap_model(self.unet)
        was_training = unet.training
        unet.eval()
        if self.ema is not None:
            self.ema.store(unet.parameters())
            self.ema.copy_to(unet.parameters())
        try:
            yield unet
        finally:
            if self.ema is not None:
                self.ema.restore(unet.parameters())
            unet.train(was_training)

    def _sample(self, batch_size: int, num_inference_steps: int, generator: torch.Generator) -> Tensor:
        unet = self.accelerator.unwrap_model(self.unet)
        sampler = self.sampler or ddim_sample
        return sampler(unet, ddim_for(self.noise_scheduler), batch_size, num_inference_steps, generator).float()

    def sample(self, num_images: int | None = None, seed: int | None = None) -> Tensor:
        """(N, C, H, W) samples in [-1, 1] from the EMA UNet with the run's sampler (fixed noise by default)."""
        cfg = self.config
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "samples") if seed is None else seed)
        with self.ema_weights():
            return self._sample(num_images or cfg.num_samples, cfg.sample_steps, generator)

    def maps(self, samples: Tensor) -> Tensor | None:
        """D's saliency at t = 0 on a real batch and on ``samples``: (4·n, C, H, W) rows real | S | fake | S."""
        if self.discriminator is None:
            return None
        d = self.accelerator.unwrap_model(self.discriminator)
        n = min(8, len(samples))
        real = self.batches.images[:n].float()
        real = real / 127.5 - 1 if self.batches.images.dtype == torch.uint8 else real
        fake = samples[:n].to(real.device)
        zeros = torch.zeros(n, dtype=torch.long, device=real.device)
        to_images = lambda s: s.expand(-1, real.shape[1], -1, -1) * 2 - 1  # noqa: E731  [0, 1] -> [-1, 1]
        rows = [real, to_images(importance_map(d, real, zeros)), fake, to_images(importance_map(d, fake, zeros))]
        return torch.cat(rows)

    def _sample_and_log(self, final: bool = False) -> None:
        samples = self.sample()
        self.callbacks.on_sample(self.state, samples)
        maps = self.maps(samples)
        images = {"samples": to_unit_range(samples)}
        if maps is not None:
            images["maps"] = to_unit_range(maps)
        self.state.log_images(images)
        if self.run_dir is not None and self.accelerator.is_main_process:
            save_grid(samples, self.run_dir / "samples" / f"step_{self.state.step:07d}.png")
            if final:
                save_grid(samples, self.run_dir / "samples.png")
                if maps is not None:
                    save_png(make_grid(to_unit_range(maps), nrow=len(maps) // 4), self.run_dir / "maps.png")

    def export(self, path: str | Path | None = None) -> Path | None:
        """Writes the EMA UNet as a loadable pipeline (``DDPMPipeline`` unless the sampler is importance-based)."""
        path = Path(path) if path is not None else (self.run_dir / "pipeline" if self.run_dir else None)
        if path is None:
            return None
        if self.sampler is not None and not isinstance(self.sampler, ImportanceSampler):
            self.accelerator.print(f"not exporting a pipeline: no pipeline class for the sampler {self.sampler!r}")
            return None
        if self.accelerator.is_main_process:
            with self.ema_weights() as unet:
                export_pipeline(path, unet, self.noise_scheduler, self.sampler)
        self.accelerator.wait_for_everyone()
        return path

    # --- checkpoints ----------------------------------------------------------------------------------
    def trainer_state(self) -> dict[str, Any]:
        """What a checkpoint needs beyond Accelerate's state (tensors and plain values only)."""
        state: dict[str, Any] = {
            "step": self.state.step,
            "batches": self.batches.state_dict(),
            "noise_rng": self.noise_rng.get_state(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.buffer is not None:
            state["buffer"] = self.buffer.state_dict()
        return state

    def load_trainer_state(self, state: Mapping[str, Any]) -> None:
        self.state.step = int(state["step"])
        self.batches.load_state_dict(state["batches"])
        self.state.epoch = self.batches.epoch
        self.noise_rng.set_state(state["noise_rng"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
            self.ema.to(self.accelerator.device)
        if self.buffer is not None and "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])
            if self.buffer.images is not None:
                self.buffer.images = self.buffer.images.to(self.accelerator.device)

    def save_checkpoint(self) -> Path:
        return self.checkpoints.save(self.state.step, self.trainer_state())

    # --- the loop -----------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Runs until ``max_steps`` (or a callback's stop request); then samples, maps, checkpoint, export.

        Returns:
            ``{"steps", "median_step_time", "run_dir", and the last logged scalars}``.
        """
        cfg, acc, state = self.config, self.accelerator, self.state
        checkpoint = self.checkpoints.resolve(self.resume)
        if checkpoint is not None:
            self.load_trainer_state(self.checkpoints.load(checkpoint))
            acc.print(f"resumed from {checkpoint} at step {state.step}")
        self.callbacks.on_train_start(state)
        bar = progress_bar(acc, cfg.max_steps, initial=state.step)
        last_logs: dict[str, float] = {}
        while state.step < cfg.max_steps:
            with self.timer:
                stats = self.train_step()
            state.step += 1
            state.epoch = self.batches.epoch
            logs = {"step_time": self.timer.last}
            if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
                logs.update(self._scalars(stats))
                state.log_scalars(logs)
                bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)
                last_logs = logs
            self.callbacks.on_step_end(state, logs)
            bar.update(1)
            if cfg.sample_every > 0 and state.step % cfg.sample_every == 0:
                self._sample_and_log()
            if cfg.checkpoint_every > 0 and state.step % cfg.checkpoint_every == 0 and self.run_dir is not None:
                self.save_checkpoint()
            if state.should_stop():
                break
        bar.close()
        if self.run_dir is not None:
            self._sample_and_log(final=True)
            if not (self.checkpoints.latest() or Path()).name == f"step_{state.step}":
                self.save_checkpoint()
            self.export()
        self.callbacks.on_train_end(state)
        acc.end_training()
        return {"steps": state.step, "median_step_time": self.timer.median(), "run_dir": self.run_dir, **last_logs}

    def _scalars(self, stats: Mapping[str, Tensor]) -> dict[str, float]:
        logs = {
            "loss": stats["loss"].item(),
            "lr": self.lr_scheduler.get_last_lr()[0],
            "images_per_second": self._world_batch() * self.config.grad_accum_steps / max(self.timer.last, 1e-9),
        }
        if self.ema is not None:
            logs["ema_decay"] = self.ema.cur_decay_value or 0.0
        if "d_loss" in stats:
            logs.update(
                d_loss=stats["d_loss"].item(),
                d_real=torch.sigmoid(stats["d_real"].float()).mean().item(),
                d_fake=torch.sigmoid(stats["d_fake"].float()).mean().item(),
                r1=self.last_r1.item(),
            )
            if self.buffer is not None and len(self.buffer):
                logs["buffer_age"] = self.buffer.mean_age(self.state.step)
        return logs
