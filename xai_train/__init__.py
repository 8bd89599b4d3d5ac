"""xai-train: explanation-guided generation (xAI-GAN, saliency-guided diffusion) for Accelerate loops."""

from xai_train.callback import Callback, CallbackList, GradFn, NoisePlan, TrainState, compose_grad_fns

__version__ = "0.1.0"

__all__ = ["Callback", "CallbackList", "GradFn", "NoisePlan", "TrainState", "compose_grad_fns", "__version__"]
