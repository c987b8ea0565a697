"""Model packages: a folder (or .zip) with a validated `model.json` and `weights.safetensors`.

Everything about a particular model — labels, preprocessing, network, patch
size, provenance — lives in its model.json; weights are only ever read with
safetensors, so a package can never execute code when it is loaded.

torch, jsonschema and the networks are imported where they are used, so that
importing this module (as the command line does to build its parser) stays light.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..data.labels import Label

META_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
SCHEMA_FILE = Path(__file__).with_name("model.schema.json")
DTYPES = ("float16", "bfloat16", "float32")
_MAX_META_BYTES = 1 << 20
_MAX_ZIP_MEMBERS = 1000
_WEIGHTS_HEADER_ALLOWANCE = 16 << 20   # a safetensors header (names, shapes) beyond the tensors themselves
EXTRACT_PREFIX = "unimiss-model-"      # + PID: folders of dead processes are removed (see leftovers)
_AXES = ("RL", "AP", "SI")
_PATTERN_HINTS = {
    "name": "is not a valid name (lower-case letters, digits, '.', '_' and '-', starting with a letter or digit)",
    "version": "is not a semantic version such as 1.0.0",
    "weights.file": "is not a plain file name ending in .safetensors",
}


class ModelPackageError(ValueError):
    """A model package is missing, malformed or does not match its weights; str() is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def _one_line(text, limit=200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(text) -> str:
    """`text` with control characters (terminal escapes included) shown as \\xNN instead of acted upon."""
    return "".join(c if c.isprintable() or c == "\n" else ascii(c)[1:-1] for c in str(text))


def _field(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _schema_problem(error) -> tuple[str, str]:
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = next(p for p in error.validator_value if p not in error.instance)
        return _field(path + [missing]), "is required but missing"
    if error.validator == "pattern" and _field(path) in _PATTERN_HINTS:
        return _field(path), f"{error.instance!r} {_PATTERN_HINTS[_field(path)]}"
    if error.validator == "not" and "description" in error.schema:  # label names: no control characters
        return _field(path), f"{error.instance!r} is not allowed: {error.schema['description']}"
    return _field(path), _one_line(error.message)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def validate_meta(meta, source) -> dict:
    """Check a model.json dict against the schema and the cross-field rules; returns it unchanged."""
    def fail(where, what):
        raise ModelPackageError(f"{source}: {META_FILE}: {where}: {what}")

    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(meta))
    if error is not None:
        fail(*_schema_problem(error))

    dim = meta["dimension"]
    pre = meta["preprocessing"]
    for key in ("spacing", "size"):
        if key in pre and len(pre[key]) != dim:
            fail(f"preprocessing.{key}", f"has {len(pre[key])} values; a {dim}D model needs {dim}")
    orientation = pre.get("orientation")
    if orientation is not None and (len(orientation) != dim or any(
            sum(c in axis for c in orientation) > 1 for axis in _AXES)):
        fail("preprocessing.orientation", f"{orientation!r} is not a {dim}D orientation code such as "
             f"{'LPS' if dim == 3 else 'LP'} (one letter per axis from R/L, A/P, S/I)")
    intensity = pre["intensity"]
    if intensity["method"] == "ct" and not intensity["clip"][0] < intensity["clip"][1]:
        fail("preprocessing.intensity.clip", f"{intensity['clip']} is not an increasing [low, high] range")
    if intensity["method"] == "percentile" and not intensity["lower"] < intensity["upper"]:
        fail("preprocessing.intensity", "lower must be below upper")

    from ..models.config import size_multiple

    patch = meta["patch_size"]
    if len(patch) != dim:
        fail("patch_size", f"has {len(patch)} values; a {dim}D model needs {dim}")
    if any(p % m for p, m in zip(patch, size_multiple(dim))):
        fail("patch_size", f"{patch} is not a multiple of {list(size_multiple(dim))}")

    net = meta["network"]
    try:
        _network_config(meta)
    except (ValueError, TypeError) as exc:
        fail("network.config", _one_line(exc))
    values, names = set(), set()
    for i, label in enumerate(meta["labels"]):
        if label["value"] in values:
            fail(f"labels[{i}].value", f"{label['value']} is used by more than one label")
        if label["value"] >= net["num_classes"]:
            fail(f"labels[{i}].value", f"{label['value']} is not below network.num_classes ({net['num_classes']})")
        if label["name"] in names:
            fail(f"labels[{i}].name", f"{label['name']!r} is used by more than one label")
        values.add(label["value"])
        names.add(label["name"])
    not_below = meta.get("postprocessing", {}).get("not_below", {})
    if not_below and dim != 2:
        fail("postprocessing.not_below", "applies to 2D models only (image rows)")
    for name in [n for bounded, limits in not_below.items() for n in [bounded, *limits] if n not in names]:
        fail("postprocessing.not_below", f"{name!r} is not one of the model's labels")
    for name in [n for n in meta.get("postprocessing", {}).get("join_gaps_mm", {}) if n not in names]:
        fail("postprocessing.join_gaps_mm", f"{name!r} is not one of the model's labels")
    largest = meta.get("postprocessing", {}).get("largest_component", False)
    for name in [n for n in largest if n not in names] if isinstance(largest, list) else []:
        fail("postprocessing.largest_component", f"{name!r} is not one of the model's labels")
    return meta


def _network_config(meta):
    if meta["network"]["architecture"] == "MiT+":
        from ..models.mitplus import get_plus_config

        return get_plus_config(meta["network"]["config"])
    from ..models import get_config

    return get_config(meta["network"]["config"])


def _network_factory(meta):
    from ..models import MiTPlusSegmentation, MiTSegmentation

    net, config = meta["network"], _network_config(meta)
    network = MiTPlusSegmentation if net["architecture"] == "MiT+" else MiTSegmentation
    return lambda: network(config, net["num_classes"], spatial_dims=meta["dimension"],
                           in_channels=net["in_channels"], patch_size=meta["patch_size"])


def network_parameters(meta, source) -> int:
    """The parameter count of the package's network, measured without building it; refused when absurd."""
    from ..models.official import count_parameters, too_large

    count = count_parameters(_network_factory(meta))
    problem = too_large(count)
    if problem:
        raise ModelPackageError(f"{source}: {META_FILE}: network: {problem}")
    return count


def _new_network(meta, source="the model package"):
    network_parameters(meta, source)
    return _network_factory(meta)()


def _check_fit(expected: dict, tensors: dict, source) -> None:
    """Raise when the tensors' names or shapes differ from the network's state dict."""
    def few(keys):
        return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    wrong = [f"{k} {list(tensors[k].shape)} vs {list(expected[k].shape)}"
             for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    problems = [f"{what}: {few(keys)}" for what, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape (file vs network)", wrong)) if keys]
    if problems:
        raise ModelPackageError(f"{source}: the weights do not fit the network in {META_FILE}; " + "; ".join(problems))


def _read_meta(raw: bytes, source) -> dict:
    if len(raw) > _MAX_META_BYTES:
        raise ModelPackageError(f"{source}: {META_FILE} is larger than {_MAX_META_BYTES} bytes")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelPackageError(f"{source}: {META_FILE} is not valid JSON ({exc})") from None
    except RecursionError:
        raise ModelPackageError(f"{source}: {META_FILE} is nested too deeply to be a model description") from None
    return validate_meta(meta, source)


def _not_a_package(path) -> ModelPackageError:
    return ModelPackageError(f"{path} is not a model package (expected a folder or .zip with {META_FILE})")


def _read_small(file: Path, source) -> bytes:
    """The bytes of `file`, refused by its size before any is read."""
    try:
        if file.stat().st_size > _MAX_META_BYTES:
            raise ModelPackageError(f"{source}: {META_FILE} is larger than {_MAX_META_BYTES} bytes")
        with open(file, "rb") as f:
            return f.read(_MAX_META_BYTES + 1)
    except OSError as exc:
        raise ModelPackageError(f"{file}: cannot be read ({exc.strerror or _one_line(exc)})") from None


@dataclass(repr=False)
class ModelPackage:
    root: Path                     # folder holding model.json and the weights
    meta: dict                     # the validated model.json
    source: Path | None = None     # what was loaded: `root`, or the .zip it was extracted from
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.root = Path(self.root)
        self.source = Path(self.source) if self.source is not None else self.root

    def __repr__(self) -> str:
        return f"ModelPackage({self.reference!r}, source={str(self.source)!r})"

    @classmethod
    def load(cls, path) -> "ModelPackage":
        """Load and validate a package folder or .zip; weights are not read until build_network()."""
        path = Path(path).expanduser()
        if path.is_dir():
            if not (path / META_FILE).is_file():
                raise _not_a_package(path)
            package = cls(path, _read_meta(_read_small(path / META_FILE, path), path))
            if not package.weights_path.is_file():
                raise ModelPackageError(f"{path}: the weights file {package.meta['weights']['file']} is missing")
            return package
        if path.is_file() and path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
            return cls._load_zip(path)
        if not path.exists():
            raise ModelPackageError(f"{path}: no such model package (file or folder)")
        raise _not_a_package(path)

    @classmethod
    def _load_zip(cls, path: Path) -> "ModelPackage":
        try:
            return cls._extract_zip(path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, zlib.error) as exc:
            raise ModelPackageError(f"{path}: damaged or unsupported zip archive ({_one_line(exc)})") from None
        except RuntimeError as exc:  # zipfile: "File ... is encrypted, password required for extraction"
            if "encrypted" in str(exc):
                raise ModelPackageError(f"{path}: the zip archive is encrypted; export the package without "
                                        "a password") from None
            raise

    @classmethod
    def _extract_zip(cls, path: Path) -> "ModelPackage":
        # Accept model.json at the top or inside one folder; only the two named files are
        # extracted, under fixed names, so member paths in the archive never matter.
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > _MAX_ZIP_MEMBERS:
                raise ModelPackageError(f"{path}: holds {len(members)} files; a model package has two")
            found = [m.filename for m in members
                     if PurePosixPath(m.filename).name == META_FILE and len(PurePosixPath(m.filename).parts) <= 2
                     and not m.filename.startswith("__MACOSX/")]
            if len(found) != 1:
                raise _not_a_package(path) if not found else ModelPackageError(
                    f"{path}: holds several {META_FILE} files ({', '.join(found[:3])})")
            info = archive.getinfo(found[0])
            if info.file_size > _MAX_META_BYTES:
                raise ModelPackageError(f"{path}: {META_FILE} is larger than {_MAX_META_BYTES} bytes")
            raw = archive.read(info)
            meta = _read_meta(raw, path)
            weights = found[0][: -len(META_FILE)] + meta["weights"]["file"]
            if weights not in archive.namelist():
                raise ModelPackageError(f"{path}: the weights file {meta['weights']['file']} is missing")
            # The weights can be no larger than the network described: a zip bomb stops here, unread.
            weights_info = archive.getinfo(weights)
            limit = network_parameters(meta, path) * 4 + _WEIGHTS_HEADER_ALLOWANCE
            if weights_info.file_size > limit:
                raise ModelPackageError(f"{path}: {weights} would unpack to {weights_info.file_size:,} bytes, more "
                                        f"than the network in {META_FILE} can hold ({limit:,})")
            from .. import leftovers

            leftovers.remove_stale(tempfile.gettempdir(), re.escape(EXTRACT_PREFIX) + r"(?P<pid>\d+)-.*")
            tmp = tempfile.TemporaryDirectory(prefix=f"{EXTRACT_PREFIX}{os.getpid()}-")
            root = Path(tmp.name)
            try:
                (root / META_FILE).write_bytes(raw)
                # zipfile stops at the declared size and checks the CRC at the end of the member.
                with archive.open(weights_info) as src, open(root / meta["weights"]["file"], "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except OSError as exc:
                tmp.cleanup()
                raise ModelPackageError(f"{path}: could not unpack it into {root} "
                                        f"({exc.strerror or _one_line(exc)})") from None
            except BaseException:
                tmp.cleanup()
                raise
        return cls(root, meta, source=path, _tmp=tmp)

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def version(self) -> str:
        return self.meta["version"]

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def dimension(self) -> int:
        return self.meta["dimension"]

    @property
    def modality(self) -> str:
        return self.meta["modality"]

    @property
    def labels(self) -> list[Label]:
        return [Label.from_dict(d) for d in self.meta["labels"]]

    @property
    def num_classes(self) -> int:
        return self.meta["network"]["num_classes"]

    @property
    def in_channels(self) -> int:
        return self.meta["network"]["in_channels"]

    @property
    def patch_size(self) -> tuple[int, ...]:
        return tuple(self.meta["patch_size"])

    @property
    def preprocessing(self) -> dict:
        return self.meta["preprocessing"]

    @property
    def largest_component_classes(self) -> list[str]:
        """The labels whose largest connected part alone segmenting keeps by default (the model's own choice:
        `postprocessing.largest_component` is true for every label, or lists them)."""
        keep = self.meta.get("postprocessing", {}).get("largest_component", False)
        names = [label.name for label in self.labels]
        return names if keep is True else [n for n in names if n in keep] if isinstance(keep, list) else []

    @property
    def comparable_parts(self) -> float:
        """Where a label's largest part is kept, other parts at least this share of its size are kept too."""
        return float(self.meta.get("postprocessing", {}).get("comparable_parts", 0.0))

    @property
    def largest_component(self) -> bool:
        """Whether segmenting keeps the largest connected part of every label by default."""
        return self.largest_component_classes == [label.name for label in self.labels]

    @property
    def not_below(self) -> dict[str, list[str]]:
        """{class: [classes]}: the class is kept no lower in a 2D image than those classes reach."""
        return dict(self.meta.get("postprocessing", {}).get("not_below", {}))

    @property
    def join_gaps_mm(self) -> dict[str, float]:
        """{class: mm}: parts of the class this close count as one when the largest part is kept."""
        return dict(self.meta.get("postprocessing", {}).get("join_gaps_mm", {}))

    @property
    def test_time_zoom_shift(self) -> bool:
        """Whether segmenting averages over the image zoomed and shifted a little (inference/predictor.py)."""
        return bool(self.meta.get("postprocessing", {}).get("test_time_zoom_shift", False))

    @property
    def test_time_mirroring(self) -> bool:
        """Whether the model learnt from mirrored images, so that mirrored inputs are worth averaging over."""
        return bool(self.meta.get("postprocessing", {}).get("test_time_mirroring", False))

    @property
    def weights_path(self) -> Path:
        return self.root / self.meta["weights"]["file"]

    @property
    def is_builtin(self) -> bool:
        from . import registry  # looked up at call time so tests can point it elsewhere

        builtin = registry.builtin_models_dir().resolve()
        return builtin in self.source.resolve().parents

    def verify_weights(self) -> None:
        """Raise unless the weights file's sha256 is the one model.json records."""
        if not self.weights_path.is_file():
            raise ModelPackageError(f"{self.source}: the weights file {self.meta['weights']['file']} is missing")
        if _sha256(self.weights_path) != self.meta["weights"]["sha256"]:
            raise ModelPackageError(f"model {self.reference} ({self.source}): {self.meta['weights']['file']} does "
                                    f"not match the sha256 in {META_FILE}; the file is corrupt or was changed")

    def build_network(self, device="cpu") -> "torch.nn.Module":
        """The MiT segmentation network with this package's weights (float32, eval mode)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        self.verify_weights()
        try:
            tensors = load_file(self.weights_path)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ModelPackageError(f"{self.weights_path}: not a valid safetensors file ({_one_line(exc)})") from None
        network = _new_network(self.meta, self.source)
        expected = network.state_dict()
        _check_fit(expected, tensors, self.source)
        network.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
        return network.to(device).eval()

    def describe(self) -> str:
        m, pre = self.meta, self.preprocessing
        config = m["network"]["config"]
        config = config if isinstance(config, str) else config.get("name", "custom")
        intensity = ", ".join(f"{k} {v}" for k, v in pre["intensity"].items() if k != "method")
        lines = [
            f"{self.reference} ({'built-in' if self.is_builtin else 'user'})"
            + (f": {m['description']}" if m.get("description") else ""),
            f"  {self.dimension}D {self.modality} {m['task']}; MiT-{config}, {self.in_channels} input channel(s), "
            f"{self.num_classes} classes incl. background, patch {list(self.patch_size)}, "
            f"{m['weights']['dtype']} weights",
            f"  preprocessing: " + (f"spacing {pre['spacing']} mm" if "spacing" in pre else f"resized to {pre['size']}")
            + f", orientation {pre.get('orientation') or 'as input'}, "
            f"intensity {pre['intensity']['method']}" + (f" ({intensity})" if intensity else ""),
            f"  labels ({len(m['labels'])}): " + ", ".join(f"{d['value']} {d['name']}" for d in m["labels"])
            + ("; each label's largest connected part is kept" if self.largest_component
               else f"; the largest connected part of {', '.join(self.largest_component_classes)} is kept"
               if self.largest_component_classes else "")
            + (f" (with the parts at least {self.comparable_parts:.0%} of its size)"
               if self.comparable_parts and self.largest_component_classes else "")
            + "".join(f" ({name}: parts less than {mm:g} mm apart count as one)"
                      for name, mm in self.join_gaps_mm.items() if name in self.largest_component_classes)
            + ("; averaged over zoomed and shifted copies" if self.test_time_zoom_shift else "")
            + "".join(f"; {name} ends where {' and '.join(limits)} end below" for name, limits in self.not_below.items()),
            f"  training data: {_one_line(json.dumps(m['provenance']['training_data']), 300)}",
        ]
        metrics = {k: v for k, v in m.get("metrics", {}).items() if k != "description"}
        if metrics:
            lines.append("  metrics: " + _one_line("; ".join(f"{k} {json.dumps(v)}" for k, v in metrics.items()), 300))
        lines.append(f"  location: {self.source}")
        return printable("\n".join(lines))


def save_package(directory, meta: dict, state_dict, dtype="float16") -> ModelPackage:
    """Write `directory`/weights.safetensors and model.json (with its weights block) and load the result.

    `state_dict` may also be the network itself. Both files are written under temporary
    names and renamed, so a reader never sees a half-written file.
    """
    import torch

    directory = Path(directory)
    if dtype not in DTYPES:
        raise ModelPackageError(f"{directory}: weights dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if isinstance(state_dict, torch.nn.Module):
        state_dict = state_dict.state_dict()
    meta = copy.deepcopy(meta)
    meta["weights"] = {"file": WEIGHTS_FILE, "sha256": "0" * 64, "dtype": dtype}
    validate_meta(meta, directory)

    tensors = {}
    for key, value in state_dict.items():
        value = value.detach()
        # A fresh contiguous tensor: safetensors refuses shared or strided (channels-last) storage.
        cast = torch.empty(value.shape, dtype=getattr(torch, dtype) if value.is_floating_point() else value.dtype)
        cast.copy_(value)
        if cast.is_floating_point() and not torch.isfinite(cast).all() and torch.isfinite(value).all():
            raise ModelPackageError(f"{directory}: weight {key} does not fit in {dtype}")
        tensors[key] = cast
    _check_fit(_new_network(meta, directory).state_dict(), tensors, directory)

    from safetensors import SafetensorError
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tmp_weights = directory / f".{WEIGHTS_FILE}.{os.getpid()}.tmp"
    tmp_meta = directory / f".{META_FILE}.{os.getpid()}.tmp"
    try:
        try:
            save_file(tensors, str(tmp_weights), metadata={"format": "pt"})
        except SafetensorError as exc:  # its I/O errors, a full disk included, arrive as one Rust message
            full = "StorageFull" in str(exc) or "No space left" in str(exc)
            raise ModelPackageError(f"{directory}: could not write {WEIGHTS_FILE} ("
                                    + ("no space left on the disk" if full else _one_line(exc)) + ")") from None
        meta["weights"]["sha256"] = _sha256(tmp_weights)
        tmp_meta.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.chmod(tmp_weights, tmp_meta.stat().st_mode & 0o777)  # safetensors creates its file owner-only
        os.replace(tmp_weights, directory / WEIGHTS_FILE)
        os.replace(tmp_meta, directory / META_FILE)
    finally:
        tmp_weights.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
    return ModelPackage.load(directory)
