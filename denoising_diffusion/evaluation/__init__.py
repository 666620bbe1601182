"""Measuring generated images: feature-space distances and their noise floor (frechet.py), FID / KID / precision and
recall (metrics.py) in a chosen feature space (features.py: Inception-v3, inception.py, or any importable
extractor), real features cached per folder or built-in set (feature_cache.py, real_sets.py), sweeps of samplers
against network evaluations (sweep.py), and the small measuring classifier for small images
(measuring_classifier.py). Nothing here trains or samples a diffusion model; it measures what one made.
"""

from .feature_cache import real_features
from .features import resolve_extractor
from .frechet import (
    FeatureExtractor,
    FeatureReference,
    GaussianFit,
    NoiseFloor,
    extract_features,
    feature_reference,
    feature_statistics,
    frechet_distance,
    frechet_distance_to,
    gaussian_fit,
    real_floor,
)
from .measuring_classifier import SmallImageClassifier, classifier_accuracy, train_classifier
from .metrics import ImageMetric, MetricOptions, RealFeatures, Scores, score_features, score_images
from .real_sets import BuiltinReference, resolve_real
from .sweep import format_table, generate, plot_sweep, sweep

__all__ = [
    "BuiltinReference",
    "FeatureExtractor",
    "FeatureReference",
    "GaussianFit",
    "ImageMetric",
    "MetricOptions",
    "NoiseFloor",
    "RealFeatures",
    "Scores",
    "SmallImageClassifier",
    "classifier_accuracy",
    "extract_features",
    "feature_reference",
    "feature_statistics",
    "format_table",
    "frechet_distance",
    "frechet_distance_to",
    "gaussian_fit",
    "generate",
    "plot_sweep",
    "real_features",
    "real_floor",
    "resolve_extractor",
    "resolve_real",
    "score_features",
    "score_images",
    "sweep",
    "train_classifier",
]
