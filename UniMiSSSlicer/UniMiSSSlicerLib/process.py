"""Run a command in the background and hand its JSON-line events to the caller's thread.

The GUI calls `poll()` from a timer (every 100 ms or so); tests and scripts call `wait()`.
Two reader threads turn the child's stdout and stderr into queue items, so no call here
ever blocks the caller on the child's output. `cancel()` kills the whole process tree.
"""
from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

_STDERR_LINES = 50
_PIPE_GRACE_S = 3.0  # how long output may still arrive after the child exited (a stray grandchild may hold the pipes)


@dataclass
class ProcessOutcome:
    """How a background run ended. `value` is filled in by whoever interprets the run (e.g. a node)."""

    status: str                      # "done", "failed" or "cancelled"
    message: str = ""                # a readable reason when not done
    returncode: int | None = None
    results: list = field(default_factory=list)   # the run's {"event": "result", ...} events
    value: object = None

    @property
    def ok(self) -> bool:
        return self.status == "done"


_CREATE_NEW_PROCESS_GROUP = 0x00000200  # Windows process creation flags (subprocess has them on Windows only)
_CREATE_NO_WINDOW = 0x08000000
_STARTF_USESHOWWINDOW, _SW_HIDE = 0x00000001, 0


def popen_options(os_name: str) -> dict:
    """The child leads a process group of its own (so that Cancel kills its whole tree); on Windows it also
    gets no console window, as Slicer's own launchConsoleProcess does."""
    if os_name != "nt":
        return {"start_new_session": True}
    options = {"creationflags": _CREATE_NEW_PROCESS_GROUP | _CREATE_NO_WINDOW}
    if hasattr(subprocess, "STARTUPINFO"):
        info = subprocess.STARTUPINFO()
        info.dwFlags |= _STARTF_USESHOWWINDOW
        info.wShowWindow = _SW_HIDE
        options["startupinfo"] = info
    return options


def _kill_tree(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the child leads its own process group
        except ProcessLookupError:
            pass


class BackgroundProcess:
    """One child process whose stdout carries `--progress jsonl` events.

    on_event(event: dict) is called for each event, on_finished(outcome) once at the end, both
    from `poll()`, i.e. in the thread that polls (the GUI thread in Slicer).
    """

    def __init__(self, command: list[str], env: dict | None = None, cwd=None,
                 on_event: Callable[[dict], None] | None = None,
                 on_finished: Callable[[ProcessOutcome], None] | None = None):
        self.command = [str(c) for c in command]
        self.env = env
        self.cwd = cwd
        self.on_event = on_event
        self.on_finished = on_finished
        self.outcome: ProcessOutcome | None = None
        self._process: subprocess.Popen | None = None
        self._queue: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stderr = collections.deque(maxlen=_STDERR_LINES)
        self._error_event = ""
        self._results: list = []
        self._cancelled = False
        self._exited_at = None

    # ------------------------------------------------------------------------------------ control

    def start(self) -> "BackgroundProcess":
        self._process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.env, cwd=self.cwd, text=True, encoding="utf-8", errors="replace", bufsize=1,
            **popen_options(os.name))
        for stream, kind in ((self._process.stdout, "stdout"), (self._process.stderr, "stderr")):
            thread = threading.Thread(target=self._read, args=(stream, kind), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def cancel(self) -> None:
        """Kill the process and all it started; `poll()` then finishes with status "cancelled"."""
        if self._process is None or self.outcome is not None:
            return
        self._cancelled = True
        _kill_tree(self._process)

    @property
    def running(self) -> bool:
        return self._process is not None and self.outcome is None

    def poll(self) -> bool:
        """Deliver what arrived since the last call; returns True while the run goes on."""
        if self.outcome is not None:
            return False
        self._drain()
        if self._process.poll() is None:
            return True
        self._exited_at = self._exited_at or time.monotonic()
        readers_done = not any(t.is_alive() for t in self._threads)
        if not readers_done and time.monotonic() - self._exited_at < _PIPE_GRACE_S:
            return True
        self._drain()
        self._finish()
        return False

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> ProcessOutcome:
        """Poll until the run ends (for tests and scripts; the GUI polls from a timer instead)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                deadline = None
            time.sleep(interval)
        return self.outcome

    # ------------------------------------------------------------------------------------ internals

    def _read(self, stream, kind: str) -> None:
        for line in stream:
            self._queue.put((kind, line.rstrip("\r\n")))
        stream.close()

    def _drain(self) -> None:
        while True:
            try:
                kind, line = self._queue.get_nowait()
            except queue.Empty:
                return
            if kind == "stderr":
                if line.strip():
                    self._stderr.append(line.strip())
                continue
            event = _parse(line)
            if event is None:
                continue
            if event.get("event") == "error":
                self._error_event = str(event.get("message", ""))
            elif event.get("event") == "result":
                self._results.append(event)
            if self.on_event is not None:
                self.on_event(event)

    def _finish(self) -> None:
        code = self._process.returncode
        if self._cancelled:
            outcome = ProcessOutcome("cancelled", "cancelled", code, self._results)
        elif code == 0 and not self._error_event:
            outcome = ProcessOutcome("done", "", code, self._results)
        else:
            outcome = ProcessOutcome("failed", self._failure_message(code), code, self._results)
        self.outcome = outcome
        if self.on_finished is not None:
            self.on_finished(outcome)

    def _failure_message(self, code) -> str:
        if self._error_event:
            return self._error_event
        lines = [l for l in self._stderr if not l.startswith(("Traceback", "File ", "^", "~"))]
        last = lines[-1] if lines else ""
        if last.startswith("unimiss: error: "):
            last = last[len("unimiss: error: "):]
        if last:
            return last
        if code is not None and code < 0:
            return f"the process was killed by signal {-code} (out of memory?)"
        return f"the process ended with exit code {code} and no message"


def _parse(line: str) -> dict | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def python_executable() -> str:
    """The Python that runs the core: Slicer's PythonSlicer launcher inside Slicer, else this interpreter."""
    import shutil

    slicer_python = shutil.which("PythonSlicer")
    return slicer_python or sys.executable
