"""What the module needs in Slicer's Python: torch and the `unimiss` core, installed on first use if the user agrees."""
from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path
from typing import Callable

MODULE_DIR = Path(__file__).resolve().parents[1]   # UniMiSSSlicer/ (source tree) or the installed module folder
REQUIREMENTS = MODULE_DIR / "Resources" / "requirements.txt"


def bundledCoreSource() -> Path | None:
    """The UniMiSSCore source shipped with the extension (installed beside the module), or the source tree's."""
    for candidate in (MODULE_DIR / "UniMiSSCore", MODULE_DIR.parent / "UniMiSSCore"):
        if (candidate / "pyproject.toml").is_file() and (candidate / "unimiss").is_dir():
            return candidate
    return None


class Dependencies:
    """Check for, and install, torch and unimiss.

    `confirm(text) -> bool` asks the user; `pipInstall(args)` installs (slicer.util.pip_install in Slicer);
    `installTorch()` installs torch through the PyTorch extension's PyTorchUtils when it is there. All three
    are injectable, so the choice of what to install can be tested without installing anything.
    """

    def __init__(self, confirm: Callable[[str], bool] | None = None, pipInstall: Callable | None = None,
                 installTorch: Callable[[], bool] | None = None, coreSource: Path | None = None):
        self.confirm = confirm or _slicerConfirm
        self.pipInstall = pipInstall or _slicerPipInstall
        self.installTorch = installTorch or _pytorchUtilsInstall
        self.coreSource = coreSource if coreSource is not None else bundledCoreSource()

    def missing(self) -> list[str]:
        return [name for name in ("torch", "unimiss") if importlib.util.find_spec(name) is None]

    def coreRequirement(self) -> list[str]:
        """pip arguments for the core: the bundled source when present, else the requirements file (PyPI)."""
        if self.coreSource is not None:
            return [str(self.coreSource)]
        lines = [l.strip() for l in REQUIREMENTS.read_text().splitlines() if l.strip() and not l.startswith("#")]
        return lines

    def ensure(self) -> bool:
        """True when everything is there (installing it first if the user agrees); False if they decline."""
        missing = self.missing()
        if not missing:
            return True
        text = ("UniMiSS needs these Python packages, which are not installed yet: " + ", ".join(missing) + ".\n\n"
                "Install them now? This downloads several hundred MB (PyTorch) and can take a few minutes; "
                "Slicer may seem busy meanwhile.")
        if not self.confirm(text):
            return False
        if "torch" in missing and not self.installTorch():
            self.pipInstall(["torch"])
        if "unimiss" in missing:
            self.pipInstall(self.coreRequirement())
        importlib.invalidate_caches()
        still = self.missing()
        if still:
            raise RuntimeError(f"Installing {', '.join(still)} did not succeed; "
                               "see the Python console for pip's output.")
        return True


def _slicerConfirm(text: str) -> bool:
    import slicer

    return slicer.util.confirmOkCancelDisplay(text, "UniMiSS: install dependencies")


def _slicerPipInstall(arguments) -> None:
    import slicer

    slicer.util.pip_install(list(arguments))


def _pytorchUtilsInstall() -> bool:
    """torch through the PyTorch extension, which picks the build that fits the GPU; False when absent."""
    try:
        import PyTorchUtils
    except ImportError:
        return False
    try:
        return PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False) is not None
    except Exception as exc:  # the extension's own errors: fall back to pip
        logging.warning(f"PyTorchUtils could not install torch ({exc}); trying pip")
        return False
