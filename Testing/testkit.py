"""What the tests and benchmarks share: the test data kit, the official reference vectors, test model packages.

The kit of real CT volumes and radiographs is found through one variable, UNIMISS_TEST_DATA (a folder
holding data/, as /work/shared does), by default `../shared` next to this repository; assemble it with
`python scripts/assemble_test_kit.py DIR`. The reference vectors of the official networks (numbers,
6 MB) live in Testing/reference/.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("UNIMISS_TEST_DATA") or REPO.parent / "shared").expanduser().resolve()
DATA = SHARED / "data"
REFERENCE = Path(__file__).resolve().parent / "reference" / "official-unimiss"
REFERENCE_PLUS = REFERENCE.parent / "official-unimissplus"
# Threads for each process a test starts (and each pytest-xdist worker's torch): the cores divided among the
# workers (Testing/pytest.ini runs two), two at most, as the tests always asked for.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = str(max(1, min(2, (os.cpu_count() or 1) // WORKERS)))
# What the tests read from the kit; a kit missing any of these is reported before collection.
KIT_FILES = (*(f"ct/{case}/{name}" for case in ("lidc-idri-0001", "ts-abdomen")
                for name in ("image.nii.gz", "labels.nii.gz", "labels.json")),
             "ct/ts-dicom/dicom", "ct/ts-dicom/labels.nii.gz", "ct/ts-dicom/labels.json", "ct/ricord-1b/image.nii.gz",
             *(f"xray/{name}.png" for name in ("nih-00000001_000", "nih-00000001_001", "nih-00000001_002",
                                                "nih-00000002_000", "nih-00000003_000", "nih-00000003_001",
                                                "nih-00000003_002", "nih-00027426_000", "tbx11k-h0001",
                                                "tbx11k-tb0005", "tbx11k-tb0007")),
             "xray/siim-chest-cr.dcm")


def missing_kit_files() -> list[str]:
    """The kit files the tests need that are not under DATA."""
    return [name for name in KIT_FILES if not (DATA / name).exists()]


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


def plus_reference(network: str) -> dict:
    """One network's UniMiSS+ reference entry (`pretrain`, `seg2d`, `seg3d`, `cls2d`), its inputs drawn again
    from their seed (see Testing/reference/official-unimissplus/README.md) and its `keys` JSON added."""
    entry = dict(torch.load(REFERENCE_PLUS / "vectors.pt", weights_only=True)[network])
    torch.manual_seed(entry["config"]["input_seed"])
    for name, shape in entry["inputs"]:
        entry[name] = torch.randn(shape)
    entry["keys"] = json.loads((REFERENCE_PLUS / f"{network}_keys.json").read_text())
    return entry


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


def run_unimiss(args, env=None, torchrun=False, timeout=600):
    """`python -m unimiss ARGS`, output captured; with `torchrun`, two processes under torch.distributed.run."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1" if torchrun else THREADS, **(env or {})}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"] if torchrun else [sys.executable]
    return subprocess.run([*launcher, "-m", "unimiss", *map(str, args)], env=environment, capture_output=True,
                          text=True, timeout=timeout)


def run_unimiss_side_by_side(calls, env=None, timeout=600):
    """Several `run_unimiss` that only check their input and refuse it, as many at a time as there are cores (each
    process spends its seconds importing, one thread each); their CompletedProcess, in order."""
    environment = {"OMP_NUM_THREADS": "1", **(env or {})}
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(lambda args: run_unimiss(args, environment, timeout=timeout), calls))


PLUS_RADIOGRAPHS = [DATA / "xray" / "nih-00000001_000.png", DATA / "xray" / "tbx11k-h0001.png"]
PLUS_CT = DATA / "ct" / "ts-abdomen" / "image.nii.gz"


def pretrain_plus(out, epochs, *extra, torchrun=False):
    """A tiny `unimiss pretrain --plus` run on two real radiographs and a real CT (32-pixel views, a 64-way head):
    a UniMiSS+ checkpoint in the UniMissPlus.pth layout within seconds."""
    return run_unimiss(["pretrain", "--plus", "--images2d", *PLUS_RADIOGRAPHS, "--images3d", PLUS_CT,
                        "--view-size-2d", "32", "32", "--view-size-3d", "16", "32", "32", "--spacing", "4",
                        "--epochs", epochs, "--interval", "1", "--batch-size", "1", "--samples-per-epoch", "1",
                        "--out-dim", "64", "--save-every", "1", "--output", out, "--progress", "jsonl", *extra],
                       torchrun=torchrun)


def events(proc, kind):
    """The JSON-lines events of one kind that a `--progress jsonl` run printed."""
    return [e for e in map(json.loads, (l for l in proc.stdout.splitlines() if l.startswith("{"))) if e["event"] == kind]
