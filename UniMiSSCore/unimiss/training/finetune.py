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
from ..models import MiTPlusSegmentation, MiTSegmentation, segmentation_from_official_pretrain
from ..models.official_plus import is_plus_pretrain, load_plus_checkpoint, plus_segmentation_from_official_pretrain
from ..models.official import build_bounded, load_checkpoint
from ..inference.preprocessing import INTENSITY_PRESETS
from .cases import class_names_of, drawn_as_one_piece, prepare_case, read_pair
from .common import init_distributed, save_checkpoint_file
from .contrast import ContrastPhases
from .losses import DeepSupervisionLoss
from .recipe import HEAD_WARMUP, Budget, learning_rate, plan_batch, plan_patch, plan_spacing
from .sampling import PatchSampler, augment
from .validation import fill_unlabelled, split_cases, validate, window_count

PRETRAINING_CHECKPOINTS = (".pth", ".pt", ".ckpt")  # --base files read as UniMiSS/UniMiSS+ pretraining checkpoints


@dataclass
class FinetuneSettings:
    name: str | None = None               # of the new model package
    base: str | None = None               # model package, official pretraining checkpoint (.pth), or None: scratch
    config: str = "compact"               # network config from scratch, or the official checkpoint's arch
    new_head: bool = False                # a base package's head for a new label set
    patch_size: tuple | None = None       # (z, y, x) / (y, x); from the base package when it has one
    spacing: tuple | None = None          # mm (x, y[, z]); from the base package when it has one
    intensity: str | None = None          # ct | ct-wide | zscore | percentile without a base package; None: ct for
                                          # CT (ct-wide from a pretraining checkpoint, as pretraining sees CT),
                                          # percentile for radiographs
    epochs: int | None = None
    minutes: float | None = None
    iterations_per_epoch: int = 50
    batch_size: int | None = None         # patches per step; planned from the patch size when None
    optimizer: str = "adamw"
    lr: float | None = None
    schedule: str = "poly"
    seed: int = 0
    validation: int | None = None         # how many of the cases to hold out (default: about a fifth, at least one)
    patience: int = 20                    # epochs without a better validation Dice before stopping
    contrast_phases: bool = True          # simulate native, arterial and venous phases (CT with named structures)
    deformation: float = 0.0              # smooth random deformations of the patches, up to this share of a half-patch
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
    if not (math.isfinite(s.deformation) and 0 <= s.deformation <= 0.5):
        raise ValueError(f"--deformation must be between 0 and 0.5 (a share of half a patch), not {s.deformation}")
    if s.validation is not None and s.validation < 0:
        raise ValueError(f"--validation must be 0 or more, not {s.validation}")
    if s.spacing is not None and not all(math.isfinite(v) and 0 < v <= 1000 for v in s.spacing):
        raise ValueError(f"--spacing {list(s.spacing)}: each value must be above 0 and at most 1000 mm")


def default_workdir(case_files, name: str) -> Path:
    """unimiss-finetune-<name> in the folder that holds the training data."""
    paths = [str(Path(p).resolve().parent) for f in case_files for p in (f.image, f.label)]
    return Path(os.path.commonpath(paths)) / f"unimiss-finetune-{name}"


