"""The background process runner: events in the caller's thread, readable errors, Cancel kills the tree."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from UniMiSSSlicerLib.process import BackgroundProcess


def python(code: str, **kwargs) -> BackgroundProcess:
    return BackgroundProcess([sys.executable, "-c", code], **kwargs).start()


def test_events_arrive_in_order_and_other_output_is_ignored():
    events = []
    code = ("import json, sys\n"
            "print('a plain line')\n"
            "for i in range(3):\n"
            "    print(json.dumps({'event': 'progress', 'stage': 's', 'done': i, 'total': 3}), flush=True)\n"
            "print('{not json')\n"
            "print(json.dumps({'event': 'result', 'path': 'x.seg.nrrd'}))\n"
            "print('warning: something', file=sys.stderr)\n")
    outcome = python(code, on_event=events.append).wait(timeout=30)
    assert outcome.ok and outcome.returncode == 0
    assert [e.get("done") for e in events if e["event"] == "progress"] == [0, 1, 2]
    assert outcome.results == [{"event": "result", "path": "x.seg.nrrd"}]


def test_failures_give_one_readable_line():
    error_event = ("import json, sys\nprint(json.dumps({'event': 'error', 'message': 'x.nii.gz: the file is empty'}))\n"
                   "print('unimiss: error: x.nii.gz: the file is empty', file=sys.stderr); sys.exit(2)")
    assert python(error_event).wait(timeout=30).message == "x.nii.gz: the file is empty"
    traceback = python("raise RuntimeError('CUDA out of memory')").wait(timeout=30)
    assert traceback.status == "failed" and traceback.message == "RuntimeError: CUDA out of memory"
    silent = python("import sys; sys.exit(3)").wait(timeout=30)
    assert silent.status == "failed" and "exit code 3" in silent.message


def test_poll_never_waits_for_the_child():
    process = python("import time; time.sleep(3)")
    start = time.monotonic()
    for _ in range(10):
        assert process.poll()
    assert time.monotonic() - start < 0.5
    process.cancel()
    assert process.wait(timeout=30).status == "cancelled"


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a killed orphan may linger as a zombie until it is reaped


def test_cancel_kills_the_whole_process_tree():
    code = ("import json, subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            "print(json.dumps({'event': 'message', 'text': str(child.pid)}), flush=True)\n"
            "time.sleep(60)\n")
    finished = []
    process = BackgroundProcess([sys.executable, "-c", code], on_finished=finished.append)
    pids = []

    def on_event(event):
        pids.append(int(event["text"]))
        process.cancel()

    process.on_event = on_event
    process.start()
    start = time.monotonic()
    outcome = process.wait(timeout=60)
    assert time.monotonic() - start < 10
    assert outcome.status == "cancelled" and finished == [outcome]
    deadline = time.monotonic() + 5
    while not _gone(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pids[0]) and _gone(process._process.pid)


def test_a_unimiss_py_in_slicers_working_directory_is_never_run(logic, tmp_path, monkeypatch):
    """`python -m unimiss` puts the working directory first on sys.path: the run gets a private one."""
    planted = tmp_path / "slicer-cwd"
    planted.mkdir()
    marker = tmp_path / "planted-code-ran"
    (planted / "unimiss.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.chdir(planted)
    work = tmp_path / "run"
    work.mkdir()
    outcome = logic._run(["segment", "missing.nrrd", "-o", "out.seg.nrrd"], None, None, cleanup=work).wait(timeout=120)
    assert outcome.status == "failed" and "missing.nrrd" in outcome.message  # the real core answered
    assert not marker.exists()


def test_no_console_window_on_windows():
    from UniMiSSSlicerLib.process import popen_options

    assert popen_options("posix") == {"start_new_session": True}
    windows = popen_options("nt")
    assert windows["creationflags"] & 0x08000000  # CREATE_NO_WINDOW, as Slicer's launchConsoleProcess hides it
    assert windows["creationflags"] & 0x00000200  # its own process group: Cancel kills the tree
