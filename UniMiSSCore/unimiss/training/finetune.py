"""Supervised fine-tuning of a MiT segmentation network on labelled cases; the result is a model package."""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..inference.predictor import resolve_device, resolve_precision
from ..inference.sliding_window import sliding_window
from ..models import MiTSegmentation, segmentation_from_official_pretrain
from ..models.official import build_bounded, load_checkpoint
from ..inference.preprocessing import INTENSITY_PRESETS
from .cases import class_names_of, prepare_case, read_pair
from .common import init_distributed, save_checkpoint_file
from .losses import DeepSupervisionLoss, dice_per_class
from .sampling import PatchSampler, augment


@dataclass
class FinetuneSettings:
    name: str | None = None               # of the new model package
    base: str | None = None               # model package, official pretraining checkpoint (.pth), or None: scratch
    config: str = "compact"               # network config from scratch, or the official checkpoint's arch
    new_head: bool = False                # a base package's head for a new label set
    patch_size: tuple | None = None       # (z, y, x) / (y, x); from the base package when it has one
    spacing: tuple | None = None          # mm (x, y[, z]); from the base package when it has one
    intensity: str = "ct"                 # ct | zscore | percentile, when there is no base package
    epochs: int | None = None
    minutes: float | None = None
    iterations_per_epoch: int = 50
    batch_size: int = 2
    optimizer: str = "adamw"
    lr: float | None = None
    schedule: str = "poly"
    seed: int = 0
    validation: int | None = None         # how many of the cases to hold out (default: about a fifth, at least one)
    patience: int = 20                    # epochs without a better validation Dice before stopping
    precision: str = "auto"
    device: str = "auto"
    workdir: Path | None = None           # default: unimiss-finetune-<name> beside the training data
    resume: bool = False
    command: str = ""


MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # as model.schema.json's "name"
CHECKPOINT = "checkpoint.pt"


def check_settings(s: FinetuneSettings) -> None:
    """Refuse settings that cannot work, before any case is read."""
    if s.name is not None and not MODEL_NAME.match(s.name):
        raise ValueError(f"--name {s.name!r} cannot name a model: use up to 64 lower-case letters, digits, "
                         "'.', '_' and '-', starting with a letter or digit")
    counts = {"--epochs": s.epochs, "--iterations": s.iterations_per_epoch, "--batch-size": s.batch_size,
              "--patience": s.patience}
    for flag, value in counts.items():
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, not {value}")
    for flag, value in (("--minutes", s.minutes), ("--lr", s.lr)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag} must be a positive number, not {value}")
    if s.validation is not None and s.validation < 0:
        raise ValueError(f"--validation must be 0 or more, not {s.validation}")
    if s.spacing is not None and not all(math.isfinite(v) and 0 < v <= 1000 for v in s.spacing):
        raise ValueError(f"--spacing {list(s.spacing)}: each value must be above 0 and at most 1000 mm")


def default_workdir(case_files, name: str) -> Path:
    """unimiss-finetune-<name> in the folder that holds the training data."""
    paths = [str(Path(p).resolve().parent) for f in case_files for p in (f.image, f.label)]
    return Path(os.path.commonpath(paths)) / f"unimiss-finetune-{name}"


