"""The GAN trainer: Accelerate, callbacks, checkpoints, TensorBoard.

One ``step`` is one generator optimizer step. It runs ``d_steps_per_g_step`` discriminator updates, each
over ``grad_accum_steps`` micro-batches inside ``accelerator.accumulate(G, D)``, then one generator update
on the latents of the last discriminator update (so accumulation matches one big batch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers.training_utils import EMAModel
from torch import Tensor, nn

from xai_train.callback import Callback, CallbackList, TrainState
from xai_train.checkpoint import CheckpointManager
from xai_train.checks import check_discriminator_output, check_generator_output
from xai_train.config.gan import GANTrainConfig
from xai_train.data import TensorBatches
from xai_train.distributed import rank_consistent
from xai_train.ema import ema_weights, load_ema_state
from xai_train.errors import UserError
from xai_train.images import save_grid
from xai_train.tracking import StepTimer, make_accelerator, start_run
from xai_train.trainers.loop import TrainingLoop
from xai_train.trainers.losses import discriminator_loss, generator_loss


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Turns off ``requires_grad`` of the parameters for the block (restoring each flag afterwards)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class GANTrainer(TrainingLoop):
    """Trains a generator/discriminator pair with Accelerate.

    Args:
        generator: maps latents (B, latent_dim) to images (B, C, H, W); has ``latent_dim``.
        discriminator: maps images to logits (B, 1); any other output shape stops the first step with
            ``the discriminator must return (B, 1) logits, got ...`` (``xai_train.checks``).
        images: (N, C, H, W) training images in [-1, 1] (or uint8, see ``TensorBatches``).
        config: training hyperparameters.
        callbacks: hooks called on every rank (see ``xai_train.callback``).
        run_dir: where logs, samples and checkpoints go; ``None`` writes nothing.
        seed: data order, latent noise and init seed (identical on every rank).
        resume: "", "auto" or a checkpoint folder.
        run_config: the resolved config saved as ``config.yaml`` and as TensorBoard hparams.
        cpu: force the CPU.

    Example:
        >>> from xai_train.models import build_gan
        >>> G, D = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
        >>> trainer = GANTrainer(G, D, torch.rand(64, 1, 32, 32) * 2 - 1,
        ...                      GANTrainConfig(batch_size=16, max_steps=2, log_every=1), cpu=True)
        >>> trainer.train()["steps"]
        2
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        images: Tensor,
        config: GANTrainConfig,
        *,
        callbacks: Iterable[Callback] = (),
        run_dir: str | Path | None = None,
        seed: int = 0,
        resume: str = "",
        run_config: Mapping[str, Any] | None = None,
        cpu: bool = False,
    ):
        # config's own ranges are checked when it is built (GANTrainConfig.__post_init__)
        if not isinstance(getattr(generator, "latent_dim", None), int):
            raise UserError(
                f"the generator must have an int attribute `latent_dim` (the latent length it takes), "
                f"got {getattr(generator, 'latent_dim', None)!r} on {type(generator).__name__}"
            )
        if images.is_floating_point() and not torch.isfinite(images).all():
            raise UserError("the training images contain NaN or inf values; clean the dataset before training")
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.seed = seed
        self.resume = resume
        self.accelerator = accelerator = make_accelerator(
            self.run_dir,
            mixed_precision=config.mixed_precision,
            grad_accum_steps=config.grad_accum_steps,
            seed=seed,
            cpu=cpu,
        )
        start_run(accelerator, self.run_dir, run_config)
        self.latent_dim = generator.latent_dim
        self.ema = EMAModel(generator.parameters(), decay=config.ema_decay) if config.ema_decay > 0 else None
        opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=config.betas)
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=config.betas)
        self.generator, self.discriminator, self.opt_g, self.opt_d = accelerator.prepare(
            generator, discriminator, opt_g, opt_d
        )
        if self.ema is not None:
            self.ema.to(accelerator.device)
        self.batches = TensorBatches(
            images,
            config.batch_size,
            seed=seed,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
            device=accelerator.device,
        )
        # Latents come from one generator seeded alike on every rank; each rank keeps its slice of the
        # global batch, so N processes see exactly the noise one process with an N-times batch would.
        self.latent_rng = torch.Generator().manual_seed(seed + 1)
        self.fixed_latent = torch.randn(
            config.num_samples, self.latent_dim, generator=torch.Generator().manual_seed(seed + 2)
        )
        self.callbacks = CallbackList(callbacks)
        self.callbacks.register_for_checkpointing(accelerator)
        self.checkpoints = CheckpointManager(
            accelerator, (self.run_dir or Path(".")) / "checkpoints", keep_last=config.keep_checkpoints
        )
        self.state = TrainState(
            accelerator=accelerator,
            max_steps=config.max_steps,
            models={"generator": self.generator, "discriminator": self.discriminator},
            run_dir=self.run_dir,
            ema={"generator": self.ema} if self.ema is not None else {},
        )
        self.timer = StepTimer()

    # --- pieces of a step -----------------------------------------------------------------------------
    def _latents(self) -> Tensor:
        """This rank's latents for the micro-batches of one update: (grad_accum_steps, B, latent_dim)."""
        acc, batch, micro = self.accelerator, self.config.batch_size, self.config.grad_accum_steps
        everyone = torch.randn(micro, acc.num_processes, batch, self.latent_dim, generator=self.latent_rng)
        return everyone[:, acc.process_index].to(acc.device)

    def _discriminator_update(self, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        cfg, acc = self.config, self.accelerator
        with acc.autocast():
            d_real = self.discriminator(real)
            d_fake = self.discriminator(fake.detach())
            check_discriminator_output(d_real, real.shape[0])
            check_discriminator_output(d_fake, fake.shape[0])
            loss_map = discriminator_loss(d_real, d_fake, cfg.loss, cfg.real_label, cfg.fake_label)
        loss_map = self.callbacks.on_loss(self.state, loss_map, "discriminator")
        loss = loss_map.mean()
        acc.backward(loss)
        if acc.sync_gradients:
            self.callbacks.on_before_optimizer_step(self.state, "discriminator")
            if cfg.clip_grad_norm_d > 0:
                acc.clip_grad_norm_(self.discriminator.parameters(), cfg.clip_grad_norm_d)
        self.opt_d.step()
        self.opt_d.zero_grad(set_to_none=True)
        return {"d_loss": loss.detach(), "d_real": d_real.detach(), "d_fake": d_fake.detach()}

    def _generator_update(self, fake: Tensor) -> dict[str, Tensor]:
        cfg, acc = self.config, self.accelerator
        # G's gradient needs D's input gradient only; frozen D params keep D's .grad clean and skip work.
        # The unwrapped D also keeps DDP's reducer out of a backward that syncs no D gradients.
        discriminator = acc.unwrap_model(self.discriminator)
        with frozen(discriminator):
            with acc.autocast():
                d_fake = discriminator(fake)
            # an explainer refusing this rank's fakes (NaN after an fp16 overflow) stops every rank alike
            with rank_consistent(acc, "on_generator_forward"):
                self.callbacks.on_generator_forward(self.state, fake, d_fake, discriminator)
            with acc.autocast():
                loss_map = generator_loss(d_fake, cfg.loss, cfg.generator_label)
            loss_map = self.callbacks.on_loss(self.state, loss_map, "generator")
            loss = loss_map.mean()
            acc.backward(loss)
        if acc.sync_gradients:
            self.callbacks.on_before_optimizer_step(self.state, "generator")
            if cfg.clip_grad_norm_g > 0:
                acc.clip_grad_norm_(self.generator.parameters(), cfg.clip_grad_norm_g)
        self.opt_g.step()
        self.opt_g.zero_grad(set_to_none=True)
        if acc.sync_gradients and self.ema is not None:
            self.ema.step(acc.unwrap_model(self.generator).parameters())
        return {"g_loss": loss.detach()}

    def train_step(self) -> dict[str, Tensor]:
        """One generator step (with its discriminator updates). Returns detached step statistics.

        Without accumulation the generator reuses the fakes of the last discriminator update (one G
        forward). With accumulation, D first takes its step over all micro-batches, then G regenerates
        the same fakes, so the result matches one big batch (at the cost of a second G forward).
        """
        cfg, acc = self.config, self.accelerator
        stats: dict[str, Tensor] = {}
        reuse_fakes = cfg.grad_accum_steps == 1
        for cycle in range(cfg.d_steps_per_g_step):
            last_cycle = cycle == cfg.d_steps_per_g_step - 1
            latents = self._latents()
            for micro in range(cfg.grad_accum_steps):
                real = self.batches.next()
                with acc.accumulate(self.generator, self.discriminator):
                    with torch.set_grad_enabled(last_cycle and reuse_fakes), acc.autocast():
                        fake = self.generator(latents[micro])
                    check_generator_output(fake)
                    stats.update(self._discriminator_update(real, fake))
                    if last_cycle and reuse_fakes:
                        stats.update(self._generator_update(fake))
        if not reuse_fakes:
            for micro in range(cfg.grad_accum_steps):
                with acc.accumulate(self.generator, self.discriminator):
                    with acc.autocast():
                        fake = self.generator(latents[micro])
                    stats.update(self._generator_update(fake))
        return stats

    # --- sampling, checkpoints ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, latents: Tensor | None = None) -> Tensor:
        """Images (N, C, H, W) in [-1, 1] from the fixed latents (EMA weights when enabled), eval mode."""
        latents = (self.fixed_latent if latents is None else latents).to(self.accelerator.device)
        with ema_weights(self.accelerator.unwrap_model(self.generator), self.ema) as generator:
            return generator(latents).float()

    def sample_and_log(self, final: bool = False) -> None:
        samples = self.sample()
        self.callbacks.on_sample(self.state, samples)
        self.state.log_images({"samples": (samples + 1) / 2})
        if self.run_dir is not None and self.accelerator.is_main_process:
            save_grid(samples, self.run_dir / "samples" / f"step_{self.state.step:07d}.png")
            if final:
                save_grid(samples, self.run_dir / "samples.png")

    def trainer_state(self) -> dict[str, Any]:
        """What a checkpoint needs beyond Accelerate's state (tensors and plain values only)."""
        state: dict[str, Any] = {
            "batches": self.batches.state_dict(),
            "latent_rng": self.latent_rng.get_state(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_trainer_state(self, state: Mapping[str, Any]) -> None:
        self.batches.load_state_dict(state["batches"])
        self.latent_rng.set_state(state["latent_rng"])
        if self.ema is not None and "ema" in state:  # loaded on the CPU: back to G's device
            load_ema_state(self.ema, state["ema"], self.accelerator.unwrap_model(self.generator))

    def progress_postfix(self, logs: Mapping[str, float]) -> dict[str, str]:
        return {"d": f"{logs['d_loss']:.3f}", "g": f"{logs['g_loss']:.3f}"}

    def step_scalars(self, stats: Mapping[str, Tensor]) -> dict[str, float]:
        return {
            "d_loss": stats["d_loss"].item(),
            "g_loss": stats["g_loss"].item(),
            "d_real": torch.sigmoid(stats["d_real"].float()).mean().item(),
            "d_fake": torch.sigmoid(stats["d_fake"].float()).mean().item(),
            "lr_g": self.opt_g.param_groups[0]["lr"],
            "lr_d": self.opt_d.param_groups[0]["lr"],
            "images_per_second": self.config.batch_size * self.accelerator.num_processes / max(self.timer.last, 1e-9),
        }
