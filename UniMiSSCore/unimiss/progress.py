"""One event stream for terminals and GUIs.

Every long-running command reports through a `Progress`: progress within a
stage, free-text messages, metrics, results and errors. Rendered as tqdm bars
on a terminal; as plain lines on stdout (`segment: inference 40% (12/30)`) when
the output goes to a pipe or a log file; as JSON lines on stdout for a GUI
(`--progress jsonl`; see DESIGN.md); or not at all (`--progress none`). Errors
always go to stderr, so there they stay the only line.
"""
from __future__ import annotations

import json
import sys
import time


class Progress:
    """`mode`: auto (tqdm on a terminal, else lines), tqdm, lines, jsonl or none; `command` prefixes plain lines."""

    LINE_INTERVAL_S = 5.0  # plain lines: at most one per this many seconds, plus each stage's end

    def __init__(self, mode: str = "auto", command: str = "unimiss"):
        if mode == "auto":
            mode = "tqdm" if sys.stderr.isatty() else "lines"
        if mode not in ("tqdm", "lines", "jsonl", "none"):
            raise ValueError(f"unknown progress mode {mode!r}; choose auto, tqdm, lines, jsonl or none")
        self.mode = mode
        self.command = command
        self._bar = None
        self._stage = None
        self._last_line = (None, None, time.monotonic())  # stage, percent and time of the last plain line

    def _emit(self, event: dict) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    def progress(self, stage: str, done: int, total: int) -> None:
        if self.mode == "jsonl":
            self._emit({"event": "progress", "stage": stage, "done": done, "total": total})
        elif self.mode == "tqdm":
            from tqdm import tqdm

            if self._bar is None or self._stage != stage:
                self.close()
                self._bar, self._stage = tqdm(total=total, desc=stage, leave=False, file=sys.stderr), stage
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()
            if done >= total:
                self.close()
        elif self.mode == "lines":
            self._line(stage, done, total)

    def _line(self, stage: str, done: int, total: int) -> None:
        percent = int(100 * done / total) if total else 100
        now = time.monotonic()
        last_stage, last_percent, last_time = self._last_line
        due = done >= total or (done > 0 and now - last_time >= self.LINE_INTERVAL_S)
        if due and (stage, percent) != (last_stage, last_percent):
            print(f"{self.command}: {stage} {percent}% ({done}/{total})", file=sys.stdout, flush=True)
            self._last_line = (stage, percent, now)

    def message(self, text: str) -> None:
        if self.mode == "jsonl":
            self._emit({"event": "message", "text": text})
        else:
            self._write(text)

    def metric(self, **fields) -> None:
        if self.mode == "jsonl":
            self._emit({"event": "metric", **fields})
        else:
            self._write(" ".join(f"{k}={_fmt(v)}" for k, v in fields.items()))

    def start(self, **fields) -> None:
        """Work begins with what it uses (model, model_origin, model_path): an event for GUIs; a terminal
        reads the same on each 'wrote' line."""
        if self.mode == "jsonl":
            self._emit({"event": "start", **fields})

    def result(self, path, **fields) -> None:
        if self.mode == "jsonl":
            self._emit({"event": "result", "path": str(path), **fields})
        else:
            self._write(f"wrote {path}" + (f" ({_model_text(fields)})" if "model" in fields else ""))

    def error(self, message: str) -> None:
        self.close()
        if self.mode == "jsonl":
            self._emit({"event": "error", "message": message})
        print(f"unimiss: error: {message}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar, self._stage = None, None

    def _write(self, text: str) -> None:
        if self.mode == "none":
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        elif self.mode == "lines":
            print(f"{self.command}: {text}", file=sys.stdout, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)


def _model_text(fields: dict) -> str:
    """`model name@version, built-in` or `model name@version, /path/to/its/package`."""
    where = "built-in" if fields.get("model_origin") == "built-in" else fields.get("model_path")
    return f"model {fields['model']}" + (f", {where}" if where else "")


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


class Stopwatch:
    """Seconds since creation, for 'took' messages."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start
