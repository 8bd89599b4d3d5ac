"""Generative models as explainers of a classifier (DESIGN.md §11).

* :func:`manifold_counterfactuals` — Dombrowski et al.: Adam in a generator's latent space from z₀ = g⁻¹(x)
  until the classifier says the target class; :func:`pixel_adversarial` is the pixel-space comparison.
  Both clip every image to [-1, 1] before the classifier and warn once when a start image lies outside.
* :class:`RealNVP`, :func:`train_flow`, :class:`FlowDecoder` — an exactly invertible generator;
  :class:`GANDecoder` and :func:`invert_generator` — a GAN with the paper's Adam inversion (load a run of
  ``recipes/train_gan.py`` with ``xai_train.generator.run.load_gan_run``); :class:`DiffusionDecoder` — a
  diffusion UNet as deterministic DDIM with DDIM inversion.
* :func:`train_oracle`, :func:`oracle_agreement` — an independent classifier that judges whether a
  counterfactual really shows the target class (``oracle``).
* GANMEX (``ganmex``): :func:`latent_baseline` (a generated target-class image near x, found in the GAN's
  latent space, as an attribution baseline), :func:`train_translator` (a StarGAN-style :class:`Translator`
  with a WGAN-GP :class:`Critic`), :func:`class_attribution`, :func:`simple_baselines`, :func:`mass_inside`.
* AttFind (``attfind``): :func:`attfind`, :func:`channel_effects`, :func:`channel_ranges`,
  :func:`shifted_images`, with the known answer :func:`planted_blob_generator`.
* The toy (``toy``): :func:`sample_circle`, :func:`circle_distance`, :class:`HalfPlaneClassifier` — data on
  a circle and a classifier of its upper half: a counterfactual should move along the circle, an adversarial
  example leaves it (:func:`circle_distance` measures how far).
"""

from xai_train.counterfactual.attfind import (
    AttFindResult,
    attfind,
    channel_effects,
    channel_ranges,
    planted_blob_generator,
    shifted_images,
)
from xai_train.counterfactual.diffusion import DiffusionDecoder, ddim_timesteps
from xai_train.counterfactual.flow import RealNVP, checkerboard, train_flow
from xai_train.counterfactual.ganmex import (
    ClassScore,
    Critic,
    Translator,
    class_attribution,
    ganmex_loss,
    gradient_penalty,
    latent_baseline,
    mass_inside,
    simple_baselines,
    train_translator,
)
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
    warn_if_outside,
)
from xai_train.counterfactual.oracle import MLPClassifier, oracle_agreement, train_oracle
from xai_train.counterfactual.toy import HalfPlaneClassifier, circle_distance, sample_circle

__all__ = [
    "AttFindResult",
    "ClassScore",
    "CounterfactualResult",
    "Critic",
    "DiffusionDecoder",
    "FlowDecoder",
    "GANDecoder",
    "HalfPlaneClassifier",
    "Inversion",
    "LatentDecoder",
    "MLPClassifier",
    "RealNVP",
    "Translator",
    "as_targets",
    "attfind",
    "channel_effects",
    "channel_ranges",
    "checkerboard",
    "circle_distance",
    "class_attribution",
    "ddim_timesteps",
    "ganmex_loss",
    "gradient_penalty",
    "invert_generator",
    "latent_baseline",
    "manifold_counterfactuals",
    "mass_inside",
    "oracle_agreement",
    "pixel_adversarial",
    "planted_blob_generator",
    "sample_circle",
    "shifted_images",
    "simple_baselines",
    "train_flow",
    "train_oracle",
    "train_translator",
    "warn_if_outside",
]
