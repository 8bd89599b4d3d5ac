"""The generator as explainee (DESIGN.md §10): units, GAN Dissection, artifact-unit correction and E-GBAS.

* ``units`` — a layer's channels by name: :func:`find_layer`, :func:`generate` (images + units, chunked,
  with :class:`UnitEdit` scale/insert edits done by removable hooks).
* ``dissection`` — :func:`dissect`: unit–concept IoU (top-quantile or IQR thresholds) and causal effects of
  ablating/inserting unit sets (the module was ``dissect.py``, whose name the function shadowed: import
  ``xai_train.generator.dissection``); ``segmenter`` trains the concept segmenter on a labelled dataset.
* ``scorers`` and ``correct`` — flag flawed samples and rank units (classifier or −D with CAM pseudo masks,
  or label-free rare units), suppress the top-k globally or layer by layer, with a random-unit control
  and a k-sweep; ``bake`` moves the correction into the weights and exports the generator.
* ``egbas`` — supporting boundary sets, tree exploration inside the region, ε-ball baseline.
* ``planted`` — a known answer: a unit that draws a blob on a known share of latents.

Example:
    >>> import torch
    >>> from xai_train.generator import UnitEdit, generate, plant_blob
    >>> from xai_train.models import DCGANGenerator
    >>> planted = plant_blob(DCGANGenerator(image_size=32, channels=1, width=8).eval(), fraction=0.3)
    >>> z = torch.randn(200, 100, generator=torch.Generator().manual_seed(0))
    >>> unit = planted.units["upsample.0.act"]
    >>> images, _ = generate(planted.generator, z)
    >>> fixed, _ = generate(planted.generator, z, "upsample.0.act", UnitEdit.suppress([unit], 16))
    >>> blob = planted.blob[0, 0]
    >>> shows = planted.shows_blob(z, margin=0.3)
    >>> bool(images[shows][:, 0, blob].mean() > 0.9), bool(fixed[shows][:, 0, blob].mean() < 0.5)
    (True, True)
"""

from xai_train.generator.bake import bake_target, bake_unit_scale, export_generator
from xai_train.generator.correct import (
    UnitRanking,
    check_k,
    check_units,
    flag_top,
    k_sweep,
    random_units,
    rank_units,
    sequential_correction,
    summarise_sweep,
    suppression_scale,
)
from xai_train.generator.dissection import Dissection, add_unit_effects, causal_effects, dissect
from xai_train.generator.egbas import explore, region_constraints, supporting_set
from xai_train.generator.iou import iqr_thresholds, overlap_counts, unit_quantiles
from xai_train.generator.planted import PlantedBlob, plant_blob
from xai_train.generator.scorers import (
    ArtifactClassifier,
    MaskScorer,
    NegatedDiscriminator,
    RareUnitScorer,
    cam_scorer,
    load_artifact_classifier,
    train_artifact_classifier,
)
from xai_train.generator.segmenter import ConceptSegmenter, load_or_train_segmenter, train_segmenter
from xai_train.generator.units import UnitEdit, channel_layers, edit_units, find_layer, generate, sample_latents

__all__ = [
    "ArtifactClassifier",
    "ConceptSegmenter",
    "Dissection",
    "MaskScorer",
    "NegatedDiscriminator",
    "PlantedBlob",
    "RareUnitScorer",
    "UnitEdit",
    "UnitRanking",
    "add_unit_effects",
    "bake_target",
    "bake_unit_scale",
    "cam_scorer",
    "causal_effects",
    "channel_layers",
    "check_k",
    "check_units",
    "dissect",
    "edit_units",
    "explore",
    "export_generator",
    "find_layer",
    "flag_top",
    "generate",
    "iqr_thresholds",
    "k_sweep",
    "load_artifact_classifier",
    "load_or_train_segmenter",
    "overlap_counts",
    "plant_blob",
    "random_units",
    "rank_units",
    "region_constraints",
    "sample_latents",
    "sequential_correction",
    "summarise_sweep",
    "supporting_set",
    "suppression_scale",
    "train_artifact_classifier",
    "train_segmenter",
    "unit_quantiles",
]