def finetune(settings: FinetuneSettings, case_files, progress):
    """Train, validate each epoch, checkpoint each epoch; returns the new ModelPackage (rank 0) or None.

    The checkpoint lives in the work folder until the package is written; a run that stops early
    leaves it there for `--resume`, and a new run never overwrites it.
    """
    from ..zoo import resolve_model

    check_settings(settings)
    rank, world = init_distributed()
    s = settings
    pairs = [read_pair(f) for f in case_files]
    dims = {image.dimension for image, *_ in pairs}
    if len(dims) > 1:
        raise ValueError("2D and 3D cases are mixed; train 2D and 3D models separately")
    dimension = dims.pop()

    base_package = None
    if s.base and not str(s.base).endswith((".pth", ".pt", ".ckpt")):
        base_package = resolve_model(s.base)
        if base_package.dimension != dimension:
            raise ValueError(f"model {base_package.reference} is {base_package.dimension}D; the cases are {dimension}D")
    case_labels = {l.name: l for _, _, labels, _ in pairs for l in labels}
    if base_package and not s.new_head:
        labels = base_package.labels
        present = set().union(*(p[3] for p in pairs))
        unknown = [n for n in case_labels if n in present and n not in {l.name for l in labels}]
        if unknown:
            raise ValueError(f"label {unknown[0]!r} is not a class of {base_package.reference} "
                             f"({', '.join(l.name for l in labels)}); use --new-head to train a new label set")
        class_names = [l.name for l in labels]
    else:
        class_names = class_names_of(pairs)
        labels = [dataclasses.replace(case_labels[n], value=i + 1) for i, n in enumerate(class_names)]

    patch = tuple(base_package.patch_size) if base_package else tuple(
        s.patch_size or ((32, 128, 128) if dimension == 3 else (256, 256)))
    if base_package:
        preprocessing = dict(base_package.preprocessing)
    elif dimension == 3:
        # Without a base model: the cases' median spacing unless one is asked for, as nnU-Net does.
        spacing = s.spacing or np.median([image.spacing for image, *_ in pairs], axis=0).round(3).tolist()
        preprocessing = {"spacing": list(spacing), "orientation": "LPS", "intensity": INTENSITY_PRESETS[s.intensity]}
    else:
        # Radiographs often carry no pixel spacing: the whole image is resized to the patch.
        preprocessing = {"size": list(patch), "intensity": INTENSITY_PRESETS[s.intensity]}
    name = s.name or (f"{base_package.name}-finetuned" if base_package else f"custom-{dimension}d")
    workdir = Path(s.workdir) if s.workdir is not None else default_workdir(case_files, name)
    checkpoint_path = workdir / CHECKPOINT
    if rank == 0:
        _check_outputs(workdir, name)
    if s.resume and not checkpoint_path.is_file():
        raise ValueError(f"{workdir}: nothing to resume, there is no {CHECKPOINT} in this folder")
    if not s.resume and checkpoint_path.is_file():
        raise ValueError(f"{checkpoint_path}: an unfinished run left its checkpoint here; pass --resume to continue "
                         f"it, or delete {workdir} to start over")
    cases = [prepare_case(f, *p, class_names, preprocessing) for f, p in zip(case_files, pairs)]
    num_classes = len(class_names) + 1

    torch.manual_seed(s.seed)  # the same initial weights on every rank and in every repeat of a run
    network, base_info = _build_network(s, base_package, dimension, num_classes, patch, progress, rank)
    device = resolve_device(s.device)
    network.to(device).train()
    network.deep_supervision = True
    model = torch.nn.parallel.DistributedDataParallel(network) if world > 1 else network

    n_val = 0 if len(cases) < 2 else (s.validation if s.validation is not None else max(1, round(len(cases) / 5)))
    train_cases, val_cases = cases[: len(cases) - n_val], cases[len(cases) - n_val:]
    if not val_cases and rank == 0:
        progress.message("only one training case: no validation is possible, so no early stopping; training goes on")
    sampler = PatchSampler(train_cases, patch)
    loss_fn = DeepSupervisionLoss()
    lr = s.lr or (1e-2 if s.optimizer == "sgd" else 3e-4)
    optimizer = (torch.optim.SGD(model.parameters(), lr=lr, momentum=0.99, nesterov=True, weight_decay=3e-5)
                 if s.optimizer == "sgd" else torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2))
    autocast = resolve_precision(s.precision, device, training=True)
    max_epochs = s.epochs if s.epochs is not None else (10_000 if s.minutes else 50)

    state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "history": []}
    run = {"dimension": dimension, "labels": class_names, "patch_size": list(patch), "preprocessing": preprocessing,
           "network": {"config": {k: v for k, v in network.config.to_dict().items() if not k.startswith("img_size")},
                       "num_classes": num_classes, "in_channels": network.in_channels},
           "base": str(s.base) if s.base else None, "optimizer": s.optimizer, "lr": lr, "schedule": s.schedule,
           "iterations": s.iterations_per_epoch, "batch_size": s.batch_size, "seed": s.seed}
    if s.resume:
        state, best_state = _resume(checkpoint_path, run, network, optimizer)
        if rank == 0:
            progress.message(f"resumed from {checkpoint_path} after epoch {state['epoch']}")
    else:
        best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        if rank == 0:
            progress.message(f"work files (the checkpoint for --resume) go to {workdir}")

    saved_epoch = state["epoch"]
    try:
        start = time.monotonic()
        for epoch in range(state["epoch"], max_epochs):
            epoch_start = time.monotonic()
            # Seeded per epoch (and rank), so a resumed run repeats an uninterrupted one exactly.
            torch.manual_seed(s.seed * 100_003 + epoch * 101 + rank)
            rng = np.random.default_rng([s.seed, epoch, rank])
            generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
            model.train()
            losses = []
            for it in range(s.iterations_per_epoch):
                step = epoch * s.iterations_per_epoch + it
                for group in optimizer.param_groups:
                    group["lr"] = _schedule(s.schedule, lr, step, max_epochs * s.iterations_per_epoch)
                images, targets = augment(*sampler.sample(s.batch_size, rng), generator)
                images, targets = images.to(device), targets.to(device)
                with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                    outputs = model(images)
                loss = loss_fn(outputs, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
                optimizer.step()
                losses.append(loss.item())
                if rank == 0:
                    progress.progress(f"epoch {epoch + 1}", it + 1, s.iterations_per_epoch)
            if not all(math.isfinite(v) for v in losses):
                raise ValueError(f"the loss became {losses[-1]} in epoch {epoch + 1}; try a lower --lr")
            val_dice = (_validate(network, val_cases, patch, class_names, device, autocast)
                        if rank == 0 and val_cases else {})
            score = float(np.mean(list(val_dice.values()))) if val_dice else -float(np.mean(losses))
            state["epoch"] = epoch + 1
            if score > state["best_score"]:
                state["best_score"], state["best_epoch"] = score, epoch + 1
                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            elapsed = time.monotonic() - start
            state["history"].append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_dice": val_dice,
                                     "minutes": elapsed / 60})
            stop = ((s.minutes and elapsed / 60 >= s.minutes)
                    or (val_cases and epoch + 1 - state["best_epoch"] >= s.patience))
            remaining = (max_epochs - epoch - 1) * (time.monotonic() - epoch_start)
            if s.minutes:
                remaining = min(remaining, max(0.0, s.minutes * 60 - elapsed))
            if rank == 0:
                progress.metric(epoch=epoch + 1, loss=round(float(np.mean(losses)), 5),
                                val_dice={k: round(v, 4) for k, v in val_dice.items()},
                                eta_s=round(0 if stop else remaining))
                _save_checkpoint(checkpoint_path, network, optimizer, state, best_state, run)
                saved_epoch = epoch + 1
            if stop:
                break
    except KeyboardInterrupt:
        if rank == 0:
            progress.message(f"stopped: {checkpoint_path} holds epoch {saved_epoch}; run the same command with "
                             "--resume to continue from there" if checkpoint_path.is_file() else
                             "stopped before the first epoch ended: there is nothing to resume")
        raise
    if world > 1:
        dist.barrier()
    if rank != 0:
        return None
    network.load_state_dict(best_state)
    package = _write_package(s, name, network, base_package, base_info, dimension, labels, preprocessing, patch,
                             cases, train_cases, val_cases, state)
    checkpoint_path.unlink(missing_ok=True)  # the package holds the result; nothing is left to resume
    _remove_if_empty(workdir)
    return package


