"""Our MiT against the published UniMiSS networks, through the official checkpoint layouts."""
from __future__ import annotations

import argparse
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from testkit import deterministic_weights
from unimiss.models import (CheckpointError, from_official_pretrain, from_official_segmentation, load_checkpoint,
                            segmentation_from_official_pretrain)

HEAD_OUT = 512  # the released head has 65536 prototypes; fewer keep the test files small


def rel_err(out, ref):
    return ((out - ref).norm() / ref.norm()).item()


def head_state(prefix):
    gen = torch.Generator().manual_seed(0)
    shapes = {"mlp.0.weight": (2048, 48), "mlp.0.bias": (2048,), "mlp.2.weight": (2048, 2048), "mlp.2.bias": (2048,),
              "mlp.4.weight": (256, 2048), "mlp.4.bias": (256,), "last_layer.weight_g": (HEAD_OUT, 1),
              "last_layer.weight_v": (HEAD_OUT, 256)}
    return {prefix + k: torch.randn(s, generator=gen) * 0.02 for k, s in shapes.items()}


def write_pretrain_checkpoint(path, backbone):
    """The layout of UniMiSS_tiny.pth / UniMiSS_small.pth (see the reference README)."""
    student = {f"module.backbone.{k}": v for k, v in backbone.items()} | head_state("module.head.")
    teacher = {f"backbone.{k}": v for k, v in backbone.items()} | head_state("head.")
    args = argparse.Namespace(arch="model_tiny", img_size2D=224, img_size3D=[16, 96, 96], out_dim=HEAD_OUT,
                              lr=0.0008, epochs=200, data_path="../data/")
    torch.save({"student": student, "teacher": teacher, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
                "epoch": 200, "args": args, "loss": {"center": torch.zeros(1, HEAD_OUT)}}, path)
    return path


def write_segmentation_checkpoint(path, weights):
    """The layout of an nnU-Net v1 trainer checkpoint (weights named `model.*`), numpy training curves included."""
    losses = [np.float64(0.5), np.float64(0.4)]
    torch.save({"epoch": 1000, "state_dict": OrderedDict(weights),
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.99, "params": [0]}]},
                "lr_scheduler_state_dict": None,
                "plot_stuff": (losses, losses, losses, [np.float64(0.8)]),
                "best_stuff": (999, np.float64(0.3), np.float64(0.8), np.float64(0.81))}, path)
    return path


