"""Hostile and broken inputs and outputs (issue 11, items 1-5, 7, 8 and the I/O messages of 16).

Every test crafts its own input from the real data kit: a DICOM series with a slice removed, a broken link
among its files, NaN in a float NIfTI, colliding file names, a table of another labelmap... Commands run under
an address-space cap, so that a regression that allocates without bound fails instead of swapping.
"""
from __future__ import annotations

import csv
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from testkit import DATA, events
from unimiss.data import ImageData, InputError, Label, read_image, read_labelmap, write_labelmap
from unimiss.data.inputs import Case, distinct_names, find_cases
from unimiss.evaluation import evaluate_files

DICOM = DATA / "ct" / "ts-dicom" / "dicom"  # 20 slices, 2 mm apart
ABDOMEN = DATA / "ct" / "ts-abdomen"
PNG = DATA / "xray" / "nih-00000001_000.png"
CR = DATA / "xray" / "siim-chest-cr.dcm"
MEMORY_CAP = 4 << 30


def unimiss(args, home=None):
    """`python -m unimiss ARGS` under a 4 GiB address-space cap."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    env = {**os.environ, "OMP_NUM_THREADS": "1", **({"UNIMISS_HOME": str(home)} if home else {})}
    return subprocess.run([sys.executable, "-m", "unimiss", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=cap)


def one_line_error(proc, *words):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(word in lines[0] for word in words), lines[0]
    return lines[0]


def linked_series(folder: Path, skip=()) -> Path:
    """The real 20-slice series as links in `folder`, without the files at the positions in `skip`."""
    folder.mkdir()
    for i, file in enumerate(sorted(DICOM.iterdir())):
        if i not in skip:
            (folder / file.name).symlink_to(file)
    return folder


def written_series(folder: Path, positions, orientations=None) -> Path:
    """A small CT series written with SimpleITK, one file per slice at the given positions (LPS, mm)."""
    folder.mkdir()
    orientations = orientations or [(1, 0, 0, 0, 1, 0)] * len(positions)
    for i, (position, orientation) in enumerate(zip(positions, orientations)):
        image = sitk.Image([16, 16], sitk.sitkInt16) + i * 10
        tags = {"0008|0060": "CT", "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|000e": "1.2.826.0.1.3680043.2.1125.2",
                "0008|0018": f"1.2.826.0.1.3680043.2.1125.3.{i + 1}", "0020|0013": str(i + 1),
                "0020|0032": "\\".join(f"{v:g}" for v in position),
                "0020|0037": "\\".join(f"{v:g}" for v in orientation), "0028|0030": "1\\1"}
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"IM{i:04d}.dcm"))
        writer.Execute(image)
    return folder


# ------------------------------------------------------------------------------------ 1. DICOM series


def test_a_regular_written_series_reads_at_its_spacing(tmp_path):
    volume = read_image(written_series(tmp_path / "ok", [(0, 0, 2.5 * k) for k in range(6)]))
    assert volume.array.shape == (6, 16, 16)
    np.testing.assert_allclose(volume.spacing, (1, 1, 2.5))


def test_a_missing_slice_is_refused_naming_the_gap(tmp_path):
    folder = linked_series(tmp_path / "ct", skip={12})
    with pytest.raises(InputError) as caught:
        read_image(folder)
    message = str(caught.value)
    numbers = re.match(re.escape(f"{folder}: 1 slice missing between slices ") + r"(\d+) and (\d+) of 19", message)
    assert numbers and int(numbers[2]) == int(numbers[1]) + 1, message
    assert "positions jump 4.00 mm where the series steps 2.00 mm" in message
    proc = unimiss(["segment", folder, "-o", tmp_path / "out.seg.nrrd", "--progress", "none"])
    one_line_error(proc, "1 slice missing")
    assert not (tmp_path / "out.seg.nrrd").exists()


def test_a_broken_link_among_the_slices_is_refused(tmp_path):
    folder = linked_series(tmp_path / "ct")
    (folder / "IM9999.dcm").symlink_to(tmp_path / "gone.dcm")
    with pytest.raises(InputError, match="IM9999.dcm is a broken link"):
        read_image(folder)


def test_a_damaged_slice_file_is_refused(tmp_path):
    folder = linked_series(tmp_path / "ct", skip={5})
    (folder / "slice-05.dcm").write_bytes(b"DICM" + bytes(200))
    with pytest.raises(InputError, match="slice-05.dcm is not readable DICOM"):
        read_image(folder)


@pytest.mark.parametrize("positions, orientations, problem", [
    ([(0, 0, z) for z in (0, 2, 4, 6.6, 8.6, 10.6)], None, "uneven slice spacing between slices 3 and 4 of 6"),
    ([(0, 0, z) for z in (0, 2, 4, 4, 6, 8)], None, "two slices at the same position"),
    ([(0, 0, 2 * k) for k in range(5)], [(1, 0, 0, 0, 1, 0)] * 4 + [(1, 0, 0, 0, 0.995, 0.0998)],
     "mixed slice orientations (IM0004.dcm"),
    ([(0.5 * k, 0, 2 * k) for k in range(5)], None, "not stacked along their normal"),
])
def test_irregular_series_are_refused(tmp_path, positions, orientations, problem):
    folder = written_series(tmp_path / "ct", positions, orientations)
    with pytest.raises(InputError) as caught:
        read_image(folder)
    assert str(caught.value).startswith(f"{folder}: ") and problem in str(caught.value)


# ------------------------------------------------------------------------------------ 2. label tables, evaluate


@pytest.fixture(scope="module")
def abdomen():
    """A crop of the real TotalSegmentator labels (liver, spleen, kidneys...) and their names."""
    labels = ImageData.from_sitk(sitk.ReadImage(str(ABDOMEN / "labels.nii.gz"))[:, :, 40:80])
    names = {int(k): v for k, v in json.loads((ABDOMEN / "labels.json").read_text())["labels"].items()}
    present = set(np.unique(labels.array).tolist()) - {0}
    return labels, {v: n for v, n in names.items() if v in present}


def totalsegmentator_folder(root: Path, labels: ImageData, names: dict) -> Path:
    root.mkdir(parents=True)
    sitk.WriteImage(labels.to_sitk(), str(root / "labels.nii.gz"))
    (root / "labels.json").write_text(json.dumps({"labels": {str(v): n for v, n in names.items()}}))
    return root / "labels.nii.gz"


def renumbered(labels: ImageData, names: dict, path: Path) -> Path:
    """The same classes under other values (reversed order), names in a .ctbl."""
    values = sorted(names)
    lut = np.zeros(int(labels.array.max()) + 1, np.uint8)
    lut[values] = np.arange(len(values), 0, -1)
    write_labelmap(labels.with_array(lut[labels.array]), path,
                   [Label(int(lut[v]), names[v]) for v in values])
    return path


def test_evaluate_matches_by_name_across_numberings(tmp_path, abdomen):
    labels, names = abdomen
    reference = totalsegmentator_folder(tmp_path / "ts", labels, names)
    prediction = renumbered(labels, names, tmp_path / "pred.nii.gz")
    report = evaluate_files(prediction, reference)
    assert report["matched_by"] == "name" and set(report["labels"]) == set(names.values())
    assert all(entry["dice"] == 1.0 for entry in report["labels"].values())


def test_evaluate_refuses_an_unnamed_reference_unless_asked_to_match_values(tmp_path, abdomen):
    labels, names = abdomen
    reference = tmp_path / "plain.nii.gz"  # no table beside it
    sitk.WriteImage(labels.to_sitk(), str(reference))
    prediction = renumbered(labels, names, tmp_path / "pred.nii.gz")
    proc = unimiss(["evaluate", prediction, reference])
    line = one_line_error(proc, "plain.nii.gz", "no name", "--match-by-value")
    assert proc.stdout == ""
    proc = unimiss(["evaluate", prediction, reference, "--match-by-value"])
    assert proc.returncode == 0, proc.stderr
    assert "labels matched by value, not by name (--match-by-value)" in proc.stderr
    report = json.loads(proc.stdout)
    assert report["matched_by"] == "value" and report["mean_dice"] < 1.0  # the numbering differs: it shows
    assert "label_" not in line


def test_evaluate_names_the_classes_only_one_side_has(tmp_path, abdomen):
    labels, names = abdomen
    reference = totalsegmentator_folder(tmp_path / "ts", labels, {v: n for v, n in names.items() if n != "liver"})
    sitk.WriteImage(labels.with_array(np.where(labels.array == 5, 0, labels.array)).to_sitk(), str(reference))
    prediction = renumbered(labels, names, tmp_path / "pred.seg.nrrd")
    proc = unimiss(["evaluate", prediction, reference])
    assert proc.returncode == 0, proc.stderr
    assert "unimiss: not compared: liver only in the prediction" in proc.stderr
    assert json.loads(proc.stdout)["only_in_prediction"] == ["liver"]


@pytest.mark.parametrize("table", [{"background": 0, "spleen": 1, "liver": 5},  # nnU-Net v2
                                   {"0": "background", "1": "spleen", "5": "liver"}])  # Decathlon, nnU-Net v1
def test_dataset_json_names_a_labelmap_in_labels_tr(tmp_path, abdomen, table):
    labels, _ = abdomen
    (tmp_path / "labelsTr").mkdir()
    path = tmp_path / "labelsTr" / "case_001.nii.gz"
    sitk.WriteImage(labels.with_array(np.where(np.isin(labels.array, (1, 5)), labels.array, 0)).to_sitk(), str(path))
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "x", "labels": table}))
    _, named = read_labelmap(path)
    assert [(label.value, label.name) for label in named] == [(1, "spleen"), (5, "liver")]


def test_bad_label_tables_are_one_line_naming_the_file(tmp_path, abdomen):
    labels, _ = abdomen
    path = tmp_path / "labels.nii.gz"
    sitk.WriteImage(labels.to_sitk(), str(path))
    for text, problem in [({"labels": {"liver": [1, 2]}}, "region-based"),
                          ({"labels": {"1": "liver\nspacings: 9"}}, "line break"),
                          ({"labels": {"1": "liver", "01": "spleen"}}, "named twice")]:
        (tmp_path / "labels.json").write_text(json.dumps(text))
        with pytest.raises(InputError) as caught:
            read_labelmap(path)
        assert str(caught.value).startswith(f"{tmp_path / 'labels.json'}: ") and problem in str(caught.value)


# ------------------------------------------------------------------------------------ 3, 4. overwrites, folders


def small_ct(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.ReadImage(str(ABDOMEN / "image.nii.gz"))[30:62, 30:62, 40:56], str(path))
    return path


def test_an_output_that_would_replace_an_input_is_refused_before_work(tmp_path):
    ct = small_ct(tmp_path / "ct.nii.gz")
    before = ct.read_bytes()
    for output in (ct, tmp_path):  # the file itself; its folder, where --format nii.gz would write ct.nii.gz
        proc = unimiss(["segment", ct, "-o", output, "--format", "nii.gz", "--progress", "jsonl"])
        one_line_error(proc, "would replace the input", str(ct))
        assert not events(proc, "progress")  # refused before any work
    assert ct.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz"]


def test_output_named_like_a_picture_is_refused_and_no_folder_made(tmp_path):
    proc = unimiss(["segment", PNG, "-o", tmp_path / "out.png"])
    one_line_error(proc, "out.png", "not a labelmap name")
    assert not (tmp_path / "out.png").exists()


def test_colliding_names_are_told_apart_by_the_documented_rule(tmp_path):
    cases = [Case(Path(p), Path(p).name.split(".")[0]) for p in
             ("a/image.nii.gz", "b/image.nii.gz", "x/a.png", "x/a.jpg", "x/a.PNG", "x/c.png")]
    assert distinct_names(cases) == ["a_image", "b_image", "a_png", "a_jpg", "a_PNG-2", "c"]


def test_same_stems_in_one_run_give_distinct_results(model_home, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    png = sitk.ReadImage(str(PNG))[::8, ::8]  # 128 x 128: quick
    for name in ("a.png", "a.PNG", "a.jpg"):
        sitk.WriteImage(png, str(cases / name))
    proc = unimiss(["segment", cases, "-o", tmp_path / "out", "--model", "test-cxr", "--progress", "jsonl",
                    "--format", "nii.gz", "--labels-out", "json"], model_home)
    assert proc.returncode == 0, proc.stderr
    written = {Path(e["input"]).name: Path(e["path"]).name for e in events(proc, "result")}
    assert written == {"a.PNG": "a_PNG.nii.gz", "a.jpg": "a_jpg.nii.gz", "a.png": "a_png-2.nii.gz"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [*written.values(), "a_PNG.json", "a_jpg.json", "a_png-2.json"])
    assert [label.name for label in read_labelmap(tmp_path / "out" / "a_jpg.nii.gz")[1]] == [
        "lung_left", "lung_right", "heart"]


def test_a_folder_of_pictures_with_one_dicom_file_gives_each_file_a_case(model_home, tmp_path):
    cases = tmp_path / "xrays"
    cases.mkdir()
    (cases / "a.png").symlink_to(PNG)
    (cases / "b.png").symlink_to(DATA / "xray" / "tbx11k-h0001.png")
    shutil.copy(CR, cases / "c.dcm")
    (cases / "notes.txt").write_text("not an image")
    proc = unimiss(["segment", cases, "-o", tmp_path / "out", "--model", "test-cxr", "--progress", "jsonl"],
                   model_home)
    assert proc.returncode == 0, proc.stderr
    assert [Path(e["path"]).name for e in events(proc, "result")] == ["a.seg.nrrd", "b.seg.nrrd", "c.seg.nrrd"]
    reports = [e["text"] for e in events(proc, "message") if e["text"].startswith(str(cases))]
    assert reports == [f"{cases}: a folder of 3 image file(s); ignored 1 other file(s): notes.txt"]


def test_a_folder_of_case_folders(tmp_path):
    root = tmp_path / "study"
    shutil.copytree(ABDOMEN, root / "p1")  # image.nii.gz, labels.nii.gz + labels.json
    linked_series(root / "p2")  # a DICOM series
    (root / "p3" / "dicom").mkdir(parents=True)  # ts-dicom's layout: the series in a sub-folder
    for file in DICOM.iterdir():
        (root / "p3" / "dicom" / file.name).symlink_to(file)
    (root / "p4").mkdir()
    shutil.copy(PNG, root / "p4" / "image.png")
    heard = []
    cases = find_cases([root], heard.append)
    assert [(c.path.relative_to(root).as_posix(), c.name) for c in cases] == [
        ("p1/image.nii.gz", "p1"), ("p2", "p2"), ("p3/dicom", "p3"), ("p4/image.png", "p4")]
    assert heard == [f"{root}: a folder of 4 case folder(s)"]
    (root / "p5").mkdir()
    for name in ("x.png", "y.png"):
        shutil.copy(PNG, root / "p5" / name)
    with pytest.raises(InputError, match="p5: a case folder needs one image or one DICOM series, it has 2 images"):
        find_cases([root])


# ------------------------------------------------------------------------------------ 5, 7. pairs, label names


def test_a_labelmap_beside_the_table_of_another_is_refused(tmp_path, abdomen):
    labels, names = abdomen
    a = renumbered(labels, names, tmp_path / "a" / "case.nii.gz")
    b = renumbered(labels.with_array(np.flip(labels.array, 0).copy()), names, tmp_path / "b" / "case.nii.gz")
    read_labelmap(a), read_labelmap(b)  # each pair as written is consistent
    shutil.copy(b.with_name("case.ctbl"), a.with_name("case.ctbl"))  # what two interleaved writers could leave
    with pytest.raises(InputError, match="case.ctbl: this table was written with another version of case.nii.gz"):
        read_labelmap(a)


def test_names_in_any_script_round_trip_in_a_json_table_and_newlines_are_refused(tmp_path):
    image = read_image(PNG)
    labelmap = image.with_array((image.array > 128).astype(np.uint8) + (image.array > 200))
    labels = [Label(1, "Lungenflügel rechts"), Label(2, "心臓")]
    path = write_labelmap(labelmap, tmp_path / "x.nii.gz", labels, table="json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.nii.gz"]
    assert [label.name for label in read_labelmap(path)[1]] == ["Lungenflügel rechts", "心臓"]
    write_labelmap(labelmap, path, labels)  # now with a colour table: the JSON one of the old labelmap goes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ctbl", "x.nii.gz"]
    assert [label.name for label in read_labelmap(path)[1]] == ["Lungenflügel_rechts", "心臓"]
    with pytest.raises(ValueError, match="non-ASCII characters, which a .seg.nrrd cannot hold"):
        write_labelmap(labelmap, tmp_path / "x.seg.nrrd", labels)
    assert not (tmp_path / "x.seg.nrrd").exists()
    for name in ("liver\nspace directions: none", "a\tb", " ", "x" * 129):
        with pytest.raises(ValueError, match="label 1: the name"):
            Label(1, name)


# ------------------------------------------------------------------------------------ 8. NaN and infinity


@pytest.mark.parametrize("name, dtype", [("f.nii.gz", np.float32), ("f.nii", np.float64), ("f.mha", np.float32),
                                         ("f.nrrd", np.float32)])
def test_non_finite_voxels_are_refused_in_every_format(tmp_path, name, dtype):
    voxels = sitk.GetArrayFromImage(sitk.ReadImage(str(ABDOMEN / "image.nii.gz"))[:32, :32, :8]).astype(dtype)
    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(voxels), str(path))
    assert read_image(path).array.shape == voxels.shape  # finite: read as it is
    voxels.flat[0], voxels.flat[-1], voxels[4, 10, 10] = np.nan, np.inf, -np.inf  # the first, the last, one inside
    sitk.WriteImage(sitk.GetImageFromArray(voxels), str(path))
    with pytest.raises(InputError, match=f"{name}: 3 voxels are NaN or infinite"):
        read_image(path)


def test_nan_in_a_float_nifti_labelmap_is_refused(tmp_path):
    voxels = np.ones((4, 16, 16), np.float32)
    voxels[2, 3, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(voxels), str(tmp_path / "l.nii.gz"))
    with pytest.raises(InputError, match="1 voxels are NaN"):
        read_labelmap(tmp_path / "l.nii.gz")


# ------------------------------------------------------------------------------------ 16. messages


def grey_alpha_png(path: Path) -> Path:
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + bytes([100, 255]) * 32 for _ in range(32))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 8, 4, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def test_grey_alpha_png_is_read_as_grey(tmp_path):
    image = read_image(grey_alpha_png(tmp_path / "la.png"))  # ITK cannot read it: "unreadable" it said
    assert image.dimension == 2 and image.size == (32, 32) and (image.array == 100).all()
    (tmp_path / "broken.png").write_bytes(grey_alpha_png(tmp_path / "la.png").read_bytes()[:60])
    with pytest.raises(InputError, match="broken.png: a grey \\+ alpha PNG that could not be read"):
        read_image(tmp_path / "broken.png")


def test_a_csv_with_a_byte_order_mark_and_a_short_row(tmp_path):
    from unimiss.training import pairs_from_args

    table = tmp_path / "cases.csv"
    table.write_text("\ufeffimage,label\na.nii.gz,a.seg.nrrd\n", encoding="utf-8")
    assert [(f.image.name, f.label.name) for f in pairs_from_args(csv_path=table)] == [("a.nii.gz", "a.seg.nrrd")]
    table.write_text("image,label\na.nii.gz\n")
    with pytest.raises(InputError, match="cases.csv: line 2 has no label"):
        pairs_from_args(csv_path=table)


def test_drr_writes_a_cases_csv_that_reads_back(tmp_path, abdomen):
    labels, names = abdomen
    ct = tmp_path / "patient, 1.nii.gz"  # a comma in the name
    sitk.WriteImage(sitk.ReadImage(str(ABDOMEN / "image.nii.gz"))[:, :, 40:80], str(ct))
    write_labelmap(labels, tmp_path / "labels.seg.nrrd", [Label(v, n) for v, n in names.items()])
    proc = unimiss(["drr", ct, tmp_path / "labels.seg.nrrd", "-o", tmp_path / "drr", "--size", "64"])
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "drr" / "cases.csv", newline="") as f:
        assert list(csv.reader(f)) == [["image", "label"], ["patient, 1-drr000.nrrd", "patient, 1-drr000.seg.nrrd"]]
    from unimiss.training import pairs_from_args
    assert all(f.image.is_file() and f.label.is_file() for f in pairs_from_args(csv_path=tmp_path / "drr" / "cases.csv"))


def test_a_segment_entirely_under_a_later_layer_is_refused(tmp_path, abdomen):
    labels, _ = abdomen
    liver = labels.array.T == 5
    segmentation = slicerio.create_segmentation(liver.shape, labels.ijk_to_lps())
    slicerio.add_segment(segmentation, liver, {"id": "liver", "name": "liver", "color": [0.6, 0.2, 0.1]})
    slicerio.add_segment(segmentation, labels.array.T > 0, {"id": "body", "name": "body", "color": [0.9, 0.9, 0.9]})
    slicerio.write_segmentation(str(tmp_path / "layers.seg.nrrd"), segmentation)
    with pytest.raises(InputError, match="segment 'liver' lies entirely under segments of a later layer"):
        read_labelmap(tmp_path / "layers.seg.nrrd")


def test_a_single_ct_slice_is_not_given_to_the_radiograph_model(tmp_path):
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(ABDOMEN / "image.nii.gz"))[:, :, 50:51], str(path))
    proc = unimiss(["segment", path, "-o", tmp_path / "out.seg.nrrd", "--progress", "none"])
    one_line_error(proc, "slice.nii.gz", "a single slice of a volume", "--model")
    assert not (tmp_path / "out.seg.nrrd").exists()
