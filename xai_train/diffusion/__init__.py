"""Explanation-guided diffusion (DESIGN.md §5): per-pixel noising, importance maps from a time-conditioned
discriminator, importance-scheduled noise, samplers (plain, per-pixel, fixed-map), the exported pipelines and
the timestep curriculum. Self-refining diffusion (DESIGN.md §9) is in :mod:`xai_train.diffusion.self_refine`.

Every piece is a plain function or a small stateful object with ``state_dict``; the callbacks in
``callbacks/`` and the trainer in ``xai_train.trainers.diffusion`` only decide when to call them.
"""

from xai_train.diffusion.adversary import Adversary
from xai_train.diffusion.curriculum import TimestepCurriculum
from xai_train.diffusion.discriminator import TimeConditionedDiscriminator, r1_penalty
from xai_train.diffusion.importance import (
    MAP_SOURCES,
    DiscriminatorImportance,
    MapSource,
    TimestepBound,
    attribution_magnitude,
    attribution_map,
    check_map_source,
    importance_map,
    importance_weights,
    input_saliency,
    saliency_panel,
)
from xai_train.diffusion.importance_schedule import (
    SCALE_DIRECTIONS,
    NoiseScaleSchedule,
    StepVarianceReport,
    TimeConstantScale,
    check_step_variance,
    clamp_next_scale,
    inference_pairs,
    step_variance,
)
from xai_train.diffusion.noise import (
    LOSS_WEIGHTINGS,
    PREDICTION_TYPES,
    add_noise,
    scaled_noise,
    signal_and_noise_levels,
    snr_loss_weight,
    split_prediction,
    split_prediction_at,
    training_target,
)
from xai_train.diffusion.replay import ReplayBuffer
from xai_train.diffusion.sampler import (
    ImportanceFn,
    ImportanceSample,
    ScaleSchedule,
    check_fixed_map,
    ddim_sample,
    importance_ddim_sample,
    importance_step,
    scheduler_alphas,
)
from xai_train.diffusion.samplers import ExportableSampler, FixedMapSampler, ImportanceSampler

__all__ = [
    "Adversary",
    "DiscriminatorImportance",
    "ExportableSampler",
    "FixedMap",
    "FixedMapDiffusionPipeline",
    "FixedMapSampler",
    "ImportanceDiffusionPipeline",
    "ImportanceFn",
    "ImportanceSampler",
    "LOSS_WEIGHTINGS",
    "MAP_SOURCES",
    "MapSource",
    "PREDICTION_TYPES",
    "ImportanceSample",
    "NoiseScaleSchedule",
    "PerPixelPipeline",
    "ReplayBuffer",
    "SCALE_DIRECTIONS",
    "ScaleSchedule",
    "StepVarianceReport",
    "TimeConditionedDiscriminator",
    "TimeConstantScale",
    "TimestepBound",
    "TimestepCurriculum",
    "add_noise",
    "attribution_magnitude",
    "attribution_map",
    "check_fixed_map",
    "check_map_source",
    "check_step_variance",
    "clamp_next_scale",
    "ddim_sample",
    "export_pipeline",
    "importance_ddim_sample",
    "importance_map",
    "importance_step",
    "importance_weights",
    "inference_pairs",
    "input_saliency",
    "load_pipeline",
    "saliency_panel",
    "r1_penalty",
    "sample_pipeline",
    "scaled_noise",
    "scheduler_alphas",
    "signal_and_noise_levels",
    "split_prediction",
    "split_prediction_at",
    "snr_loss_weight",
    "step_variance",
    "training_target",
]

# The pipelines load on first use: importing diffusers' pipeline machinery costs seconds, which every user of
# this package (the GAN trainer and the callbacks included) would otherwise pay without sampling a pipeline.
PIPELINE_NAMES = (
    "FixedMap",
    "FixedMapDiffusionPipeline",
    "ImportanceDiffusionPipeline",
    "PerPixelPipeline",
    "export_pipeline",
    "load_pipeline",
    "sample_pipeline",
)


def __getattr__(name: str):
    if name in PIPELINE_NAMES:
        from xai_train.diffusion import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(PIPELINE_NAMES))
