"""Temporary files and folders that a killed process left behind.

Every temporary name this package creates carries the writer's process id; an entry whose
process is gone is removed the next time the same place is used. An entry whose process still
runs (or whose id now belongs to another process) is left alone.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (unknown counts as alive)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.GetLastError() == 5  # access denied: it exists
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: the process exists under another user
        return True
    return True


def stale_entries(folder, pattern: str) -> list[tuple[Path, re.Match]]:
    """Entries of `folder` whose names fully match `pattern` (with a `pid` group) and whose process is gone."""
    regex = re.compile(pattern)
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    found = []
    for entry in entries:
        match = regex.fullmatch(entry.name)
        if match and not pid_alive(int(match["pid"])):
            found.append((entry, match))
    return found


def remove(entry: Path) -> None:
    """Delete a file or folder, quietly: another process may be tidying the same place."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        try:
            entry.unlink()
        except OSError:
            pass


def remove_stale(folder, pattern: str) -> list[Path]:
    """Remove the stale entries of `folder` matching `pattern`; returns what was removed."""
    found = stale_entries(folder, pattern)
    for entry, _ in found:
        remove(entry)
    return [entry for entry, _ in found]
