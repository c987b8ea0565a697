"""UniMiSS self-supervised pretraining: self-distillation on unlabelled radiographs and CT volumes.

The published recipe (YtongXie/UniMiSS-code, `UniMiSS/main.py`): a student MiT with
stochastic depth and a projection head learns to match an EMA teacher across two
global views of each image; 2D and 3D epochs alternate every `interval` epochs, and
during 2D epochs the 3D-only parameters are frozen. Checkpoints are written in the
official layout, so `from_official_pretrain` and `unimiss finetune --base` read them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..inference.predictor import resolve_device
from ..models import MiT, ProjectionHead
from ..models.config import get_config
from ..errors import check_writable
from ..models.official import build_bounded, load_checkpoint, official_to_ours, ours_to_official
from .common import init_distributed, save_checkpoint_file
from .pretrain_data import check_view_size, iterations, load_radiographs, load_volumes, make_batch


MAX_OUT_DIM = 262_144  # projection head outputs (published: 65536)
# A resumed run must repeat the interrupted one: these settings must be those of its checkpoint.
RESUME_MUST_MATCH = ("arch", "img_size2D", "img_size3D", "out_dim", "batch_size", "world_size", "seed", "interval",
                     "spacing", "samples_per_epoch", "lr", "drop_path", "plus")
ADDED_LATER = {"plus": False}  # settings that checkpoints written before them lack: their value then


@dataclass
class PretrainSettings:
    images2d: list = field(default_factory=list)
    images3d: list = field(default_factory=list)
    config: str = "compact"
    view_size_2d: tuple = (128, 128)
    view_size_3d: tuple = (16, 96, 96)
    spacing: float = 2.0                  # mm, isotropic working spacing of the CT volumes
    epochs: int = 10
    interval: int = 2                     # 2D and 3D epochs alternate every `interval` epochs
    batch_size: int = 4                   # per process
    samples_per_epoch: int | None = None  # default: the number of images of the epoch's kind
    lr: float | None = None               # peak; default 8e-4 * total batch / 256 (the published scaling)
    min_lr: float = 1e-6
    warmup_epochs: int | None = None      # default: min(10, epochs // 10)
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.996
    out_dim: int = 4096                   # published: 65536
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    clip_grad: float = 0.3
    freeze_last_layer: int = 1
    drop_path: float = 0.1
    seed: int = 0
    save_every: int = 20
    device: str = "auto"
    output: Path = field(default_factory=lambda: Path("unimiss-pretrain"))
    resume: bool = False
    plus: bool = False                    # UniMiSS+: MiT+, DRR-paired CT views, reconstruction (pretrain_plus.py)
    weight_drr: float = 1.0               # UniMiSS+ loss weights, as published
    weight_slices: float = 1.0
    weight_recon: float = 1.0


# ---------------------------------------------------------------- networks and loss

class Network(nn.Module):
    """Backbone + projection head; both views go through as one batch."""

    def __init__(self, backbone: MiT, head: ProjectionHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, views):
        return self.head(self.backbone(torch.cat(views)))


def build_networks(s: PretrainSettings):
    if s.plus:
        from .pretrain_plus import build_plus_networks

        return build_plus_networks(s)
    cfg = dataclasses.replace(get_config(s.config), img_size_2d=tuple(s.view_size_2d),
                              img_size_3d=tuple(s.view_size_3d))
    student_backbone = build_bounded(lambda: MiT(dataclasses.replace(cfg, drop_path_rate=s.drop_path),
                                                 spatial_dims=(2, 3)), f"MiT-{s.config} at the view sizes given")
    student = Network(student_backbone, ProjectionHead(student_backbone.embed_dim, s.out_dim, norm_last_layer=True))
    teacher_backbone = MiT(cfg, spatial_dims=(2, 3))
    teacher = Network(teacher_backbone, ProjectionHead(teacher_backbone.embed_dim, s.out_dim))
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher


class DistillationLoss(nn.Module):
    """The published TrainLoss for two views: centred, sharpened teacher vs student, across different views.

    One centre per dimension (`center` for 2D, as published, and `center_3d`): radiographs and CT volumes give
    the teacher different mean outputs, and with a single centre each switch between 2D and 3D epochs leaves it
    on the other kind's mean for about twenty steps. Published epochs are thousands of steps; a small data set's
    are a few, so a run spends them in that transient. On a few dozen images the shared centre let the network
    settle on one output per kind while the loss fell as if it learnt (Testing/benchmarks/
    check_pretraining_collapse.py); with a centre per kind that state shows as what it is, a loss at ln(out_dim).
    """

    def __init__(self, out_dim, teacher_temps, student_temp=0.1, center_momentum=0.9):
        super().__init__()
        self.teacher_temps, self.student_temp, self.center_momentum = teacher_temps, student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("center_3d", torch.zeros(1, out_dim))

    def forward(self, student_out, teacher_out, epoch, kind: int):
        center = self.center if kind == 2 else self.center_3d
        student = (student_out / self.student_temp).chunk(2)
        teacher = F.softmax((teacher_out - center) / self.teacher_temps(epoch), dim=-1).detach().chunk(2)
        loss = sum(torch.sum(-teacher[i] * F.log_softmax(student[1 - i], dim=-1), dim=-1).mean() for i in range(2)) / 2
        self.update_center(teacher_out, center)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out, center):
        batch_center = teacher_out.sum(dim=0, keepdim=True)
        count = torch.tensor(float(len(teacher_out)), device=teacher_out.device)
        if dist.is_initialized():
            dist.all_reduce(batch_center)
            dist.all_reduce(count)
        center.mul_(self.center_momentum).add_(batch_center / count, alpha=1 - self.center_momentum)


def cosine(base, final, t, warmup_t=0.0, start=0.0):
    """Linear warm-up from `start` over [0, warmup_t), then cosine from base to final; t in [0, 1]."""
    if t < warmup_t:
        return start + (base - start) * t / warmup_t
    u = (t - warmup_t) / max(1.0 - warmup_t, 1e-12)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * min(u, 1.0)))


def param_groups(model: nn.Module):
    """Weight decay for weights, none for biases and norms (the published get_params_groups)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith(".bias") or p.ndim == 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def clip_gradients(model: nn.Module, clip: float) -> None:
    """Each parameter's gradient clipped to norm `clip` on its own, as the published code does."""
    for p in model.parameters():
        if p.grad is not None:
            norm = p.grad.norm(2)
            if norm > clip:
                p.grad.mul_(clip / (norm + 1e-6))


