"""The built-in models and samples: what a newcomer's first command does, offline."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
import torch

from unimiss.cli import SAMPLES
from unimiss.data import read_image
from unimiss.inference import Predictor
from unimiss.inference.predictor import clip_below, moved, zoom_shift_transforms
from unimiss.zoo import builtin_models_dir, default_model, list_models

SAMPLE_DIR = builtin_models_dir().parent.parent / "samples"
EXPECTED = {3: ["liver", "spleen", "kidney_left", "kidney_right", "aorta", "heart", "lung_left", "lung_right"],
            2: ["lung_left", "lung_right", "heart", "clavicula_left", "clavicula_right"]}


def segments(path):
    return slicerio.read_segmentation(str(path))["segments"]


def pieces(labels: sitk.Image, value: int) -> int:
    counter = sitk.ConnectedComponentImageFilter()
    counter.Execute(labels == value)
    return counter.GetObjectCount()


@pytest.fixture(scope="module")
def sample_segmented(tmp_path_factory):
    """The newcomer's command, `unimiss segment --sample SAMPLE -o FOLDER` with the built-in models only, run once
    per sample for every test of this file that looks at its result: (the process, the result's path)."""
    done = {}

    def segmented(sample):
        if sample not in done:
            folder = tmp_path_factory.mktemp(f"sample-{sample}")
            env = {**os.environ, "UNIMISS_HOME": str(folder / "empty-home")}  # built-ins only
            proc = subprocess.run([sys.executable, "-m", "unimiss", "segment", "--sample", sample, "-o", str(folder)],
                                  capture_output=True, text=True, env=env, timeout=600)
            assert proc.returncode == 0, proc.stderr
            done[sample] = proc, folder / f"{SAMPLES[sample].split('.')[0]}.seg.nrrd"
        return done[sample]
    return segmented


@pytest.mark.parametrize("dimension", [3, 2])
def test_each_dimension_has_a_small_documented_default_model(dimension):
    package = default_model(dimension)
    assert package.is_builtin and [l.name for l in package.labels] == EXPECTED[dimension]
    assert all(l.terminology.get("type") for l in package.labels)
    size = sum(p.stat().st_size for p in package.root.iterdir())
    assert size <= 10_000_000
    meta = package.meta
    assert "not for clinical use" in meta["description"] and "TotalSegmentator" in meta["provenance"]["training_data"]
    assert meta["provenance"]["command"] and meta["provenance"]["date"]
    held_out = meta["metrics"]["held_out_dice"]  # figures on data the model never trained on, named
    assert held_out and all("not trained on" in what or "other poses" in what for what in held_out)
    assert all(0 <= v <= 1 for figures in held_out.values() for k, v in figures.items() if k != "_cases")
    package.verify_weights()


@pytest.mark.parametrize("sample, dimension", [("ct", 3), ("xray", 2)])
def test_sample_command_segments_with_the_default_model(sample_segmented, sample, dimension):
    _, result = sample_segmented(sample)
    assert [s["name"] for s in segments(result)] == EXPECTED[dimension]
    source = sitk.ReadImage(str(SAMPLE_DIR / SAMPLES[sample]))
    labels = sitk.ReadImage(str(result))
    if dimension == 2:
        labels = labels[:, :, 0]
    assert labels.GetSize() == source.GetSize()[:dimension]
    assert np.allclose(labels.GetOrigin(), source.GetOrigin()[:dimension])
    assert np.count_nonzero(sitk.GetArrayViewFromImage(labels)) > 1000  # it found something
    # Each organ is one piece: the built-in models keep each label's largest connected part.
    assert default_model(dimension).largest_component
    assert all(pieces(labels, s["labelValue"]) <= 1 for s in segments(result))
    preview = sitk.ReadImage(str(result.parent / f"{SAMPLES[sample].split('.')[0]}-preview.png"))
    assert preview.GetNumberOfComponentsPerPixel() == 3 and min(preview.GetSize()) >= 200


def test_all_components_keeps_the_pieces_the_default_drops(sample_segmented, tmp_path):
    env = {**os.environ, "UNIMISS_HOME": str(tmp_path / "empty-home")}
    proc = subprocess.run([sys.executable, "-m", "unimiss", "segment", "--sample", "ct", "-o", str(tmp_path),
                           "--progress", "none", "--all-components"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = {"default": sitk.ReadImage(str(sample_segmented("ct")[1])),
               "--all-components": sitk.ReadImage(str(tmp_path / "ct-abdomen.seg.nrrd"))}
    default, every = (sitk.GetArrayFromImage(results[o]) for o in ("default", "--all-components"))
    assert np.all((default == 0) | (default == every))  # the largest parts, untouched
    values = [s["labelValue"] for s in segments(sample_segmented("ct")[1])]
    assert sum(pieces(results["--all-components"], v) for v in values) > sum(pieces(results["default"], v)
                                                                             for v in values)


def test_tta_does_not_mirror_a_model_that_never_saw_mirrored_images(sample_segmented, tmp_path):
    """The built-in CT model learnt without mirroring (left and right are different labels): mirrored passes
    lowered its spleen 0.89 -> 0.42 and aorta 0.80 -> 0.00 on the abdomen. --tta says so and leaves them out."""
    env = {**os.environ, "UNIMISS_HOME": str(tmp_path / "empty-home")}
    out = tmp_path / "tta.seg.nrrd"
    tta = subprocess.run([sys.executable, "-m", "unimiss", "segment", "--sample", "ct", "-o", str(out), "--progress",
                          "lines", "--tta"], capture_output=True, text=True, env=env, timeout=600)
    assert tta.returncode == 0, tta.stderr
    plain, plain_result = sample_segmented("ct")
    for proc, option in ((plain, "plain"), (tta, "--tta")):
        said = "learnt from unmirrored images only" in proc.stdout + proc.stderr
        assert said == (option == "--tta"), proc.stdout
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(plain_result))),
                          sitk.GetArrayFromImage(sitk.ReadImage(str(out))))


