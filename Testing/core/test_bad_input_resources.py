"""Hostile input and faults (issue 11, items 5, 6, 9-16): one clear line, nothing lost, memory bounded.

Every test crafts its own input. Whatever could explode runs in a child process under an address-space
cap (RLIMIT_AS), so that a regression fails here instead of taking the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from testkit import events, make_package
from unimiss import cli, errors
from unimiss.data import ImageData, Label, write_labelmap
from unimiss.inference import preflight
from unimiss.models import get_config
from unimiss.zoo import ModelPackage, ModelPackageError, default_model, import_model, list_models, model_origin, \
    user_models_dir

GB = 2**30
CXR_PRE = {"size": [64, 64], "intensity": {"method": "zscore"}}


def capped(args, gb=3.0, env=None, code=None, timeout=300):
    """`python -m unimiss ARGS` (or `python -c CODE`) limited to `gb` of address space."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (int(gb * GB), int(gb * GB)))

    command = ["-c", code, *map(str, args)] if code else ["-m", "unimiss", *map(str, args)]
    return subprocess.run([sys.executable, *command], preexec_fn=limit, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def assert_one_line_error(proc, *fragments, status=2):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == status and len(lines) == 1 and lines[0].startswith("unimiss: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def dead_pid() -> int:
    """The id of a process that has ended."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def run_main(args, capsys):
    status = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err.strip().splitlines()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIMISS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def small_package(tmp_path_factory):
    """A 2D package with random weights: small, quick to load and to build."""
    return make_package(tmp_path_factory.mktemp("pkg"), "tiny-cxr", 2, ["lung"], CXR_PRE, (64, 64))


def copy_package(package, folder, change=None):
    folder.mkdir(parents=True)
    meta = json.loads((package.root / "model.json").read_text())
    if change:
        change(meta)
    (folder / "model.json").write_text(json.dumps(meta))
    (folder / "weights.safetensors").symlink_to(package.weights_path)
    return folder


def crafted_ct(path, size=(40, 64, 64), spacing=(2.0, 2.0, 2.0)):
    array = np.random.default_rng(0).normal(0, 200, size).astype(np.int16)
    image = ImageData(array, spacing, (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    sitk.WriteImage(image.to_sitk(), str(path))
    return image


# 9: networks are bounded before they are built ------------------------------------------------------------------

def test_absurd_network_sizes_are_refused_before_any_memory_is_spent(small_package, tmp_path):
    compact = {**get_config("compact").to_dict(), "name": "custom"}
    huge = {**compact, "embed_dims": [2048] * 4, "num_heads": [64] * 4, "depths": [4] * 4, "mlp_ratio": 16,
            "decoder_dims": [2048] * 3, "decoder_heads": [64] * 3, "decoder_depths": [4] * 3}
    variants = {
        "mlp": (lambda m: m["network"].update(config={**compact, "mlp_ratio": -1}), "mlp_ratio -1"),
        "depth": (lambda m: m["network"].update(config={**compact, "depths": [1, 1, 1, 1e6]}), "depths"),
        "width": (lambda m: m["network"].update(config={**compact, "embed_dims": [1_600_000, 64, 128, 160]}),
                  "embed_dims"),
        "patch": (lambda m: m.update(patch_size=[65536, 65536]), "greater than the maximum of 4096"),
        "classes": (lambda m: m["network"].update(num_classes=100_000_000), "num_classes"),
        "params": (lambda m: m["network"].update(config=huge), "M parameters"),
    }
    folders = {name: copy_package(small_package, tmp_path / name, change) for name, (change, _) in variants.items()}
    code = ("import json, sys\nfrom unimiss.zoo import ModelPackage, ModelPackageError\nout = {}\n"
            "for folder in sys.argv[1:]:\n"
            "    try:\n        ModelPackage.load(folder).build_network()\n        out[folder] = 'built'\n"
            "    except ModelPackageError as exc:\n        out[folder] = str(exc)\nprint(json.dumps(out))\n")
    proc = capped(list(folders.values()), gb=2.5, code=code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    messages = json.loads(proc.stdout)
    for name, (_, fragment) in variants.items():
        message = messages[str(folders[name])]
        assert message.startswith(str(folders[name])) and fragment in message and "\n" not in message, (name, message)


def test_a_tiny_checkpoint_asking_for_a_huge_image_size_is_refused(tmp_path):
    checkpoint = tmp_path / "tiny.pth"
    torch.save({"teacher": {"backbone.transformer.cls_tokens1": torch.zeros(1, 1, 64)},
                "args": argparse.Namespace(img_size2D=12288, img_size3D=[16, 96, 96])}, checkpoint)
    assert checkpoint.stat().st_size < 4096
    proc = capped(["mit", "inspect", checkpoint], gb=2.5)
    assert_one_line_error(proc, str(checkpoint), "image size")


# 10: the working grid is estimated and bounded before inference ---------------------------------------------------

def test_preflight_estimates_the_working_grid_from_the_header():
    ct = default_model(3)
    target = ct.preprocessing["spacing"]
    found = preflight.estimate((64, 64, 40), (12.0, 12.0, 12.0), np.eye(3).ravel(), 2, ct)
    assert found.grid == tuple(round(n * 12 / t) for n, t in zip((40, 64, 64), target[::-1]))
    assert found.windows > 100 and found.peak_bytes > 2 * np.prod(found.grid)
    with pytest.raises(preflight.ResourceError, match=r"case\.nii: .* would need about .* GB of memory \(working "
                                                      r"grid .* windows .*--max-memory-gb \d+"):
        preflight.check(ImageData(np.zeros((40, 64, 64), np.int16), (12.0,) * 3, (0.0,) * 3, np.eye(3).ravel()),
                        ct, max_memory_gb=0.5, source="case.nii")


def test_a_header_spacing_that_explodes_the_working_grid_is_refused_with_numbers(tmp_path):
    ct = tmp_path / "ct.nrrd"
    crafted_ct(ct, spacing=(100.0, 100.0, 100.0))  # a small file whose working grid would be ~1e10 voxels
    proc = capped(["segment", ct, "-o", tmp_path / "out.seg.nrrd", "--progress", "jsonl"], gb=3)
    assert_one_line_error(proc, str(ct), "working grid", "--max-memory-gb")
    assert not events(proc, "progress")
    assert not (tmp_path / "out.seg.nrrd").exists()


def test_a_huge_header_is_refused_before_its_voxels_are_read(tmp_path):
    data = tmp_path / "huge.raw"
    with open(data, "wb") as f:  # sparse: 1500^3 bytes that take no disk and would take 3.4 GB to read
        f.truncate(1500**3)
    header = tmp_path / "huge.nhdr"
    header.write_text("NRRD0004\ntype: uint8\ndimension: 3\nspace: left-posterior-superior\nsizes: 1500 1500 1500\n"
                      "space directions: (1,0,0) (0,1,0) (0,0,1)\nencoding: raw\nspace origin: (0,0,0)\n"
                      "data file: huge.raw\n\n")
    proc = capped(["segment", header, "-o", tmp_path / "out.seg.nrrd", "--max-memory-gb", "1"], gb=2.5)
    assert_one_line_error(proc, str(header), "1500 x 1500 x 1500", "--max-memory-gb")


# 11: files are sized before they are read -----------------------------------------------------------------------

def test_model_json_is_sized_before_it_is_read(tmp_path):
    folder = tmp_path / "sparse"
    folder.mkdir()
    with open(folder / "model.json", "wb") as f:
        f.truncate(3 * GB)
    (folder / "weights.safetensors").write_bytes(b"0")
    proc = capped(["models", "info", folder], gb=1.5)
    assert_one_line_error(proc, str(folder), "model.json is larger than")


def test_a_zip_member_larger_than_its_network_is_not_unpacked(small_package, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(small_package.root / "model.json", "model.json")
        with archive.open("weights.safetensors", "w", force_zip64=True) as member:
            zeros = bytes(1 << 20)
            for _ in range(64):
                member.write(zeros)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(ModelPackageError, match=r"bomb\.zip: weights\.safetensors would unpack to 67,108,864 bytes"):
        ModelPackage.load(bomb)
    assert list((tmp_path / "tmp").iterdir()) == []
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as archive:
        for i in range(1001):
            archive.writestr(f"f{i}", b"")
    with pytest.raises(ModelPackageError, match=r"many\.zip: holds 1001 files"):
        ModelPackage.load(many)


def test_a_labelmap_with_a_huge_voxel_value_is_evaluated_in_bounded_memory(tmp_path):
    import slicerio

    voxels = np.zeros((8, 8, 8), np.uint32)
    voxels[2:5, 2:5, 2:5], voxels[0, 0, 0] = 1, 10**9
    path = tmp_path / "odd.seg.nrrd"
    slicerio.write_segmentation(str(path), {
        "voxels": voxels, "ijkToLPS": np.eye(4), "containedRepresentationNames": ["Binary labelmap"],
        "segments": [{"id": "Segment_1", "name": "liver", "labelValue": 1, "layer": 0, "color": [1, 0, 0]}]})
    assert path.stat().st_size < 2048
    proc = capped(["evaluate", path, path], gb=2)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["labels"]["liver"]["dice"] == 1.0


# 12: one line for damaged files and faults ------------------------------------------------------------------------

def _zip_variants(package, tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as archive:
        archive.write(package.root / "model.json", "model.json", compress_type=zipfile.ZIP_DEFLATED)
        archive.write(package.weights_path, "weights.safetensors", compress_type=zipfile.ZIP_STORED)
    raw = good.read_bytes()
    with zipfile.ZipFile(good) as archive:
        info = archive.getinfo("weights.safetensors")
    local, central = info.header_offset, raw.rindex(b"PK\x01\x02")  # the weights' entries (written last)
    data = local + 30 + int.from_bytes(raw[local + 26:local + 28], "little") + int.from_bytes(
        raw[local + 28:local + 30], "little")

    def patched(name, edits, length=len(raw)):
        b = bytearray(raw)
        for offset, value in edits:
            b[offset:offset + len(value)] = value
        (tmp_path / name).write_bytes(bytes(b[:length]))
        return tmp_path / name

    return {
        "crc": (patched("crc.zip", [(data + 1000, bytes([raw[data + 1000] ^ 0xFF]))]), "Bad CRC-32"),
        "method": (patched("method.zip", [(local + 8, b"\x63\x00"), (central + 10, b"\x63\x00")]), "compression"),
        "encrypted": (patched("encrypted.zip", [(local + 6, b"\x01\x00"), (central + 8, b"\x01\x00")]), "encrypted"),
        "truncated": (patched("truncated.zip", [], len(raw) // 2), "not a model package"),
    }


def test_damaged_zips_give_one_line_naming_the_file(small_package, tmp_path, monkeypatch, capsys, home):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp" / f"unimiss-model-{dead_pid()}-left").mkdir(parents=True)  # from a killed process
    for name, (path, fragment) in _zip_variants(small_package, tmp_path).items():
        status, out, err = run_main(["models", "import", path], capsys)
        assert status == 2 and len(err) == 1 and str(path) in err[0] and fragment in err[0], (name, err)
    assert list((tmp_path / "tmp").iterdir()) == []  # nothing half-extracted is left
    assert not user_models_dir().exists() or not any(user_models_dir().iterdir())


def test_a_full_disk_while_saving_weights_is_one_line(tmp_path):
    code = ("import resource, signal, sys\nfrom testkit import make_package\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
            "from unimiss.zoo import ModelPackageError\n"
            "try:\n    make_package(sys.argv[1], 'full', 2, ['lung'], {'size': [64, 64], 'intensity': "
            "{'method': 'zscore'}}, (64, 64))\nexcept ModelPackageError as exc:\n    print(exc)\n")
    proc = capped([tmp_path], gb=2.5, code=code, env={"PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 0 and proc.stdout.startswith(f"{tmp_path / 'full-1.0.0'}: could not write "
                                                           "weights.safetensors"), proc.stdout + proc.stderr
    assert not any((tmp_path / "full-1.0.0").iterdir())  # no half-written file under any name


@pytest.mark.parametrize("raised, status, fragment", [
    (MemoryError(), 2, "out of memory"),
    (OSError(28, "No space left on device", "/data/out.seg.nrrd"), 2, "/data/out.seg.nrrd: no space left on the disk"),
    (OSError(22, "Invalid argument", "/data/a:b.nrrd"), 2, "/data/a:b.nrrd: Invalid argument"),
    (ZeroDivisionError("boom"), 3, "internal error (ZeroDivisionError: boom); this is a bug in unimiss"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_every_failure_is_one_line_and_an_error_event(monkeypatch, capsys, home, raised, status, fragment):
    def fail(args):
        raise raised

    monkeypatch.setattr(cli, "_evaluate", fail)
    code, out, err = run_main(["evaluate", "a.seg.nrrd", "b.seg.nrrd"], capsys)
    assert code == status and len(err) == 1 and fragment in err[0], err
    monkeypatch.setattr(cli, "_segment", fail)
    code, out, err = run_main(["segment", "x.nii", "-o", "y.seg.nrrd", "--progress", "jsonl"], capsys)
    assert code == status and [json.loads(l) for l in out.splitlines()][-1]["event"] == "error"
    if status == 3:  # the traceback is in the log file the line names
        log = Path(err[0].rsplit("the details are in ", 1)[1])
        assert log.parent == home / "logs" and "ZeroDivisionError: boom" in log.read_text()


def test_a_failed_preview_does_not_stop_the_batch(small_package, tmp_path, home, capsys):
    images = []
    for name in ("a", "b"):
        images.append(tmp_path / f"{name}.png")
        sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(1).integers(0, 255, (64, 64), np.uint8)),
                        str(images[-1]))
    out = tmp_path / "out"
    (out / "a-preview.png").mkdir(parents=True)  # the preview of a cannot be written
    status, out_text, err = run_main(["segment", *images, "-o", out, "--model", small_package.root, "--preview",
                                      "--progress", "jsonl"], capsys)
    assert status == 1 and any("a-preview.png: the preview could not be written" in line for line in err), err
    assert (out / "a.seg.nrrd").is_file() and (out / "b.seg.nrrd").is_file() and (out / "b-preview.png").is_file()
    # 6: each result says which copy of the model ran.
    stream = [json.loads(line) for line in out_text.splitlines()]
    results = [e for e in stream if e["event"] == "result" and e.get("model")]
    assert len(results) == 2 and {(e["model_origin"], e["model_path"]) for e in results} == {
        ("file", str(small_package.root))}
    assert [e for e in stream if e["event"] == "start"][0]["model_path"] == str(small_package.root)


def test_models_info_shows_terminal_escapes_instead_of_acting_on_them(small_package, tmp_path, capsys, home):
    folder = copy_package(small_package, tmp_path / "ansi", lambda m: m.update(description="\x1b[2J\x1b[31mred"))
    status, out, _ = run_main(["models", "info", folder], capsys)
    assert status == 0 and "\x1b" not in out and "\\x1b[31mred" in out


# 13, 14, 15: settings checked before work; resume; work files and leftovers --------------------------------------

@pytest.fixture(scope="module")
def one_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("case")
    image = crafted_ct(root / "case.nrrd", size=(24, 48, 48), spacing=(4.0, 4.0, 4.0))
    mask = np.zeros(image.array.shape, np.uint8)
    mask[8:16, 10:30, 10:30] = 1
    write_labelmap(image.with_array(mask), root / "case.seg.nrrd", [Label(1, "liver")])
    return root / "case.nrrd", root / "case.seg.nrrd"


FAST = ["--patch-size", "32", "64", "64", "--spacing", "2", "2", "2", "--batch-size", "1", "--precision", "fp32",
        "--iterations", "1", "--progress", "jsonl"]


@pytest.mark.parametrize("change, fragment", [
    (["--epochs", "0"], "--epochs must be at least 1, not 0"),
    (["--iterations", "0"], "--iterations must be at least 1, not 0"),
    (["--batch-size", "-2"], "--batch-size must be at least 1, not -2"),
    (["--name", "My Model"], "--name 'My Model' cannot name a model"),
    (["--workdir", "/proc/unimiss-work"], "/proc/unimiss-work/checkpoint.pt: cannot be written"),
])
def test_finetune_settings_are_checked_before_training(one_case, capsys, home, change, fragment):
    status, out, err = run_main(["finetune", "--images", one_case[0], "--labels", one_case[1], *FAST, *change],
                                capsys)
    assert status == 2 and len(err) == 1 and fragment in err[0], err
    assert not any(json.loads(l)["event"] == "progress" for l in out.splitlines())


def test_segment_checks_its_output_before_inference(capsys, home):
    status, out, err = run_main(["segment", "--sample", "ct", "-o", "/proc/unimiss/out.seg.nrrd", "--progress",
                                 "jsonl"], capsys)
    assert status == 2 and "/proc/unimiss/out.seg.nrrd: cannot be written" in err[0]
    assert not [l for l in out.splitlines() if '"progress"' in l]


def test_interrupted_finetune_says_how_to_resume_and_resume_checks_its_settings(one_case, tmp_path, capsys, home,
                                                                                   monkeypatch):
    from unimiss.progress import Progress

    args = ["finetune", "--images", one_case[0], "--labels", one_case[1], *FAST, "--epochs", "3", "--name", "r"]
    work = one_case[0].parent / "unimiss-finetune-r"  # beside the data by default
    status, _, err = run_main([*args, "--resume"], capsys)
    assert status == 2 and f"{work}: nothing to resume" in err[0]

    original = Progress.metric

    def stop_in_epoch_2(self, **fields):  # as Ctrl+C would, after epoch 1's checkpoint
        original(self, **fields)
        if fields["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Progress, "metric", stop_in_epoch_2)
    status, out, err = run_main(args, capsys)
    monkeypatch.setattr(Progress, "metric", original)
    assert status == 130 and (work / "checkpoint.pt").is_file()
    stopped = [e["text"] for e in map(json.loads, out.splitlines()) if e["event"] == "message" and "stopped" in e["text"]]
    assert stopped and f"{work / 'checkpoint.pt'} holds epoch 1" in stopped[0] and "--resume" in stopped[0]

    status, _, err = run_main(args, capsys)  # a new run does not overwrite the unfinished one
    assert status == 2 and "an unfinished run left its checkpoint here; pass --resume" in err[0]
    other = one_case[1].parent / "other.seg.nrrd"
    mask = np.zeros((24, 48, 48), np.uint8)
    mask[4:12, 20:40, 20:40] = 1
    write_labelmap(ImageData(mask, (4.0,) * 3, (0.0,) * 3, np.eye(3).ravel()), other, [Label(1, "spleen")])
    status, _, err = run_main([*args[:4], other, *args[5:], "--resume"], capsys)
    assert status == 2 and "cannot resume with other settings: labels" in err[0] and '["liver"]' in err[0]
    status, _, err = run_main([*args, "--resume", "--patch-size", "32", "96", "96"], capsys)
    assert status == 2 and "patch_size [32, 64, 64] in the checkpoint, [32, 96, 96] now" in err[0]

    # A tampered checkpoint is refused by the safe loader: its pickled call never runs.
    marker = tmp_path / "ran"
    good = (work / "checkpoint.pt").read_bytes()

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"model": Exploit()}, work / "checkpoint.pt")
    status, _, err = run_main([*args, "--resume"], capsys)
    assert status == 2 and "refused to load" in err[0] and not marker.exists()
    (work / "checkpoint.pt").write_bytes(good)
    status, out, err = run_main([*args, "--resume"], capsys)
    assert status == 0, err
    assert (home / "models" / "r-1.0.0" / "model.json").is_file() and not work.exists()  # work files cleaned


def test_leftovers_of_dead_processes_are_removed_and_a_killed_replace_keeps_the_model(small_package, tmp_path,
                                                                                        home, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import_model(small_package.root)
    installed = user_models_dir() / "tiny-cxr-1.0.0"
    # A replace killed between its two renames: the installed model was renamed aside and never put back.
    newer = copy_package(small_package, tmp_path / "newer", lambda m: m.update(description="newer"))
    code = ("import os, signal, sys\nfrom unimiss.zoo import import_model\nreal, calls = os.replace, []\n"
            "def replace(a, b):\n    calls.append(a)\n    if len(calls) == 2:\n        os.kill(os.getpid(), signal.SIGKILL)\n"
            "    real(a, b)\nos.replace = replace\nimport_model(sys.argv[1], replace=True)\n")
    proc = capped([newer], code=code, env={"UNIMISS_HOME": str(home)})
    assert proc.returncode == -signal.SIGKILL and not installed.exists()
    pid = dead_pid()
    leftovers = [user_models_dir() / f".tiny-cxr-1.0.0.tmp-{pid}-abc", tmp_path / "tmp" / f"unimiss-model-{pid}-xyz"]
    for folder in leftovers:
        folder.mkdir()
    assert [p.reference for p in list_models() if not p.is_builtin] == ["tiny-cxr@1.0.0"]  # the old copy is back
    assert ModelPackage.load(installed).meta.get("description") != "newer"
    assert sorted(p.name for p in user_models_dir().iterdir()) == ["tiny-cxr-1.0.0"]
    assert not any(p.exists() for p in leftovers)
    assert import_model(newer, replace=True).meta["description"] == "newer"
    assert model_origin(ModelPackage.load(installed)) == {"model_origin": "user", "model_path": str(installed)}


def test_errors_describe_os_errors_with_their_file():
    assert errors.describe(OSError(28, "No space left on device", "/d/x.nii.gz")) == \
        "/d/x.nii.gz: no space left on the disk"
    assert errors.describe(FileNotFoundError(2, "No such file or directory", "/a", None, "/b")) == \
        "/a -> /b: No such file or directory"
    assert errors.one_line("a\x1b[31m\nb") == "a\\x1b[31m b"


def test_case_lists_with_malformed_entries_are_one_line_naming_the_file(tmp_path, capsys, home):
    data = tmp_path / "Task"
    (data / "imagesTr").mkdir(parents=True)
    (data / "labelsTr").mkdir()
    (data / "dataset.json").write_text('{"labels": {"1": ["liver"]}}')  # a list where a name belongs
    table = tmp_path / "cases.csv"
    table.write_text("image,label\ncase.nrrd\n")  # a row with too few fields
    for args, path in ((["--data", data], data / "dataset.json"), (["--csv", table], table)):
        status, _, err = run_main(["finetune", *args], capsys)
        assert status == 2 and len(err) == 1 and err[0].startswith(f"unimiss: error: {path}: "), err
