"""Training: supervised fine-tuning, and UniMiSS self-supervised pretraining (`pretrain`)."""
from .cases import CaseFiles, TrainingCase, pairs_from_args
from .finetune import FinetuneSettings, finetune

__all__ = ["CaseFiles", "TrainingCase", "pairs_from_args", "FinetuneSettings", "finetune"]
