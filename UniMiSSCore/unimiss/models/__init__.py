"""MiT and MiT+, the UniMiSS and UniMiSS+ network families, written once for 2D and 3D.

The configs and grid arithmetic import without torch (model listing in a GUI stays
light); the networks and loaders are imported on first use.
"""
import importlib

from .config import CONFIGS, MiTConfig, get_config, grid_after, size_multiple, stem_stride
from .mitplus_config import MiTPlusConfig

_LAZY = {
    "MiT": "mit", "MiTSegmentation": "mit", "ProjectionHead": "heads", "ClassificationHead": "heads",
    "MiTClassifier": "heads", "CheckpointError": "official", "TransferReport": "official",
    "from_official_pretrain": "official", "from_official_segmentation": "official",
    "segmentation_from_official_pretrain": "official", "load_checkpoint": "official",
    "MiTPlus": "mitplus", "MiTPlusSegmentation": "mitplus", "MiTPlusClassifier": "mitplus",
    "from_official_plus_pretrain": "official_plus", "from_official_plus_segmentation": "official_plus",
    "from_official_plus_classifier": "official_plus", "transfer_plus_pretrain": "official_plus",
    "load_plus_checkpoint": "official_plus",
}

__all__ = ["CONFIGS", "MiTConfig", "MiTPlusConfig", "get_config", "grid_after", "size_multiple", "stem_stride", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
