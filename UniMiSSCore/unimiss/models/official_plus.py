"""Read the official UniMiSS+ checkpoints into this project's MiT+ (the names are mapped here and nowhere else).

Public API:

- `load_plus_checkpoint(path)` -> (dict, skipped): a checkpoint read without executing pickled code;
  objects of the pickled `args` that no allow-list admits (the released `UniMissPlus.pth` holds a
  DataLoader there) are left out, never constructed, and named in `skipped`.
- `from_official_plus_pretrain(path_or_state, which)` -> `MiTPlus`, the 2D+3D pretraining backbone.
- `from_official_plus_segmentation(path_or_state, spatial_dims, ...)` -> `MiTPlusSegmentation`, the
  2D (`Downstream/2D/Seg`) or 3D (`Downstream/3D/BCV`, weights `model.*`) network.
- `from_official_plus_classifier(path_or_state, ...)` -> `MiTPlusClassifier` (`Downstream/2D/Cls`).
- `transfer_plus_pretrain(model, path_or_state, ...)` -> `TransferReport`: pretraining weights into a
  downstream network, as the official downstream code does (`positional="official"`) or with the
  positional embeddings resampled on their grids (`positional="grid"`).
- `plus_segmentation_from_official_pretrain(...)` -> (model, report): a network to fine-tune.
"""
from __future__ import annotations

import argparse
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .layers import interpolate_grid
from .mitplus import MiTPlus, MiTPlusClassifier, MiTPlusSegmentation, get_plus_config
from .mitplus_config import level_grid
from .official import (CheckpointError, TransferReport, _adapt_stem, _head_from_state, _strip, _where, build_bounded,
                       load_checkpoint, split_pretrain_state)

# ---------------------------------------------------------------- names

_B = r"branches\.(?P<d>[23])d"
_RULES = [
    (rf"encoder\.stem\.(?P<i>[01])\.{_B}\.(?P<rest>.+)", "transformer.ConvBlock{D}{i}.{rest}"),
    (rf"encoder\.stages\.(?P<i>\d)\.embed\.{_B}\.(?P<rest>.+)", "transformer.patch_embed{D}{i1}.{rest}"),
    (r"encoder\.stages\.(?P<i>\d)\.pos\.tables\.(?P<d>[23])d", "transformer.pos_embed{D}{i1}"),
    (r"encoder\.stages\.0\.cls_token", "transformer.cls_tokens1"),
    (r"encoder\.stages\.(?P<i>\d)\.cls_proj\.(?P<rest>.+)", "transformer.cls_tokens{i1}.{rest}"),
    (rf"encoder\.stages\.(?P<i>\d)\.blocks\.(?P<b>\d+)\.attn\.sr\.{_B}\.(?P<rest>.+)",
     "transformer.block{i1}.{b}.attn.sr{D}.{rest}"),
    (r"encoder\.stages\.(?P<i>\d)\.blocks\.(?P<rest>.+)", "transformer.block{i1}.{rest}"),
    (rf"decoder\.stages\.(?P<i>\d)\.embed\.{_B}\.(?P<rest>.+)", "DecEmbed{D}{i1}.{rest}"),
    (r"decoder\.stages\.(?P<i>\d)\.pos\.tables\.(?P<d>[23])d", "DecPosEmbed{D}{i1}"),
    (rf"decoder\.stages\.(?P<i>\d)\.blocks\.(?P<b>\d+)\.attn\.sr\.{_B}\.(?P<rest>.+)", "Decblock{i1}.{b}.attn.sr{D}.{rest}"),
    (r"decoder\.stages\.(?P<i>\d)\.blocks\.(?P<rest>.+)", "Decblock{i1}.{rest}"),
    (r"decoder\.stages\.2\.norm\.(?P<rest>.+)", "norm.{rest}"),
    (rf"decoder\.expand1\.{_B}\.(?P<rest>.+)", "TransposeConv{D}1.{rest}"),
    (rf"decoder\.refine1\.{_B}\.(?P<rest>.+)", "DeConvBlock{D}1.{rest}"),
    (rf"decoder\.expand2\.{_B}\.(?P<rest>.+)", "TransposeConv{D}2.{rest}"),
    (rf"recon\.{_B}\.(?P<rest>.+)", "recon_conv{D}.{rest}"),
    (r"aux_heads\.(?P<i>\d)\.(?P<rest>.+)", "ds{i1}_cls_conv.{rest}"),
    (r"classifier\.(?P<rest>.+)", "{classifier}.{rest}"),
    (r"head\.fc\.(?P<rest>.+)", "head_fc.{rest}"),
]
_RULES = [(re.compile(p), t) for p, t in _RULES]
# How each published network prefixes the names of its own state dict.
LAYOUTS = ("pretrain", "seg2d", "seg3d", "cls2d")


