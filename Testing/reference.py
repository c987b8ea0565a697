"""The official UniMiSS reference kit in ../shared: key lists, vectors and its deterministic weights."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

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


def official_keys(name: str) -> dict:
    """`pretrain_keys.json` or `seg3d_keys.json` as a dict."""
    return json.loads((REFERENCE / name).read_text())
