"""Drop-in callbacks for xai-train trainers and hand-written Accelerate loops.

Built only on ``xai_train``'s public API.
"""

from callbacks.eval_metrics import EvalMetrics
from callbacks.saliency_logger import SaliencyLogger
from callbacks.xai_gradient_mask import XAIGradientMask

__all__ = ["EvalMetrics", "SaliencyLogger", "XAIGradientMask"]