def plus_official_name(name: str, layout: str) -> str:
    """The official UniMiSS+ name of one of our MiT+ parameters, in the state dict of `layout`."""
    for pattern, template in _RULES:
        m = pattern.fullmatch(name)
        if m:
            g = m.groupdict()
            official = template.format(D=f"{g.get('d')}D", i=g.get("i"), i1=int(g.get("i") or 0) + 1,
                                       b=g.get("b"), rest=g.get("rest"),
                                       classifier="ds5_cls_conv" if layout == "seg3d" else "seg_conv2d")
            if layout == "seg3d":
                return "model." + official
            if layout == "cls2d":
                return official.removeprefix("transformer.")
            return official
    raise ValueError(f"no official MiT+ name for parameter {name!r}")


def _official_names(model: torch.nn.Module, layout: str) -> dict[str, str]:
    return {plus_official_name(k, layout): k for k in model.state_dict()}


def _load_official(model, state: dict, layout: str, where: str, optional=()) -> list[str]:
    """Every parameter of `model` from `state` (official names); names starting with `optional` may be absent.
    Returns the official names the model does not use."""
    names, ours = _official_names(model, layout), model.state_dict()
    mapped = {names[k]: v for k, v in state.items() if k in names}
    unexpected = [k for k in state if k not in names]
    missing = [k for k, v in names.items() if v not in mapped and not v.startswith(optional)]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(ours[v].shape)}" for k, v in names.items()
             if v in mapped and state[k].shape != ours[v].shape]
    if missing or wrong:
        parts = [f"{len(wrong)} shape mismatches such as {wrong[0]}"] if wrong else []
        if missing:
            parts.append(f"{len(missing)} missing weights such as {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected weights such as {unexpected[0]}")
        raise CheckpointError(f"{where}: the checkpoint does not fit the UniMiSS+ {layout} network: {'; '.join(parts)}")
    model.load_state_dict({k: v.float() for k, v in mapped.items()}, strict=False)
    return unexpected


# ---------------------------------------------------------------- reading files

class SkippedObject:
    """Stands in for a pickled object outside the allow-list: made without running any of its code."""
    global_name = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __repr__(self):
        return f"<skipped {self.global_name}>"


def _stubs(path: Path) -> list:
    """A stand-in class for every global of the checkpoint's pickle that no allow-list admits."""
    if not zipfile.is_zipfile(path) or not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        return []
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # a damaged file: the ordinary loader names the problem
        return []
    names = [n for n in names if n != "argparse.Namespace"]
    return [(type("Skipped", (SkippedObject,), {"global_name": n}), n) for n in names]


def _holds_stub(value) -> str | None:
    if isinstance(value, SkippedObject):
        return value.global_name
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple)):
        items = value
    elif isinstance(value, argparse.Namespace):
        items = vars(value).values()
    else:
        return None
    return next((found for found in map(_holds_stub, items) if found), None)


