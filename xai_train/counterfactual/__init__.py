"""Generative models as explainers of a classifier (DESIGN.md §11).

* :func:`manifold_counterfactuals` — Dombrowski et al.: Adam in a generator's latent space from z₀ = g⁻¹(x)
  until the classifier says the target class; :func:`pixel_adversarial` is the pixel-space comparison.
* :class:`RealNVP`, :func:`train_flow`, :class:`FlowDecoder` — an exactly invertible generator;
  :class:`GANDecoder` and :func:`invert_generator` — a GAN with the paper's Adam inversion (load a run of
  ``recipes/train_gan.py`` with ``xai_train.generator.run.load_gan_run``); :class:`DiffusionDecoder` — a
  diffusion UNet as deterministic DDIM with DDIM inversion.
"""

from xai_train.counterfactual.diffusion import DiffusionDecoder
from xai_train.counterfactual.flow import RealNVP, checkerboard, train_flow
from xai_train.counterfactual.generators import (
    FlowDecoder,
    GANDecoder,
    Inversion,
    LatentDecoder,
    invert_generator,
)
from xai_train.counterfactual.manifold import (
    CounterfactualResult,
    as_targets,
    manifold_counterfactuals,
    pixel_adversarial,
)

__all__ = [
    "CounterfactualResult",
    "DiffusionDecoder",
    "FlowDecoder",
    "GANDecoder",
    "Inversion",
    "LatentDecoder",
    "RealNVP",
    "as_targets",
    "checkerboard",
    "invert_generator",
    "manifold_counterfactuals",
    "pixel_adversarial",
    "train_flow",
]
