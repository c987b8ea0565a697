"""Segmentation inference: preprocessing, sliding window, results on the input's grid."""
from .predictor import Predictor, keep_largest_components, resolve_device, resolve_precision
from .sliding_window import gaussian_importance, sliding_window, window_starts

__all__ = ["Predictor", "keep_largest_components", "resolve_device", "resolve_precision", "gaussian_importance",
           "sliding_window", "window_starts"]