def load_plus_checkpoint(path_or_state, source=None) -> tuple[dict, list[str]]:
    """A checkpoint as a dict and what was skipped: `args` entries holding objects no allow-list admits.

    Those objects are never constructed (stand-ins take their place while reading, then the entries
    are dropped). Anything outside `args` that is not plain data refuses the whole file.
    """
    if isinstance(path_or_state, dict):
        return path_or_state, []
    path, where = Path(path_or_state), source or str(path_or_state)
    stubs = _stubs(path) if path.is_file() else []
    if not stubs:
        return load_checkpoint(path), []
    try:
        with torch.serialization.safe_globals(stubs):
            ckpt = load_checkpoint(path)
    except CheckpointError:
        raise
    except Exception:
        return load_checkpoint(path), []
    skipped = []
    for key, value in ckpt.items():
        if key == "args" and isinstance(value, argparse.Namespace):
            for name, item in list(vars(value).items()):
                found = _holds_stub(item)
                if found:
                    delattr(value, name)
                    skipped.append(f"args.{name} ({found})")
        elif key == "args" and _holds_stub(value):
            ckpt[key] = None
            skipped.append(f"args ({_holds_stub(value)})")
        elif _holds_stub(value):
            raise CheckpointError(f"{where}: refused to load, '{key}' holds a pickled object that is not plain data "
                                  f"({_holds_stub(value)})")
    return ckpt, skipped


# ---------------------------------------------------------------- pretraining checkpoints

def _plus_pretrain_parts(path_or_state, which, source=None):
    """(backbone state with official names, head state, args, skipped) of a UniMiSS+ pretraining checkpoint."""
    where = source or _where(path_or_state)
    ckpt, skipped = load_plus_checkpoint(path_or_state, where)
    backbone, head = split_pretrain_state(ckpt, which, where, "UniMiSS+")
    if "transformer.ConvBlock2D0.0.conv.weight" not in backbone and "transformer.ConvBlock3D0.0.conv.weight" not in backbone:
        raise CheckpointError(f"{where}: not a UniMiSS+ pretraining checkpoint: no MiT+ stem "
                              "('transformer.ConvBlock2D0'/'ConvBlock3D0') found")
    args = ckpt.get("args") if isinstance(ckpt.get("args"), argparse.Namespace) else None
    return backbone, head, args, skipped


def _plus_pretrain_config(backbone: dict, args, where):
    """The image sizes the positional embeddings were trained for: from `args`, else 2D from their shapes."""
    cfg = get_plus_config()
    table = backbone.get("transformer.pos_embed2D1")
    size2d = getattr(args, "img_size2D", None) if args is not None else None
    try:
        if size2d is not None:
            cfg = cfg.with_img_size(2, (size2d, size2d) if isinstance(size2d, int) else size2d)
        elif table is not None:
            side = round((table.shape[1] - 1) ** 0.5)
            if side * side != table.shape[1] - 1:
                raise ValueError(f"transformer.pos_embed2D1 {tuple(table.shape)} is not a square grid")
            cfg = cfg.with_img_size(2, (side * 4, side * 4))
        size3d = getattr(args, "img_size3D", None) if args is not None else None
        if size3d is not None:
            cfg = cfg.with_img_size(3, size3d)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{where}: unusable image size ({exc})") from None
    return cfg


def from_official_plus_pretrain(path_or_state, which: str = "teacher", with_head: bool = False, source=None):
    """The 2D+3D MiT+ backbone of an official UniMiSS+ pretraining checkpoint, in eval mode.

    With `with_head=True` returns `(backbone, projection_head)`.
    """
    where = source or _where(path_or_state)
    backbone_state, head_state, args, _ = _plus_pretrain_parts(path_or_state, which, where)
    cfg = _plus_pretrain_config(backbone_state, args, where)
    model = build_bounded(lambda: MiTPlus(cfg), where)
    _load_official(model, backbone_state, "pretrain", where)
    model.eval()
    return (model, _head_from_state(head_state)) if with_head else model


# ---------------------------------------------------------------- downstream checkpoints

def _downstream_state(path_or_state, where):
    ckpt, _ = load_plus_checkpoint(path_or_state, where)
    state = ckpt.get("state_dict", ckpt.get("model", ckpt))
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{where}: not a UniMiSS+ downstream checkpoint: expected a state dict of tensors")
    return state


