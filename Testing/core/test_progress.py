"""What a run prints: plain progress lines on stdout into a pipe or a log (stderr kept for errors), nothing with
--progress none."""
from __future__ import annotations

import re

import pytest
import SimpleITK as sitk

from testkit import DATA, run_unimiss
from unimiss.cli import main
from unimiss.progress import Progress

LINE = re.compile(r"^segment: (\w[\w ()]*) (\d+)% \((\d+)/(\d+)\)$")
FINETUNE_LINE = re.compile(r"^finetune: epoch 1 (\d+)% \((\d+)/100\)$")


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    """An upper-abdomen block of the real ts-abdomen CT: a few windows of the test model."""
    path = tmp_path_factory.mktemp("progress") / "ct.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(DATA / "ct" / "ts-abdomen" / "image.nii.gz"))[20:100, 20:90, 60:100], str(path))
    return path


def test_auto_progress_into_a_pipe_prints_stages_with_percent(tmp_path, model_home, ct):
    out = tmp_path / "ct.seg.nrrd"
    proc = run_unimiss(["segment", ct, "-o", out, "--model", "test-ct"], env={"UNIMISS_HOME": str(model_home)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # errors alone go there, so that an error stays one line
    lines = proc.stdout.splitlines()
    progress = [LINE.match(line) for line in lines if LINE.match(line)]
    stages = {m[1] for m in progress}
    assert {"inference", "resample"} <= stages, proc.stderr
    for stage in stages:  # each stage ends with its 100 % line
        last = [m for m in progress if m[1] == stage][-1]
        assert last[2] == "100" and last[3] == last[4]
    assert any(line.startswith(f"segment: wrote {out}") for line in lines)


def test_progress_none_is_silent(tmp_path, model_home, ct, capfd, monkeypatch):
    monkeypatch.setenv("UNIMISS_HOME", str(model_home))
    status = main(["segment", str(ct), "-o", str(tmp_path / "ct.seg.nrrd"), "--model", "test-ct", "--progress", "none"])
    assert status == 0 and capfd.readouterr() == ("", "")
    assert (tmp_path / "ct.seg.nrrd").is_file()


def test_plain_lines_are_rate_bounded(capsys, monkeypatch):
    clock = iter(float(t) for t in range(0, 10_000))
    monkeypatch.setattr("unimiss.progress.time.monotonic", lambda: next(clock))  # one second per call
    progress = Progress("lines", "finetune")
    progress.LINE_INTERVAL_S = 10.0
    for _ in range(30):  # a slow start: no line for 0 %, however long it takes
        progress.progress("epoch 1", 0, 100)
    assert capsys.readouterr().out == ""
    for done in range(1, 101):
        progress.progress("epoch 1", done, 100)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "finetune: epoch 1 100% (100/100)"
    assert 9 <= len(lines) <= 11  # one line per ten seconds, plus the end, not one per step
    assert all(FINETUNE_LINE.match(line) for line in lines)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="auto, tqdm, lines, jsonl or none"):
        Progress("loud")
