"""Shared fixtures: the read-only kit in ../shared and the official reference vectors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reference import REFERENCE, official_keys


@pytest.fixture(scope="session")
def reference():
    if not REFERENCE.is_dir():
        pytest.fail(f"the official reference files are missing: {REFERENCE}")
    return {
        "pretrain_keys": official_keys("pretrain_keys.json"),
        "seg3d_keys": official_keys("seg3d_keys.json"),
        "pretrain_vectors": torch.load(REFERENCE / "pretrain_tiny_vectors.pt", weights_only=True),
        "seg3d_vectors": torch.load(REFERENCE / "seg3d_tiny_vectors.pt", weights_only=True),
    }


DATA = REFERENCE.parents[1] / "data"


def make_package(root, name, dimension, labels, preprocessing, patch, seed=0, default=False, config="compact"):
    """A small model package with random weights, for tests only (never shipped)."""
    from unimiss.data import Label
    from unimiss.models import MiTSegmentation
    from unimiss.zoo import save_package

    torch.manual_seed(seed)
    net = MiTSegmentation(config, len(labels) + 1, dimension, in_channels=1, patch_size=patch)
    meta = {
        "schema_version": 1, "name": name, "version": "1.0.0", "task": "segmentation", "dimension": dimension,
        "default": default, "modality": "CT" if dimension == 3 else "CR/DX",
        "labels": [Label(i + 1, n, (40 * i % 255, 100, 200)).to_dict() for i, n in enumerate(labels)],
        "preprocessing": preprocessing, "patch_size": list(patch),
        "network": {"architecture": "MiT", "config": config, "in_channels": 1, "num_classes": len(labels) + 1},
        "provenance": {"training_data": "none: random weights for tests"},
    }
    return save_package(Path(root) / f"{name}-1.0.0", meta, net.state_dict(), dtype="float32")


@pytest.fixture(scope="session")
def model_home(tmp_path_factory):
    """A UNIMISS_HOME with a random-weight 3D CT package and a 2D radiograph package."""
    home = tmp_path_factory.mktemp("unimiss-home")
    make_package(home / "models", "test-ct", 3, ["liver", "spleen"],
                 {"spacing": [4.0, 4.0, 4.0], "orientation": "LPS",
                  "intensity": {"method": "ct", "clip": [-1000, 1000], "scale": [0.0, 1000.0]}}, (32, 64, 64))
    make_package(home / "models", "test-cxr", 2, ["lung_left", "lung_right", "heart"],
                 {"size": [128, 128], "intensity": {"method": "percentile", "lower": 0.5, "upper": 99.5}}, (128, 128))
    return home
