"""Shared fixtures: the read-only kit in ../shared and the official reference vectors."""
from __future__ import annotations

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
