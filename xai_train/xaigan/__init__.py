"""xAI-GAN as pure functions (DESIGN.md §4): gradient rules, sample selection, schedules, and the
reference code's mask. ``callbacks.XAIGradientMask`` decides when to call them.
"""

from xai_train.xaigan.options import PRESETS, REFERENCE_METHODS, check_alpha, check_xaigan_options
from xai_train.xaigan.reference import MIN_EXPLAINED, reference_mask, reference_selection
from xai_train.xaigan.rules import RULES, apply_rule, check_rule, product_grad, scale_grad
from xai_train.xaigan.selection import alpha_at, is_active, rejected

__all__ = [
    "MIN_EXPLAINED",
    "PRESETS",
    "REFERENCE_METHODS",
    "RULES",
    "alpha_at",
    "apply_rule",
    "check_alpha",
    "check_rule",
    "check_xaigan_options",
    "is_active",
    "product_grad",
    "reference_mask",
    "reference_selection",
    "rejected",
    "scale_grad",
]