def set_3d_trainable(model: nn.Module, trainable: bool) -> None:
    for name, p in model.named_parameters():
        if ".3d" in name:
            p.requires_grad_(trainable)


# ---------------------------------------------------------------- checkpoints in the official layout

def official_state(network: Network, prefix: str) -> dict:
    state = {f"{prefix}backbone.{ours_to_official(k)}": v for k, v in network.backbone.state_dict().items()}
    state.update({f"{prefix}head.{k}": v for k, v in network.head.state_dict().items()})
    return state


def load_official_state(network: Network, state: dict, prefix: str) -> None:
    backbone = {official_to_ours(k[len(prefix) + len("backbone."):]): v for k, v in state.items()
                if k.startswith(prefix + "backbone.")}
    head = {k[len(prefix) + len("head."):]: v for k, v in state.items() if k.startswith(prefix + "head.")}
    network.backbone.load_state_dict(backbone)
    network.head.load_state_dict(head)


def checkpoint_args(s: PretrainSettings, world: int) -> argparse.Namespace:
    """The `args` of an official checkpoint: plain values only, so it loads with weights_only=True."""
    plain = {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
             for k, v in dataclasses.asdict(s).items()}
    plain.update(images2d=[str(p) for p in s.images2d], images3d=[str(p) for p in s.images3d])
    return argparse.Namespace(**plain, arch="MiTplus" if s.plus else s.config, img_size2D=list(s.view_size_2d),
                              img_size3D=list(s.view_size_3d), world_size=world)


