"""The built-in models and samples: what a newcomer's first command does, offline."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from unimiss.cli import SAMPLES
from unimiss.zoo import builtin_models_dir, default_model, list_models

SAMPLE_DIR = builtin_models_dir().parent.parent / "samples"
EXPECTED = {3: ["liver", "spleen", "kidney_left", "kidney_right", "aorta", "heart", "lung_left", "lung_right"],
            2: ["lung_left", "lung_right", "heart", "clavicula_left", "clavicula_right"]}


@pytest.mark.parametrize("dimension", [3, 2])
def test_each_dimension_has_a_small_documented_default_model(dimension):
    package = default_model(dimension)
    assert package.is_builtin and [l.name for l in package.labels] == EXPECTED[dimension]
    assert all(l.terminology.get("type") for l in package.labels)
    size = sum(p.stat().st_size for p in package.root.iterdir())
    assert size <= 10_000_000
    meta = package.meta
    assert "not for clinical use" in meta["description"] and "TotalSegmentator" in meta["provenance"]["training_data"]
    assert meta["metrics"]["val_dice"] and meta["provenance"]["command"] and meta["provenance"]["date"]
    package.verify_weights()


@pytest.mark.parametrize("sample, dimension", [("ct", 3), ("xray", 2)])
def test_sample_command_segments_with_the_default_model(tmp_path, sample, dimension):
    env = {**os.environ, "UNIMISS_HOME": str(tmp_path / "empty-home")}  # built-ins only
    proc = subprocess.run([sys.executable, "-m", "unimiss", "segment", "--sample", sample, "-o", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    stem = SAMPLES[sample].split(".")[0]
    result = tmp_path / f"{stem}.seg.nrrd"
    names = [s["name"] for s in slicerio.read_segmentation(str(result))["segments"]]
    assert names == EXPECTED[dimension]
    source = sitk.ReadImage(str(SAMPLE_DIR / SAMPLES[sample]))
    labels = sitk.ReadImage(str(result))
    if dimension == 2:
        labels = labels[:, :, 0]
    assert labels.GetSize() == source.GetSize()[:dimension]
    assert np.allclose(labels.GetOrigin(), source.GetOrigin()[:dimension])
    assert np.count_nonzero(sitk.GetArrayViewFromImage(labels)) > 1000  # it found something
    preview = sitk.ReadImage(str(tmp_path / f"{stem}-preview.png"))
    assert preview.GetNumberOfComponentsPerPixel() == 3 and min(preview.GetSize()) >= 200
