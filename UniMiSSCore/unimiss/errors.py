"""How the command line turns failures into one line: expected problems, lack of memory, internal errors.

Expected problems (bad input, a missing file, a full disk) are ValueErrors and OSErrors whose
message names the file. Anything else is a bug: the user gets one line saying so and naming a log
file that holds the traceback, to attach to a report.
"""
from __future__ import annotations

import datetime
import errno
import os
import sys
import tempfile
import traceback
from pathlib import Path


def one_line(text, limit: int = 600) -> str:
    """Whitespace collapsed, control characters (terminal escapes) escaped, long text shortened."""
    text = " ".join(str(text).split())
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_os_error(exc: OSError) -> str:
    """`file: what happened`, for OSErrors that carry a file name (no space left, permission, Errno 22...)."""
    what = exc.strerror or one_line(exc) or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        what = "no space left on the disk"
    elif exc.errno == errno.EINVAL:
        what = f"{what} (the name or the file system does not allow this)"
    if exc.filename is not None:
        target = f" -> {exc.filename2}" if exc.filename2 is not None else ""
        return f"{exc.filename}{target}: {what}"
    return one_line(exc) if exc.strerror is None else what


def describe(exc: BaseException) -> str:
    """The one-line message for an expected failure."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return one_line(describe_os_error(exc))
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return ("out of memory" + (f" ({one_line(exc, 200)})" if str(exc) else "")
                + "; try a smaller --batch-size, fewer images at once, or a machine with more memory")
    text = one_line(exc)
    return text or type(exc).__name__


def is_expected(exc: BaseException) -> bool:
    return isinstance(exc, (ValueError, OSError, MemoryError)) or type(exc).__name__ == "OutOfMemoryError"


def log_folder() -> Path:
    """$UNIMISS_HOME/logs when set, else unimiss-logs in the temporary folder."""
    home = os.environ.get("UNIMISS_HOME")
    return Path(home).expanduser() / "logs" if home else Path(tempfile.gettempdir()) / "unimiss-logs"


def write_crash_log(exc: BaseException, argv=None) -> Path | None:
    """The traceback of an unexpected error, in a new file; None when even that cannot be written."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = (f"unimiss {' '.join(map(str, argv if argv is not None else sys.argv[1:]))}\n"
            f"python {sys.version.split()[0]} on {sys.platform}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    for folder in (log_folder(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"crash-{stamp}-{os.getpid()}.log"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def check_writable(path) -> None:
    """Raise OSError (naming `path`) unless a file can be created at `path`; run before any long work."""
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if path.is_dir():
        raise OSError(errno.EISDIR, "is a folder, not a file name", str(path))
    if not folder.is_dir():
        raise OSError(errno.ENOTDIR, f"cannot be created: {folder} is not a folder", str(path))
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".unimiss-write-check-{os.getpid()}-"):
            pass
    except OSError as exc:
        raise OSError(exc.errno, f"cannot be written ({exc.strerror or one_line(exc)})", str(path)) from None
