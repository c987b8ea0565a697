"""Shared fixtures: the read-only kit in ../shared and the official reference vectors."""
from __future__ import annotations

import pytest
import torch

from testkit import REFERENCE, make_package, official_keys


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