def _check_outputs(workdir: Path, name: str) -> None:
    """The work folder and the user models folder must be writable before any training."""
    from ..errors import check_writable
    from ..zoo import user_models_dir

    check_writable(workdir / CHECKPOINT)
    check_writable(user_models_dir() / f"{name}-x" / "model.json")


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _resume(path: Path, run: dict, network, optimizer):
    """The training state saved in `path`, after checking it was saved by a run with the same settings."""
    saved = load_checkpoint(path)  # weights only, an allow-list of types: a tampered file runs no code
    keys = ("model", "optimizer", "best_model", "epoch", "best_score", "best_epoch", "history", "run")
    if not all(k in saved for k in keys):
        raise ValueError(f"{path}: not a fine-tuning checkpoint of this version of unimiss (it lacks "
                         f"{', '.join(k for k in keys if k not in saved)}); delete its folder to start over")
    differences = [f"{key} {_short(old)} in the checkpoint, {_short(new)} now"
                   for key, old, new in _differences(saved["run"], run)]
    if differences:
        raise ValueError(f"{path}: cannot resume with other settings: " + "; ".join(differences)
                         + "; run with the checkpoint's settings, or delete its folder to start over")
    try:
        network.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: the checkpoint does not fit the network ({first[:200]})") from None
    state = {k: saved[k] for k in ("epoch", "best_score", "best_epoch", "history")}
    return state, saved["best_model"]


