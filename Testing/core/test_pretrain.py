"""`unimiss pretrain`: UniMiSS self-distillation on real radiographs and CT, checkpoints in the official layout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from testkit import DATA, THREADS, deterministic_weights, events, official_keys, run_unimiss
from unimiss.data import ImageData, Label, read_image, write_labelmap
from unimiss.models import MiT
from unimiss.models.official import from_official_pretrain, load_checkpoint, official_to_ours, ours_to_official
from unimiss.progress import Progress
from unimiss.training.pretrain import Network, PretrainSettings, build_networks, load_official_state, pretrain

XRAYS = [DATA / "xray" / n for n in ("nih-00000001_000.png", "nih-00000002_000.png", "tbx11k-h0001.png",
                                     "siim-chest-cr.dcm")]
CTS = [DATA / "ct" / "ts-abdomen" / "image.nii.gz", DATA / "ct" / "ts-dicom" / "dicom"]
# Tiny settings: small views, a small head, 4 samples (2 iterations) per epoch, 2D and 3D alternating each epoch.
FAST = ["--config", "compact", "--view-size-2d", "64", "64", "--view-size-3d", "16", "64", "64", "--interval", "1",
        "--batch-size", "2", "--samples-per-epoch", "4", "--lr", "1e-3", "--out-dim", "1024", "--seed", "0"]


def settings(output, **kw) -> PretrainSettings:
    """In-process runs: one iteration (2 samples) per epoch, 2D and 3D epochs alternating."""
    base = dict(images2d=XRAYS, images3d=CTS, view_size_2d=(64, 64), view_size_3d=(16, 64, 64), interval=1,
                batch_size=2, samples_per_epoch=2, lr=1e-3, out_dim=256, output=Path(output))
    return PretrainSettings(**{**base, **kw})


def run(args, output, torchrun=False, timeout=300):
    return run_unimiss(["pretrain", *args, "--output", output, "--progress", "jsonl"], None, torchrun, timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    proc = run(["--images2d", *XRAYS, "--images3d", *CTS, *FAST, "--epochs", "4"], out)
    assert proc.returncode == 0, proc.stderr
    return out, proc


# ---------------------------------------------------------------- name mapping

def test_ours_to_official_inverts_official_to_ours():
    for arch in ("model_tiny", "model_small"):
        for key in official_keys("pretrain_keys.json")[arch]:
            assert ours_to_official(official_to_ours(key)) == key
    for key in official_keys("seg3d_keys.json")["tiny"]:
        key = key.removeprefix("model.")
        assert ours_to_official(official_to_ours(key), tagged=False) == key
    with pytest.raises(ValueError):
        ours_to_official("not.a.parameter")


def test_round_trip_through_the_official_layout_gives_identical_outputs():
    keys = official_keys("pretrain_keys.json")["model_tiny"]
    ours = MiT("tiny", spatial_dims=(2, 3)).eval()
    ours.load_state_dict({official_to_ours(k): v for k, v in deterministic_weights(keys).items()})
    official = {ours_to_official(k): v for k, v in ours.state_dict().items()}
    assert set(official) == set(keys)
    loaded = from_official_pretrain(official, arch="tiny", which="teacher")
    torch.manual_seed(0)
    x2, x3 = torch.randn(1, 3, 64, 64), torch.randn(1, 1, 16, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x2), ours(x2)) and torch.equal(loaded(x3), ours(x3))


# ---------------------------------------------------------------- a short run

def test_short_run_loss_falls_and_checkpoint_is_official(trained):
    out, proc = trained
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in log] == ["2D", "3D", "2D", "3D"]
    assert [m["epoch"] for m in events(proc, "metric")] == [1, 2, 3, 4]
    losses = [r["loss"] for r in log]
    assert np.mean(losses[2:]) < np.mean(losses[:2]), losses
    assert log[-1]["momentum"] > log[0]["momentum"] and log[-1]["weight_decay"] > log[0]["weight_decay"]
    assert events(proc, "result")[0]["path"].endswith("checkpoint.pth")

    ckpt = load_checkpoint(out / "checkpoint.pth")  # weights_only with the allow-list
    assert set(ckpt) == {"student", "teacher", "optimizer", "epoch", "args", "loss"} and ckpt["epoch"] == 4
    assert all(k.startswith(("module.backbone.transformer.", "module.backbone.Dec", "module.backbone.cls_tokens",
                             "module.backbone.norm.", "module.head.")) for k in ckpt["student"])
    assert "backbone.transformer.pos_embed3D1" in ckpt["teacher"] and "head.last_layer.weight_v" in ckpt["teacher"]
    assert ckpt["args"].arch == "compact" and ckpt["args"].img_size3D == [16, 64, 64]
    assert ckpt["loss"]["center"].shape == ckpt["loss"]["center_3d"].shape == (1, 1024)

    # Both networks load through the official reader; the teacher reproduces the saved teacher.
    s = settings(out, out_dim=1024)
    _, teacher = build_networks(s)
    load_official_state(teacher, ckpt["teacher"], "")
    x2, x3 = torch.rand(2, 3, 64, 64), torch.rand(1, 1, 16, 64, 64)
    for which in ("teacher", "student"):
        backbone, head = from_official_pretrain(out / "checkpoint.pth", arch="compact", which=which, with_head=True)
        assert backbone.config.img_size_3d == (16, 64, 64) and head.last_layer.weight_v.shape == (1024, 256)
        if which == "teacher":
            with torch.no_grad():
                assert torch.equal(Network(backbone, head)([x2]), teacher.eval()([x2]))
                assert torch.equal(backbone(x3), teacher.backbone(x3))
    student = ckpt["student"]["module.backbone.transformer.patch_embed2D0.conv.weight"]
    assert not torch.equal(student, ckpt["teacher"]["backbone.transformer.patch_embed2D0.conv.weight"])


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Two labelled CT crops from ts-abdomen (liver, spleen)."""
    root = tmp_path_factory.mktemp("cases")
    src = DATA / "ct" / "ts-abdomen"
    ids = {v: int(k) for k, v in json.loads((src / "labels.json").read_text())["labels"].items()}
    image, labels = read_image(src / "image.nii.gz"), read_image(src / "labels.nii.gz")
    out = []
    for i, (z0, z1) in enumerate([(0, 80), (20, 100)]):
        direction = np.reshape(image.direction, (3, 3))
        origin = tuple(np.array(image.origin) + direction @ np.array([0, 0, z0 * image.spacing[2]]))
        crop = ImageData(image.array[z0:z1], image.spacing, origin, image.direction)
        mask = np.zeros(crop.array.shape, np.uint8)
        for value, name in enumerate(["liver", "spleen"], start=1):
            mask[labels.array[z0:z1] == ids[name]] = value
        img_path, lab_path = root / f"case{i}.nrrd", root / f"case{i}.seg.nrrd"
        sitk.WriteImage(crop.to_sitk(), str(img_path))
        write_labelmap(crop.with_array(mask), lab_path, [Label(1, "liver"), Label(2, "spleen")])
        out.append((img_path, lab_path))
    return out


