"""Digitally reconstructed radiographs from the real chest CT and its labels."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from testkit import DATA
from unimiss.data import Label, read_image, read_labelmap
from unimiss.data.drr import Projector

LIDC = DATA / "ct" / "lidc-idri-0001"


@pytest.fixture(scope="module")
def chest():
    names = {v: int(k) for k, v in json.loads((LIDC / "labels.json").read_text())["labels"].items()}
    ct, raw = read_image(LIDC / "image.nii.gz"), read_image(LIDC / "labels.nii.gz")
    merged = np.zeros(raw.array.shape, np.uint8)
    groups = {1: ["lung_upper_lobe_left", "lung_lower_lobe_left"],
              2: ["lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right"],
              3: ["heart"], 4: ["clavicula_left"]}
    for value, sources in groups.items():
        merged[np.isin(raw.array, [names[s] for s in sources])] = value
    labels = [Label(1, "lung_left"), Label(2, "lung_right"), Label(3, "heart"), Label(4, "clavicula_left")]
    return ct, raw.with_array(merged), labels


@pytest.fixture(scope="module")
def projector(chest):
    return Projector(*chest)


def centre(mask):
    rows, cols = np.nonzero(mask)
    return rows.mean(), cols.mean()


def test_projection_looks_like_a_frontal_radiograph(projector):
    image, masks = projector.radiograph(np.random.default_rng(0), size=256, randomise=False)
    assert image.array.shape == masks.array.shape == (256, 256) and image.same_grid(masks)
    assert image.array.dtype == np.uint8 and image.array.std() > 20
    left, right, heart, clavicle = (centre(masks.array == v) for v in (1, 2, 3, 4))
    # Radiological display: the patient's right lung on the left of the picture, the heart toward the
    # patient's left, the clavicle above the heart (head at the top).
    assert right[1] < heart[1] < left[1]
    assert clavicle[0] < heart[0]
    # The heart is drawn over the lungs; lungs are darker (less attenuating) than the heart's shadow.
    assert image.array[masks.array == 3].mean() > image.array[masks.array == 1].mean()


def test_randomised_projections_differ_and_are_reproducible(projector):
    a = projector.radiograph(np.random.default_rng(1), size=128)
    b = projector.radiograph(np.random.default_rng(1), size=128)
    c = projector.radiograph(np.random.default_rng(2), size=128)
    assert np.array_equal(a[0].array, b[0].array) and np.array_equal(a[1].array, b[1].array)
    assert not np.array_equal(a[0].array, c[0].array)


def test_drr_command_writes_training_pairs(chest, tmp_path):
    from unimiss.data import write_labelmap
    ct, labelmap, labels = chest
    seg = tmp_path / "chest.seg.nrrd"
    write_labelmap(labelmap, seg, labels)
    out = tmp_path / "drr"
    proc = subprocess.run([sys.executable, "-m", "unimiss", "drr", str(LIDC / "image.nii.gz"), str(seg), "-o", str(out),
                           "--count", "2", "--size", "128"], capture_output=True, text=True, env=os.environ)
    assert proc.returncode == 0, proc.stderr
    rows = (out / "cases.csv").read_text().splitlines()
    assert rows == ["image,label", "image-drr000.nrrd,image-drr000.seg.nrrd", "image-drr001.nrrd,image-drr001.seg.nrrd"]
    radiograph = read_image(out / "image-drr001.nrrd")
    masks, names = read_labelmap(out / "image-drr001.seg.nrrd")
    assert radiograph.dimension == 2 and radiograph.same_grid(masks)
    assert [l.name for l in names] == ["lung_left", "lung_right", "heart", "clavicula_left"]
    proc = subprocess.run([sys.executable, "-m", "unimiss", "drr", str(DATA / "xray" / "tbx11k-h0001.png"), "-o",
                           str(tmp_path / "x")], capture_output=True, text=True)
    assert proc.returncode == 2 and "needs a CT volume" in proc.stderr


def test_matched_radiographs_take_on_a_real_radiographs_grey_levels(chest):
    """With real radiographs to match, a DRR's grey-level histogram is theirs (a reader sees dark lungs and
    bright bones as on the real ones), while its masks stay where the anatomy is."""
    from unimiss.cli import _grey_levels
    real = _grey_levels(DATA / "xray" / "tbx11k-h0001.png", 128)
    projector = Projector(*chest, rotations=(0.0,))
    matched = [projector.radiograph(np.random.default_rng(seed), size=128, references=[real]) for seed in range(6)]
    plain = [projector.radiograph(np.random.default_rng(seed), size=128) for seed in range(6)]
    distance = lambda image: np.abs(np.sort(image.array.ravel()).astype(float)  # noqa: E731
                                    - np.sort(real.ravel())).mean()
    assert np.median([distance(i) for i, _ in matched]) < 0.3 * np.median([distance(i) for i, _ in plain])
    for image, masks in matched:
        lungs, heart = np.isin(masks.array, (1, 2)), masks.array == 3
        assert image.array[lungs].mean() < image.array[heart].mean()


def test_patient_rotation_turns_the_anatomy(chest):
    """Rotating the patient about the long axis moves the heart sideways in the projection."""
    ct, labelmap, labels = chest
    straight, turned = (Projector(ct, labelmap, labels, rotations=(a,)) for a in (0.0, 15.0))
    heart = [centre(p.radiograph(np.random.default_rng(0), 128, randomise=False)[1].array == 3)[1]
             for p in (straight, turned)]
    assert abs(heart[0] - heart[1]) > 2


def test_match_refuses_a_volume(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "unimiss", "drr", str(LIDC / "image.nii.gz"), "-o", str(tmp_path),
                           "--match", str(LIDC / "image.nii.gz")], capture_output=True, text=True)
    assert proc.returncode == 2 and "image.nii.gz: --match takes radiographs" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_masks_follow_chest_radiograph_references(chest):
    """As JSRT/SCR draw them: structures given as hidden (here the liver, below the diaphragm) are cut out of
    the lung fields and not drawn; the heart stays whole; clavicles stay within the lungs' outer edges."""
    ct, labelmap, labels = chest
    raw = read_image(LIDC / "labels.nii.gz")
    names = {v: int(k) for k, v in json.loads((LIDC / "labels.json").read_text())["labels"].items()}
    with_liver = labelmap.array.copy()
    with_liver[(raw.array == names["liver"]) & (with_liver == 0)] = 9
    liver = Label(9, "below_diaphragm")
    plain = Projector(ct, labelmap, labels).radiograph(np.random.default_rng(0), 128, randomise=False)[1].array
    scr = Projector(ct, labelmap.with_array(with_liver), labels, hidden=[liver])
    masks = scr.radiograph(np.random.default_rng(0), 128, randomise=False)[1].array
    assert 9 not in masks
    lung_right_plain, lung_right = (plain == 2).sum(), (masks == 2).sum()
    assert 0.5 * lung_right_plain < lung_right < 0.97 * lung_right_plain  # the part over the liver is gone
    assert (masks == 3).sum() == (plain == 3).sum()  # the heart is untouched
    lung_columns = np.flatnonzero(np.isin(masks, (1, 2)).any(axis=0))
    clavicle_columns = np.flatnonzero((masks == 4).any(axis=0))
    assert clavicle_columns.size and clavicle_columns.max() <= lung_columns.max()