@pytest.fixture(scope="module")
def tiny_pretrain_file(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "UniMiSS_tiny.pth"
    return write_pretrain_checkpoint(path, deterministic_weights(reference["pretrain_keys"]["model_tiny"]))


@pytest.mark.parametrize("x, y", [("x3", "y3"), ("x2", "y2"), ("x3b", "y3b"), ("x2b", "y2b")])
@pytest.mark.parametrize("which", ["teacher", "student"])
def test_pretraining_backbone_reproduces_the_published_class_token(reference, tiny_pretrain_file, x, y, which):
    model = from_official_pretrain(tiny_pretrain_file, arch="tiny", which=which)
    vec = reference["pretrain_vectors"]
    with torch.inference_mode():
        out = model(vec[x])
    assert out.shape == vec[y].shape
    assert rel_err(out, vec[y]) <= 1e-4


def test_pretraining_checkpoint_gives_its_projection_head(tiny_pretrain_file):
    backbone, head = from_official_pretrain(tiny_pretrain_file, arch="tiny", with_head=True)
    with torch.inference_mode():
        z = head(backbone(torch.randn(1, 1, 16, 96, 96)))
    assert z.shape == (1, HEAD_OUT)
    ref = head_state("")
    v, g = ref["last_layer.weight_v"], ref["last_layer.weight_g"]
    assert torch.allclose(head.last_layer.weight_g, g) and torch.allclose(head.last_layer.weight_v, v)


def test_downstream_segmentation_reproduces_the_published_logits(reference, tmp_path):
    path = write_segmentation_checkpoint(tmp_path / "model_final_checkpoint.model",
                                         deterministic_weights(reference["seg3d_keys"]["tiny"]))
    model = from_official_segmentation(path, arch="tiny", num_classes=14, patch_size=(16, 96, 96))
    vec = reference["seg3d_vectors"]
    with torch.inference_mode():
        logits = model(vec["x"])
    assert logits.shape == (2, 14, 16, 96, 96)
    assert rel_err(logits[..., ::4, ::4], vec["y_sub"]) <= 1e-4
    assert rel_err(logits.mean(dim=(0, 2, 3, 4)), vec["y_mean"]) <= 1e-4


def test_small_networks_take_every_official_weight(reference):
    # No reference vectors for small; every official name and shape must map one to one.
    keys = reference["pretrain_keys"]["model_small"]
    backbone = from_official_pretrain(deterministic_weights(keys), arch="small")
    assert sum(p.numel() for p in backbone.parameters()) == sum(int(np.prod(s)) for s in keys.values())
    seg_keys = reference["seg3d_keys"]["small"]
    seg = from_official_segmentation({"state_dict": deterministic_weights(seg_keys)}, arch="small")
    assert sum(p.numel() for p in seg.parameters()) == sum(int(np.prod(s)) for s in seg_keys.values())


def test_checkpoint_of_another_arch_is_refused_with_the_reason(reference):
    small = deterministic_weights(reference["pretrain_keys"]["model_small"])
    with pytest.raises(CheckpointError, match=r"does not fit MiT arch 'tiny'.*unexpected weights such as transformer\.block1\.1"):
        from_official_pretrain(small, arch="tiny")


def test_segmentation_class_count_is_checked(reference):
    state = {"state_dict": deterministic_weights(reference["seg3d_keys"]["tiny"])}
    with pytest.raises(CheckpointError, match="predicts 14 classes, not 3"):
        from_official_segmentation(state, arch="tiny", num_classes=3)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch", "torch-legacy", "pickle"])
def test_hostile_pickle_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "executed"
    payload = {"state_dict": {"model.cls_conv.weight": _Payload(marker)}}
    path = tmp_path / "evil.pth"
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=writer == "torch")
    with pytest.raises(CheckpointError, match="refused to load.*executable pickled objects"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        from_official_segmentation(path)
    assert not marker.exists()


def test_files_that_are_not_checkpoints_get_named_errors(tmp_path, tiny_pretrain_file):
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n")
    empty = tmp_path / "empty.pth"
    empty.touch()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(tiny_pretrain_file.read_bytes()[:100_000])
    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    cases = {text: "not a PyTorch checkpoint", empty: "checkpoint is empty", truncated: "damaged or truncated",
             tensor_only: "expected a dict", tmp_path / "missing.pth": "checkpoint not found"}
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            from_official_pretrain(path)
    seg_as_pretrain = {"state_dict": {"model.cls_conv.weight": torch.zeros(2, 32, 1, 1, 1)}}
    with pytest.raises(CheckpointError, match="not a UniMiSS pretraining checkpoint"):
        from_official_pretrain(seg_as_pretrain)
    with pytest.raises(CheckpointError, match="not a UniMiSS segmentation checkpoint"):
        from_official_segmentation(tiny_pretrain_file)


@pytest.mark.parametrize("spatial_dims, patch, channels", [(3, (32, 128, 128), 1), (2, (256, 256), 1), (2, (224, 224), 3)])
def test_pretraining_initialises_segmentation_networks(tiny_pretrain_file, reference, spatial_dims, patch, channels):
    model, report = segmentation_from_official_pretrain(
        tiny_pretrain_file, arch="tiny", num_classes=5, spatial_dims=spatial_dims, patch_size=patch, in_channels=channels)
    official = deterministic_weights(reference["pretrain_keys"]["model_tiny"])
    state = model.state_dict()
    other = "3D" if spatial_dims == 2 else "2D"
    # Every encoder/decoder weight of the right half arrives; the other half and the class tokens do not.
    expected = [k for k in official if other not in k and "cls_tokens" not in k]
    assert len(report.loaded) == len(expected)
    assert all(other in k or "cls_tokens" in k for k in report.ignored)
    assert sorted(report.initialised) == sorted(k for k in state if k.startswith(("head_", "aux_heads", "classifier")))
    # A shared block weight is copied unchanged.
    assert torch.equal(state["encoder.stages.1.blocks.0.mlp.fc1.weight"], official["transformer.block2.0.mlp.fc1.weight"])
    # Positional embeddings lose the class position and follow the new grid.
    table = state[f"encoder.stages.0.pos.tables.{spatial_dims}d"]
    first_grid = (patch[0] // 2, patch[1] // 4, patch[2] // 4) if spatial_dims == 3 else (patch[0] // 4, patch[1] // 4)
    assert table.shape == (1, int(np.prod(first_grid)), 48)
    # The stem is adapted to the input channels, exactly for a replicated grey image.
    stem = official[f"transformer.patch_embed{spatial_dims}D0.conv.weight"]
    ours = state[f"encoder.stem.branches.{spatial_dims}d.conv.weight"]
    assert ours.shape[1] == channels
    assert torch.allclose(ours.sum(dim=1), stem.sum(dim=1), atol=1e-5)
    with torch.inference_mode():
        assert model.eval()(torch.randn(1, channels, *patch)).shape == (1, 5, *patch)
    assert "tensors loaded" in report.summary()
