"""`unimiss finetune` on real CT with real (automatic TotalSegmentator) labels."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import load_file

from testkit import DATA, THREADS, deterministic_weights, events, official_keys, run_unimiss, run_unimiss_side_by_side
from unimiss.data import ImageData, Label, read_image, read_labelmap, write_labelmap
from unimiss.inference.preprocessing import INTENSITY_PRESETS

ORGANS = ["liver", "spleen", "kidney_left", "kidney_right"]
FAST = ["--epochs", "2", "--iterations", "2", "--patch-size", "32", "64", "64", "--spacing", "4", "4", "4",
        "--batch-size", "1", "--precision", "fp32", "--progress", "jsonl"]


def run(args, home, workdir, timeout=600, torchrun=False):
    return run_unimiss(["finetune", *args, "--workdir", workdir], {"UNIMISS_HOME": str(home)}, torchrun, timeout)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Three cases cut from the ts-abdomen CT, four organs named by .seg.nrrd segments, in different value orders."""
    root = tmp_path_factory.mktemp("cases")
    src = DATA / "ct" / "ts-abdomen"
    names = {int(k): v for k, v in json.loads((src / "labels.json").read_text())["labels"].items()}
    image, labels = read_image(src / "image.nii.gz"), read_image(src / "labels.nii.gz")
    ids = {v: k for k, v in names.items()}
    out = []
    for i, (z0, z1) in enumerate([(0, 80), (20, 112), (10, 100)]):
        order = ORGANS if i % 2 == 0 else ORGANS[::-1]
        direction = np.reshape(image.direction, (3, 3))
        origin = tuple(np.array(image.origin) + direction @ np.array([0, 0, z0 * image.spacing[2]]))
        crop = ImageData(image.array[z0:z1], image.spacing, origin, image.direction)
        mask = np.zeros(crop.array.shape, np.uint8)
        for value, name in enumerate(order, start=1):
            mask[labels.array[z0:z1] == ids[name]] = value
        img_path, lab_path = root / f"case{i}.nrrd", root / f"case{i}.seg.nrrd"
        sitk.WriteImage(crop.to_sitk(), str(img_path))
        write_labelmap(crop.with_array(mask), lab_path, [Label(v, n) for v, n in enumerate(order, start=1)])
        out.append((img_path, lab_path))
    return out


def pairs(cases):
    return ["--images", *(c[0] for c in cases), "--labels", *(c[1] for c in cases)]


def test_from_scratch_registers_a_versioned_package_that_segments(cases, tmp_path):
    home = tmp_path / "home"
    proc = run([*pairs(cases), *FAST, "--name", "organs"], home, tmp_path / "w1")
    assert proc.returncode == 0, proc.stderr
    metrics = events(proc, "metric")
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert set(metrics[-1]["val_dice"]) <= set(ORGANS) and "eta_s" in metrics[-1]
    meta = json.loads((home / "models" / "organs-1.0.0" / "model.json").read_text())
    assert [l["name"] for l in meta["labels"]] == ORGANS
    roles = [c["role"] for c in meta["provenance"]["training_data"]]
    assert roles == ["training", "training", "validation"]
    # No silent hold-out: the run says which case validates, and why.
    assert any(e["text"].startswith("validation: case2 (the last 1 of 3 cases") for e in events(proc, "message"))
    assert "contrast phases simulated (native, arterial, venous) for kidney_left, kidney_right, liver, spleen" in [
        e["text"] for e in events(proc, "message")]
    assert all(len(c["sha256"]) == 64 for c in meta["provenance"]["training_data"])
    assert "finetune" in meta["provenance"]["command"] and meta["provenance"]["base_model"] is None
    assert meta["preprocessing"]["intensity"] == INTENSITY_PRESETS["ct"]  # the window it was trained on (see below)
    assert meta["postprocessing"] == {"largest_component": True, "comparable_parts": 0.5}  # one piece each
    # The same name again: a new version beside the first.
    proc = run([*pairs(cases), *FAST, "--name", "organs", "--epochs", "1"], home, tmp_path / "w2")
    assert proc.returncode == 0, proc.stderr
    assert (home / "models" / "organs-1.1.0" / "model.json").is_file()
    seg = subprocess.run([sys.executable, "-m", "unimiss", "segment", str(cases[0][0]), "-o", str(tmp_path / "o.seg.nrrd"),
                          "--model", "organs", "--progress", "none"], env={**os.environ, "UNIMISS_HOME": str(home)},
                         capture_output=True, text=True)
    assert seg.returncode == 0, seg.stderr
    assert "organs@1.1.0" in seg.stderr or (tmp_path / "o.seg.nrrd").is_file()


