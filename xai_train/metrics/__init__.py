"""Sample-quality metrics: Fréchet distance, KID and precision/recall on named feature spaces.

Feature spaces: a small classifier trained per dataset (:func:`domain_feature_extractor`, cached on disk)
or, when the user supplies NVIDIA's TorchScript Inception file, the standard Inception
(:class:`InceptionFeatures`).
Every result names its extractor; FD on fewer than ~5k samples is biased upward, so KID is reported beside it.
"""

from xai_train.metrics.accumulator import METRICS, Collectives, FeatureMetrics
from xai_train.metrics.classifier import ClassifierRecipe, FeatureClassifier, train_classifier
from xai_train.metrics.evaluate import GenerativeMetrics, evaluate_images, tagged_scalars
from xai_train.metrics.extractor import (
    ClassifierFeatures,
    FeatureExtractor,
    default_cache_dir,
    domain_feature_extractor,
    extract_features,
    load_or_train_classifier,
    recipe_key,
)
from xai_train.metrics.frechet import (
    frechet_distance,
    frechet_distance_from_features,
    gaussian_stats,
    stats_from_sums,
    trace_sqrt_product,
)
from xai_train.metrics.inception import InceptionFeatures
from xai_train.metrics.kid import kernel_inception_distance, mmd2_unbiased, polynomial_kernel
from xai_train.metrics.precision_recall import knn_radii, manifold_coverage, precision_recall

__all__ = [
    "METRICS",
    "ClassifierFeatures",
    "ClassifierRecipe",
    "Collectives",
    "FeatureClassifier",
    "FeatureExtractor",
    "FeatureMetrics",
    "GenerativeMetrics",
    "InceptionFeatures",
    "default_cache_dir",
    "domain_feature_extractor",
    "evaluate_images",
    "extract_features",
    "frechet_distance",
    "frechet_distance_from_features",
    "gaussian_stats",
    "kernel_inception_distance",
    "knn_radii",
    "load_or_train_classifier",
    "manifold_coverage",
    "mmd2_unbiased",
    "polynomial_kernel",
    "precision_recall",
    "recipe_key",
    "stats_from_sums",
    "tagged_scalars",
    "trace_sqrt_product",
    "train_classifier",
]
