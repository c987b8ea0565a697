"""Segment labels: value, name, colour and standard terminology, as model packages and labelmaps carry them.

Also the label tables that name the values of a NIfTI/NRRD labelmap, read in one place for every command:
a 3D Slicer colour table (`case.ctbl`), a JSON table (`case.json`: TotalSegmentator's `labels.json` beside
`labels.nii.gz`, or what `unimiss segment --labels-out json` writes) and a Decathlon / nnU-Net `dataset.json`
(v1 `{"1": "liver"}` and v2 `{"liver": 1}`) in the labelmap's folder or the folder above (`labelsTr/..`).
"""
from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

SLICER_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
MAX_NAME_LENGTH = 128  # as in the model package schema
MAX_LABEL_VALUE = 65535  # labelmaps are written as uint8 or uint16
MAX_TABLE_BYTES = 4 << 20  # a table of 65535 labels is well below this
_FORBIDDEN = {"Cc", "Cs", "Zl", "Zp"}  # control characters (newline, tab, NUL...), surrogates, line separators


def name_problem(name) -> str:
    """Why `name` cannot be a label name ('' when it can): names go into file headers one per line."""
    if not isinstance(name, str) or not name.strip():
        return "the name is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"the name is longer than {MAX_NAME_LENGTH} characters"
    bad = next((c for c in name if unicodedata.category(c) in _FORBIDDEN), None)
    if bad is not None:
        return f"the name {name!r} contains a line break or control character ({bad!r})"
    return ""


@dataclass(frozen=True)
class Label:
    """One segment class.

    `color` is RGB in 0..255. `terminology` uses slicerio's form:
    {"category": [scheme, code, meaning], "type": [scheme, code, meaning],
    optional "typeModifier", "anatomicRegion", ...}; e.g. liver is
    category ["SCT", "123037004", "Anatomical Structure"], type ["SCT", "10200004", "Liver"].
    Names are checked here, where every label is made: 1 to 128 characters, any script, no line break
    or other control character (a newline would inject lines into NRRD headers and colour tables).
    """

    value: int
    name: str
    color: tuple[int, int, int] = (128, 128, 128)
    terminology: dict = field(default_factory=dict, compare=False, hash=False)
    description: str = field(default="", compare=False)

    def __post_init__(self):
        problem = name_problem(self.name)
        if problem:
            raise ValueError(f"label {self.value}: {problem}")

    def to_dict(self) -> dict:
        d = {"value": self.value, "name": self.name, "color": list(self.color)}
        if self.terminology:
            d["terminology"] = self.terminology
        if self.description:
            d["description"] = self.description
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Label":
        return cls(int(d["value"]), str(d["name"]), tuple(int(c) for c in d.get("color", (128, 128, 128))),
                   dict(d.get("terminology", {})), str(d.get("description", "")))

    def terminology_string(self) -> str:
        """Slicer's TerminologyEntry string (empty when the label has no terminology)."""
        t = self.terminology
        if not t.get("type"):
            return ""
        code = lambda key: "^".join(t.get(key, ["", "", ""]))
        return "~".join([t.get("contextName", SLICER_CONTEXT), code("category"), code("type"), code("typeModifier"),
                         t.get("anatomicContextName", "Anatomic codes - DICOM master list"), code("anatomicRegion"),
                         code("anatomicRegionModifier")])


def name_key(name: str) -> str:
    """What two names must share to be the same class: letter case, spaces, '_' and '-' ignored
    (a colour table cannot hold spaces, so "right lung" is written "right_lung")."""
    return "".join(c for c in name.casefold() if not (c.isspace() or c in "_-"))


# ---------------------------------------------------------------------------------------------- tables


@dataclass
class LabelTable:
    path: Path
    labels: list[Label]
    labelmap_sha256: str = ""  # set in the tables unimiss writes: the labelmap file they belong to


def table_candidates(labelmap) -> list[Path]:
    """Where the names of `labelmap` may be, in the order they are looked for."""
    path = Path(labelmap)
    name = path.name
    stem = next((name[: -len(s)] for s in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
                 if name.lower().endswith(s)), path.stem)
    return [path.with_name(stem + ".ctbl"), path.with_name(stem + ".json"),
            path.with_name("dataset.json"), path.parent.parent / "dataset.json"]


def find_label_table(labelmap) -> LabelTable | None:
    """The first table of `table_candidates` that exists; a JSON file without a "labels" entry is not a table."""
    for candidate in table_candidates(labelmap):
        if candidate.is_file():
            table = read_label_table(candidate)
            if table is not None:
                return table
    return None


