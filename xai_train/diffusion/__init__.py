"""Explanation-guided diffusion (DESIGN.md §5): per-pixel noising, importance maps from a time-conditioned
discriminator, importance-scheduled noise, samplers and the timestep curriculum.

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
    NoiseScaleSchedule,
    StepVarianceReport,
    check_step_variance,
    clamp_next_scale,
    inference_pairs,
    step_variance,
)
from xai_train.diffusion.noise import (
    LOSS_WEIGHTINGS,
    PREDICTION_TYPES,
    add_noise,
    signal_and_noise_levels,
    snr_loss_weight,
    split_prediction,
    split_prediction_at,
    training_target,
)
from xai_train.diffusion.replay import ReplayBuffer
from xai_train.diffusion.sampler import (
    ImportanceSample,
    ImportanceSampler,
    ddim_sample,
    importance_ddim_sample,
    importance_step,
    scheduler_alphas,
)

__all__ = [
    "Adversary",
    "DiscriminatorImportance",
    "ImportanceSampler",
    "LOSS_WEIGHTINGS",
    "MAP_SOURCES",
    "MapSource",
    "PREDICTION_TYPES",
    "ImportanceSample",
    "NoiseScaleSchedule",
    "ReplayBuffer",
    "StepVarianceReport",
    "TimeConditionedDiscriminator",
    "TimestepBound",
    "TimestepCurriculum",
    "add_noise",
    "attribution_magnitude",
    "attribution_map",
    "check_map_source",
    "check_step_variance",
    "clamp_next_scale",
    "ddim_sample",
    "importance_ddim_sample",
    "importance_map",
    "importance_step",
    "importance_weights",
    "inference_pairs",
    "input_saliency",
    "saliency_panel",
    "r1_penalty",
    "scheduler_alphas",
    "signal_and_noise_levels",
    "split_prediction",
    "split_prediction_at",
    "snr_loss_weight",
    "step_variance",
    "training_target",
]