def save_checkpoint(path: Path, student, teacher, optimizer, loss, epoch, s, world) -> None:
    if s.plus:  # the UniMiSS+ layout: MiT+ names, the centre under `dino_loss`
        from .pretrain_plus import plus_official_state

        save_checkpoint_file({"student": plus_official_state(student, "module."),
                              "teacher": plus_official_state(teacher, ""), "optimizer": optimizer.state_dict(),
                              "epoch": epoch, "args": checkpoint_args(s, world),
                              "dino_loss": centres(loss)}, path)
        return
    save_checkpoint_file({"student": official_state(student, "module."), "teacher": official_state(teacher, ""),
                          "optimizer": optimizer.state_dict(), "epoch": epoch, "args": checkpoint_args(s, world),
                          "loss": centres(loss)}, path)


def centres(loss: DistillationLoss) -> dict:
    return {"center": loss.center.detach().cpu(), "center_3d": loss.center_3d.detach().cpu()}


def _resume(path: Path, s: PretrainSettings, world: int, student, teacher, optimizer, loss_fn) -> int:
    """Load a checkpoint of a run with the same settings; returns its epoch."""
    saved = load_checkpoint(path)  # weights only, an allow-list of types: a tampered file runs no code
    centre = "dino_loss" if s.plus else "loss"
    missing = [k for k in ("student", "teacher", "optimizer", "epoch", "args", centre) if k not in saved]
    old = vars(saved["args"]) if isinstance(saved.get("args"), argparse.Namespace) else {}
    new = vars(checkpoint_args(s, world))
    old = {**ADDED_LATER, **old}
    differences = [f"{k} {old.get(k)} in the checkpoint, {new[k]} now" for k in RESUME_MUST_MATCH
                   if old.get(k) != new[k]]
    if "args" in missing or not differences and missing:
        raise ValueError(f"{path}: not a pretraining checkpoint of unimiss (it lacks {', '.join(missing)})")
    if differences:
        raise ValueError(f"{path}: cannot resume with other settings: {'; '.join(differences)}")
    try:
        if s.plus:
            from .pretrain_plus import load_plus_official_state as load_state
        else:
            load_state = load_official_state
        load_state(student, saved["student"], "module.")
        load_state(teacher, saved["teacher"], "")
        optimizer.load_state_dict(saved["optimizer"])
        loss_fn.center.copy_(saved[centre]["center"])
        loss_fn.center_3d.copy_(saved[centre].get("center_3d", saved[centre]["center"]))
        return int(saved["epoch"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: the checkpoint does not fit the networks ({first[:200]})") from None


# ---------------------------------------------------------------- training

UNIFORM_EPOCHS = 10  # epochs in a row at the uniform solution before the run says it is not learning


def at_uniform_solution(distillation_loss: float, out_dim: int) -> bool:
    """A uniform teacher (nothing distinguishes one image from another) costs any student at least ln(out_dim)."""
    return distillation_loss > 0.995 * math.log(out_dim)


def epoch_kind(epoch: int, s: PretrainSettings) -> int:
    """2 or 3: the published order is `interval` 2D epochs, then `interval` 3D epochs, and so on."""
    if not s.images3d:
        return 2
    if not s.images2d:
        return 3
    return 2 if (epoch // s.interval) % 2 == 0 else 3


def pretrain(s: PretrainSettings, progress) -> Path | None:
    """Train; returns the checkpoint path (rank 0) or None."""
    if not s.images2d and not s.images3d:
        raise ValueError("no images: give --images2d and/or --images3d")
    counts = {"--epochs": s.epochs, "--interval": s.interval, "--batch-size": s.batch_size,
              "--save-every": s.save_every, "--samples-per-epoch": s.samples_per_epoch}
    for flag, value in counts.items():
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, not {value}")
    if not 1 <= s.out_dim <= MAX_OUT_DIM:
        raise ValueError(f"--out-dim must be from 1 to {MAX_OUT_DIM}, not {s.out_dim}")
    if s.lr is not None and not (math.isfinite(s.lr) and s.lr > 0):
        raise ValueError(f"--lr must be a positive number, not {s.lr}")
    s.view_size_2d, s.view_size_3d = check_view_size(s.view_size_2d, 2), check_view_size(s.view_size_3d, 3)
    rank, world = init_distributed()
    device = resolve_device(s.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)

    output = Path(s.output)
    if s.resume and not (output / "checkpoint.pth").is_file():
        raise ValueError(f"{output}: nothing to resume, there is no checkpoint.pth in this folder")
    if not s.resume and (output / "checkpoint.pth").is_file():
        raise ValueError(f"{output / 'checkpoint.pth'}: a previous run's checkpoint is here; pass --resume to "
                         "continue it, or choose another --output")
    if rank == 0:
        check_writable(output / "checkpoint.pth")
    images = {2: load_radiographs(s.images2d, s.view_size_2d), 3: load_volumes(s.images3d, s.spacing)}
    view_size = {2: s.view_size_2d, 3: s.view_size_3d}
    if rank == 0:
        progress.message(f"{len(images[2])} radiographs and {len(images[3])} CT volumes; {world} process(es)")

    torch.manual_seed(s.seed)  # the same initial weights on every rank
    student, teacher = build_networks(s)
    student.to(device).train()
    teacher.to(device).eval()
    warmup_t = (min(10, s.epochs // 10) if s.warmup_epochs is None else s.warmup_epochs) / s.epochs
    lr = s.lr if s.lr is not None else 8e-4 * s.batch_size * world / 256
    temps = np.concatenate([np.linspace(s.warmup_teacher_temp, s.teacher_temp, s.warmup_teacher_temp_epochs),
                            np.full(max(s.epochs - s.warmup_teacher_temp_epochs, 1), s.teacher_temp)])
    loss_fn = DistillationLoss(s.out_dim, lambda e: float(temps[min(e, len(temps) - 1)])).to(device)
    optimizer = torch.optim.AdamW(param_groups(student))

    checkpoint_path, log_path = output / "checkpoint.pth", output / "log.jsonl"
    start_epoch = 0
    if s.resume:
        start_epoch = _resume(checkpoint_path, s, world, student, teacher, optimizer, loss_fn)
        if rank == 0 and log_path.exists():  # forget epochs after the checkpoint: they are trained again
            kept = [l for l in log_path.read_text().splitlines() if l and json.loads(l)["epoch"] <= start_epoch]
            log_path.write_text("".join(l + "\n" for l in kept))
        if rank == 0:
            progress.message(f"resumed from {checkpoint_path} after epoch {start_epoch}")
    elif rank == 0 and log_path.exists():
        log_path.unlink()

    start = time.monotonic()
    at_uniform = 0  # epochs in a row whose distillation loss sat at the uniform solution
    for epoch in range(start_epoch, s.epochs):
        epoch_start = time.monotonic()
        kind = epoch_kind(epoch, s)
        pool = images[kind]
        set_3d_trainable(student, kind == 3)
        # Rebuilt each epoch as the published code does: DDP only syncs parameters that need gradients.
        model = (nn.parallel.DistributedDataParallel(student, find_unused_parameters=True,
                                                     device_ids=[device.index] if device.type == "cuda" else None)
                 if world > 1 else student)
        samples = s.samples_per_epoch or len(pool)
        sampler = torch.utils.data.DistributedSampler(range(samples), world, rank, shuffle=True, seed=s.seed)
        sampler.set_epoch(epoch)
        order = [i % len(pool) for i in sampler]
        n_iter = iterations(samples, s.batch_size, world)
        # Seeded per epoch and rank, so a resumed run repeats an uninterrupted one.
        torch.manual_seed(s.seed * 100_003 + epoch * 101 + rank)
        rng = np.random.default_rng([s.seed, epoch, rank])
        losses, parts = [], {}
        for it in range(n_iter):
            t = (epoch + it / n_iter) / s.epochs
            for i, group in enumerate(optimizer.param_groups):
                group["lr"] = cosine(lr, s.min_lr, t, warmup_t)
                if i == 0:
                    group["weight_decay"] = cosine(s.weight_decay, s.weight_decay_end, t)
            batch = order[it * s.batch_size:(it + 1) * s.batch_size] or order[:s.batch_size]
            views = [v.to(device) for v in make_batch(pool, batch, view_size[kind], rng)]
            if s.plus:
                from .pretrain_plus import plus_step

                loss, step_parts = plus_step(model, teacher, loss_fn, views, kind, epoch, s, rng)
                for name, value in step_parts.items():
                    parts[name] = parts.get(name, 0.0) + value / n_iter
            else:
                with torch.no_grad():
                    teacher_out = teacher(views)
                loss = loss_fn(model(views), teacher_out, epoch, kind)
            if not math.isfinite(loss.item()):
                raise ValueError(f"the loss became {loss.item()} in epoch {epoch + 1}; try a lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if s.clip_grad:
                clip_gradients(student, s.clip_grad)
            if epoch < s.freeze_last_layer:
                for name, p in student.named_parameters():
                    if "last_layer" in name:
                        p.grad = None
            optimizer.step()
            with torch.no_grad():  # EMA update of the teacher, momentum on a cosine schedule toward 1
                m = cosine(s.momentum_teacher, 1.0, t)
                for ps, pt in zip(student.parameters(), teacher.parameters()):
                    pt.mul_(m).add_(ps.detach(), alpha=1 - m)
            losses.append(loss.item())
            if rank == 0:
                progress.progress(f"epoch {epoch + 1} ({kind}D)", it + 1, n_iter)
        mean_loss = float(np.mean(losses))
        if world > 1:
            value = torch.tensor([mean_loss], device=device)
            dist.all_reduce(value)
            mean_loss = value.item() / world
        if rank == 0:
            elapsed = time.monotonic() - start
            record = {"epoch": epoch + 1, "kind": f"{kind}D", "loss": round(mean_loss, 6),
                      **{f"loss_{k}": round(v, 6) for k, v in parts.items()}, "iterations": n_iter,
                      "lr": optimizer.param_groups[0]["lr"], "weight_decay": optimizer.param_groups[0]["weight_decay"],
                      "momentum": m, "teacher_temp": loss_fn.teacher_temps(epoch), "seconds": round(elapsed, 2)}
            output.mkdir(parents=True, exist_ok=True)
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            remaining = (s.epochs - epoch - 1) * (time.monotonic() - epoch_start)
            progress.metric(epoch=epoch + 1, kind=f"{kind}D", loss=round(mean_loss, 5), eta_s=round(remaining))
            at_uniform = at_uniform + 1 if at_uniform_solution(parts.get("distill", mean_loss), s.out_dim) else 0
            if at_uniform == UNIFORM_EPOCHS:
                progress.message(
                    f"epochs {epoch + 2 - UNIFORM_EPOCHS}-{epoch + 1}: the distillation loss has stayed at "
                    f"ln({s.out_dim}) = {math.log(s.out_dim):.2f}, where the teacher gives every image the same output "
                    "and the student learns nothing from it; runs on a few dozen images stayed there (README)")
            if (epoch + 1) % s.save_every == 0 or epoch + 1 == s.epochs:
                save_checkpoint(checkpoint_path, student, teacher, optimizer, loss_fn, epoch + 1, s, world)
    set_3d_trainable(student, True)
    if world > 1:
        dist.barrier()
    return checkpoint_path if rank == 0 else None
