"""Exported pipelines: ``DDPMPipeline`` for the standard forward process, ``ImportanceDiffusionPipeline`` for
importance-scheduled noise (it carries D and the noise-scale schedule, and samples with the per-pixel DDIM
analogue), ``FixedMapDiffusionPipeline`` for a noise scale ``g = 1 ± w·map`` with one fixed map (self-refining
diffusion's consistent-target models; it carries the map as safetensors next to the UNet and samples with the
same per-pixel sampler). All save with ``save_pretrained`` and load with :func:`load_pipeline`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from diffusers import ConfigMixin, DDIMPipeline, DDIMScheduler, DDPMPipeline, DiffusionPipeline, ModelMixin, UNet2DModel
from diffusers.configuration_utils import register_to_config
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from xai_train.checkpoint.reading import CheckpointError, first_line
from xai_train.diffusion.discriminator import TimeConditionedDiscriminator
from xai_train.diffusion.importance import DiscriminatorImportance, check_map_source
from xai_train.diffusion.importance_schedule import NoiseScaleSchedule, TimeConstantScale
from xai_train.diffusion.samplers import ExportableSampler, FixedMapSampler, ImportanceSampler
from xai_train.errors import UserError


class PerPixelPipeline(DiffusionPipeline):
    """What the per-pixel pipelines share: DDIM with the training scheduler's config and their own sampler."""

    model_cpu_offload_seq = "unet"

    def per_pixel_sampler(self, eta: float = 0.0) -> ExportableSampler:
        """The sampler of the model, built from the pipeline's components and config (each subclass has one)."""
        raise NotImplementedError(f"{type(self).__name__} must define per_pixel_sampler")

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | None = None,
        num_inference_steps: int = 50,
        eta: float = 0.0,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Samples ``batch_size`` images; ``output_type`` "pil", "np" (N, H, W, C in [0, 1]) or "pt" ([-1, 1])."""
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        images = self.per_pixel_sampler(eta)(self.unet, scheduler, batch_size, num_inference_steps, generator)
        if output_type != "pt":
            images = (images / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
        return ImagePipelineOutput(images=images) if return_dict else (images,)


class ImportanceDiffusionPipeline(PerPixelPipeline):
    """Samples a model trained with importance-scheduled noise (``ImportanceNoiseSchedule(mode="pixel")``).

    Args:
        unet: the denoiser.
        scheduler: the training scheduler (any diffusers scheduler; sampling uses DDIM with its config).
        discriminator: the time-conditioned D whose saliency gives the importance map.
        sharpness, midpoint, lambda_min, lambda_max: the ``g_t(s)`` schedule of training.
        map_source: "x0" or "x_t" (see ``importance_ddim_sample``).
        method: attribution method ("saliency" is built in).
        blur_sigma: Gaussian blur of the map.
    """

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: SchedulerMixin,
        discriminator: TimeConditionedDiscriminator,
        sharpness: float = 20.0,
        midpoint: float = 0.5,
        lambda_min: float = 0.25,
        lambda_max: float = 4.0,
        map_source: str = "x0",
        method: str = "saliency",
        blur_sigma: float = 0.0,
    ):
        check_map_source(map_source)
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, discriminator=discriminator)
        self.register_to_config(
            sharpness=sharpness,
            midpoint=midpoint,
            lambda_min=lambda_min,
            lambda_max=lambda_max,
            map_source=map_source,
            method=method,
            blur_sigma=blur_sigma,
        )

    def noise_schedule(self) -> NoiseScaleSchedule:
        c = self.config
        steps = self.scheduler.config.num_train_timesteps
        return NoiseScaleSchedule(steps, c.sharpness, c.midpoint, c.lambda_min, c.lambda_max)

    def per_pixel_sampler(self, eta: float = 0.0) -> ImportanceSampler:
        """The run's sampler: D's saliency map recomputed at every step, the training schedule's ``g_t``."""
        importance_fn = DiscriminatorImportance(self.discriminator, self.config.method, self.config.blur_sigma)
        return ImportanceSampler(importance_fn, self.noise_schedule(), self.config.map_source, eta)


class FixedMap(ModelMixin, ConfigMixin):
    """A fixed map as a pipeline component (saved as safetensors): self-refining diffusion's last FAM.

    Args:
        channels, height, width: the map's shape is (1, channels, height, width).

    Example:
        >>> fixed = FixedMap.from_tensor(torch.full((1, 1, 2, 2), 0.5))
        >>> fixed.importance.flatten().tolist(), fixed.config.height
        ([0.5, 0.5, 0.5, 0.5], 2)
    """

    @register_to_config
    def __init__(self, channels: int = 1, height: int = 32, width: int = 32):
        super().__init__()
        self.register_buffer("importance", torch.zeros(1, channels, height, width))

    @classmethod
    def from_tensor(cls, values: torch.Tensor) -> FixedMap:
        """A component holding ``values`` (1, C, H, W), copied to float32 on the CPU."""
        if values.dim() != 4 or values.shape[0] != 1:
            raise ValueError(f"FixedMap holds one (1, C, H, W) map; got shape {tuple(values.shape)}")
        fixed = cls(*values.shape[1:])
        fixed.importance.copy_(values.detach().float().cpu())
        return fixed


