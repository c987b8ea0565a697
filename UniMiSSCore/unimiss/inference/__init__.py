"""Segmentation inference: preprocessing, sliding window, results on the input's grid."""
from .predictor import (Predictor, connected_parts, keep_largest_components, keep_parts, resolve_device,
                        resolve_precision)
from .sliding_window import gaussian_importance, sliding_window, window_starts

__all__ = ["Predictor", "connected_parts", "keep_largest_components", "keep_parts", "resolve_device",
           "resolve_precision", "gaussian_importance", "sliding_window", "window_starts"]
