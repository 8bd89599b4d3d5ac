"""Sampler objects: the sampling functions of :mod:`xai_train.diffusion.sampler` with their settings bound,
called like :func:`~xai_train.diffusion.sampler.ddim_sample` (what the diffusion trainer takes as ``sampler``).

Samplers that can write their model as a loadable pipeline follow :class:`ExportableSampler` (both here do);
the diffusion trainer exports a run whose sampler does, and says why it does not otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from diffusers import DDIMScheduler
from torch import Tensor, nn

from xai_train.diffusion.importance import MapSource, check_map_source
from xai_train.diffusion.importance_schedule import NoiseScaleSchedule, TimeConstantScale
from xai_train.diffusion.sampler import ImportanceFn, ScaleSchedule, ddim_sample, importance_ddim_sample

if TYPE_CHECKING:  # pipeline.py imports this module: the samplers import it when they export
    from diffusers import DiffusionPipeline
    from diffusers.schedulers.scheduling_utils import SchedulerMixin


@runtime_checkable
class ExportableSampler(Protocol):
    """A sampler, called like :func:`ddim_sample`, that can also build the pipeline sampling its model the same way.

    ``to_pipeline(unet, noise_scheduler)`` returns a ``DiffusionPipeline`` (save it with ``save_pretrained``, or
    with ``xai_train.diffusion.pipeline.export_pipeline``, which calls it). :class:`ImportanceSampler` and
    :class:`FixedMapSampler` are exportable; a plain function is not (``isinstance`` tells them apart).

    Example:
        >>> isinstance(FixedMapSampler(None, TimeConstantScale(0.01)), ExportableSampler)
        True
        >>> isinstance(ddim_sample, ExportableSampler)
        False
    """

    def __call__(
        self,
        unet: nn.Module,
        scheduler: DDIMScheduler,
        batch_size: int,
        num_inference_steps: int = 50,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...

    def to_pipeline(self, unet: nn.Module, noise_scheduler: SchedulerMixin) -> DiffusionPipeline: ...


class ImportanceSampler:
    """:func:`importance_ddim_sample` with D and the schedule bound, called like :func:`ddim_sample`.

    Args:
        importance_fn: ``(images, timesteps) -> (B, 1, H, W)`` (e.g. ``DiscriminatorImportance(D)``).
        schedule: the noise-scale schedule used in training.
        map_source: "x0" or "x_t" (see :func:`importance_ddim_sample`).
        eta: DDIM η.

    Example:
        >>> from diffusers import UNet2DModel
        >>> unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
        ...     layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D",) * 2,
        ...     up_block_types=("UpBlock2D",) * 2)
        >>> sampler = ImportanceSampler(lambda x, t: x[:, :1].abs().clamp(0, 1), NoiseScaleSchedule(100))
        >>> sampler(unet, DDIMScheduler(num_train_timesteps=100), 2, 3).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        importance_fn: ImportanceFn,
        schedule: ScaleSchedule,
        map_source: MapSource = "x0",
        eta: float = 0.0,
    ):
        check_map_source(map_source)
        self.importance_fn = importance_fn
        self.schedule = schedule
        self.map_source = map_source
        self.eta = eta

    def __call__(
        self,
        unet: nn.Module,
        scheduler: DDIMScheduler,
        batch_size: int,
        num_inference_steps: int = 50,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Returns (B, C, H, W) samples; see :func:`importance_ddim_sample`."""
        return importance_ddim_sample(
            unet,
            scheduler,
            self.importance_fn,
            self.schedule,
            batch_size,
            num_inference_steps,
            generator,
            self.map_source,
            self.eta,
        ).images

    def to_pipeline(self, unet: nn.Module, noise_scheduler: SchedulerMixin) -> DiffusionPipeline:
        """An ``ImportanceDiffusionPipeline`` carrying D, the schedule and the map settings.

        Raises:
            ValueError: ``importance_fn`` is not a ``DiscriminatorImportance`` without options (nothing else can
                be saved), or the schedule is not a ``NoiseScaleSchedule``.
        """
        from xai_train.diffusion.importance import DiscriminatorImportance
        from xai_train.diffusion.pipeline import ImportanceDiffusionPipeline

        fn, s = self.importance_fn, self.schedule
        if not isinstance(fn, DiscriminatorImportance) or fn.options:
            raise ValueError(
                "export_pipeline: the sampler's importance_fn must be a DiscriminatorImportance without options"
            )
        if not isinstance(s, NoiseScaleSchedule):
            raise ValueError(
                f"export_pipeline: an ImportanceSampler exports with a NoiseScaleSchedule only (got a "
                f"{type(s).__name__}); use FixedMapSampler for a TimeConstantScale"
            )
        return ImportanceDiffusionPipeline(
            unet,
            noise_scheduler,
            fn.discriminator,
            s.sharpness,
            s.midpoint,
            s.lambda_min,
            s.lambda_max,
            self.map_source,
            fn.method,
            fn.blur_sigma,
        )


class FixedMapSampler:
    """The per-pixel sampler with a map fixed before sampling, read at call time (e.g. SRD's current FAM).

    The same map for every image and step, sampled by :func:`importance_ddim_sample` in its fixed-map mode: x_T
    with per-pixel std ``g = schedule.scale(map)``, every DDIM step with that ``g``, the step-variance check first.
    While ``current_map`` gives ``None`` (no map yet) it is plain :func:`ddim_sample`, bit for bit.

    Args:
        current_map: the map, (1 or B, 1 or C, H, W) in [0, 1], or a function returning it (or ``None``).
        schedule: the scale of the map used in training, e.g. ``TimeConstantScale(0.01, "amplify")``.
        eta: DDIM η.

    Example:
        >>> from diffusers import UNet2DModel
        >>> unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
        ...     layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D",) * 2,
        ...     up_block_types=("UpBlock2D",) * 2)
        >>> fam = {"now": None}
        >>> sampler = FixedMapSampler(lambda: fam["now"], TimeConstantScale(0.01))
        >>> plain = sampler(unet, DDIMScheduler(num_train_timesteps=100), 2, 3, torch.Generator().manual_seed(0))
        >>> torch.equal(plain, ddim_sample(unet, DDIMScheduler(num_train_timesteps=100), 2, 3,
        ...     torch.Generator().manual_seed(0)))
        True
        >>> fam["now"] = torch.rand(1, 1, 8, 8)
        >>> sampler(unet, DDIMScheduler(num_train_timesteps=100), 2, 3).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        current_map: Tensor | Callable[[], Tensor | None] | None,
        schedule: ScaleSchedule,
        eta: float = 0.0,
    ):
        self.current_map = current_map if callable(current_map) else (lambda: current_map)
        self.schedule = schedule
        self.eta = eta

    def __call__(
        self,
        unet: nn.Module,
        scheduler: DDIMScheduler,
        batch_size: int,
        num_inference_steps: int = 50,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Returns (B, C, H, W) samples; see :func:`importance_ddim_sample` (fixed-map mode)."""
        fixed = self.current_map()
        if fixed is None:
            return ddim_sample(unet, scheduler, batch_size, num_inference_steps, generator, self.eta)
        return importance_ddim_sample(
            unet, scheduler, fixed, self.schedule, batch_size, num_inference_steps, generator, eta=self.eta
        ).images

    def to_pipeline(self, unet: nn.Module, noise_scheduler: SchedulerMixin) -> DiffusionPipeline:
        """A ``FixedMapDiffusionPipeline`` with the current map, or a ``DDPMPipeline`` while there is none (the
        model never saw scaled noise).

        Raises:
            ValueError: the schedule is not a ``TimeConstantScale`` (the pipeline saves ``w`` and the direction).
        """
        from diffusers import DDPMPipeline

        from xai_train.diffusion.pipeline import FixedMap, FixedMapDiffusionPipeline

        fixed = self.current_map()
        if fixed is None:
            return DDPMPipeline(unet=unet, scheduler=noise_scheduler)
        s = self.schedule
        if not isinstance(s, TimeConstantScale):
            raise ValueError("export_pipeline: a FixedMapSampler exports with a TimeConstantScale schedule only")
        return FixedMapDiffusionPipeline(unet, noise_scheduler, FixedMap.from_tensor(fixed), s.weight, s.direction)
