"""Drop-in callbacks for xai-train trainers and hand-written Accelerate loops.

Built only on ``xai_train``'s public API.
"""

from callbacks.eval_metrics import EvalMetrics
from callbacks.explanation_quality import ExplanationQuality
from callbacks.importance_noise_schedule import ImportanceNoiseSchedule
from callbacks.importance_weighted_loss import ImportanceWeightedLoss
from callbacks.saliency_logger import SaliencyLogger
from callbacks.self_refining_diffusion import SelfRefiningDiffusion
from callbacks.xai_gradient_mask import XAIGradientMask

__all__ = ["EvalMetrics"]
__all__ += ["ExplanationQuality"]
__all__ += ["ImportanceNoiseSchedule", "ImportanceWeightedLoss"]
__all__ += ["SaliencyLogger", "XAIGradientMask"]
__all__ += ["SelfRefiningDiffusion"]