def test_a_class_drawn_in_pieces_keeps_every_part_and_an_organ_its_largest(cases, tmp_path):
    """The labels decide what segmenting keeps: in these cases the liver is one piece and 'kidneys' (both kidneys,
    one class) two, so the new model keeps the liver's largest part only and every part of the kidneys."""
    from unimiss.inference import keep_largest_components

    relabelled = []
    for i, (image, labelmap_path) in enumerate(cases):
        labelmap, labels = read_labelmap(labelmap_path)
        value = {label.name: label.value for label in labels}
        mask = np.zeros(labelmap.array.shape, np.uint8)
        mask[labelmap.array == value["liver"]] = 1
        mask[np.isin(labelmap.array, [value["kidney_left"], value["kidney_right"]])] = 2
        relabelled.append((image, tmp_path / f"case{i}.seg.nrrd"))
        write_labelmap(labelmap.with_array(mask), relabelled[-1][1], [Label(1, "liver"), Label(2, "kidneys")])
    proc = run([*pairs(relabelled), *FAST, "--epochs", "1", "--name", "pieces"], tmp_path / "home", tmp_path / "w")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "home" / "models" / "pieces-1.0.0" / "model.json").read_text())
    assert meta["postprocessing"] == {"largest_component": ["liver"], "comparable_parts": 0.5}
    assert ("segmenting keeps the largest connected part (and any at least 50% of its size) of liver and every part "
            "of kidneys (not drawn as one piece); segment --largest-component or --all-components overrides it") in [
        e["text"] for e in events(proc, "message")]
    # What that rule keeps of a labelmap like the training ones, with a speck of liver far from the liver:
    labelmap, _ = read_labelmap(relabelled[0][1])
    array = labelmap.array.copy()
    array[-3:, :3, :3] = 1
    kept = keep_largest_components(labelmap.with_array(array), only={1}, comparable=0.5).array
    assert not (kept[-3:, :3, :3] == 1).any() and (kept == 1).sum() == (labelmap.array == 1).sum()
    assert np.array_equal(kept == 2, array == 2)
    # Two parts of similar size (the kidneys, as one class, in the second case) both stay where the rule keeps
    # comparable parts; the largest part alone is one kidney.
    labelmap, _ = read_labelmap(relabelled[1][1])
    kidneys = labelmap.with_array(np.where(labelmap.array == 2, 2, 0).astype(np.uint8))
    assert np.array_equal(keep_largest_components(kidneys, comparable=0.5).array, kidneys.array)
    assert 0 < (keep_largest_components(kidneys).array == 2).sum() < (kidneys.array == 2).sum()


def test_from_an_official_pretraining_checkpoint(cases, tmp_path):
    ckpt = tmp_path / "UniMiSS_tiny.pth"
    backbone = deterministic_weights(official_keys("pretrain_keys.json")["model_tiny"])
    torch.save({"teacher": {f"backbone.{k}": v for k, v in backbone.items()},
                "student": {f"module.backbone.{k}": v for k, v in backbone.items()},
                "epoch": 100, "args": argparse.Namespace(img_size2D=224, img_size3D=[16, 96, 96])}, ckpt)
    proc = run([*pairs(cases), *FAST, "--epochs", "1", "--base", ckpt, "--config", "tiny"], tmp_path / "home",
               tmp_path / "w")
    assert proc.returncode == 0, proc.stderr
    message = " ".join(e["text"] for e in events(proc, "message"))
    assert "official pretraining checkpoint" in message and "tensors loaded" in message
    meta = json.loads(next((tmp_path / "home" / "models").glob("*/model.json")).read_text())
    assert meta["network"]["config"]["name"] == "tiny" and "UniMiSS_tiny.pth" in meta["provenance"]["base_model"]


