"""`unimiss segment` and `unimiss evaluate` on the real data: results on the input's grid, clear errors."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from testkit import DATA, run_unimiss, run_unimiss_side_by_side

CT = DATA / "ct" / "lidc-idri-0001" / "image.nii.gz"
DICOM = DATA / "ct" / "ts-dicom" / "dicom"
PNG = DATA / "xray" / "nih-00000001_000.png"
CR = DATA / "xray" / "siim-chest-cr.dcm"


def run(args, home):
    return run_unimiss(args, {"UNIMISS_HOME": str(home)}, timeout=300)


def geometry(path):
    if Path(path).is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        image = reader.Execute()
    else:
        image = sitk.ReadImage(str(path))
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        image = image[:, :, 0]
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def assert_same_grid(result, source):
    size, spacing, origin, direction = geometry(source)
    got = geometry(result)
    assert got[0] == size
    np.testing.assert_allclose(got[1], spacing, rtol=1e-6)
    np.testing.assert_allclose(got[2], origin, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[3], direction, atol=1e-6)


@pytest.mark.parametrize("source, model, names", [
    (CT, "test-ct", ["liver", "spleen"]),
    (DICOM, "test-ct", ["liver", "spleen"]),
    (PNG, "test-cxr", ["lung_left", "lung_right", "heart"]),
    (CR, "test-cxr", ["lung_left", "lung_right", "heart"]),
])
def test_each_input_kind_gives_a_labelmap_on_its_grid(model_home, tmp_path, source, model, names):
    out = tmp_path / "result.seg.nrrd"
    proc = run(["segment", source, "-o", out, "--model", model, "--progress", "none"], model_home)
    assert proc.returncode == 0, proc.stderr
    assert_same_grid(out, source)
    segmentation = slicerio.read_segmentation(str(out))
    assert [s["name"] for s in segmentation["segments"]] == names
    assert "Traceback" not in proc.stderr


def test_a_folder_of_cases_gives_a_folder_of_results(model_home, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "a.png").symlink_to(PNG)
    (cases / "b.png").symlink_to(DATA / "xray" / "tbx11k-h0001.png")
    (cases / "notes.txt").write_text("not an image")
    proc = run(["segment", cases, "-o", tmp_path / "out", "--model", "test-cxr", "--format", "nii.gz",
                "--progress", "jsonl"], model_home)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.ctbl", "a.nii.gz", "b.ctbl", "b.nii.gz"]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {e["event"] for e in events} >= {"progress", "result"}
    assert [Path(e["path"]).name for e in events if e["event"] == "result"] == ["a.nii.gz", "b.nii.gz"]


def test_bad_inputs_give_one_line_errors_and_no_output(model_home, tmp_path):
    text = tmp_path / "text.nii.gz"
    text.write_text("hello")
    empty = tmp_path / "empty.nii.gz"
    empty.touch()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(CT.read_bytes()[: 200_000])
    four_d = tmp_path / "4d.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([sitk.Image([16, 16, 16], sitk.sitkInt16)] * 2), str(four_d))
    nan = tmp_path / "nan.nrrd"  # (ITK reads NaN in NIfTI as 0)
    arr = np.zeros((16, 32, 32), np.float32)
    arr[3, 3, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(nan))
    tiny = tmp_path / "tiny.png"
    sitk.WriteImage(sitk.Image([1, 1], sitk.sitkUInt8), str(tiny))
    no_dicom = tmp_path / "no-dicom"
    no_dicom.mkdir()
    (no_dicom / "readme.txt").write_text("x")
    evil = tmp_path / "evil.pth"
    marker = tmp_path / "executed"
    evil.write_bytes(b"\x80\x02cos\nsystem\nq\x00X" + len(f"touch {marker}").to_bytes(4, "little")
                     + f"touch {marker}".encode() + b"q\x01\x85q\x02Rq\x03.")
    cases = {
        "missing": ([tmp_path / "missing.nii.gz"], "test-ct", "no such file"),
        "empty": ([empty], "test-ct", "empty"),
        "text": ([text], "test-ct", "not a readable image"),
        "truncated": ([truncated], "test-ct", "truncated"),
        "4d": ([four_d], "test-ct", "4D"),
        "nan": ([nan], "test-ct", "NaN"),
        "tiny": ([tiny], "test-cxr", "too small"),
        "no dicom": ([no_dicom], "test-ct", "no images or DICOM"),
        "unknown model": ([CT], "no-such-model", "unknown model"),
        "hostile model": ([CT], evil, "not a model package"),
        "dimension": ([CT], "test-cxr", "segments 2D images"),
    }
    outputs = {name: tmp_path / f"{name.replace(' ', '-')}.seg.nrrd" for name in cases}
    refused = run_unimiss_side_by_side([["segment", *inputs, "-o", outputs[name], "--model", model]
                                        for name, (inputs, model, _) in cases.items()], {"UNIMISS_HOME": str(model_home)})
    for (name, (inputs, model, message)), proc in zip(cases.items(), refused):
        out = outputs[name]
        assert proc.returncode != 0, name
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (name, proc.stderr)
        assert not out.exists(), name
    assert not marker.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_interrupt_leaves_no_output(model_home, tmp_path):
    out = tmp_path / "ct.seg.nrrd"
    env = {**os.environ, "UNIMISS_HOME": str(model_home)}
    proc = subprocess.Popen([sys.executable, "-m", "unimiss", "segment", str(CT), "-o", str(out), "--model", "test-ct",
                             "--progress", "jsonl", "--overlap", "0.9", "--tta"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # as from a terminal, even where the tests run in the background (SIGINT ignored there)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:
        if '"stage": "inference"' in line:
            proc.send_signal(signal.SIGINT)
            break
    proc.wait(timeout=120)
    assert proc.returncode == 130
    assert list(tmp_path.iterdir()) == []


def test_evaluate_reports_dice_and_surface_distance(model_home, tmp_path):
    ref = tmp_path / "ref.seg.nrrd"
    pred = tmp_path / "pred.seg.nrrd"
    assert run(["segment", DICOM, "-o", ref, "--model", "test-ct", "--progress", "none"], model_home).returncode == 0
    proc = run(["evaluate", ref, ref], model_home)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    present = {k: v for k, v in report["labels"].items() if v["voxels_ref"]}
    assert present and all(v["dice"] == 1.0 and v["mean_surface_distance_mm"] == 0.0 for v in present.values())
    # A one-voxel shift in x gives a surface distance of about one voxel spacing.
    image = sitk.ReadImage(str(ref))
    shifted = sitk.GetArrayFromImage(image)
    shifted = np.roll(shifted, 1, axis=-1)
    from unimiss.data import ImageData, read_labelmap, write_labelmap
    labelmap, labels = read_labelmap(ref)
    write_labelmap(labelmap.with_array(shifted.astype(labelmap.array.dtype).reshape(labelmap.array.shape)), pred, labels)
    report = json.loads(run(["evaluate", pred, ref], model_home).stdout)
    for v in report["labels"].values():
        if v["voxels_ref"] > 1000:
            assert 0.5 < v["dice"] < 1.0
            assert 0.1 < v["mean_surface_distance_mm"] < 1.5 * image.GetSpacing()[0]


def test_evaluate_leaves_a_class_neither_side_holds_unscored(tmp_path):
    """A class absent from both labelmaps says nothing about the model: Dice null, outside the mean, as
    fine-tuning's validation scores it (one rule for both)."""
    from unimiss.data import ImageData, Label, write_labelmap
    from unimiss.evaluation import evaluate_files
    from unimiss.training.losses import dice_per_class
    import torch
    ref = np.zeros((4, 8, 8), np.uint8)
    ref[1:3, 2:6, 2:6] = 1
    pred = ref.copy()
    pred[1:3, 2:6, 2:4] = 0
    labels = [Label(1, "liver"), Label(2, "spleen")]
    for name, array in (("ref", ref), ("pred", pred)):
        write_labelmap(ImageData(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
                       tmp_path / f"{name}.seg.nrrd", labels)
    report = evaluate_files(tmp_path / "pred.seg.nrrd", tmp_path / "ref.seg.nrrd")
    assert report["labels"]["spleen"]["dice"] is None
    assert report["mean_dice"] == report["labels"]["liver"]["dice"] == pytest.approx(2 * 16 / (16 + 32))
    assert dice_per_class(torch.from_numpy(pred), torch.from_numpy(ref), 3) == [report["labels"]["liver"]["dice"], None]


@pytest.mark.parametrize("dimension", [2, 3])
def test_parts_of_a_vessel_across_a_short_gap_are_kept_together(dimension):
    """`postprocessing.join_gaps_mm`: a vessel drawn in two pieces 6 mm apart stays whole; a blob 60 mm away,
    and without the option the shorter piece, are dropped. Gaps are measured in mm on anisotropic grids."""
    from unimiss.data.image import ImageData
    from unimiss.inference import keep_largest_components

    spacing = (0.7, 0.7, 2.5)[:dimension]
    shape = (40, 200, 200)[-dimension:]
    array = np.zeros(shape, np.uint8)
    column = (slice(None),) * (dimension - 2)  # every slice in 3D
    x = lambda mm: int(round(mm / 0.7))  # noqa: E731
    array[column + (slice(90, 110), slice(x(10), x(60)))] = 4      # the longer piece
    array[column + (slice(90, 110), slice(x(66), x(100)))] = 4     # 6 mm further along
    array[column + (slice(10, 30), slice(x(30), x(45)))] = 4       # 60 mm off the vessel's line
    array[column + (slice(150, 190), slice(10, 60))] = 1           # another class, untouched
    labels = ImageData(array, spacing, (0.0,) * dimension, tuple(np.eye(dimension).ravel()))
    plain = keep_largest_components(labels).array
    joined = keep_largest_components(labels, {4: 20.0}).array
    assert all(array[column + (row, x(mm))].all() for row, mm in ((100, 30), (100, 80), (20, 40)))
    assert plain[column + (100, x(30))].all() and not plain[column + (100, x(80))].any()
    assert joined[column + (100, x(30))].all() and joined[column + (100, x(80))].all()
    assert not joined[column + (20, x(40))].any() and not plain[column + (20, x(40))].any()
    assert np.array_equal(joined == 1, array == 1) and np.array_equal(plain == 1, array == 1)