def from_official_plus_segmentation(path_or_state, spatial_dims: int, num_classes: int | None = None,
                                    patch_size=None, in_channels: int | None = None, deep_supervision=False,
                                    source=None) -> MiTPlusSegmentation:
    """The 2D or 3D segmentation network of an official UniMiSS+ downstream checkpoint, in eval mode.

    `patch_size` is the training size (224x224 in 2D, the nnU-Net plans' patch in 3D; default [16,96,96]).
    """
    where = source or _where(path_or_state)
    state = _downstream_state(path_or_state, where)
    layout = "seg3d" if spatial_dims == 3 else "seg2d"
    final = "model.ds5_cls_conv.weight" if spatial_dims == 3 else "seg_conv2d.weight"
    if final not in state:
        raise CheckpointError(f"{where}: not a UniMiSS+ {spatial_dims}D segmentation checkpoint: no '{final[:-7]}'")
    found = state[final].shape[0]
    if num_classes is not None and num_classes != found:
        raise CheckpointError(f"{where}: the checkpoint predicts {found} classes, not {num_classes}")
    stem = state["model.transformer.ConvBlock3D0.0.conv.weight" if spatial_dims == 3 else "transformer.ConvBlock2D0.0.conv.weight"]
    # The published 2D network mixes up its deepest map (see MiTPlusDecoder); its weights expect that.
    model = build_bounded(lambda: MiTPlusSegmentation(None, found, spatial_dims, in_channels or stem.shape[1],
                                                      patch_size, deep_supervision, bottleneck_quirk=spatial_dims == 2),
                          where)
    _load_official(model, state, layout, where, optional=() if spatial_dims == 3 else ("aux_heads.",))
    return model.eval()


def from_official_plus_classifier(path_or_state, num_classes: int | None = None, patch_size=None,
                                  source=None) -> MiTPlusClassifier:
    """The 2D classifier of an official UniMiSS+ downstream checkpoint (`Downstream/2D/Cls`), in eval mode."""
    where = source or _where(path_or_state)
    state = _downstream_state(path_or_state, where)
    if "head_fc.weight" not in state:
        raise CheckpointError(f"{where}: not a UniMiSS+ classification checkpoint: no 'head_fc'")
    found = state["head_fc.weight"].shape[0]
    if num_classes is not None and num_classes != found:
        raise CheckpointError(f"{where}: the checkpoint predicts {found} classes, not {num_classes}")
    model = build_bounded(lambda: MiTPlusClassifier(None, found, 2, patch_size=patch_size), where)
    _load_official(model, state, "cls2d", where)
    return model.eval()


# ---------------------------------------------------------------- transfer for fine-tuning

@dataclass
class PlusTransferReport(TransferReport):
    skipped: list[str] = field(default_factory=list)  # args entries of the file that were not read

    def summary(self) -> str:
        text = super().summary()
        return text + (f"; not read from the file's args: {', '.join(self.skipped)}" if self.skipped else "")


def zoom_tokens(table: torch.Tensor, n_new: int) -> torch.Tensor:
    """The official transfer of a (1, N, C) positional table to N' rows: linear along the token axis with the
    end points aligned (`scipy.ndimage.zoom(table[0], (N'/N, 1), order=1)`), class slot included."""
    if table.shape[1] == n_new:
        return table
    return F.interpolate(table.transpose(1, 2).double(), size=n_new, mode="linear",
                         align_corners=True).transpose(1, 2).to(table.dtype)