def test_from_a_package_with_its_labels_or_a_new_head(cases, tmp_path):
    home = tmp_path / "home"
    assert run([*pairs(cases[:2]), *FAST, "--epochs", "1", "--name", "base"], home, tmp_path / "w0").returncode == 0
    # A label the base model does not know, with its fixed head: refused with the way out.
    extra = tmp_path / "extra.seg.nrrd"
    labelmap, _ = read_labelmap(cases[0][1])
    write_labelmap(labelmap.with_array((labelmap.array == 1).astype(np.uint8)), extra, [Label(1, "pancreas")])
    proc = run(["--images", cases[0][0], cases[1][0], "--labels", extra, cases[1][1], *FAST, "--base", "base"],
               home, tmp_path / "w1")
    assert proc.returncode == 2 and "'pancreas' is not a class of base@1.0.0" in proc.stderr and "--new-head" in proc.stderr
    proc = run(["--images", cases[0][0], cases[1][0], "--labels", extra, cases[1][1], *FAST, "--epochs", "1",
                "--base", "base", "--new-head", "--name", "with-pancreas"], home, tmp_path / "w2")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((home / "models" / "with-pancreas-1.0.0" / "model.json").read_text())
    assert "pancreas" in [l["name"] for l in meta["labels"]] and meta["provenance"]["base_model"] == "base@1.0.0"
    # Same labels as the base: its preprocessing and patch are kept, the version goes up under the same name.
    proc = run([*pairs(cases[:2]), *FAST, "--epochs", "1", "--base", "base", "--name", "base"], home, tmp_path / "w3")
    assert proc.returncode == 0, proc.stderr
    assert (home / "models" / "base-1.1.0").is_dir()


def test_bad_training_inputs(cases, tmp_path):
    home = tmp_path / "home"
    image, labels = cases[0]
    other_grid = tmp_path / "shifted.seg.nrrd"
    lab, _ = read_labelmap(labels)
    write_labelmap(ImageData(lab.array, lab.spacing, tuple(np.add(lab.origin, 5.0)), lab.direction), other_grid,
                   [Label(v, n) for v, n in enumerate(ORGANS, 1)])
    empty = tmp_path / "empty.seg.nrrd"
    write_labelmap(lab.with_array(np.zeros_like(lab.array)), empty, [Label(1, "liver")])
    png = DATA / "xray" / "nih-00000001_000.png"
    png_label = tmp_path / "png.seg.nrrd"
    cxr = read_image(png)
    write_labelmap(cxr.with_array((cxr.array > 128).astype(np.uint8)), png_label, [Label(1, "lung_left")])
    text = tmp_path / "text.nii.gz"
    text.write_text("nothing")
    bad = {
        "grids": (["--images", image, "--labels", other_grid], "not on the grid"),
        "empty": (["--images", image, "--labels", empty], "labelmap is empty"),
        "mixed": (["--images", image, png, "--labels", labels, png_label], "2D and 3D cases are mixed"),
        "unreadable": (["--images", text, "--labels", labels], "not a readable image"),
        "count": (["--images", image, "--labels", labels, empty], "2 labelmaps"),
        "deformation": (["--images", image, "--labels", labels, "--deformation", "2"], "--deformation must be between"),
    }
    refused = run_unimiss_side_by_side([["finetune", *args, *FAST, "--workdir", tmp_path / name]
                                        for name, (args, _) in bad.items()], {"UNIMISS_HOME": str(home)})
    for (name, (args, message)), proc in zip(bad.items(), refused):
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (name, proc.stderr)
    # One case: no validation is possible; it says so and trains.
    proc = run(["--images", image, "--labels", labels, *FAST, "--epochs", "1"], home, tmp_path / "one")
    assert proc.returncode == 0, proc.stderr
    assert any(e["text"].startswith("all 1 case train (case0): with fewer than three cases none is held out")
               for e in events(proc, "message"))


