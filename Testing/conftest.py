"""Shared fixtures: the read-only kit in ../shared and the official reference vectors."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference" / "official-unimiss"


def deterministic_weights(keys: dict) -> dict:
    """The reference README's weights: each tensor seeded by the crc32 of its official name."""
    out = {}
    for key, shape in keys.items():
        gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        value = torch.randn(shape, generator=gen) * 0.05
        if len(shape) == 1 and key.endswith("weight"):
            value += 1.0
        out[key] = value
    return out


@pytest.fixture(scope="session")
def reference():
    if not REFERENCE.is_dir():
        pytest.fail(f"the official reference files are missing: {REFERENCE}")
    return {
        "pretrain_keys": json.loads((REFERENCE / "pretrain_keys.json").read_text()),
        "seg3d_keys": json.loads((REFERENCE / "seg3d_keys.json").read_text()),
        "pretrain_vectors": torch.load(REFERENCE / "pretrain_tiny_vectors.pt", weights_only=True),
        "seg3d_vectors": torch.load(REFERENCE / "seg3d_tiny_vectors.pt", weights_only=True),
    }
