"""Training: supervised fine-tuning (and, later, UniMiSS self-supervised pretraining)."""
from .cases import CaseFiles, TrainingCase, pairs_from_args
from .finetune import FinetuneSettings, finetune

__all__ = ["CaseFiles", "TrainingCase", "pairs_from_args", "FinetuneSettings", "finetune"]
