"""Self-refining diffusion (Lee, Yu, Kim, Park, arXiv 2512.08774; DESIGN.md §9) on diffusers.

A flaw highlighter (FH) trained on real vs generated images explains the model's own samples; the mean of
its Grad-CAMs, the flaw activation map (FAM), amplifies the training noise where the samples are flawed
(:mod:`~xai_train.diffusion.self_refine.fam`) and modulates the UNet's attention keys and values in training
(:mod:`~xai_train.diffusion.self_refine.attention`). ``callbacks.SelfRefiningDiffusion`` decides when. A model
trained with the consistent target samples with the per-pixel sampler and the last FAM (``resolve_sampler``;
``xai_train.diffusion.FixedMapSampler``, ``TimeConstantScale`` and ``FixedMapDiffusionPipeline``).
"""

from xai_train.diffusion.self_refine.attention import (
    FamAttention,
    FamAttnProcessor,
    FamProjection,
    attention_blocks,
    key_value_scale,
)
from xai_train.diffusion.self_refine.fam import (
    DIRECTIONS,
    EVIDENCE,
    Negated,
    amplified_noise,
    batch_mean_fam,
    cam_layer,
    fam_noise_scale,
    fam_target,
    flaw_maps,
)
from xai_train.diffusion.self_refine.highlighter import (
    FlawHighlighter,
    HighlighterReport,
    OnlineHighlighter,
    bce_loss,
    build_highlighter,
    highlighter_accuracy,
    load_highlighter_folders,
    offline_highlighter,
    reduce_gradients,
    save_highlighter,
    train_highlighter,
)
from xai_train.diffusion.self_refine.options import (
    CHOICES,
    REFERENCE,
    SAMPLERS,
    check_reference,
    check_self_refine_options,
    resolve_sampler,
)

__all__ = [
    "CHOICES",
    "REFERENCE",
    "SAMPLERS",
    "check_reference",
    "check_self_refine_options",
    "DIRECTIONS",
    "EVIDENCE",
    "Negated",
    "FamAttention",
    "FamAttnProcessor",
    "FamProjection",
    "FlawHighlighter",
    "HighlighterReport",
    "OnlineHighlighter",
    "amplified_noise",
    "attention_blocks",
    "batch_mean_fam",
    "bce_loss",
    "build_highlighter",
    "cam_layer",
    "fam_noise_scale",
    "fam_target",
    "flaw_maps",
    "highlighter_accuracy",
    "key_value_scale",
    "load_highlighter_folders",
    "offline_highlighter",
    "reduce_gradients",
    "resolve_sampler",
    "save_highlighter",
    "train_highlighter",
]