def read_label_table(path) -> LabelTable | None:
    """A `.ctbl` or JSON label table (None for JSON that has no "labels" entry, e.g. a BIDS sidecar)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_TABLE_BYTES:
            raise InputError(f"{path}: too large for a label table ({path.stat().st_size} bytes)")
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise InputError(f"{path}: cannot read the label table ({error.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: the label table is not UTF-8 text") from None
    reader = _read_colour_table if path.suffix.lower() == ".ctbl" else _read_json_table
    return reader(path, text)


def _read_colour_table(path: Path, text: str) -> LabelTable:
    labels, checksum = {}, ""
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if fields[:3] == ["#", "labelmap", "sha256"] and len(fields) == 4:
            checksum = fields[3]
        if not fields or fields[0].startswith("#"):
            continue
        try:
            value, name, colour = int(fields[0]), fields[1], tuple(int(c) for c in fields[2:5])
        except (ValueError, IndexError):
            raise InputError(f"{path}: line {number} is not 'value name R G B A'") from None
        if value in labels:
            raise InputError(f"{path}: line {number} repeats value {value}")
        if value > 0:
            labels[value] = _label(path, value, name, colour if len(colour) == 3 else (128, 128, 128))
    return LabelTable(path, sorted(labels.values(), key=lambda label: label.value), checksum)


def _read_json_table(path: Path, text: str) -> LabelTable | None:
    try:
        document = json.loads(text)
    except ValueError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    table = document.get("labels") if isinstance(document, dict) else None
    if table is None:
        return None
    if not isinstance(table, dict):
        raise InputError(f"{path}: \"labels\" must map values to names, e.g. {{\"1\": \"liver\"}}")
    colours = document.get("colors") if isinstance(document.get("colors"), dict) else {}
    labels = {}
    for key, entry in table.items():
        if isinstance(entry, (list, dict)):
            raise InputError(f"{path}: label {key!r} has several values ({json.dumps(entry)[:60]}); region-based "
                             "nnU-Net labels are not supported")
        if str(key).strip().isdigit():  # Decathlon, nnU-Net v1, TotalSegmentator: {"1": "liver"}
            value, name = int(key), entry
        elif isinstance(entry, int) and not isinstance(entry, bool) or str(entry).strip().isdigit():  # nnU-Net v2
            value, name = int(entry), key
        else:
            raise InputError(f"{path}: label {key!r}: {entry!r} is neither a label value nor a name for value {key}")
        if not isinstance(name, str):
            raise InputError(f"{path}: the name of label {value} is not text ({name!r})")
        if value == 0:
            continue  # background
        if value > MAX_LABEL_VALUE:
            raise InputError(f"{path}: label value {value} is above {MAX_LABEL_VALUE}")
        if value in labels:
            raise InputError(f"{path}: value {value} is named twice ({labels[value].name!r} and {name!r})")
        colour = colours.get(str(value), (128, 128, 128))
        try:
            colour = tuple(int(c) for c in colour)[:3] if len(colour) == 3 else (128, 128, 128)
        except (TypeError, ValueError):
            raise InputError(f"{path}: the colour of label {value} is not three numbers") from None
        labels[value] = _label(path, value, name, colour)
    checksum = document.get("labelmap_sha256", "")
    return LabelTable(path, sorted(labels.values(), key=lambda label: label.value),
                      checksum if isinstance(checksum, str) else "")


def _label(path: Path, value: int, name: str, colour) -> Label:
    problem = name_problem(name)
    if problem:
        raise InputError(f"{path}: label {value}: {problem}")
    return Label(value, name, tuple(min(max(int(c), 0), 255) for c in colour))


def label_table_text(labels: list[Label], kind: str, name: str, labelmap_sha256: str) -> str:
    """A `.ctbl` (kind "ctbl") or JSON (kind "json") table for `labels`, recording the labelmap it belongs to.

    Colour tables are whitespace-separated, so spaces in names become '_' there; JSON keeps names as they are.
    """
    if kind == "json":
        return json.dumps({"labels": {str(l.value): l.name for l in labels},
                           "colors": {str(l.value): list(l.color) for l in labels},
                           "labelmap_sha256": labelmap_sha256}, indent=1, ensure_ascii=False) + "\n"
    lines = [f"# Color table file {name}", f"# {len(labels) + 1} values", f"# labelmap sha256 {labelmap_sha256}",
             "0 background 0 0 0 0"]
    lines += [f"{l.value} {'_'.join(l.name.split())} {l.color[0]} {l.color[1]} {l.color[2]} 255" for l in labels]
    return "\n".join(lines) + "\n"