def test_killed_and_resumed_run_ends_with_the_same_weights(cases, tmp_path):
    args = [*pairs(cases), *FAST, "--epochs", "2", "--iterations", "3", "--patience", "100"]
    straight = run([*args, "--name", "straight"], tmp_path / "h1", tmp_path / "w1")
    assert straight.returncode == 0, straight.stderr
    env = {**os.environ, "UNIMISS_HOME": str(tmp_path / "h2"), "OMP_NUM_THREADS": THREADS}
    cmd = [sys.executable, "-m", "unimiss", "finetune", *map(str, args), "--name", "resumed", "--workdir",
           str(tmp_path / "w2")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if '"event": "progress", "stage": "epoch 2", "done": 1' in line:  # in the last epoch, after epoch 1's checkpoint
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "h2" / "models").exists()
    resumed = run([*args, "--name", "resumed", "--resume"], tmp_path / "h2", tmp_path / "w2")
    assert resumed.returncode == 0, resumed.stderr
    assert any("resumed from" in e["text"] and "after epoch 1" in e["text"] for e in events(resumed, "message"))
    a = load_file(tmp_path / "h1" / "models" / "straight-1.0.0" / "weights.safetensors")
    b = load_file(tmp_path / "h2" / "models" / "resumed-1.0.0" / "weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_process_distributed_run(cases, tmp_path):
    proc = run([*pairs(cases), *FAST, "--epochs", "1", "--name", "ddp"], tmp_path / "home", tmp_path / "w",
               torchrun=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(events(proc, "result")) == 1  # rank 0 alone writes the package
    assert (tmp_path / "home" / "models" / "ddp-1.0.0" / "weights.safetensors").is_file()


def test_cases_may_share_a_file_name(cases, tmp_path):
    # Two folders of cases named alike (e.g. case0.nrrd in each), one of them held out.
    copies = []
    for i, folder in enumerate(("site-a", "site-b")):
        (tmp_path / folder).mkdir()
        for suffix in (".nrrd", ".seg.nrrd"):
            (tmp_path / folder / f"case{suffix}").symlink_to(cases[i][0 if suffix == ".nrrd" else 1])
        copies.append((tmp_path / folder / "case.nrrd", tmp_path / folder / "case.seg.nrrd"))
    proc = run([*pairs(copies), *FAST, "--epochs", "1", "--validation", "1"], tmp_path / "home", tmp_path / "w")
    assert proc.returncode == 0, proc.stderr


def test_decathlon_folder_and_csv(cases, tmp_path):
    root = tmp_path / "Task01_Organs"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i, (image, labels) in enumerate(cases[:2]):
        img = read_image(image)
        sitk.WriteImage(img.to_sitk(), str(root / "imagesTr" / f"org_{i:03d}_0000.nii.gz"))
        lab, _ = read_labelmap(labels)
        sitk.WriteImage(lab.to_sitk(), str(root / "labelsTr" / f"org_{i:03d}.nii.gz"))
    # nnU-Net v2 style: name -> value. Case 1 uses another value order, which a folder-wide table cannot express,
    # so only case 0's order is valid here; the CSV below mixes orders through .seg.nrrd names.
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, **{n: i for i, n in enumerate(ORGANS, 1)}}}))
    proc = run(["--data", root, *FAST, "--epochs", "1", "--validation", "0"], tmp_path / "home", tmp_path / "w1")
    assert proc.returncode == 0, proc.stderr
    csv = tmp_path / "cases.csv"
    csv.write_text("image,label\n" + "".join(f"{i},{l}\n" for i, l in cases))
    proc = run(["--csv", csv, *FAST, "--epochs", "1", "--name", "from-csv"], tmp_path / "home", tmp_path / "w2")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "home" / "models" / "from-csv-1.0.0" / "model.json").read_text())
    assert [l["name"] for l in meta["labels"]] == ORGANS


def test_budget_ends_the_run_on_time_within_the_epoch(cases, tmp_path):
    # An epoch of 10,000 iterations could never end in half a minute: the run stops inside it, validates
    # once more and saves, all within the budget. The slack allowed is what the run itself measured for
    # one step and one validation (a shared CPU can make either slower than forecast), not a guess at wall time.
    budget = 0.5
    assert FAST[:2] == ["--epochs", "2"]
    proc = run([*pairs(cases), *FAST[2:], "--minutes", str(budget), "--iterations", "10000", "--name", "timed"],
               tmp_path / "home", tmp_path / "w")
    assert proc.returncode == 0, proc.stderr
    metrics = events(proc, "metric")
    assert [m["epoch"] for m in metrics] == [1] and metrics[0]["val_dice"] and metrics[0]["eta_s"] == 0
    provenance = json.loads((tmp_path / "home" / "models" / "timed-1.0.0" / "model.json").read_text())["provenance"]
    assert 1 <= provenance["iterations"] < 10000 and provenance["budget_minutes"] == budget
    slack_min = (provenance["slowest_step_s"] + provenance["validation_s"]) / 60
    assert metrics[-1]["minutes"] <= provenance["minutes"] <= budget + slack_min, provenance


