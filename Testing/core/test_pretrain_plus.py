"""`unimiss pretrain --plus`: UniMiSS+ pretraining on real radiographs and CT, checkpoints in the UniMissPlus.pth layout."""
from __future__ import annotations

import json

import torch

from testkit import DATA, events, run_unimiss
from unimiss.models import MiTPlusSegmentation
from unimiss.models.official_plus import from_official_plus_pretrain, load_plus_checkpoint, transfer_plus_pretrain


def pretrain_plus(out, epochs, *extra):
    return run_unimiss(["pretrain", "--plus", "--images2d", DATA / "xray" / "nih-00000001_000.png",
                        DATA / "xray" / "tbx11k-h0001.png", "--images3d", DATA / "ct" / "ts-abdomen" / "image.nii.gz",
                        "--view-size-2d", "32", "32", "--view-size-3d", "16", "32", "32", "--spacing", "4",
                        "--epochs", epochs, "--interval", "1", "--batch-size", "1", "--samples-per-epoch", "1",
                        "--out-dim", "64", "--save-every", "1", "--output", out, "--progress", "jsonl", *extra])


def test_plus_pretraining_writes_the_official_layout_that_fine_tuning_reads(tmp_path):
    out = tmp_path / "pt"
    proc = pretrain_plus(out, 2)
    assert proc.returncode == 0, proc.stderr
    assert [m["kind"] for m in events(proc, "metric")] == ["2D", "3D"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert set(log[0]) >= {"loss_distill", "loss_recon"} and "loss_drr2ct" not in log[0]
    # The 3D epoch: self-distillation, the DRR and slice constraints, reconstruction; all finite and positive.
    parts = [log[1][f"loss_{k}"] for k in ("distill", "drr2ct", "slice2ct", "recon")]
    assert all(0 < p < 100 for p in parts)
    ckpt, skipped = load_plus_checkpoint(out / "checkpoint.pth")
    assert skipped == [] and set(ckpt) == {"student", "teacher", "optimizer", "epoch", "args", "dino_loss"}
    assert ckpt["epoch"] == 2 and ckpt["args"].arch == "MiTplus" and ckpt["dino_loss"]["center"].shape == (1, 64)
    assert "module.backbone.transformer.ConvBlock3D0.0.conv.weight" in ckpt["student"]
    assert "backbone.DecPosEmbed2D3" in ckpt["teacher"] and "head.last_layer.weight_v" in ckpt["teacher"]
    backbone = from_official_plus_pretrain(out / "checkpoint.pth", which="student")
    assert backbone.config.img_size_3d == (16, 32, 32) and backbone.config.img_size_2d == (32, 32)
    # It starts a fine-tuning network at another patch size.
    seg = MiTPlusSegmentation(None, 3, 3, in_channels=1, patch_size=(32, 64, 64))
    report = transfer_plus_pretrain(seg, ckpt, positional="grid", with_decoder=True)
    assert not any(k.startswith(("classifier.", "aux_heads.")) for k in report.loaded)
    assert torch.equal(seg.state_dict()["encoder.stages.1.blocks.0.mlp.fc1.weight"],
                       ckpt["student"]["module.backbone.transformer.block2.0.mlp.fc1.weight"])
    # It resumes (one more epoch), and refuses to resume as a UniMiSS (MiT) run.
    refused = run_unimiss(["pretrain", "--images2d", DATA / "xray" / "nih-00000001_000.png", "--output", out,
                           "--resume", "--epochs", "3", "--view-size-2d", "32", "32", "--progress", "none"])
    assert refused.returncode != 0 and "plus True in the checkpoint, False now" in refused.stderr
    proc = pretrain_plus(out, 3, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert [m["epoch"] for m in events(proc, "metric")] == [3]
    assert load_plus_checkpoint(out / "checkpoint.pth")[0]["epoch"] == 3