def test_the_ct_model_finds_both_kidneys_each_on_its_own_side(sample_segmented):
    """The sample abdomen holds both kidneys: each is labelled, and kidney_left lies on the patient's left
    (LPS x grows to the left)."""
    out = sample_segmented("ct")[1]
    segmentation = slicerio.read_segmentation(str(out))
    value = {s["name"]: s["labelValue"] for s in segmentation["segments"]}
    labels = sitk.ReadImage(str(out))
    array = sitk.GetArrayFromImage(labels)
    x = {}
    for side in ("kidney_left", "kidney_right"):
        voxels = np.argwhere(array == value[side])
        assert len(voxels) > 2000, f"{side}: {len(voxels)} voxels"
        centre = voxels.mean(axis=0)[::-1]  # (x, y, z) index
        x[side] = labels.TransformContinuousIndexToPhysicalPoint(centre.tolist())[0]
    assert x["kidney_left"] > x["kidney_right"] + 50  # mm apart, left of right


def test_the_radiograph_model_ends_the_heart_where_the_lung_fields_end(sample_segmented):
    """On a frontal radiograph the heart ends above the lowest point of the lung fields (the costophrenic
    angles); the model's raw heart may reach into the upper abdomen, and the package's rule cuts it there."""
    out = sample_segmented("xray")[1]
    value = {s["name"]: s["labelValue"] for s in segments(out)}
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(out))).squeeze()
    lowest = lambda mask: np.flatnonzero(mask.any(axis=1)).max()  # noqa: E731
    bottom = lowest(np.isin(array, [value["lung_left"], value["lung_right"]]))  # the lung fields' largest parts
    assert lowest(array == value["heart"]) <= bottom

    package = default_model(2)
    assert package.not_below == {"heart": ["lung_left", "lung_right"]}
    raw_package = type(package).load(package.root)
    del raw_package.meta["postprocessing"]["not_below"]
    raw = Predictor(raw_package, largest_component=False).predict(read_image(SAMPLE_DIR / SAMPLES["xray"]))
    clipped = clip_below(raw, package.labels, package.not_below).array
    assert np.any(raw.array[bottom + 1:] == value["heart"])  # on this radiograph the raw heart reaches lower
    assert not np.any(clipped[bottom + 1:] == value["heart"])
    heart = clipped != raw.array
    assert np.all(raw.array[heart] == value["heart"]) and np.all(clipped[heart] == 0)  # only the heart's tail goes


@pytest.mark.parametrize("dimension", [2, 3])
def test_zoom_and_shift_averaging_maps_each_copy_back_onto_the_image(dimension):
    """The radiograph model averages over zoomed and shifted copies of the image: each copy's output must land back
    where the image is, or the average would blur the borders it is meant to steady."""
    axes = torch.meshgrid(*[torch.linspace(-1, 1, 48)] * dimension, indexing="ij")
    smooth = torch.exp(-sum((a - c) ** 2 for a, c in zip(axes, (0.2, -0.1, 0.3))) / 0.1)[None, None]
    inside = (slice(None), slice(None)) + (slice(6, -6),) * dimension
    for zoom, shift in zoom_shift_transforms(dimension)[1:]:
        there = moved(smooth, zoom, shift)
        back = moved(there, zoom, shift, back=True)
        assert (there - smooth).abs().max() > 0.1  # each copy does move
        assert (back - smooth)[inside].abs().max() < 0.05  # interpolation error only; a wrong inverse leaves > 0.1
    assert default_model(2).test_time_zoom_shift and not default_model(3).test_time_zoom_shift