def test_fewer_than_three_cases_all_train_and_are_named(cases, tmp_path):
    # Cases as users keep them: one folder per patient, the image called image.nrrd.
    files = []
    for patient, (image, labels) in zip(("anna", "ben"), cases):
        (tmp_path / patient).mkdir()
        (tmp_path / patient / "image.nrrd").symlink_to(image)
        (tmp_path / patient / "labels.seg.nrrd").symlink_to(labels)
        files.append((tmp_path / patient / "image.nrrd", tmp_path / patient / "labels.seg.nrrd"))
    proc = run([*pairs(files), *FAST, "--epochs", "1", "--name", "two"], tmp_path / "home", tmp_path / "w")
    assert proc.returncode == 0, proc.stderr
    assert any(e["text"].startswith("all 2 cases train (anna, ben): with fewer than three cases none is held out")
               for e in events(proc, "message"))
    meta = json.loads((tmp_path / "home" / "models" / "two-1.0.0" / "model.json").read_text())
    assert [(c["case"], c["role"]) for c in meta["provenance"]["training_data"]] == [("anna", "training"),
                                                                                   ("ben", "training")]
    assert "anna, ben" in meta["description"] and "image" not in meta["description"]


def test_classes_absent_from_prediction_and_reference_are_not_scored():
    from unimiss.training.cases import TrainingCase
    from unimiss.training.validation import validate

    # A real (1x1 convolution) network: class 1 where the intensity is above 0.5, class 2 never.
    network = torch.nn.Conv3d(1, 3, 1)
    with torch.no_grad():
        network.weight.copy_(torch.tensor([0.0, 10.0, 0.0]).view(3, 1, 1, 1, 1))
        network.bias.copy_(torch.tensor([0.0, -5.0, -100.0]))
    image = np.zeros((16, 32, 32), np.float32)
    image[4:12, 8:24, 8:24] = 1
    label = (image > 0.5).astype(np.uint8)
    case = TrainingCase("c", image, label, "", frozenset({1, 2}))
    assert validate(network, [case], (16, 32, 32), ["a", "b"], torch.device("cpu"), None) == {"a": 1.0}
    # Where the case does not declare a class, its prediction there is not scored against "no label".
    undeclared = TrainingCase("d", image, np.zeros_like(label), "", frozenset({2}))
    assert validate(network, [undeclared], (16, 32, 32), ["a", "b"], torch.device("cpu"), None) == {}


def test_fine_tuning_one_class_keeps_the_base_models_other_classes(tmp_path):
    """The built-in CT model fine-tuned on a ts-abdomen crop where only the left kidney is labelled, at a rate
    that makes a network forget what it is not shown: liver and spleen, which the user did not label, are
    still segmented as the base model segments them."""
    from unimiss.inference.predictor import Predictor
    from unimiss.zoo import resolve_model

    src = DATA / "ct" / "ts-abdomen"
    names = {v: int(k) for k, v in json.loads((src / "labels.json").read_text())["labels"].items()}
    image, labels = read_image(src / "image.nii.gz"), read_image(src / "labels.nii.gz")
    z0, z1 = 76, 108  # liver, spleen and both kidneys
    direction = np.reshape(image.direction, (3, 3))
    origin = tuple(np.array(image.origin) + direction @ np.array([0, 0, z0 * image.spacing[2]]))
    crop = ImageData(image.array[z0:z1], image.spacing, origin, image.direction)
    sitk.WriteImage(crop.to_sitk(), str(tmp_path / "crop.nrrd"))
    write_labelmap(crop.with_array((labels.array[z0:z1] == names["kidney_left"]).astype(np.uint8)),
                   tmp_path / "kidney.seg.nrrd", [Label(1, "kidney_left")])
    proc = run(["--images", tmp_path / "crop.nrrd", "--labels", tmp_path / "kidney.seg.nrrd", "--base",
                "ct-organs-compact", "--epochs", "1", "--iterations", "8", "--batch-size", "1", "--lr", "1e-3",
                "--precision", "fp32", "--progress", "jsonl", "--name", "kidney"], tmp_path / "home", tmp_path / "w")
    assert proc.returncode == 0, proc.stderr
    message = " ".join(e["text"] for e in events(proc, "message"))
    assert "not forgetting: crop: liver, spleen," in message
    # It segments as its base does: the largest part of each organ, the aorta's parts 30 mm apart as one.
    meta = json.loads((tmp_path / "home" / "models" / "kidney-1.0.0" / "model.json").read_text())
    assert meta["postprocessing"] == {"largest_component": True, "join_gaps_mm": {"aorta": 30.0}}

    os.environ["UNIMISS_HOME"] = str(tmp_path / "home")
    base, tuned = resolve_model("ct-organs-compact"), resolve_model("kidney")
    before, after = (Predictor(p, precision="fp32").predict(crop).array for p in (base, tuned))
    for organ in ("liver", "spleen"):
        value = next(l.value for l in base.labels if l.name == organ)
        b, a = before == value, after == value
        agreement = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert b.sum() > 500 and agreement > 0.8, (organ, b.sum(), a.sum(), agreement)