def transfer_plus_pretrain(model, path_or_state, which: str = "student", positional: str = "official",
                           with_decoder: bool | None = None, source=None) -> TransferReport:
    """Load the weights of a UniMiSS+ pretraining checkpoint into a MiT+ downstream network (in place).

    Every weight whose name and shape the network shares is copied, of the half matching its
    dimension; the head stays as it is. `with_decoder` (default: 2D yes, 3D no, as the published
    downstream code) also copies the decoder. Positional tables of another size are resampled:
    `positional="official"` along the token axis as the published code does (class slot blended in),
    `"grid"` on their 2D/3D grid without the class slot (what a patch of another shape needs).
    """
    where = source or _where(path_or_state)
    if positional not in ("official", "grid"):
        raise ValueError(f"positional must be 'official' or 'grid', not {positional!r}")
    backbone_state, _, args, skipped = _plus_pretrain_parts(path_or_state, which, where)
    source_cfg = _plus_pretrain_config(backbone_state, args, where)
    nd = model.spatial_dims
    if with_decoder is None:
        with_decoder = nd == 2
    with torch.device("meta"):
        ours = _official_names(MiTPlus(source_cfg, spatial_dims=(nd,)), "pretrain")
    target = model.state_dict()
    report, new_state = PlusTransferReport(), {}
    for key, value in backbone_state.items():
        name = ours.get(key)
        if name is None or name not in target or not (name.startswith("encoder.") or with_decoder and name.startswith("decoder.")):
            report.ignored.append(key)
            continue
        value = value.float()
        if name.startswith("encoder.stem.0.") and name.endswith("conv.weight") and value.shape[1] != target[name].shape[1]:
            value = _adapt_stem(value, target[name].shape[1])
            report.adapted.append(name)
        if ".pos.tables." in name and value.shape != target[name].shape:
            value = (zoom_tokens(value, target[name].shape[1]) if positional == "official"
                     else _grid_table(value, name, source_cfg, model, nd))
            report.interpolated.append(name)
        if value.shape != target[name].shape:
            raise CheckpointError(f"{where}: {key} has shape {tuple(value.shape)}, the network expects "
                                  f"{tuple(target[name].shape)}")
        new_state[name] = value
        report.loaded.append(name)
    if not report.loaded:
        raise CheckpointError(f"{where}: no weight of the checkpoint fits the network")
    report.initialised = [k for k in target if k not in new_state]
    report.skipped = skipped
    model.load_state_dict(new_state, strict=False)
    return report


def is_plus_pretrain(ckpt: dict) -> bool:
    """Whether a loaded pretraining checkpoint (or bare state dict) holds a MiT+ (UniMiSS+) backbone."""
    state = ckpt.get("student", ckpt.get("teacher", ckpt))
    return isinstance(state, dict) and any(k.endswith(("ConvBlock2D0.0.conv.weight", "ConvBlock3D0.0.conv.weight"))
                                           for k in state)


def plus_segmentation_from_official_pretrain(path_or_state, num_classes: int = 2, spatial_dims: int = 3,
                                             patch_size=None, in_channels: int | None = None, which: str = "student",
                                             deep_supervision: bool = False, source=None):
    """A `MiTPlusSegmentation` for fine-tuning, initialised from a UniMiSS+ pretraining checkpoint: encoder and
    decoder of the matching half, positional tables resampled on their grids for `patch_size`, the stem
    adapted to `in_channels`. Returns `(model, report)`."""
    where = source or _where(path_or_state)
    model = build_bounded(lambda: MiTPlusSegmentation(None, num_classes, spatial_dims, in_channels, patch_size,
                                                      deep_supervision), where)
    report = transfer_plus_pretrain(model, path_or_state, which, positional="grid", with_decoder=True, source=where)
    return model, report


def _grid_table(table, name, source_cfg, model, nd):
    stage = int(name.split(".")[2])
    level = stage + 2 if name.startswith("encoder.") else 4 - stage
    old = level_grid(source_cfg.img_size(nd), nd, level)
    new = level_grid(model.config.img_size(nd), nd, level)
    n_old = 1
    for g in old:
        n_old *= g
    patches = interpolate_grid(table[:, table.shape[1] - n_old:], old, new)
    prefix = model.state_dict()[name].shape[1] - patches.shape[1]
    return torch.cat((table[:, :prefix], patches), dim=1) if prefix else patches


__all__ = ["LAYOUTS", "SkippedObject", "is_plus_pretrain", "plus_segmentation_from_official_pretrain", "load_plus_checkpoint", "plus_official_name", "from_official_plus_pretrain",
           "from_official_plus_segmentation", "from_official_plus_classifier", "transfer_plus_pretrain",
           "zoom_tokens", "PlusTransferReport"]
