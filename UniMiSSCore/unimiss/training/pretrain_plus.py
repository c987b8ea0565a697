"""UniMiSS+ pretraining (`unimiss pretrain --plus`): MiT+, DRR-paired views and the pair-wise cross-dimension constraint.

The published recipe (YtongXie/UniMiSS-code, `UniMiSSPlus/main_UniMissPlus.py`), on top of UniMiSS's
self-distillation (`pretrain.py` runs the loop):
- 3D steps pair every CT view with a digitally reconstructed radiograph of it (made here on the fly
  with `unimiss.data.drr`) and with its slices. The student learns to match the teacher's CT output
  from the CT views, from the DRRs (`weight_drr`) and from the mean over the slices (`weight_slices`).
- Both steps add the reconstruction loss (`weight_recon`): MSE between the sigmoid of MiT+'s decoder
  output and the input (a CT view scaled to [0, 1] per volume).
- Checkpoints in the official UniMiSS+ layout (`dino_loss` holds the centre), read by
  `from_official_plus_pretrain` and `unimiss finetune --base`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.drr import Projector
from ..data.image import ImageData
from ..models.heads import ProjectionHead
from ..models.mitplus import MiTPlus
from ..models.mitplus_config import PLUS
from ..models.official import build_bounded
from ..models.official_plus import plus_official_name


class PlusNetwork(nn.Module):
    """MiT+ backbone + projection head: (head output of the class token, reconstruction logits)."""

    def __init__(self, backbone: MiTPlus, head: ProjectionHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, *groups):
        """(head output, reconstruction) of each group of same-sized views, all in one call: DDP allows one
        forward pass per backward, and a 3D step of UniMiSS+ runs CT views, their DRRs and their slices."""
        outputs = []
        for views in groups:
            recon, cls = self.backbone(torch.cat(views))
            outputs.append((self.head(cls), recon))
        return outputs[0] if len(groups) == 1 else outputs


def build_plus_networks(s):
    cfg = PLUS.with_img_size(2, s.view_size_2d).with_img_size(3, s.view_size_3d)
    student_backbone = build_bounded(lambda: MiTPlus(_with_drop_path(cfg, s.drop_path)), "MiT+ at the view sizes given")
    student = PlusNetwork(student_backbone, ProjectionHead(student_backbone.embed_dim, s.out_dim, norm_last_layer=True))
    teacher = PlusNetwork(MiTPlus(cfg), ProjectionHead(student_backbone.embed_dim, s.out_dim))
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher


def _with_drop_path(cfg, rate):
    from dataclasses import replace

    return replace(cfg, drop_path_rate=rate)


def drr_views(ct_views: torch.Tensor, size, spacing_mm: float, rng) -> torch.Tensor:
    """A randomised frontal DRR (3, *size) of each CT view (B, 1, D, H, W), whose values are HU / 1000."""
    out = []
    for view in ct_views.detach().cpu().numpy():
        ct = ImageData((view[0] * 1000.0).astype(np.float32), (spacing_mm,) * 3, (0.0,) * 3, (1, 0, 0, 0, 1, 0, 0, 0, 1))
        image, _ = Projector(ct).radiograph(rng, size=max(size))
        array = torch.from_numpy(image.array.astype(np.float32) / 255.0)[None, None]
        out.append(F.interpolate(array, size=tuple(size), mode="bilinear", align_corners=False)[0].expand(3, *size))
    return torch.stack(out).to(ct_views.device)


def _unit_range(volumes: torch.Tensor) -> torch.Tensor:
    """Each volume scaled to [0, 1] (the published target of the CT reconstruction)."""
    flat = volumes.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    shape = (-1,) + (1,) * (volumes.ndim - 1)
    return (volumes - low.view(shape)) / (high - low).clamp_min(1e-6).view(shape)


def plus_step(model, teacher, loss_fn, views, kind: int, epoch: int, s, rng) -> tuple[torch.Tensor, dict]:
    """The UniMiSS+ loss of one batch of two views; returns (loss, its parts for the log)."""
    if kind == 2:
        with torch.no_grad():
            teacher_out, _ = teacher(views)
        out, recon = model(views)
        distill = loss_fn(out, teacher_out, epoch, kind)
        rebuild = F.mse_loss(torch.sigmoid(recon), torch.cat(views))
        return distill + s.weight_recon * rebuild, {"distill": distill.item(), "recon": rebuild.item()}
    with torch.no_grad():
        teacher_out, _ = teacher(views)
    drr = [drr_views(v, s.view_size_2d, s.spacing, rng) for v in views]
    # Every second slice of each view, as a 3-channel radiograph-like image (the published slice2CT pairs).
    slices = [v[:, :, ::2].transpose(1, 2).flatten(0, 1).expand(-1, 3, -1, -1) for v in views]
    (out_ct, recon_ct), (out_drr, recon_drr), (out_slices, _) = model(views, drr, slices)
    out_slices = out_slices.view(len(teacher_out), -1, out_slices.shape[-1]).mean(1)
    ct2ct = loss_fn(out_ct, teacher_out, epoch, kind)
    drr2ct = loss_fn(out_drr, teacher_out, epoch, kind)  # the centre moves with each call, as published
    slice2ct = loss_fn(out_slices, teacher_out, epoch, kind)
    rebuild = (F.mse_loss(torch.sigmoid(recon_ct), _unit_range(torch.cat(views)))
               + F.mse_loss(torch.sigmoid(recon_drr), torch.cat(drr)))
    loss = ct2ct + s.weight_drr * drr2ct + s.weight_slices * slice2ct + s.weight_recon * rebuild
    return loss, {"distill": ct2ct.item(), "drr2ct": drr2ct.item(), "slice2ct": slice2ct.item(), "recon": rebuild.item()}


# ---------------------------------------------------------------- checkpoints in the official UniMiSS+ layout

def plus_official_state(network: PlusNetwork, prefix: str) -> dict:
    state = {f"{prefix}backbone.{plus_official_name(k, 'pretrain')}": v for k, v in network.backbone.state_dict().items()}
    state.update({f"{prefix}head.{k}": v for k, v in network.head.state_dict().items()})
    return state


def load_plus_official_state(network: PlusNetwork, state: dict, prefix: str) -> None:
    names = {plus_official_name(k, "pretrain"): k for k in network.backbone.state_dict()}
    start = prefix + "backbone."
    network.backbone.load_state_dict({names[k[len(start):]]: v for k, v in state.items() if k.startswith(start)})
    network.head.load_state_dict({k[len(prefix) + 5:]: v for k, v in state.items() if k.startswith(prefix + "head.")})