def _differences(old: dict, new: dict, prefix=""):
    """(key, old value, new value) for each leaf that differs, dicts compared key by key."""
    for key in dict.fromkeys([*new, *old]):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            yield from _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            yield f"{prefix}{key}", a, b


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."




def _build_network(s, base_package, dimension, num_classes, patch, progress, rank):
    if base_package is not None:
        network = base_package.build_network("cpu")
        if s.new_head or network.num_classes != num_classes:
            fresh = MiTSegmentation(network.config, num_classes, dimension, in_channels=network.in_channels,
                                    patch_size=patch)
            head = ("aux_heads.", "classifier.")
            fresh.load_state_dict({k: v for k, v in network.state_dict().items() if not k.startswith(head)},
                                  strict=False)
            network = fresh
        return network, {"base_model": base_package.reference}
    if s.base:
        network, report = segmentation_from_official_pretrain(s.base, arch=s.config, num_classes=num_classes,
                                                              spatial_dims=dimension, patch_size=patch, in_channels=1)
        if rank == 0:
            progress.message(f"from the official pretraining checkpoint {s.base}: {report.summary()}")
        return network, {"base_model": f"official UniMiSS pretraining checkpoint {Path(s.base).name} ({s.config})"}
    network = build_bounded(lambda: MiTSegmentation(s.config, num_classes, dimension, in_channels=1, patch_size=patch),
                            f"MiT-{s.config} with --patch-size {list(patch)}")
    return network, {"base_model": None}


def _schedule(kind, lr, step, total):
    t = min(step / max(total, 1), 1.0)
    return lr * (1 - t) ** 0.9 if kind == "poly" else lr * 0.5 * (1 + math.cos(math.pi * t))


@torch.no_grad()
def _validate(network, cases, patch, class_names, device, autocast) -> dict:
    network.eval()
    scores = {name: [] for name in class_names}

    def predict(batch):
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            return torch.softmax(network(batch.to(device)).float(), dim=1)

    for case in cases:
        probs = sliding_window(predict, torch.from_numpy(case.image)[None], patch, len(class_names) + 1, 0.25, 2)
        for name, d in zip(class_names, dice_per_class(probs.argmax(0).cpu(), torch.from_numpy(case.label),
                                                       len(class_names) + 1)):
            if d is not None:
                scores[name].append(d)
    network.train()
    return {name: float(np.mean(v)) for name, v in scores.items() if v}


def _save_checkpoint(path: Path, network, optimizer, state, best_state, run):
    save_checkpoint_file({"model": network.state_dict(), "optimizer": optimizer.state_dict(),
                          "best_model": best_state, **state, "run": run}, path)


def _write_package(s, name, network, base_package, base_info, dimension, labels, preprocessing, patch, cases,
                   train_cases, val_cases, state):
    from ..zoo import next_version, save_package, user_models_dir

    version = next_version(name)
    best = next((h for h in state["history"] if h["epoch"] == state["best_epoch"]), state["history"][-1])
    meta = {
        "schema_version": 1, "name": name, "version": version, "task": "segmentation",
        "description": f"Fine-tuned on {len(cases)} local cases ({', '.join(l.name for l in labels)}).",
        "dimension": dimension,
        "modality": base_package.meta.get("modality", "CT" if dimension == 3 else "CR/DX") if base_package
        else ("CT" if dimension == 3 else "CR/DX"),
        "labels": [l.to_dict() for l in labels],
        "preprocessing": preprocessing,
        "network": {"architecture": "MiT", "config": network.config.to_dict(), "in_channels": network.in_channels,
                    "num_classes": network.num_classes},
        "patch_size": list(patch),
        "provenance": {
            "training_data": [{"case": c.name, "sha256": c.sha256, "role": "validation" if c in val_cases
                               else "training"} for c in cases],
            "command": s.command or " ".join(sys.argv), "date": datetime.date.today().isoformat(), "seed": s.seed,
            **base_info, "epochs": state["epoch"], "best_epoch": state["best_epoch"],
        },
        "metrics": {"val_dice": best["val_dice"], "history": state["history"],
                    "description": "Dice per class on the held-out cases at the best epoch" if val_cases
                    else "no validation case"},
    }
    return save_package(user_models_dir() / f"{name}-{version}", meta, network.state_dict(), dtype="float32")
