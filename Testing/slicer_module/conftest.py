"""Fixtures for the Slicer module tests: a real MRML scene (slicer-core), the Logic, random-weight models.

The helpers live in slicer_testing.py, a name of its own: `from testkit import ...` would be ambiguous
between this file and Testing/conftest.py.
"""
from __future__ import annotations

import pytest

from slicer_testing import make_models, new_scene, slicer
from testkit import pretrain_plus


@pytest.fixture(scope="session")
def model_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("unimiss-home")
    make_models(home / "models")
    return home


@pytest.fixture(scope="session")
def plus_checkpoint(tmp_path_factory):
    """A UniMiSS+ pretraining checkpoint (the UniMissPlus.pth layout) from one tiny `unimiss pretrain --plus` epoch."""
    out = tmp_path_factory.mktemp("pretrain-plus")
    proc = pretrain_plus(out, 1)
    assert proc.returncode == 0, proc.stderr
    return out / "checkpoint.pth"


@pytest.fixture
def home(model_home, monkeypatch):
    """UNIMISS_HOME for this process (model listing) and, inherited, for the core's processes."""
    monkeypatch.setenv("UNIMISS_HOME", str(model_home))
    return model_home


@pytest.fixture
def scene(monkeypatch):
    """A fresh real MRML scene as slicer.mrmlScene, with the module logics the module uses."""
    mrml, app_logic, modules = new_scene()
    monkeypatch.setattr(slicer, "mrmlScene", mrml, raising=False)
    monkeypatch.setattr(slicer, "modules", modules, raising=False)
    yield mrml
    mrml.Clear(True)


@pytest.fixture
def logic(home, scene):
    from UniMiSSSlicerLib import UniMiSSSlicerLogic

    # One thread per core process: the tests share two cores with each other and whatever else runs,
    # and oversubscribed OpenMP threads make a 2 s segmentation take 20 s.
    return UniMiSSSlicerLogic(environment={"OMP_NUM_THREADS": "1"})


