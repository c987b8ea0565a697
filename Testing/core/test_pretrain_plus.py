"""`unimiss pretrain --plus`: UniMiSS+ pretraining on real radiographs and CT, checkpoints in the UniMissPlus.pth layout."""
from __future__ import annotations

import json

import torch

from testkit import DATA, PLUS_CT as CT, PLUS_RADIOGRAPHS as XRAYS, events, pretrain_plus, run_unimiss
from unimiss.models import MiTPlusSegmentation
from unimiss.models.official_plus import from_official_plus_pretrain, load_plus_checkpoint, transfer_plus_pretrain
from unimiss.progress import Progress
from unimiss.training.pretrain import PretrainSettings, pretrain


def test_plus_pretraining_losses_fall_and_the_official_layout_starts_fine_tuning(tmp_path):
    out = tmp_path / "pt"
    torch.manual_seed(0)
    pretrain(PretrainSettings(plus=True, images2d=XRAYS, images3d=[CT], view_size_2d=(32, 32),
                              view_size_3d=(16, 32, 32), spacing=4, epochs=12, interval=1, batch_size=1,
                              samples_per_epoch=2, out_dim=64, lr=1e-3, output=out), Progress("none"))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert set(log[0]) >= {"loss_distill", "loss_recon"} and "loss_drr2ct" not in log[0]
    # 3D epochs: self-distillation, the DRR and slice constraints, reconstruction. Each part falls (the last two
    # epochs of its kind against the first), in 2D epochs too.
    for kind, parts in (("3D", ("distill", "drr2ct", "slice2ct", "recon")), ("2D", ("distill", "recon"))):
        epochs = [r for r in log if r["kind"] == kind]
        for part in parts:
            values = [r[f"loss_{part}"] for r in epochs]
            assert all(0 < v < 100 for v in values) and sum(values[-2:]) / 2 < values[0], (kind, part, values)
    ckpt, skipped = load_plus_checkpoint(out / "checkpoint.pth")
    assert skipped == [] and set(ckpt) == {"student", "teacher", "optimizer", "epoch", "args", "dino_loss"}
    assert ckpt["epoch"] == 12 and ckpt["args"].arch == "MiTplus" and ckpt["dino_loss"]["center"].shape == (1, 64)
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
                           "--resume", "--epochs", "13", "--view-size-2d", "32", "32", "--progress", "none"])
    assert refused.returncode != 0 and "plus True in the checkpoint, False now" in refused.stderr
    proc = pretrain_plus(out, 13, "--resume", "--samples-per-epoch", "2", "--lr", "1e-3")
    assert proc.returncode == 0, proc.stderr
    assert [m["epoch"] for m in events(proc, "metric")] == [13]
    assert load_plus_checkpoint(out / "checkpoint.pth")[0]["epoch"] == 13


def test_plus_pretraining_runs_in_two_processes(tmp_path):
    # A 3D step runs the student on CT views, their DRRs and their slices: DDP must see all three in one pass.
    proc = pretrain_plus(tmp_path, 2, torchrun=True)
    assert proc.returncode == 0, proc.stderr
    assert [m["kind"] for m in events(proc, "metric")] == ["2D", "3D"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth", "log.jsonl"]
    ckpt, _ = load_plus_checkpoint(tmp_path / "checkpoint.pth")
    assert ckpt["epoch"] == 2 and ckpt["args"].world_size == 2 and ckpt["args"].arch == "MiTplus"