def _slope_degrees(mask, spacing):
    """How steeply a projected structure's long axis rises from the horizontal, in mm."""
    rows, cols = np.nonzero(mask)
    points = np.stack([cols * spacing[0], rows * spacing[1]], 1)
    axis = np.linalg.eigh(np.cov(points.T))[1][:, -1]
    return float(np.degrees(np.arctan(abs(axis[1] / axis[0]))))


def test_clavicles_are_turned_to_an_upright_patients_pose(projector):
    """The CT patient lay with raised arms: the clavicle climbs steeply above the lung apex. Turned as on a
    standing patient, its label and its own shadow move together to a gentle slope across the apex, and the
    lung it uncovered is lung again."""
    soft, bone, masks, _, clavicles, under = projector.views[0]
    spacing = projector.spacing
    assert _slope_degrees(masks == 4, spacing) > 30
    value, drawn, excess, bone_part = clavicles[0]
    for seed in range(4):
        path, moved = projector._upright_clavicles(soft + bone, under, clavicles, 1.0, np.random.default_rng(seed))
        clavicle = moved == 4
        assert _slope_degrees(clavicle, spacing) < 26 and abs(int(clavicle.sum()) - int((masks == 4).sum())) < 30
        gained = path - (soft + bone)  # the bone's shadow left its old place and lies under its new label
        assert gained[clavicle & ~drawn].mean() > 0.5 * excess[drawn].mean()
        assert gained[drawn & ~clavicle].mean() < -0.5 * excess[drawn].mean()
        uncovered = (masks == 4) & ~clavicle
        assert np.array_equal(moved[uncovered], under[uncovered])
        assert np.array_equal(moved[~clavicle & ~uncovered], masks[~clavicle & ~uncovered])
