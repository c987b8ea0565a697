"""One registry over the built-in model packages and the user's own."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

from .. import leftovers
from .package import EXTRACT_PREFIX, META_FILE, ModelPackage, ModelPackageError

_NAME_REF = re.compile(r"^[a-z0-9][a-z0-9._-]*(@[0-9A-Za-z.+-]+)?$")


def user_models_dir() -> Path:
    """Where imported models live: $UNIMISS_HOME/models, else the platform's per-user data folder."""
    if os.environ.get("UNIMISS_HOME"):
        return Path(os.environ["UNIMISS_HOME"]).expanduser() / "models"
    if os.environ.get("XDG_DATA_HOME"):
        base = Path(os.environ["XDG_DATA_HOME"])
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path.home() / ".local" / "share"
    return base.expanduser() / "unimiss" / "models"


def builtin_models_dir() -> Path:
    return Path(__file__).with_name("builtin")


def _scan(folder: Path) -> list[ModelPackage]:
    if not folder.is_dir():
        return []
    packages = []
    # Names starting with "." are imports in progress.
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (sub / META_FILE).is_file():
            try:
                packages.append(ModelPackage.load(sub))
            except ModelPackageError as exc:  # one broken package must not hide the others
                warnings.warn(f"skipping a broken model package: {exc}", stacklevel=3)
    return packages


def tidy_user_models() -> None:
    """Finish or undo what killed imports left in the user models folder (see import_model)."""
    folder = user_models_dir()
    for entry, match in leftovers.stale_entries(folder, r"\.(?P<name>.+)\.(?P<kind>old|tmp)-(?P<pid>\d+)(-.*)?"):
        final = folder / match["name"]
        if match["kind"] == "old" and not final.exists():
            os.replace(entry, final)  # killed between the two renames of a replace: the old model comes back
        else:
            leftovers.remove(entry)
    if folder.is_dir():
        for package in folder.iterdir():
            if package.is_dir():
                leftovers.remove_stale(package, r"\..+\.(?P<pid>\d+)\.tmp")  # save_package's temporaries
    leftovers.remove_stale(tempfile.gettempdir(), re.escape(EXTRACT_PREFIX) + r"(?P<pid>\d+)-.*")


def _user_packages(builtins: list[ModelPackage]) -> list[ModelPackage]:
    """The user's packages, less any that claims the name and version of a built-in one."""
    taken = {p.reference: p for p in builtins}
    kept = []
    for package in _scan(user_models_dir()):
        if package.reference in taken:
            warnings.warn(f"ignoring the user model {package.reference} in {package.root}: a built-in model has "
                          "the same name and version; remove it or import it under another name or version",
                          stacklevel=3)
        else:
            kept.append(package)
    return kept


def list_models() -> list[ModelPackage]:
    """Built-in packages first, then the user's, each sorted by name and version."""
    order = lambda p: (p.name, version_key(p.version))  # noqa: E731
    tidy_user_models()
    builtins = _scan(builtin_models_dir())
    return sorted(builtins, key=order) + sorted(_user_packages(builtins), key=order)


