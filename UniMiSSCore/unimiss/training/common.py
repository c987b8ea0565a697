"""What fine-tuning and pretraining share: joining a torchrun job, writing checkpoints."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from ..data.io import atomic_output


def init_distributed() -> tuple[int, int]:
    """(rank, world size): joins the process group when started by torchrun (gloo on CPU, nccl on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def save_checkpoint_file(payload: dict, path: Path) -> None:
    """torch.save under a temporary name, renamed when complete: a kill never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