def test_checkpoint_starts_a_finetune_run(trained, cases, tmp_path):
    out, _ = trained
    env = {**os.environ, "UNIMISS_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": THREADS}
    cmd = [sys.executable, "-m", "unimiss", "finetune", "--images", *(str(c[0]) for c in cases),
           "--labels", *(str(c[1]) for c in cases), "--base", str(out / "checkpoint.pth"), "--config", "compact",
           "--epochs", "1", "--iterations", "2", "--patch-size", "32", "64", "64", "--spacing", "4", "4", "4",
           "--batch-size", "1", "--precision", "fp32", "--progress", "jsonl", "--workdir", str(tmp_path / "w")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "from the official pretraining checkpoint" in proc.stdout


# ---------------------------------------------------------------- the recipe

def test_3d_parameters_do_not_change_in_a_2d_epoch(tmp_path):
    s = settings(tmp_path, epochs=1)  # epoch 1 of 2D+3D data is a 2D epoch
    torch.manual_seed(s.seed)
    student, _ = build_networks(s)
    initial = student.state_dict()
    pretrain(s, Progress("none"))
    trained_student, _ = build_networks(s)
    load_official_state(trained_student, load_checkpoint(tmp_path / "checkpoint.pth")["student"], "module.")
    after = trained_student.state_dict()
    names_3d = [k for k in initial if ".3d" in k]
    assert names_3d and all(torch.equal(initial[k], after[k]) for k in names_3d)
    assert not torch.equal(initial["backbone.encoder.stem.branches.2d.conv.weight"],
                           after["backbone.encoder.stem.branches.2d.conv.weight"])


class StopAt(Progress):
    """Interrupts a run when epoch `epoch` reports its metric (before that epoch's checkpoint)."""

    def __init__(self, epoch):
        super().__init__("none")
        self.epoch = epoch

    def metric(self, **fields):
        if fields["epoch"] == self.epoch:
            raise KeyboardInterrupt


def test_resume_continues_an_interrupted_run_exactly(tmp_path):
    # Checkpoints after epochs 2 and 3; interrupted in epoch 3 (a 2D epoch after a 3D one), resumed from epoch 2.
    pretrain(settings(tmp_path / "whole", epochs=3), Progress("none"))
    with pytest.raises(KeyboardInterrupt):
        pretrain(settings(tmp_path / "parts", epochs=3, save_every=2), StopAt(3))
    assert load_checkpoint(tmp_path / "parts" / "checkpoint.pth")["epoch"] == 2
    pretrain(settings(tmp_path / "parts", epochs=3, save_every=2, resume=True), Progress("none"))
    whole, parts = (load_checkpoint(tmp_path / d / "checkpoint.pth") for d in ("whole", "parts"))
    assert parts["epoch"] == 3
    for which in ("teacher", "student"):
        assert all(torch.allclose(whole[which][k], parts[which][k], atol=1e-6) for k in whole[which])
    for centre in ("center", "center_3d"):
        assert torch.allclose(whole["loss"][centre], parts["loss"][centre], atol=1e-6)
    log = [json.loads(l) for l in (tmp_path / "parts" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]


def test_two_process_run_writes_one_checkpoint(tmp_path):
    args = ["--images2d", *XRAYS[:2], "--images3d", CTS[0], *FAST, "--epochs", "1", "--samples-per-epoch", "4"]
    proc = run(args, tmp_path, torchrun=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth", "log.jsonl"]
    ckpt = load_checkpoint(tmp_path / "checkpoint.pth")
    assert ckpt["epoch"] == 1 and ckpt["args"].world_size == 2


def test_no_images_is_a_one_line_error(tmp_path):
    proc = run(["--epochs", "1"], tmp_path)
    assert proc.returncode != 0 and proc.stderr.strip().startswith("unimiss: error:") and "Traceback" not in proc.stderr
    proc = run(["--images2d", XRAYS[0], "--view-size-2d", "60", "64"], tmp_path)
    assert proc.returncode != 0 and "multiple of" in proc.stderr


def test_radiographs_and_volumes_are_centred_on_their_own_mean():
    """The teacher's outputs are centred on the running mean of their own kind: 3D batches leave the 2D centre
    where 2D batches put it (with one shared centre, small runs collapsed at every switch of kind)."""
    from unimiss.training.pretrain import DistillationLoss

    loss = DistillationLoss(16, lambda epoch: 0.04)
    torch.manual_seed(0)
    radiographs, volumes = torch.randn(8, 16), torch.randn(8, 16) + 3.0
    for _ in range(60):
        loss(radiographs, radiographs, 0, 2)
    for _ in range(60):
        loss(volumes, volumes, 0, 3)
    assert torch.allclose(loss.center, radiographs.mean(0, keepdim=True), atol=1e-2)
    assert torch.allclose(loss.center_3d, volumes.mean(0, keepdim=True), atol=1e-2)


def test_a_run_that_is_not_learning_says_so(tmp_path):
    """Seven radiographs, a few steps per epoch: the teacher gives every image the same output (the loss sits at
    ln(out_dim)), and after ten such epochs the run says it is not learning."""
    proc = run_unimiss(["pretrain", "--images2d", *sorted(str(p) for p in (DATA / "xray").glob("nih-0000000[1-3]*.png")),
                        "--epochs", "20", "--samples-per-epoch", "8", "--batch-size", "4", "--out-dim", "256",
                        "--view-size-2d", "64", "64", "--output", str(tmp_path / "out"), "--progress", "jsonl"])
    assert proc.returncode == 0, proc.stderr
    warnings = [e["text"] for e in events(proc, "message") if "the teacher gives every image the same output" in e["text"]]
    assert len(warnings) == 1 and "ln(256) = 5.55" in warnings[0], [m["loss"] for m in events(proc, "metric")]