def version_key(version: str) -> tuple:
    """Semantic-version order: 1.10.0 > 1.9.0 > 1.9.0-rc.2 > 1.9.0-rc.1; build metadata is ignored."""
    core, _, pre = version.split("+")[0].partition("-")
    numbers = tuple(int(x) for x in core.split("."))
    if not pre:
        return numbers + (1, ())
    return numbers + (0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")))


def _is_path(ref) -> bool:
    text = str(ref)
    return isinstance(ref, os.PathLike) or "/" in text or "\\" in text or text.lower().endswith(".zip")


def _unknown(ref) -> ModelPackageError:
    installed = list(dict.fromkeys(p.reference for p in list_models()))
    return ModelPackageError(f"unknown model {str(ref)!r}; installed: {', '.join(installed) or 'none'}")


def resolve_model(ref) -> ModelPackage:
    """A package from "name" (its highest version), "name@version", or a path to a folder or .zip.

    A user package never shadows a built-in one of the same name and version: it is ignored (see list_models).
    """
    if isinstance(ref, ModelPackage):
        return ref
    text = str(ref)
    if not _is_path(ref) and _NAME_REF.match(text):
        name, _, version = text.partition("@")
        found = [p for p in list_models() if p.name == name and (not version or p.version == version)]
        if found:
            return max(found, key=lambda p: version_key(p.version))
    if _is_path(ref) or Path(text).expanduser().exists():
        return ModelPackage.load(text)
    raise _unknown(ref)


def model_origin(package: ModelPackage) -> dict:
    """Which copy of a model runs, for events and messages: {"model_origin": built-in|user|file, "model_path": ...}."""
    if package.is_builtin:
        origin = "built-in"
    elif package.source.resolve().parent == user_models_dir().resolve():
        origin = "user"
    else:
        origin = "file"
    return {"model_origin": origin, "model_path": str(package.source)}


def default_model(dimension: int) -> ModelPackage:
    """The built-in package marked "default" for 2D or 3D images."""
    defaults = [p for p in _scan(builtin_models_dir()) if p.dimension == dimension and p.meta.get("default")]
    if not defaults:
        raise ModelPackageError(f"no default model for {dimension}D images is installed; pass --model")
    names = sorted({p.name for p in defaults})
    if len(names) > 1:
        raise ModelPackageError(f"several built-in models claim to be the default for {dimension}D images: "
                                f"{', '.join(names)}")
    return max(defaults, key=lambda p: version_key(p.version))


def import_model(path, replace: bool = False) -> ModelPackage:
    """Validate a package (weights included) and copy it to user_models_dir()/<name>-<version>/.

    A replace renames the installed folder aside, then the new one into place; a process killed
    between the two leaves `.<name>.old-<pid>`, which the next use of the registry puts back.
    """
    package = ModelPackage.load(path)
    builtin = next((p for p in _scan(builtin_models_dir()) if p.reference == package.reference), None)
    if builtin is not None and builtin.root.resolve() != package.root.resolve():
        raise ModelPackageError(f"{path}: {package.reference} is the name and version of a built-in model; "
                                "give your package another name or version")
    package.build_network()  # checks the sha256, the safetensors format and that the weights fit
    tidy_user_models()
    dest = user_models_dir() / f"{package.name}-{package.version}"
    if dest.exists() and dest.resolve() == package.root.resolve():
        return package
    if dest.exists() and not replace:
        raise ModelPackageError(f"model {package.reference} is already installed at {dest}; "
                                "pass --replace to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=dest.parent))
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    try:
        shutil.copyfile(package.root / META_FILE, staging / META_FILE)
        shutil.copyfile(package.weights_path, staging / package.weights_path.name)
        ModelPackage.load(staging).verify_weights()
        if dest.exists():
            os.replace(dest, old)
        os.replace(staging, dest)
    finally:
        if old.exists() and not dest.exists():  # failed or interrupted between the renames
            os.replace(old, dest)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return ModelPackage.load(dest)


def export_model(ref, out_path) -> Path:
    """Write the package as a .zip (model.json and the weights at its top level); returns the file."""
    package = resolve_model(ref)
    package.verify_weights()
    out = Path(out_path).expanduser()
    if out.is_dir():
        out = out / f"{package.name}-{package.version}.zip"
    if out.suffix.lower() != ".zip":
        raise ModelPackageError(f"{out}: a model package export must be a .zip file")
    if not out.parent.is_dir():
        raise ModelPackageError(f"{out.parent}: no such folder")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            archive.write(package.root / META_FILE, META_FILE, compress_type=zipfile.ZIP_DEFLATED)
            # Half-precision weights barely compress; storing them keeps export and load fast.
            archive.write(package.weights_path, package.weights_path.name, compress_type=zipfile.ZIP_STORED)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def remove_model(ref) -> Path:
    """Delete an imported user model ("name", "name@version" or its folder); built-ins cannot be removed."""
    users = user_models_dir()
    text = str(ref)
    if not _is_path(ref) and _NAME_REF.match(text):
        name, _, version = text.partition("@")
        matches = lambda p: p.name == name and (not version or p.version == version)  # noqa: E731
        found = [p for p in _scan(users) if matches(p)]
        if not found:
            builtin = [p for p in _scan(builtin_models_dir()) if matches(p)]
            if builtin:
                raise ModelPackageError(f"{builtin[0].reference} is a built-in model and cannot be removed")
            raise _unknown(ref)
        if len(found) > 1:
            raise ModelPackageError(f"several versions of {name} are installed ({', '.join(p.reference for p in found)}); "
                                    "name one as name@version")
        package = found[0]
    else:
        package = ModelPackage.load(text)
        if package.is_builtin:
            raise ModelPackageError(f"{package.reference} is a built-in model and cannot be removed")
        if package.source.resolve().parent != users.resolve():
            raise ModelPackageError(f"{package.source} is not an installed user model (those are in {users})")
    shutil.rmtree(package.root)
    return package.root


def next_version(name: str) -> str:
    """The version a new package called `name` gets: one minor step above any installed one, else 1.0.0."""
    versions = [p.version for p in list_models() if p.name == name]
    if not versions:
        return "1.0.0"
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", max(versions, key=version_key)).groups())
    return f"{major}.{minor + 1}.0"