def test_the_plan_is_a_slab_of_whole_cross_sections_within_the_compute_budget():
    from unimiss.training.recipe import PATCH_VOXELS, plan_batch, plan_patch, plan_spacing

    # (shape z, y, x; spacing x, y, z): the kit's chest CT and its thin-slice abdomen, and a thick-slice scan.
    for cases in ([((133, 512, 512), (0.703, 0.703, 2.5)), ((20, 512, 512), (0.977, 0.977, 2.0))],
                  [((330, 512, 512), (0.7, 0.7, 1.0))], [((40, 512, 512), (0.8, 0.8, 5.0))]):
        spacing = plan_spacing([sp for _, sp in cases], [sh for sh, _ in cases])
        working = [tuple(n * a / b for n, a, b in zip(sh, sp[::-1], spacing[::-1])) for sh, sp in cases]
        patch = plan_patch(working)
        field = np.median([np.array(sh[1:]) * sp[1::-1] for sh, sp in cases], axis=0)  # mm (y, x)
        assert np.all(np.array(patch[1:]) * spacing[1::-1] >= field / 1.125 - 0.5), (patch, spacing, field)  # mm; spacing has 3 decimals
        assert np.prod(patch) <= PATCH_VOXELS[3] and patch[0] >= 16 and plan_batch(patch) >= 2
        assert spacing[2] <= max(spacing[:2]) or spacing[2] == max(sp[2] for _, sp in cases)


def test_the_default_ct_window_sets_organs_apart_and_keeps_air_fat_and_bone_distinct():
    """From scratch, a CT model sees a soft-tissue window: on the real native abdomen CT the kidney (median 17 HU)
    and the fat around it (about -100 HU) lie 0.38 apart in normalised units, against 0.11 with -1000..1000 HU;
    lungs and bone still stand apart from fat and soft tissue. The package records the window it was trained on."""
    from unimiss.inference.preprocessing import normalise

    src = DATA / "ct" / "ts-abdomen"
    ids = {v: int(k) for k, v in json.loads((src / "labels.json").read_text())["labels"].items()}
    image, labels = read_image(src / "image.nii.gz"), read_image(src / "labels.nii.gz")
    near_kidney = np.zeros(labels.array.shape, bool)
    kidney = labels.array == ids["kidney_left"]
    zs, ys, xs = np.nonzero(kidney)
    near_kidney[zs.min():zs.max() + 1, ys.min() - 5:ys.max() + 6, xs.min() - 5:xs.max() + 6] = True
    fat = near_kidney & (labels.array == 0) & (image.array > -150) & (image.array < -50)

    def medians(preset):
        array = normalise(image.array, INTENSITY_PRESETS[preset])
        return {name: float(np.median(array[mask])) for name, mask in (
            ("kidney", kidney), ("fat", fat), ("lung", labels.array == ids["lung_lower_lobe_left"]),
            ("bone", labels.array == ids["vertebrae_L3"]))}

    default, wide = medians("ct"), medians("ct-wide")
    assert default["kidney"] - default["fat"] > 0.3 and wide["kidney"] - wide["fat"] < 0.2, (default, wide)
    assert default["fat"] - default["lung"] > 0.2 and default["bone"] - default["kidney"] > 0.4, default
    # A model trained from scratch records this window: test_from_scratch_registers_a_versioned_package_that_segments.