class FixedMapDiffusionPipeline(PerPixelPipeline):
    """Samples a model trained with the noise scale ``g = 1 ± w·map`` of one fixed map (SRD, consistent target).

    The per-pixel sampler's fixed-map mode (``importance_ddim_sample`` with a tensor): x_T with per-pixel std
    ``g``, every DDIM step with that ``g``, the step-variance check first.

    Args:
        unet: the denoiser.
        scheduler: the training scheduler (sampling uses DDIM with its config).
        fixed_map: the map (a :class:`FixedMap`; the FAM of the last refresh for self-refining diffusion).
        noise_weight: ``w`` (SRD's ``w_n``).
        direction: "amplify" (``1 + w·map``) or "protect" (``1 − w·map``).
    """

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: SchedulerMixin,
        fixed_map: FixedMap,
        noise_weight: float = 0.01,
        direction: str = "amplify",
    ):
        TimeConstantScale(noise_weight, direction)  # one-line errors before anything is registered
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, fixed_map=fixed_map)
        self.register_to_config(noise_weight=noise_weight, direction=direction)

    def noise_schedule(self) -> TimeConstantScale:
        return TimeConstantScale(self.config.noise_weight, self.config.direction)

    def per_pixel_sampler(self, eta: float = 0.0) -> FixedMapSampler:
        """The per-pixel sampler with this pipeline's map and ``g = 1 ± w·map``."""
        return FixedMapSampler(self.fixed_map.importance, self.noise_schedule(), eta)


def export_pipeline(
    path: str | Path,
    unet: UNet2DModel,
    noise_scheduler: SchedulerMixin,
    sampler: ExportableSampler | None = None,
) -> Path:
    """Saves a loadable pipeline: ``DDPMPipeline`` for the standard process, else the sampler's own pipeline.

    Args:
        path: target folder (e.g. ``runs/<name>/pipeline``).
        unet: the (EMA) UNet to export, unwrapped.
        noise_scheduler: the training ``DDPMScheduler``.
        sampler: ``None`` for a standard-noise run, else an
            :class:`~xai_train.diffusion.samplers.ExportableSampler`, whose ``to_pipeline`` builds the pipeline:
            an ``ImportanceSampler`` (its importance function must be a ``DiscriminatorImportance``) →
            ``ImportanceDiffusionPipeline``; a ``FixedMapSampler`` with a ``TimeConstantScale`` →
            ``FixedMapDiffusionPipeline`` with its current map (``DDPMPipeline`` while it has none: the model never
            saw scaled noise).

    Returns:
        The folder.

    Raises:
        TypeError: ``sampler`` has no ``to_pipeline`` (e.g. a plain function).
    """
    if sampler is None:
        pipeline = DDPMPipeline(unet=unet, scheduler=noise_scheduler)
    elif isinstance(sampler, ExportableSampler):
        pipeline = sampler.to_pipeline(unet, noise_scheduler)
    else:
        raise TypeError(
            f"export_pipeline: the sampler {sampler!r} has no to_pipeline(unet, noise_scheduler); give an "
            "ExportableSampler (ImportanceSampler, FixedMapSampler) or None for a standard-noise run"
        )
    return _save_whole(pipeline, Path(path))


def _save_whole(pipeline: DiffusionPipeline, path: Path) -> Path:
    """``save_pretrained`` into a hidden folder, then swapped in: a crash never leaves half a pipeline."""
    tmp, old = path.with_name(f".tmp_{path.name}"), path.with_name(f".old_{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    pipeline.save_pretrained(tmp)
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def load_pipeline(path: str | Path) -> DiffusionPipeline:
    """Loads what :func:`export_pipeline` wrote (``DDPMPipeline``, ``ImportanceDiffusionPipeline`` or
    ``FixedMapDiffusionPipeline``).

    Exports written before the map source "x0_hat" was renamed "x0" load with the new name.
    """
    path = Path(path)
    index = path / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"'{path}' holds no exported pipeline (no model_index.json); train the run to the end")
    fix = "export it again, or sample a checkpoint of the run (recipes/sample.py <run> --checkpoint latest)"
    try:
        saved = json.loads(index.read_text())
        name = saved["_class_name"]
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"'{index}' is corrupt ({first_line(error)}); {fix}") from error
    classes = {c.__name__: c for c in (DDPMPipeline, ImportanceDiffusionPipeline, FixedMapDiffusionPipeline)}
    if name not in classes:
        raise CheckpointError(f"'{path}' holds a {name}; expected one of {', '.join(classes)}")
    try:  # safetensors only: loading never unpickles
        if name == "ImportanceDiffusionPipeline":
            renamed = {"map_source": "x0"} if saved.get("map_source") == "x0_hat" else {}
            return ImportanceDiffusionPipeline.from_pretrained(path, use_safetensors=True, **renamed)
        if name == "FixedMapDiffusionPipeline":
            return FixedMapDiffusionPipeline.from_pretrained(path, use_safetensors=True)
        return DDPMPipeline.from_pretrained(path, use_safetensors=True)
    except (OSError, ValueError) as error:
        if isinstance(error, (FileNotFoundError, UserError)):
            raise
        raise CheckpointError(f"cannot load the pipeline in '{path}' ({first_line(error)}); {fix}") from error


def sample_pipeline(
    pipeline: DiffusionPipeline, num_images: int, num_inference_steps: int = 50, seed: int = 0, eta: float = 0.0
) -> np.ndarray:
    """DDIM samples from any exported pipeline: (N, H, W, C) float32 in [0, 1].

    A ``DDPMPipeline`` is sampled through ``DDIMPipeline`` with a ``DDIMScheduler`` made from its config.
    """
    generator = torch.Generator().manual_seed(seed)
    if isinstance(pipeline, DDPMPipeline):
        pipeline = DDIMPipeline(unet=pipeline.unet, scheduler=DDIMScheduler.from_config(pipeline.scheduler.config))
    pipeline.set_progress_bar_config(disable=True)
    out = pipeline(
        batch_size=num_images, generator=generator, num_inference_steps=num_inference_steps, eta=eta, output_type="np"
    )
    return np.asarray(out.images, dtype=np.float32)
