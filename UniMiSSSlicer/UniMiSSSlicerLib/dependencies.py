"""What the module needs in Slicer's Python: torch and the `unimiss` core, installed on first use if the user agrees.

torch comes only through the PyTorch extension (PyTorchUtils), which picks the build that fits the
computer's GPU; the core only from the copy bundled with this extension (never a package index:
the name `unimiss` there is not this project's).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

MODULE_DIR = Path(__file__).resolve().parents[1]   # UniMiSSSlicer/ (source tree) or the installed module folder
TORCH_REQUIREMENT = ">=2.4,<3"                     # as in UniMiSSCore/pyproject.toml (a test keeps them equal)
TORCH_MINIMUM = (2, 4)
_COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "dist", "*.egg-info")


class DependencyError(ValueError):
    """An install that cannot go on or did not succeed; str() is one line for the user."""


def bundledCoreSource() -> Path | None:
    """The UniMiSSCore source shipped with the extension (installed beside the module), or the source tree's."""
    for candidate in (MODULE_DIR / "UniMiSSCore", MODULE_DIR.parent / "UniMiSSCore"):
        if (candidate / "pyproject.toml").is_file() and (candidate / "unimiss").is_dir():
            return candidate
    return None


def installedTorchVersion() -> str | None:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def _versionTuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:2])


class Dependencies:
    """Check for, and install, torch and unimiss.

    `confirm(text) -> bool` asks the user; `pipInstall(args)` installs (slicer.util.pip_install in Slicer);
    `installTorch(requirement) -> bool` installs torch through PyTorchUtils, None when that extension is absent.
    All three are injectable, so what is installed, and how failures read, can be tested without installing.
    """

    def __init__(self, confirm: Callable[[str], bool] | None = None, pipInstall: Callable | None = None,
                 installTorch: Callable[[str], bool] | None = None, coreSource: Path | None = None):
        self.confirm = confirm or _slicerConfirm
        self.pipInstall = pipInstall or _slicerPipInstall
        self.installTorch = installTorch if installTorch is not None else _pytorchUtilsInstaller()
        self.coreSource = coreSource if coreSource is not None else bundledCoreSource()

    def missing(self) -> list[str]:
        """What is not usable yet: "torch" (absent or older than the core needs) and/or "unimiss"."""
        names = []
        torchVersion = installedTorchVersion() if importlib.util.find_spec("torch") is not None else None
        if torchVersion is None or _versionTuple(torchVersion) < TORCH_MINIMUM:
            names.append("torch")
        if importlib.util.find_spec("unimiss") is None:
            names.append("unimiss")
        return names

    def ensure(self) -> bool:
        """True when everything is there (installing it first if the user agrees); False if they decline.

        DependencyError (one line) when it cannot be installed here or the install failed.
        """
        missing = self.missing()
        if not missing:
            return True
        if "torch" in missing:
            self._checkTorchCanBeInstalled()
        if "unimiss" in missing and self.coreSource is None:
            raise DependencyError("The UniMiSS core that comes with this extension is missing from "
                                  f"{MODULE_DIR}: reinstall the UniMiSS extension.")
        what = {"torch": f"PyTorch (torch{TORCH_REQUIREMENT}, through the PyTorch extension, the build for "
                         "this computer's GPU; several hundred MB to download)",
                "unimiss": "the UniMiSS core library (bundled with this extension) and the packages it needs "
                           "(numpy, SimpleITK, MONAI, ...)"}
        text = ("UniMiSS needs Python packages that are not installed yet:\n\n"
                + "\n".join(f"- {what[name]}" for name in missing)
                + "\n\nInstall them now? It can take a few minutes; Slicer is busy meanwhile.")
        if not self.confirm(text):
            return False
        if "torch" in missing:
            self._run(lambda: self.installTorch(TORCH_REQUIREMENT), "PyTorch")
        if "unimiss" in missing:
            self._run(self._installCore, "the UniMiSS core")
        importlib.invalidate_caches()
        still = self.missing()
        if still:
            raise DependencyError(f"Installing {', '.join(still)} did not succeed; see the Python console for "
                                  "pip's output.")
        return True

    def _checkTorchCanBeInstalled(self) -> None:
        version = installedTorchVersion()
        if version is not None:
            raise DependencyError(f"PyTorch {version} is installed, but UniMiSS needs torch{TORCH_REQUIREMENT}: "
                                  "update it in the 'PyTorch Utils' module (version requirement "
                                  f"'{TORCH_REQUIREMENT}'), restart Slicer and try again.")
        if self.installTorch is None:
            raise DependencyError("UniMiSS needs PyTorch. Install the 'PyTorch' extension from the Extensions "
                                  "Manager (it picks the build for your GPU), restart Slicer and try again.")

    def _run(self, install: Callable, what: str) -> None:
        try:
            result = install()
        except DependencyError:
            raise
        except Exception as exc:  # pip's CalledProcessError, PyTorchUtils' own errors, a full disk...
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise DependencyError(f"Installing {what} failed ({reason}); see the Python console for details.") \
                from None
        if not result:
            raise DependencyError(f"Installing {what} did not succeed; see the Python console for details.")

    def _installCore(self) -> bool:
        """pip-install the bundled core from a private copy: pip builds in place (build/, *.egg-info), and the
        extension's folder may be read-only."""
        with tempfile.TemporaryDirectory(prefix="unimiss-core-") as folder:
            copy = Path(folder) / "UniMiSSCore"
            shutil.copytree(self.coreSource, copy, ignore=_COPY_IGNORE)
            self.pipInstall([str(copy)])
        return True


def _slicerConfirm(text: str) -> bool:
    import slicer

    return slicer.util.confirmOkCancelDisplay(text, "UniMiSS: install dependencies")


def _slicerPipInstall(arguments) -> None:
    import slicer

    slicer.util.pip_install(list(arguments))


def _pytorchUtilsInstaller() -> Callable[[str], bool] | None:
    """torch through the PyTorch extension, which picks the build that fits the GPU; None when it is absent."""
    if importlib.util.find_spec("PyTorchUtils") is None:
        return None

    def install(requirement: str) -> bool:
        import PyTorchUtils

        return PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=False, torchVersionRequirement=requirement) is not None

    return install