def finetune(settings: FinetuneSettings, case_files, progress, monitor_files=()):
    """Train, validate, checkpoint each epoch; returns the new ModelPackage (rank 0) or None.

    With --minutes the clock starts here: reading the cases, the base model's pseudo-labels, training and
    validation all fit in the budget; the run stops within an epoch when the next step would not.
    The checkpoint lives in the work folder until the package is written; a run that stops early
    leaves it there for `--resume`, and a new run never overwrites it.
    `monitor_files` (benchmarks): cases scored with the validation cases, never used to choose or stop,
    their time not counted in the budget; their Dice is reported as `monitor_dice`.
    """
    from ..zoo import resolve_model

    check_settings(settings)
    budget = Budget(settings.minutes)
    rank, world = init_distributed()
    s = settings
    pairs = [read_pair(f) for f in case_files]
    dims = {image.dimension for image, *_ in pairs}
    if len(dims) > 1:
        raise ValueError("2D and 3D cases are mixed; train 2D and 3D models separately")
    dimension = dims.pop()

    base_package = None
    if s.base and not str(s.base).lower().endswith(PRETRAINING_CHECKPOINTS):
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

    preprocessing, patch, planned = _plan(s, base_package, dimension, pairs)
    batch_size = s.batch_size or plan_batch(patch)
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
    monitor = [prepare_case(f, *read_pair(f), class_names, preprocessing) for f in monitor_files]
    num_classes = len(class_names) + 1
    train_cases, val_cases, split_note = split_cases(cases, s.validation)
    postprocessing = _postprocessing(base_package, class_names, drawn_as_one_piece(cases))
    if rank == 0:
        if planned:
            progress.message(f"plan: {planned}, patch {'x'.join(map(str, patch))}, batch {batch_size}")
        progress.message(split_note)
        progress.message(_parts_note(postprocessing, class_names))

    torch.manual_seed(s.seed)  # the same initial weights on every rank and in every repeat of a run
    network, base_info = _build_network(s, base_package, dimension, num_classes, patch, progress, rank)
    device = resolve_device(s.device)
    network.to(device)
    autocast = resolve_precision(s.precision, device, training=True)
    infer_autocast = resolve_precision(s.precision, device)  # validation and pseudo-labels: inference's policy
    base_val_dice = None
    if base_package and not s.new_head:
        filled = fill_unlabelled(network, train_cases, patch, num_classes, device, infer_autocast)
        if rank == 0 and filled:
            progress.message("not forgetting: " + "; ".join(
                f"{case}: {', '.join(class_names[c - 1] for c in missing)}" for case, missing in filled.items())
                + f" take {base_package.reference}'s predictions as targets (those cases do not label them)")
        if rank == 0 and val_cases:
            budget.validation_s = -time.monotonic()
            base_val_dice = validate(network, val_cases, patch, class_names, device, infer_autocast)
            budget.validation_s += time.monotonic()
            progress.message(f"{base_package.reference} on the validation cases: "
                             + ", ".join(f"{k} {v:.3f}" for k, v in base_val_dice.items()))
    network.train()
    network.deep_supervision = True
    model = torch.nn.parallel.DistributedDataParallel(network) if world > 1 else network

    sampler = PatchSampler(train_cases, patch)
    phases = ContrastPhases.for_training(class_names, preprocessing, dimension) if s.contrast_phases else None
    if rank == 0 and phases:
        progress.message("contrast phases simulated (native, arterial, venous) for " + ", ".join(phases.structures))
    loss_fn = DeepSupervisionLoss()
    # AdamW from scratch at 3e-3: the training loss fell as far in 300 steps as at 1e-3 in 500; 1e-2 diverged
    # (docs/benchmarks/finetune/intensity/).
    lr = s.lr or (1e-2 if s.optimizer == "sgd" else (3e-4 if s.base else 3e-3))
    groups = _parameter_groups(network, s, base_package)
    optimizer = (torch.optim.SGD(groups, lr=lr, momentum=0.99, nesterov=True, weight_decay=3e-5)
                 if s.optimizer == "sgd" else torch.optim.AdamW(groups, lr=lr, weight_decay=1e-2))
    head_warmup = HEAD_WARMUP if any(g["pretrained"] for g in groups) and any(not g["pretrained"] for g in groups) \
        else 0.0
    max_epochs = s.epochs if s.epochs is not None else (10_000 if s.minutes else 50)
    total_steps = max_epochs * s.iterations_per_epoch

    state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "history": []}
    run = {"dimension": dimension, "labels": class_names, "patch_size": list(patch), "preprocessing": preprocessing,
           "network": {"config": {k: v for k, v in network.config.to_dict().items() if not k.startswith("img_size")},
                       "num_classes": num_classes, "in_channels": network.in_channels},
           "base": str(s.base) if s.base else None, "optimizer": s.optimizer, "lr": lr, "schedule": s.schedule,
           "iterations": s.iterations_per_epoch, "batch_size": batch_size, "seed": s.seed, "minutes": s.minutes,
           "contrast_phases": phases.structures if phases else [], "deformation": s.deformation}
    if s.resume:
        state, best_state = _resume(checkpoint_path, run, network, optimizer)
        budget.start -= 60 * (state["history"][-1]["minutes"] if state["history"] else 0.0)
        if rank == 0:
            progress.message(f"resumed from {checkpoint_path} after epoch {state['epoch']}")
    else:
        best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        if rank == 0:
            progress.message(f"work files (the checkpoint for --resume) go to {workdir}")
    budget.validation_windows = sum(window_count(c.image.shape, patch) for c in val_cases)
    budget.batch = batch_size

    saved_epoch = state["epoch"]
    last_validation = budget.elapsed()
    try:
        out_of_time = False
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
                done = budget.progress() if s.minutes else step / total_steps
                stop = not budget.room_for_step(bool(val_cases)) and (step > 0 or it > 0)
                if world > 1:  # rank 0's clock decides, so every rank stops at the same step with the same rate
                    flags = torch.tensor([float(stop), done], dtype=torch.float64, device=device)
                    dist.broadcast(flags, 0)
                    stop, done = bool(flags[0]), float(flags[1])
                if stop:
                    out_of_time = True
                    break
                tick = time.monotonic()
                for group in optimizer.param_groups:
                    frozen = group["pretrained"] and done < head_warmup
                    group["lr"] = 0.0 if frozen else group["scale"] * learning_rate(
                        (done - head_warmup) / (1 - head_warmup) if group["pretrained"] else done, lr, s.schedule)
                images, targets = sampler.sample(batch_size, rng)
                if phases:
                    images, targets = phases(images, targets, generator)
                images, targets = augment(images, targets, generator, deformation=s.deformation)
                images, targets = images.to(device), targets.to(device)
                with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                    outputs = model(images)
                loss = loss_fn(outputs, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
                optimizer.step()
                losses.append(loss.item())
                budget.step_s.append(time.monotonic() - tick)
                if rank == 0:
                    progress.progress(f"epoch {epoch + 1}", it + 1, s.iterations_per_epoch)
            if not losses:
                break
            if not all(math.isfinite(v) for v in losses):
                raise ValueError(f"the loss became {losses[-1]} in epoch {epoch + 1}; try a lower --lr")
            # The last epoch: out of time, out of epochs, or no room left for another step after this one.
            last_epoch = out_of_time or epoch + 1 == max_epochs or not budget.room_for_step(bool(val_cases))
            due = not s.minutes or last_epoch or budget.elapsed() - last_validation >= 3 * budget.validation_s
            val_dice, monitor_dice = {}, {}
            if rank == 0 and val_cases and due:
                tick = time.monotonic()
                val_dice = validate(network, val_cases, patch, class_names, device, infer_autocast)
                budget.validation_s = time.monotonic() - tick
                last_validation = budget.elapsed()
            if rank == 0 and monitor and (due or not val_cases):
                tick = time.monotonic()
                monitor_dice = validate(network, monitor, patch, class_names, device, infer_autocast)
                budget.start += time.monotonic() - tick  # not the user's time: the clock pauses
            state["epoch"] = epoch + 1
            if val_cases and val_dice:
                score = float(np.mean(list(val_dice.values())))
                if score > state["best_score"]:
                    state["best_score"], state["best_epoch"] = score, epoch + 1
                    best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            elif not val_cases:  # nothing scores the model: the last weights, at the end of the schedule
                state["best_epoch"] = epoch + 1
            elapsed = budget.elapsed()
            entry = {"epoch": epoch + 1, "iterations": len(losses), "loss": float(np.mean(losses)),
                     "val_dice": val_dice, "minutes": elapsed / 60}
            if monitor_dice:
                entry["monitor_dice"] = monitor_dice
            state["history"].append(entry)
            stop = (out_of_time or (bool(s.minutes) and last_epoch)
                    or bool(val_cases and epoch + 1 - state["best_epoch"] >= s.patience))
            if world > 1:  # rank 0 validates and keeps the clock: its decision holds for all
                flag = torch.tensor([float(stop)], device=device)
                dist.broadcast(flag, 0)
                stop = bool(flag[0])
            remaining = (max_epochs - epoch - 1) * (time.monotonic() - epoch_start)
            if s.minutes:
                remaining = min(remaining, budget.remaining())
            if rank == 0:
                extra = {"base_val_dice": {k: round(v, 4) for k, v in base_val_dice.items()}} if base_val_dice else {}
                if monitor_dice:
                    extra["monitor_dice"] = {k: round(v, 4) for k, v in monitor_dice.items()}
                progress.metric(epoch=epoch + 1, loss=round(float(np.mean(losses)), 5),
                                val_dice={k: round(v, 4) for k, v in val_dice.items()},
                                eta_s=round(0 if stop else remaining), minutes=round(elapsed / 60, 3), **extra)
                tick = time.monotonic()
                _save_checkpoint(checkpoint_path, network, optimizer, state, best_state, run)
                budget.save_s = max(2.0, 2 * (time.monotonic() - tick))
                saved_epoch = epoch + 1
            if stop:
                break
        if not val_cases:
            best_state = network.state_dict()
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
    state["minutes"] = budget.elapsed() / 60
    state["timing"] = {"slowest_step_s": round(max(budget.step_s, default=0.0), 2),
                       "validation_s": round(budget.validation_s, 2)}
    package = _write_package(s, name, network, base_package, base_info, dimension, labels, preprocessing, patch,
                             cases, train_cases, val_cases, state, base_val_dice, split_note, postprocessing)
    checkpoint_path.unlink(missing_ok=True)  # the package holds the result; nothing is left to resume
    _remove_if_empty(workdir)
    return package


# A model trained for minutes from scratch may draw an organ as two similar parts, the larger one wrong: keeping
# parts at least half the largest one's size kept every such run's classes, where the largest part alone lost some
# whole. A model from a base segments as the base does: on the built-in recipe's held-out abdomen the largest part
# alone did better (docs/benchmarks/finetune/parts/).
COMPARABLE_PARTS = 0.5


def _postprocessing(base_package, class_names: list[str], one_piece: dict[int, bool]) -> dict:
    """How the new model segments: the base's rules for the classes it still has, and the largest part kept for
    each class the cases draw as one piece (the others, as the base kept them)."""
    names = set(class_names)
    post = dict(base_package.meta.get("postprocessing", {})) if base_package else {}
    base_keeps = set(base_package.largest_component_classes) if base_package else set()
    post.pop("largest_component", None)
    if "not_below" in post:
        post["not_below"] = {k: v for k, v in post["not_below"].items() if k in names and set(v) <= names}
    if "join_gaps_mm" in post:
        post["join_gaps_mm"] = {k: v for k, v in post["join_gaps_mm"].items() if k in names}
    keep = [n for i, n in enumerate(class_names, start=1) if one_piece.get(i, n in base_keeps)]
    if keep:
        post["largest_component"] = True if len(keep) == len(class_names) else keep
        post["comparable_parts"] = base_package.comparable_parts if base_package else COMPARABLE_PARTS
    return {k: v for k, v in post.items() if v}


def _parts_note(postprocessing: dict, class_names: list[str]) -> str:
    keep = postprocessing.get("largest_component", False)
    keep = class_names if keep is True else keep or []
    rest = [n for n in class_names if n not in keep]
    share = postprocessing.get("comparable_parts", 0)
    kept = (f"the largest connected part{f' (and any at least {share:.0%} of its size)' if share else ''} of "
            f"{', '.join(keep)}") if keep else ""
    every = f"every part of {', '.join(rest)} (not drawn as one piece)" if rest else ""
    return (f"segmenting keeps {' and '.join(p for p in (kept, every) if p)}; "
            "segment --largest-component or --all-components overrides it")


def _plan(s: FinetuneSettings, base_package, dimension: int, pairs):
    """(preprocessing, patch, what was planned from the data in words, or "")."""
    if base_package:
        return dict(base_package.preprocessing), tuple(base_package.patch_size), ""
    intensity = INTENSITY_PRESETS[s.intensity or ("percentile" if dimension == 2 else "ct-wide" if s.base else "ct")]
    if dimension == 2:  # radiographs often carry no pixel spacing: the whole image is resized to the patch
        patch = tuple(s.patch_size or (256, 256))
        return {"size": list(patch), "intensity": intensity}, patch, ""
    spacings = [image.spacing for image, *_ in pairs]
    shapes = [image.array.shape for image, *_ in pairs]
    spacing = list(s.spacing) if s.spacing else plan_spacing(spacings, shapes)
    working = [tuple(n * a / b for n, a, b in zip(shape, sp[::-1], spacing[::-1])) for shape, sp in zip(shapes, spacings)]
    patch = tuple(s.patch_size) if s.patch_size else plan_patch(working)
    planned = ", ".join(([] if s.spacing else [f"spacing {' x '.join(f'{v:g}' for v in spacing)} mm"])
                        + ([] if s.patch_size else ["patch from the median case"]))
    return {"spacing": spacing, "orientation": "LPS", "intensity": intensity}, patch, planned


def _parameter_groups(network, s: FinetuneSettings, base_package) -> list[dict]:
    """Pretrained layers learn at lower rates (encoder 0.1, decoder 0.3 of the peak) and, when new layers
    are added, wait until those have warmed up; new layers learn at the peak rate."""
    from_package = base_package is not None
    new_head = from_package and (s.new_head or base_package.meta["network"]["num_classes"] != network.num_classes)
    groups = {}
    for key, parameter in network.named_parameters():
        head = key.startswith(("aux_heads.", "classifier."))
        part = "encoder" if key.startswith("encoder.") else "head" if head else "decoder"
        pretrained = (from_package and not (head and new_head)) or (bool(s.base) and part == "encoder")
        scale = {"encoder": 0.1, "decoder": 0.3, "head": 1.0}[part] if pretrained else 1.0
        groups.setdefault((part, pretrained), {"params": [], "scale": scale, "pretrained": pretrained})
        groups[(part, pretrained)]["params"].append(parameter)
    return list(groups.values())


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
            fresh = type(network)(network.config, num_classes, dimension, in_channels=network.in_channels,
                                  patch_size=patch)
            head = ("aux_heads.", "classifier.")
            fresh.load_state_dict({k: v for k, v in network.state_dict().items() if not k.startswith(head)},
                                  strict=False)
            network = fresh
        return network, {"base_model": base_package.reference}
    if s.base:
        ckpt, skipped = load_plus_checkpoint(s.base)  # read once; a DataLoader in the args is skipped, never built
        if is_plus_pretrain(ckpt):
            network, report = plus_segmentation_from_official_pretrain(
                ckpt, num_classes, dimension, patch_size=patch, in_channels=1, source=s.base)
            report.skipped, kind = skipped, "UniMiSS+"
        else:
            network, report = segmentation_from_official_pretrain(ckpt, arch=s.config, num_classes=num_classes,
                                                                  spatial_dims=dimension, patch_size=patch, in_channels=1)
            kind = f"UniMiSS {s.config}"
        if rank == 0:
            progress.message(f"from the official pretraining checkpoint {s.base} ({kind}): {report.summary()}")
        return network, {"base_model": f"official {kind.split()[0]} pretraining checkpoint {Path(s.base).name}"
                                       + ("" if kind == "UniMiSS+" else f" ({s.config})")}
    network = build_bounded(lambda: MiTSegmentation(s.config, num_classes, dimension, in_channels=1, patch_size=patch),
                            f"MiT-{s.config} with --patch-size {list(patch)}")
    return network, {"base_model": None}


def _save_checkpoint(path: Path, network, optimizer, state, best_state, run):
    save_checkpoint_file({"model": network.state_dict(), "optimizer": optimizer.state_dict(),
                          "best_model": best_state, **state, "run": run}, path)


def _write_package(s, name, network, base_package, base_info, dimension, labels, preprocessing, patch, cases,
                   train_cases, val_cases, state, base_val_dice, split_note, postprocessing):
    from ..zoo import next_version, save_package, user_models_dir

    version = next_version(name)
    best = next((h for h in state["history"] if h["epoch"] == state["best_epoch"]), state["history"][-1])
    names = [c.name for c in cases]
    origin = (f"Fine-tuned from {base_package.reference}" if base_package
              else f"Fine-tuned from the {base_info['base_model']}" if base_info.get("base_model") else "Trained")
    meta = {
        "schema_version": 1, "name": name, "version": version, "task": "segmentation",
        "description": f"{origin} on {len(cases)} local case{'s' if len(cases) > 1 else ''} "
                       f"({', '.join(names[:8])}{', ...' if len(names) > 8 else ''}): "
                       f"{', '.join(l.name for l in labels)}.",
        "dimension": dimension,
        "modality": base_package.meta.get("modality", "CT" if dimension == 3 else "CR/DX") if base_package
        else ("CT" if dimension == 3 else "CR/DX"),
        "labels": [l.to_dict() for l in labels],
        "preprocessing": preprocessing,
        "network": {"architecture": "MiT+" if isinstance(network, MiTPlusSegmentation) else "MiT",
                    "config": network.config.to_dict(), "in_channels": network.in_channels,
                    "num_classes": network.num_classes},
        "patch_size": list(patch),
        "provenance": {
            "training_data": [{"case": c.name, "sha256": c.sha256, "role": "validation" if c in val_cases
                               else "training"} for c in cases],
            "validation": split_note,
            "command": s.command or " ".join(sys.argv), "date": datetime.date.today().isoformat(), "seed": s.seed,
            **base_info, "epochs": state["epoch"], "best_epoch": state["best_epoch"],
            "iterations": sum(h.get("iterations", s.iterations_per_epoch) for h in state["history"]),
            "minutes": round(state["minutes"], 3), "budget_minutes": s.minutes, **state["timing"],
        },
        "metrics": {"val_dice": best["val_dice"], "history": state["history"],
                    "description": (f"Dice per class on the validation case{'s' if len(val_cases) > 1 else ''} "
                                    f"({', '.join(c.name for c in val_cases)}) at the best epoch; a class absent "
                                    "from both the prediction and the reference is not scored") if val_cases
                    else "no validation case: " + split_note},
    }
    if base_val_dice:
        meta["metrics"]["base_val_dice"] = base_val_dice
    if postprocessing:
        meta["postprocessing"] = postprocessing
    return save_package(user_models_dir() / f"{name}-{version}", meta, network.state_dict(), dtype="float32")
