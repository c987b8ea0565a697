"""Our MiT+ against the published UniMiSS+ networks (Testing/reference/official-unimissplus), through their checkpoints."""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch.utils.data import DataLoader, Dataset

from testkit import DATA, deterministic_weights, events, plus_reference, run_unimiss
from unimiss.data import ImageData, Label, read_image, read_labelmap, write_labelmap
from unimiss.models import CheckpointError
from unimiss.models.official import _head_from_state
from unimiss.models.official_plus import (from_official_plus_classifier, from_official_plus_pretrain,
                                          from_official_plus_segmentation, load_plus_checkpoint,
                                          transfer_plus_pretrain)

HEAD_OUT = 512  # the released head has 65536 prototypes; fewer keep the test file small


def rel_err(out, ref):
    return ((out - ref).norm() / ref.norm()).item()


class Dataset3D2D(Dataset):
    """Stands for the official data set class: reading it back for real would run __setstate__."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return torch.zeros(1)

    def __setstate__(self, state):
        open(state["marker"], "w").close()
        self.__dict__.update(state)


class _Payload:
    def __init__(self, call, command):
        self.call, self.command = call, command

    def __reduce__(self):
        return (self.call, (self.command,))


def _touch(marker):
    return f"open({str(marker)!r}, 'w').close()"


def write_plus_checkpoint(path, backbone, marker, extra_args=None, student_extra=None):
    """The layout of UniMissPlus.pth (see the reference README), its args holding the training DataLoader.

    Student and teacher share their tensors, so the file stores them once."""
    gen = torch.Generator().manual_seed(0)
    head = {"mlp.0.weight": (2048, 320), "mlp.0.bias": (2048,), "mlp.2.weight": (2048, 2048), "mlp.2.bias": (2048,),
            "mlp.4.weight": (256, 2048), "mlp.4.bias": (256,), "last_layer.weight_g": (HEAD_OUT, 1),
            "last_layer.weight_v": (HEAD_OUT, 256)}
    head = {k: torch.randn(s, generator=gen) * 0.02 for k, s in head.items()}
    student = {f"module.backbone.{k}": v for k, v in backbone.items()} | {f"module.head.{k}": v for k, v in head.items()}
    student.update(student_extra or {})
    teacher = {f"backbone.{k}": v for k, v in backbone.items()} | {f"head.{k}": v for k, v in head.items()}
    args = argparse.Namespace(arch="MiTplus", img_size2D=96, img_size3D=[16, 96, 96], out_dim=HEAD_OUT, epochs=200,
                              data_loader3D=DataLoader(Dataset3D2D(marker), batch_size=1, shuffle=True),
                              **(extra_args or {}))
    torch.save({"student": student, "teacher": teacher, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "epoch": 200, "args": args, "dino_loss": {"center": torch.zeros(1, HEAD_OUT)}}, path)
    return path


@pytest.fixture(scope="module")
def pretrain_ref():
    return plus_reference("pretrain")


@pytest.fixture(scope="module")
def pretrain_weights(pretrain_ref):
    return deterministic_weights(pretrain_ref["keys"]["model"])


@pytest.fixture(scope="module")
def plus_file(pretrain_weights, tmp_path_factory):
    folder = tmp_path_factory.mktemp("plus")
    return write_plus_checkpoint(folder / "UniMissPlus.pth", pretrain_weights, folder / "constructed"), folder


@pytest.fixture(scope="module")
def pretrain_model(plus_file):
    return from_official_plus_pretrain(plus_file[0], which="teacher")


@pytest.fixture(scope="module")
def student_checkpoint(pretrain_weights):
    return {"student": {f"module.backbone.{k}": v for k, v in pretrain_weights.items()}}


@pytest.mark.parametrize("x, y", [("x2", "y2"), ("x3", "y3")])
def test_pretraining_backbone_reproduces_reconstruction_and_class_token(pretrain_model, pretrain_ref, x, y):
    ref = pretrain_ref
    with torch.inference_mode():
        recon, cls = pretrain_model(ref[x])
        features, _ = pretrain_model.encoder(ref[x])
    assert rel_err(cls, ref[y]) <= 1e-4
    if x == "x2":
        assert recon.shape == (2, 3, 96, 96)
        assert rel_err(recon[..., ::2, ::2], ref["r2"]) <= 1e-4
    else:
        assert recon.shape == (2, 1, 16, 96, 96)
        assert rel_err(recon[..., ::4, ::4], ref["r3_sub"]) <= 1e-4
        assert abs(recon.mean() - ref["r3_mean"]) <= 1e-4 * abs(ref["r3_mean"])
    means = ref["enc2_stage_means" if x == "x2" else "enc3_stage_means"]
    for fmap, mean in zip(features, means, strict=True):
        assert rel_err(fmap.mean(dim=(0, *range(2, fmap.ndim))), mean) <= 1e-4


@pytest.mark.parametrize("x, y", [("x2b", "y2b"), ("x2c", "y2c"), ("x3b", "y3b")])
def test_pretraining_backbone_runs_where_the_official_decoder_fails(pretrain_model, pretrain_ref, x, y):
    assert f"err{x[1:]}" in pretrain_ref["errors"]  # the published MiTnet cannot reconstruct at this size
    with torch.inference_mode():
        recon, cls = pretrain_model(pretrain_ref[x])
    assert rel_err(cls, pretrain_ref[y]) <= 1e-4
    assert recon.shape == pretrain_ref[x].shape and torch.isfinite(recon).all()


def test_projection_head_reproduces_the_published_head(pretrain_ref):
    weights = deterministic_weights(pretrain_ref["keys"]["head"])  # names `head.<key>`, as the reference seeds them
    head = _head_from_state({k[len("head."):]: v for k, v in weights.items()})
    with torch.inference_mode():
        for d in ("2", "3"):
            z = head(pretrain_ref[f"y{d}"])
            assert rel_err(z[:, ::16], pretrain_ref[f"h{d}_sub"]) <= 1e-4
            assert rel_err(z.sum(dim=1), pretrain_ref[f"h{d}_sum"]) <= 1e-4


def test_released_layout_loads_without_constructing_its_data_loader(plus_file):
    path, folder = plus_file
    ckpt, skipped = load_plus_checkpoint(path)
    assert skipped == ["args.data_loader3D (torch.utils.data.dataloader.DataLoader)"]
    assert ckpt["args"].img_size3D == [16, 96, 96] and not hasattr(ckpt["args"], "data_loader3D")
    assert ckpt["epoch"] == 200 and torch.is_tensor(ckpt["dino_loss"]["center"])
    assert not (folder / "constructed").exists()
    backbone, head = from_official_plus_pretrain(path, which="student", with_head=True)
    assert head.last_layer.weight_v.shape == (HEAD_OUT, 256)


@pytest.mark.parametrize("where, call, refused", [
    ("args", "exec", False),  # a callable outside the blocked modules: replaced, never called
    ("args", "system", True),  # os.system: torch refuses the module outright
    ("student", "exec", True),  # weights must be plain tensors
    ("student-key", "exec", True),  # and their names plain strings
])
def test_hostile_pickle_in_the_plus_layout_never_runs(tmp_path, pretrain_ref, where, call, refused):
    marker = tmp_path / "executed"
    payload = _Payload(exec, _touch(marker)) if call == "exec" else _Payload(os.system, f"touch {marker}")
    backbone = {k: torch.zeros(s) for k, s in pretrain_ref["keys"]["model"].items()}
    path = write_plus_checkpoint(tmp_path / "UniMissPlus.pth", backbone, tmp_path / "constructed",
                                 extra_args={"hook": payload} if where == "args" else None,
                                 student_extra={"student": {"module.backbone.extra": payload},
                                                "student-key": {payload: torch.zeros(1)}}.get(where))
    if refused:
        with pytest.raises(CheckpointError, match="refused to load"):
            from_official_plus_pretrain(path, which="student")
    else:
        ckpt, skipped = load_plus_checkpoint(path)
        assert "args.hook (builtins.exec)" in skipped
        assert from_official_plus_pretrain(path).encoder.stages[0].cls_token.abs().sum() == 0
    assert not marker.exists() and not (tmp_path / "constructed").exists()


@pytest.fixture(scope="module")
def seg2d():
    ref = plus_reference("seg2d")
    return ref, from_official_plus_segmentation(deterministic_weights(ref["keys"]["model"]), spatial_dims=2,
                                                patch_size=(224, 224))


def test_2d_segmentation_reproduces_the_published_logits(seg2d):
    ref, model = seg2d
    with torch.inference_mode():
        logits = model(ref["x"])
    assert logits.shape == (2, 3, 224, 224)
    assert rel_err(logits[..., ::4, ::4], ref["y_sub"]) <= 1e-4
    assert rel_err(logits.mean(dim=(0, 2, 3)), ref["y_mean"]) <= 1e-4
    assert "RuntimeError" in ref["error_256"]  # the published network fails at 256; ours does not
    with torch.inference_mode():
        assert torch.isfinite(model(torch.randn(1, 3, 256, 256))).all()


def test_2d_segmentation_after_the_official_transfer(seg2d, student_checkpoint):
    ref, _ = seg2d
    model = from_official_plus_segmentation(deterministic_weights(ref["keys"]["model"]), spatial_dims=2,
                                            patch_size=(224, 224))
    report = transfer_plus_pretrain(model, student_checkpoint, positional="official")
    assert len(report.loaded) == len(ref["keys"]["loaded_from_pretraining_student"])
    assert len(report.interpolated) == len(ref["keys"]["pos_embed_zoomed_from_to"]) == 7
    with torch.inference_mode():
        logits = model(ref["x"])
    assert rel_err(logits[..., ::4, ::4], ref["yp_sub"]) <= 1e-4
    assert rel_err(logits.mean(dim=(0, 2, 3)), ref["yp_mean"]) <= 1e-4


@pytest.fixture(scope="module")
def seg3d():
    ref = plus_reference("seg3d")
    weights = deterministic_weights(ref["keys"]["model"])
    return ref, weights, from_official_plus_segmentation({"state_dict": weights}, spatial_dims=3, num_classes=14,
                                                         deep_supervision=True)


def test_3d_segmentation_reproduces_the_published_logits_and_deep_supervision(seg3d):
    ref, _, model = seg3d
    with torch.inference_mode():
        logits = model(ref["x"])
        model.train()  # deep supervision outputs; instance norms and no dropout: the same numbers
        outputs = model(ref["x"])
        model.eval()
    assert rel_err(logits[..., ::8, ::8], ref["y_sub"]) <= 1e-4
    assert rel_err(logits.mean(dim=(0, 2, 3, 4)), ref["y_mean"]) <= 1e-4
    assert [list(o.shape) for o in outputs] == ref["ds_shapes"]
    for out, mean in zip(outputs, ref["ds_means"], strict=True):
        assert rel_err(out.mean(dim=(0, 2, 3, 4)), mean) <= 1e-4
    assert "RuntimeError" in ref["error_128"]
    with torch.inference_mode():
        assert model(torch.randn(1, 1, 16, 128, 128)).shape == (1, 14, 16, 128, 128)


def test_3d_segmentation_after_the_official_transfer(seg3d, student_checkpoint):
    ref, weights, _ = seg3d
    model = from_official_plus_segmentation({"state_dict": weights}, spatial_dims=3)
    report = transfer_plus_pretrain(model, student_checkpoint, positional="official")
    assert len(report.loaded) == len(ref["keys"]["loaded_from_pretraining_student"])
    assert not any(k.startswith("decoder.") for k in report.loaded)
    with torch.inference_mode():
        logits = model(ref["x"])
    assert rel_err(logits[..., ::8, ::8], ref["yp_sub"]) <= 1e-4
    assert rel_err(logits.mean(dim=(0, 2, 3, 4)), ref["yp_mean"]) <= 1e-4


def test_2d_classifier_reproduces_the_published_logits_and_transfer(student_checkpoint):
    ref = plus_reference("cls2d")
    weights = deterministic_weights(ref["keys"]["model"])
    model = from_official_plus_classifier(weights, num_classes=3, patch_size=(224, 224))
    with torch.inference_mode():
        assert rel_err(model(ref["x"]), ref["y"]) <= 1e-4
        assert rel_err(model(ref["xb"]), ref["yb"]) <= 1e-4
    report = transfer_plus_pretrain(model, student_checkpoint, positional="official")
    assert len(report.loaded) == 198 and sorted(report.initialised) == ["head.fc.bias", "head.fc.weight"]
    with torch.inference_mode():
        assert rel_err(model(ref["x"]), ref["yp"]) <= 1e-4


def test_checkpoints_of_another_network_are_refused_with_the_reason(seg3d, pretrain_weights):
    ref, weights, _ = seg3d
    with pytest.raises(CheckpointError, match="not a UniMiSS\\+ 2D segmentation checkpoint"):
        from_official_plus_segmentation({"state_dict": weights}, spatial_dims=2)
    with pytest.raises(CheckpointError, match="predicts 14 classes, not 3"):
        from_official_plus_segmentation({"state_dict": weights}, spatial_dims=3, num_classes=3)
    broken = {k: v for k, v in pretrain_weights.items() if "block2.1" not in k}
    with pytest.raises(CheckpointError, match="does not fit the UniMiSS\\+ pretrain network.*missing weights"):
        from_official_plus_pretrain(broken)
    with pytest.raises(CheckpointError, match="not a UniMiSS\\+ pretraining checkpoint"):
        from_official_plus_pretrain({"state_dict": weights})


def test_fine_tuning_from_unimissplus_pth_gives_a_package_that_segments(plus_file, tmp_path):
    """`unimiss finetune --base UniMissPlus.pth` (the released layout, a DataLoader in its args), then `segment`."""
    src = DATA / "ct" / "ts-abdomen"
    labels = json.loads((src / "labels.json").read_text())["labels"]
    liver = next(int(k) for k, v in labels.items() if v == "liver")
    image, mask = read_image(src / "image.nii.gz"), read_image(src / "labels.nii.gz")
    cases = []
    for i, (z0, z1) in enumerate([(56, 104), (64, 112)]):  # the liver lies in slices 69-111
        crop = ImageData(image.array[z0:z1], image.spacing, image.origin, image.direction)  # own grid each
        cases += [tmp_path / f"case{i}.nrrd", tmp_path / f"case{i}.seg.nrrd"]
        sitk.WriteImage(crop.to_sitk(), str(cases[-2]))
        write_labelmap(crop.with_array((mask.array[z0:z1] == liver).astype(np.uint8)), cases[-1], [Label(1, "liver")])
    home = tmp_path / "home"
    proc = run_unimiss(["finetune", "--images", cases[0], cases[2], "--labels", cases[1], cases[3], "--base", plus_file[0], "--epochs", "1", "--iterations", "2", "--patch-size", "32",
                        "64", "64", "--spacing", "4", "4", "4", "--batch-size", "1", "--precision", "fp32", "--progress",
                        "jsonl", "--name", "liver-plus", "--workdir", tmp_path / "w"], {"UNIMISS_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    message = " ".join(e["text"] for e in events(proc, "message"))
    assert "(UniMiSS+)" in message and "tensors loaded" in message
    assert "not read from the file's args: args.data_loader3D (torch.utils.data.dataloader.DataLoader)" in message
    meta = json.loads((home / "models" / "liver-plus-1.0.0" / "model.json").read_text())
    assert meta["network"]["architecture"] == "MiT+" and "UniMiSS+" in meta["provenance"]["base_model"]
    assert not (plus_file[1] / "constructed").exists()
    out = tmp_path / "liver.seg.nrrd"
    seg = run_unimiss(["segment", cases[0], "-o", out, "--model", "liver-plus", "--progress", "none"],
                      {"UNIMISS_HOME": str(home)})
    assert seg.returncode == 0, seg.stderr
    (result, names), source = read_labelmap(out), read_image(cases[0])
    assert result.array.shape == source.array.shape and result.spacing == source.spacing
    assert result.origin == source.origin and result.direction == source.direction
    assert [l.name for l in names] == ["liver"] or not result.array.any()  # two iterations need not find the liver


def test_unimiss_mit_inspect_names_the_plus_checkpoint_and_what_it_skipped(plus_file):
    proc = run_unimiss(["mit", "inspect", plus_file[0], "--which", "student"])
    assert proc.returncode == 0, proc.stderr
    assert "official UniMiSS+ pretraining checkpoint: MiT+ student, 2D+3D, epoch 200, 41.11 M parameters" in proc.stdout
    assert "not read from its args: args.data_loader3D (torch.utils.data.dataloader.DataLoader)" in proc.stdout


def test_absurd_sizes_in_a_plus_checkpoint_are_refused_before_building(pretrain_weights):
    state = {"teacher": {f"backbone.{k}": v for k, v in pretrain_weights.items()}}
    with pytest.raises(CheckpointError, match="at most 500 M are accepted"):
        from_official_plus_pretrain({**state, "args": argparse.Namespace(img_size3D=[4096, 4096, 4096])})
    with pytest.raises(CheckpointError, match="unusable image size.*from 1 to 4096"):
        from_official_plus_pretrain({**state, "args": argparse.Namespace(img_size3D=[16, 96, 10**9])})
