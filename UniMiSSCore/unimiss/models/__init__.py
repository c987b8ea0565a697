"""MiT, the UniMiSS network family, written once for 2D and 3D."""
from .config import CONFIGS, MiTConfig, get_config
from .heads import ClassificationHead, MiTClassifier, ProjectionHead
from .mit import MiT, MiTSegmentation
from .official import (CheckpointError, TransferReport, from_official_pretrain, from_official_segmentation,
                       load_checkpoint, segmentation_from_official_pretrain)

__all__ = [
    "CONFIGS", "MiTConfig", "get_config", "MiT", "MiTSegmentation", "ProjectionHead", "ClassificationHead",
    "MiTClassifier", "CheckpointError", "TransferReport", "from_official_pretrain", "from_official_segmentation",
    "segmentation_from_official_pretrain", "load_checkpoint",
]