def test_contrast_phases_make_the_native_aorta_arterial_or_venous_and_leave_the_rest():
    """On the real native CT (ts-abdomen, aorta about 41 HU), the simulated phases put the aorta's median in each
    phase's range, keep its texture, and leave what takes up no contrast (fat, muscle, bone, air) as it was."""
    from unimiss.inference.preprocessing import normalise
    from unimiss.training.contrast import TARGETS, ContrastPhases

    src = DATA / "ct" / "ts-abdomen"
    ids = {v: int(k) for k, v in json.loads((src / "labels.json").read_text())["labels"].items()}
    image, labels = read_image(src / "image.nii.gz"), read_image(src / "labels.nii.gz")
    names = ["liver", "spleen", "kidney_left", "kidney_right", "aorta", "stomach"]
    z = slice(60, 92)
    mask = np.zeros(labels.array[z].shape, np.int64)
    for value, name in enumerate(names, start=1):
        mask[labels.array[z] == ids[name]] = value
    intensity = INTENSITY_PRESETS["ct-wide"]  # HU up to 1000: the arterial range (250-450) is not clipped
    images = torch.from_numpy(normalise(image.array[z], intensity))[None, None].repeat(24, 1, 1, 1, 1)
    targets = torch.from_numpy(mask)[None].repeat(24, 1, 1, 1)
    phases = ContrastPhases(names, intensity, image.spacing[::-1], probability=1.0)
    assert phases.structures == ["aorta", "kidney_left", "kidney_right", "liver", "spleen"]  # not the stomach
    out, out_targets = phases(images.clone(), targets.clone(), torch.Generator().manual_seed(0))
    assert torch.equal(out_targets, targets)

    aorta = targets[0] == 5
    before = images[0, 0][aorta] * 1000
    near = torch.nn.functional.max_pool3d(((targets[0] > 0) & (targets[0] != 6)).float()[None, None], 5, 1, 2)[0, 0] > 0
    seen = set()
    for i in range(len(out)):
        after = out[i, 0][aorta] * 1000
        median = float(after.median())
        phase = next(p for p, t in TARGETS.items() if t["aorta"][0] - 15 <= median <= t["aorta"][1] + 15)
        seen.add(phase)
        assert np.corrcoef(before.numpy(), after.numpy())[0, 1] > 0.8  # the same texture, shifted
        assert torch.equal(out[i, 0][~near], images[i, 0][~near])
    assert seen == {"native", "arterial", "venous"}, seen


@pytest.mark.parametrize("dimension", [2, 3])
def test_deformation_bends_image_and_labels_together(dimension):
    """`--deformation`: the patch and its labels move as one (a label drawn from the image's own grey levels still
    matches them afterwards), the shapes change, and without it the augmentation is what it was, draw for draw."""
    from unimiss.training.sampling import augment

    if dimension == 2:
        array = read_image(DATA / "xray" / "nih-00000001_000.png").array[::4, ::4][:256, :256].astype(np.float32)
    else:
        array = read_image(DATA / "ct" / "ts-abdomen" / "image.nii.gz").array[40:72, :128, :128].astype(np.float32)
    array = (array - array.mean()) / array.std()
    mask = np.zeros(array.shape, bool)  # the bright structures of the central half, well inside the patch
    centre = tuple(slice(n // 4, n - n // 4) for n in array.shape)
    mask[centre] = array[centre] > 0.5
    labels = torch.from_numpy(mask.astype(np.int64))[None].repeat(4, *[1] * dimension)
    images = torch.from_numpy(4 * mask + 0.2 * array)[None, None].float().repeat(4, 1, *[1] * dimension)
    plain = augment(images.clone(), labels.clone(), torch.Generator().manual_seed(5), p_spatial=1.0, p_cropped=0.0)
    same = augment(images.clone(), labels.clone(), torch.Generator().manual_seed(5), p_spatial=1.0, p_cropped=0.0,
                   deformation=0.0)
    assert torch.equal(plain[0], same[0]) and torch.equal(plain[1], same[1])
    bent = augment(images.clone(), labels.clone(), torch.Generator().manual_seed(5), p_spatial=1.0, p_cropped=0.0,
                   deformation=0.1)
    assert not torch.equal(bent[1], plain[1])  # the shapes moved beyond rotation and scaling
    for image, label in zip(*bent):
        # intensity augmentation keeps the order of grey levels: the labelled voxels are the brighter ones
        threshold = torch.quantile(image.flatten().float(), 1 - float(label.float().mean()))
        agreement = float(((image[0] > threshold) == (label > 0)).float().mean())
        assert agreement > 0.99, agreement
