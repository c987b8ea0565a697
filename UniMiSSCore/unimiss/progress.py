"""One event stream for terminals and GUIs.

Every long-running command reports through a `Progress`: progress within a
stage, free-text messages, metrics, results and errors. Rendered as tqdm bars
and plain lines on a terminal, or as JSON lines on stdout for a GUI
(`--progress jsonl`; see DESIGN.md), or not at all.
"""
from __future__ import annotations

import json
import sys
import time


class Progress:
    def __init__(self, mode: str = "auto"):
        if mode == "auto":
            mode = "tqdm" if sys.stderr.isatty() else "none"
        if mode not in ("tqdm", "jsonl", "none"):
            raise ValueError(f"unknown progress mode {mode!r}; choose tqdm, jsonl or none")
        self.mode = mode
        self._bar = None
        self._stage = None

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

    def message(self, text: str) -> None:
        if self.mode == "jsonl":
            self._emit({"event": "message", "text": text})
        elif self.mode == "tqdm":
            self._write(text)

    def metric(self, **fields) -> None:
        if self.mode == "jsonl":
            self._emit({"event": "metric", **fields})
        elif self.mode == "tqdm":
            self._write(" ".join(f"{k}={_fmt(v)}" for k, v in fields.items()))

    def result(self, path, **fields) -> None:
        if self.mode == "jsonl":
            self._emit({"event": "result", "path": str(path), **fields})
        else:
            self._write(f"wrote {path}", force=True)

    def error(self, message: str) -> None:
        self.close()
        if self.mode == "jsonl":
            self._emit({"event": "error", "message": message})
        print(f"unimiss: error: {message}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar, self._stage = None, None

    def _write(self, text: str, force: bool = False) -> None:
        if self.mode == "none" and not force:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)


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
