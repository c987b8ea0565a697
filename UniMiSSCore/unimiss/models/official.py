"""Read the official UniMiSS checkpoints into this project's MiT.

Public API:

- `from_official_pretrain(path_or_state, arch, which)` -> `MiT`, the 2D+3D backbone
  of a released pretraining checkpoint (`UniMiSS_tiny.pth`, `UniMiSS_small.pth`);
  `forward(x)` returns the final normalised class token as the published `MiT.forward`.
- `from_official_segmentation(path_or_state, arch, num_classes, patch_size)` ->
  `MiTSegmentation`, the 3D network of a downstream nnU-Net trainer checkpoint.
- `segmentation_from_official_pretrain(...)` -> `(MiTSegmentation, TransferReport)`:
  a 2D or 3D segmentation network initialised from a pretraining checkpoint.
- `load_checkpoint(path)`: reads a checkpoint without executing any pickled code.

Official parameter names are mapped to ours here and nowhere else.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import get_config
from .heads import ProjectionHead
from .layers import interpolate_grid
from .mit import MiT, MiTSegmentation, grid_after


class CheckpointError(ValueError):
    """A file or state dict that is not a usable UniMiSS checkpoint."""


# About 2 GB of float32 weights; the published MiT-small has 44 M parameters.
MAX_PARAMETERS = 500_000_000


def count_parameters(factory) -> int:
    """Parameters and buffers of the module `factory()` builds, counted on the meta device (no memory spent)."""
    with torch.device("meta"):
        probe = factory()
    return sum(t.numel() for t in (*probe.parameters(), *probe.buffers()))


def too_large(count: int) -> str | None:
    """Why a network of `count` parameters is refused, or None."""
    if count <= MAX_PARAMETERS:
        return None
    return (f"the network would have {count / 1e6:,.0f} M parameters ({count * 4 / 2**30:.1f} GiB in float32); "
            f"at most {MAX_PARAMETERS / 1e6:,.0f} M are accepted")


def build_bounded(factory, source):
    """`factory()`, once its size is known to be reasonable; `source` names the file in the error."""
    problem = too_large(count_parameters(factory))
    if problem:
        raise CheckpointError(f"{source}: {problem}")
    return factory()


def _where(path_or_state) -> str:
    return "the checkpoint" if isinstance(path_or_state, dict) else str(path_or_state)


# Only plain containers, tensors and these are reconstructed; anything else in a
# pickle is refused instead of executed.
try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray

# Only plain containers, tensors and these are reconstructed (argparse.Namespace for
# the pretraining `args`, numpy scalars and arrays for nnU-Net's training curves);
# anything else in a pickle is refused instead of executed.
_SAFE_GLOBALS = [argparse.Namespace, np.ndarray, np.dtype, _np_multiarray.scalar, _np_multiarray._reconstruct,
                 *{type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_)}]


def load_checkpoint(path_or_state) -> dict:
    """A checkpoint as a dict, read with `weights_only=True` and an explicit allow-list."""
    if isinstance(path_or_state, dict):
        return path_or_state
    path = Path(path_or_state)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty: {path}")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, KeyError, OSError... for bad files
        found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(exc))
        if found or "weights_only" in str(exc):
            what = f" ({found.group(1)})" if found else ""
            raise CheckpointError(f"{path}: refused to load, the file contains executable pickled objects{what}") from None
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80":  # torch zip archive or legacy pickle
            raise CheckpointError(f"{path}: damaged or truncated PyTorch checkpoint") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(state).__name__}, expected a dict)")
    return state


# ---------------------------------------------------------------- name mapping

def _stage(i):
    return str(int(i) - 1)


_DIM = r"(?P<d>[23]D)?"
_RULES = [
    (rf"transformer\.patch_embed{_DIM}0\.(?P<rest>.+)", lambda m, d: f"encoder.stem.branches.{d}.{m['rest']}"),
    (rf"transformer\.patch_embed{_DIM}(?P<i>[1-4])\.proj\.(?P<rest>.+)",
     lambda m, d: f"encoder.stages.{_stage(m['i'])}.embed.branches.{d}.{m['rest']}"),
    (rf"transformer\.pos_embed{_DIM}(?P<i>[1-4])", lambda m, d: f"encoder.stages.{_stage(m['i'])}.pos.tables.{d}"),
    (r"transformer\.cls_tokens1", lambda m, d: "encoder.stages.0.cls_token"),
    (r"transformer\.cls_tokens(?P<i>[2-4])\.(?P<rest>.+)",
     lambda m, d: f"encoder.stages.{_stage(m['i'])}.cls_proj.{m['rest']}"),
    (rf"transformer\.block(?P<i>[1-4])\.(?P<b>\d+)\.attn\.sr{_DIM}\.(?P<rest>.+)",
     lambda m, d: f"encoder.stages.{_stage(m['i'])}.blocks.{m['b']}.attn.sr.branches.{d}.{m['rest']}"),
    (r"transformer\.block(?P<i>[1-4])\.(?P<rest>.+)", lambda m, d: f"encoder.stages.{_stage(m['i'])}.blocks.{m['rest']}"),
    (rf"DecEmbed{_DIM}(?P<j>[0-2])\.proj\.(?P<rest>.+)", lambda m, d: f"decoder.stages.{m['j']}.embed.branches.{d}.{m['rest']}"),
    (rf"DecPosEmbed{_DIM}(?P<j>[0-2])", lambda m, d: f"decoder.stages.{m['j']}.pos.tables.{d}"),
    (rf"Decblock(?P<j>[0-2])\.(?P<b>\d+)\.attn\.sr{_DIM}\.(?P<rest>.+)",
     lambda m, d: f"decoder.stages.{m['j']}.blocks.{m['b']}.attn.sr.branches.{d}.{m['rest']}"),
    (r"Decblock(?P<j>[0-2])\.(?P<rest>.+)", lambda m, d: f"decoder.stages.{m['j']}.blocks.{m['rest']}"),
    (r"cls_tokens(?P<j>[0-2])\.(?P<rest>.+)", lambda m, d: f"decoder.stages.{m['j']}.cls_proj.{m['rest']}"),
    (r"norm\.(?P<rest>.+)", lambda m, d: f"decoder.stages.2.norm.{m['rest']}"),
    (r"transposeconv_stage3\.(?P<rest>.+)", lambda m, d: f"head_expand.{m['rest']}"),
    (r"stage3_de\.(?P<rest>.+)", lambda m, d: f"head_conv.{m['rest']}"),
    (r"ds(?P<k>[0-3])_cls_conv\.(?P<rest>.+)", lambda m, d: f"aux_heads.{m['k']}.{m['rest']}"),
    (r"cls_conv\.(?P<rest>.+)", lambda m, d: f"classifier.{m['rest']}"),
]
_RULES = [(re.compile(p), f) for p, f in _RULES]


def official_to_ours(key: str, default_dim: int = 3) -> str | None:
    """Our parameter name for an official one (None if it has no counterpart).

    Pretraining names carry a `2D`/`3D` tag; downstream names have none and are 3D.
    """
    for pattern, make in _RULES:
        m = pattern.fullmatch(key)
        if m:
            tag = m.groupdict().get("d")
            return make(m, f"{tag[0] if tag else default_dim}d")
    return None


def _strip(state: dict, prefixes) -> dict:
    out = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


# ---------------------------------------------------------------- pretraining checkpoints

def _pretrain_parts(path_or_state, which: str, source=None):
    """(backbone state with official names, head state, args) of a pretraining checkpoint or bare state dict."""
    ckpt, where = load_checkpoint(path_or_state), source or _where(path_or_state)
    backbone, head = split_pretrain_state(ckpt, which, where, "UniMiSS")
    if not any(k.startswith("transformer.") for k in backbone):
        raise CheckpointError(f"{where}: not a UniMiSS pretraining checkpoint: no 'transformer.*' (MiT encoder) "
                              "weights found")
    return backbone, head, ckpt.get("args")


def split_pretrain_state(ckpt: dict, which: str, where: str, kind: str):
    """(backbone, head) state dicts of the `which` network of a loaded pretraining checkpoint (or a bare state).

    Official names are kept; DDP's `module.` and the wrapper's `backbone.` prefixes are stripped.
    """
    if which not in ("teacher", "student"):
        raise CheckpointError(f"which must be 'teacher' or 'student', not {which!r}")
    state = ckpt
    if "teacher" in ckpt or "student" in ckpt:
        if which not in ckpt:
            raise CheckpointError(f"{where}: the checkpoint has no {which!r} network (it has: {', '.join(map(str, ckpt))})")
        state = ckpt[which]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{where}: not a {kind} pretraining checkpoint: expected 'teacher'/'student' state "
                              "dicts of tensors")
    state = _strip(state, ("module.",))
    backbone = _strip({k: v for k, v in state.items() if not k.startswith("head.")}, ("backbone.",))
    head = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    return backbone, head


def _pretrain_config(arch, args, source="the checkpoint"):
    cfg = get_config(arch)
    if args is not None:
        size2d, size3d = getattr(args, "img_size2D", None), getattr(args, "img_size3D", None)
        try:
            if size2d is not None:
                cfg = cfg.with_img_size(2, (size2d, size2d) if isinstance(size2d, int) else size2d)
            if size3d is not None:
                cfg = cfg.with_img_size(3, size3d)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{source}: its args give an unusable image size ({exc})") from None
    return cfg


def _load_exact(model: torch.nn.Module, official: dict, arch: str, default_dim: int) -> None:
    """Load official weights into `model`; every parameter must be present with its shape."""
    ours = model.state_dict()
    mapped, unexpected = {}, []
    for k, v in official.items():
        name = official_to_ours(k, default_dim)
        (mapped.__setitem__(name, v) if name in ours else unexpected.append(k))
    missing = [k for k in ours if k not in mapped]
    wrong = [f"{k} {tuple(mapped[k].shape)} vs {tuple(ours[k].shape)}" for k in mapped if mapped[k].shape != ours[k].shape]
    if unexpected or missing or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches such as {wrong[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected weights such as {unexpected[0]}")
        if missing:
            parts.append(f"{len(missing)} missing weights such as {missing[0]}")
        raise CheckpointError(f"the checkpoint does not fit MiT arch {arch!r}: {'; '.join(parts)}")
    model.load_state_dict({k: v.float() for k, v in mapped.items()})


def from_official_pretrain(path_or_state, arch: str = "tiny", which: str = "teacher", with_head: bool = False,
                           source=None):
    """The 2D+3D MiT backbone of an official pretraining checkpoint, in eval mode.

    With `with_head=True` returns `(backbone, projection_head)`. `source` names an already loaded
    checkpoint in error messages.
    """
    where = source or _where(path_or_state)
    backbone_state, head_state, args = _pretrain_parts(path_or_state, which, where)
    cfg = _pretrain_config(arch, args, where)
    model = build_bounded(lambda: MiT(cfg, spatial_dims=(2, 3)), where)
    _load_exact(model, backbone_state, arch, default_dim=3)
    model.eval()
    if not with_head:
        return model
    head = _head_from_state(head_state)
    return model, head


def _head_from_state(head_state: dict) -> ProjectionHead:
    if "last_layer.weight_v" not in head_state:
        raise CheckpointError("the checkpoint has no projection head")
    linear = sorted((k for k in head_state if k.startswith("mlp.") and k.endswith(".weight")),
                    key=lambda k: int(k.split(".")[1]))
    out_dim, bottleneck = head_state["last_layer.weight_v"].shape
    in_dim = head_state[linear[0]].shape[1]
    hidden = head_state[linear[0]].shape[0] if len(linear) > 1 else 2048
    head = ProjectionHead(in_dim, out_dim, hidden, bottleneck, nlayers=len(linear))
    head.load_state_dict({k: v.float() for k, v in head_state.items()})
    return head.eval()


# ---------------------------------------------------------------- downstream segmentation checkpoints

def from_official_segmentation(path_or_state, arch: str = "tiny", num_classes: int | None = None,
                               patch_size=(16, 96, 96), deep_supervision: bool = False,
                               source=None) -> MiTSegmentation:
    """The 3D segmentation network of an official downstream (nnU-Net v1 trainer) checkpoint, in eval mode.

    `patch_size` is the training patch size from the trainer's plans; `num_classes`
    is read from the checkpoint when not given.
    """
    ckpt, where = load_checkpoint(path_or_state), source or _where(path_or_state)
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, dict) or not any(k.startswith("model.") for k in state):
        raise CheckpointError(f"{where}: not a UniMiSS segmentation checkpoint: expected a 'state_dict' with "
                              "'model.*' weights")
    state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if "cls_conv.weight" not in state:
        raise CheckpointError(f"{where}: not a UniMiSS segmentation checkpoint: no 'model.cls_conv' classifier")
    found = state["cls_conv.weight"].shape[0]
    if num_classes is not None and num_classes != found:
        raise CheckpointError(f"{where}: the checkpoint predicts {found} classes, not {num_classes}")
    model = build_bounded(lambda: MiTSegmentation(arch, num_classes=found, spatial_dims=3, patch_size=patch_size,
                                                  deep_supervision=deep_supervision), where)
    _load_exact(model, state, arch, default_dim=3)
    return model.eval()


# ---------------------------------------------------------------- transfer for fine-tuning

@dataclass
class TransferReport:
    """What a transfer from a pretraining checkpoint did to each parameter."""
    loaded: list[str] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.loaded)} tensors loaded ({len(self.interpolated)} positional embeddings interpolated, "
                f"{len(self.adapted)} stems adapted to the input channels), {len(self.initialised)} initialised, "
                f"{len(self.ignored)} checkpoint tensors without a counterpart")


def segmentation_from_official_pretrain(path_or_state, arch: str = "tiny", num_classes: int = 2,
                                        spatial_dims: int = 3, patch_size=None, in_channels: int | None = None,
                                        which: str = "student", deep_supervision: bool = False):
    """A 2D or 3D `MiTSegmentation` initialised from an official pretraining checkpoint.

    Every encoder and decoder weight with a counterpart is transferred: the half of
    each switchable module that matches `spatial_dims`, positional embeddings without
    the class-token position and interpolated to the new patch grid, the stem summed
    or spread over a different number of input channels. The segmentation head is
    initialised. Student weights by default, as the published downstream code does.
    Returns `(model, TransferReport)`.
    """
    backbone_state, _, args = _pretrain_parts(path_or_state, which)
    source_cfg = _pretrain_config(arch, args, _where(path_or_state))
    model = build_bounded(lambda: MiTSegmentation(arch, num_classes, spatial_dims, in_channels=in_channels,
                                                  patch_size=patch_size, deep_supervision=deep_supervision),
                          _where(path_or_state))
    target = model.state_dict()
    report, new_state = TransferReport(), {}
    for key, value in backbone_state.items():
        name = official_to_ours(key)
        if name is None or name not in target:
            report.ignored.append(key)
            continue
        value = value.float()
        if ".pos.tables." in name:
            value = _transfer_pos_table(value, name, source_cfg, model.config, spatial_dims)
            report.interpolated.append(name)
        elif name.startswith("encoder.stem.") and name.endswith("conv.weight") and value.shape[1] != target[name].shape[1]:
            value = _adapt_stem(value, target[name].shape[1])
            report.adapted.append(name)
        if value.shape != target[name].shape:
            raise CheckpointError(f"the checkpoint does not fit MiT arch {arch!r}: {key} has shape "
                                  f"{tuple(value.shape)}, expected {tuple(target[name].shape)}")
        new_state[name] = value
        report.loaded.append(name)
    report.initialised = [k for k in target if k not in new_state]
    if not report.loaded:
        raise CheckpointError("no weight of the checkpoint fits the segmentation network")
    model.load_state_dict(new_state, strict=False)
    return model, report


def _transfer_pos_table(table, name, source_cfg, target_cfg, spatial_dims):
    stage = int(name.split(".")[2])
    halvings = stage + 1 if name.startswith("encoder.") else 3 - stage
    old = grid_after(source_cfg.img_size(spatial_dims), spatial_dims, halvings)
    new = grid_after(target_cfg.img_size(spatial_dims), spatial_dims, halvings)
    patches = table[:, table.shape[1] - int(np.prod(old)):]  # drop the class-token position
    return interpolate_grid(patches, old, new)


def _adapt_stem(weight, in_channels):
    """Stem weights for another channel count, exact when the input channels are copies of one image."""
    return weight.sum(dim=1, keepdim=True).repeat_interleave(in_channels, dim=1) / in_channels


# ---------------------------------------------------------------- our names -> official (for writing checkpoints)

_B = r"branches\.(?P<d>[23])d"
_INVERSE = [
    (rf"encoder\.stem\.{_B}\.(?P<rest>.+)", lambda m, d: f"transformer.patch_embed{d}0.{m['rest']}"),
    (rf"encoder\.stages\.(?P<i>[0-3])\.embed\.{_B}\.(?P<rest>.+)",
     lambda m, d: f"transformer.patch_embed{d}{int(m['i']) + 1}.proj.{m['rest']}"),
    (r"encoder\.stages\.(?P<i>[0-3])\.pos\.tables\.(?P<d>[23])d", lambda m, d: f"transformer.pos_embed{d}{int(m['i']) + 1}"),
    (r"encoder\.stages\.0\.cls_token", lambda m, d: "transformer.cls_tokens1"),
    (r"encoder\.stages\.(?P<i>[1-3])\.cls_proj\.(?P<rest>.+)",
     lambda m, d: f"transformer.cls_tokens{int(m['i']) + 1}.{m['rest']}"),
    (rf"encoder\.stages\.(?P<i>[0-3])\.blocks\.(?P<b>\d+)\.attn\.sr\.{_B}\.(?P<rest>.+)",
     lambda m, d: f"transformer.block{int(m['i']) + 1}.{m['b']}.attn.sr{d}.{m['rest']}"),
    (r"encoder\.stages\.(?P<i>[0-3])\.blocks\.(?P<rest>.+)", lambda m, d: f"transformer.block{int(m['i']) + 1}.{m['rest']}"),
    (rf"decoder\.stages\.(?P<j>[0-2])\.embed\.{_B}\.(?P<rest>.+)", lambda m, d: f"DecEmbed{d}{m['j']}.proj.{m['rest']}"),
    (r"decoder\.stages\.(?P<j>[0-2])\.pos\.tables\.(?P<d>[23])d", lambda m, d: f"DecPosEmbed{d}{m['j']}"),
    (rf"decoder\.stages\.(?P<j>[0-2])\.blocks\.(?P<b>\d+)\.attn\.sr\.{_B}\.(?P<rest>.+)",
     lambda m, d: f"Decblock{m['j']}.{m['b']}.attn.sr{d}.{m['rest']}"),
    (r"decoder\.stages\.(?P<j>[0-2])\.blocks\.(?P<rest>.+)", lambda m, d: f"Decblock{m['j']}.{m['rest']}"),
    (r"decoder\.stages\.(?P<j>[0-2])\.cls_proj\.(?P<rest>.+)", lambda m, d: f"cls_tokens{m['j']}.{m['rest']}"),
    (r"decoder\.stages\.2\.norm\.(?P<rest>.+)", lambda m, d: f"norm.{m['rest']}"),
    (r"head_expand\.(?P<rest>.+)", lambda m, d: f"transposeconv_stage3.{m['rest']}"),
    (r"head_conv\.(?P<rest>.+)", lambda m, d: f"stage3_de.{m['rest']}"),
    (r"aux_heads\.(?P<k>[0-3])\.(?P<rest>.+)", lambda m, d: f"ds{m['k']}_cls_conv.{m['rest']}"),
    (r"classifier\.(?P<rest>.+)", lambda m, d: f"cls_conv.{m['rest']}"),
]
_INVERSE = [(re.compile(p), f) for p, f in _INVERSE]


def ours_to_official(name: str, tagged: bool = True) -> str:
    """The official parameter name for one of ours; the inverse of `official_to_ours`.

    With `tagged` (pretraining networks, both 2D and 3D halves) switchable parts carry
    a `2D`/`3D` tag; without it (downstream 3D networks) they carry none.
    """
    for pattern, make in _INVERSE:
        m = pattern.fullmatch(name)
        if m:
            d = m.groupdict().get("d")
            return make(m, f"{d}D" if d and tagged else "")
    raise ValueError(f"no official name for parameter {name!r}")
