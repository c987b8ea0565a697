"""What `unimiss segment` reads and where it writes: paths to cases, cases to output files.

A path is read as one of:
- an image file: one case;
- a DICOM series folder: its files are DICOM and some series has several of them; one case (the largest
  series; the others are named when it is read);
- a folder of image files (PNG, JPEG, NIfTI, NRRD, MHA, single DICOM files, mixed): each file is a case;
  other files (notes.txt) are named and left out;
- a folder of case folders: each sub-folder is a case, a DICOM series or a single image, labelmaps beside
  it not counted (`*.seg.nrrd`, `label*`/`seg*`/`mask*` files, files with a `.ctbl`/`.json` table), or a
  sub-folder that is a DICOM series; the result is named after the case folder.
Each folder is reported in one line.

Results are named after their case (the file name without its extension, or the folder's name). Cases that
would share a name, letter case ignored, are told apart by their parent folder (`a/image.nii.gz`,
`b/image.nii.gz` -> `a_image`, `b_image`), then their extension (`a.png`, `a.jpg` -> `a_png`, `a_jpg`), then a
number in input order (`a_PNG-2`). No output may be an input: that is refused before any work.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import SimpleITK as sitk

from .dicom import DICOM_SUFFIXES, MODALITY, series_in
from .errors import InputError
from .io import LABELMAP_SUFFIXES, PICTURE_SUFFIXES, VOLUME_SUFFIXES, compound_suffix, label_table_path

IMAGE_SUFFIXES = VOLUME_SUFFIXES + PICTURE_SUFFIXES + DICOM_SUFFIXES
NAMING_RULE = ("Results are named after their case (file name without extension, or folder name); cases that "
               "would share a name (letter case ignored) get their parent folder's name in front (a_image, "
               "b_image), then their extension (a_png, a_jpg), then a number (-2); an output that would replace an "
               "input is refused before any work.")
FOLDER_RULE = ("A folder is a DICOM series (its files are DICOM, some series has several: the largest is read), a "
               "folder of image files (each file a case, PNG and single DICOM files alike), or a folder of case "
               "folders (each sub-folder a DICOM series or a single image, labelmaps beside it not counted; the "
               "result takes the sub-folder's name); each folder given is reported in one line.")
VOLUME_MODALITIES = {"CT", "MR", "PT", "NM"}
_LABELMAP_STEMS = ("label", "seg", "mask")


@dataclass(frozen=True)
class Case:
    path: Path  # an image file or a DICOM series folder
    name: str   # what its result is named after


def _image_suffix(path: Path) -> str:
    suffix = compound_suffix(path)
    return suffix if suffix in IMAGE_SUFFIXES else ""


def case_name(path) -> str:
    """`ct.nii.gz` -> `ct`; a folder keeps its name."""
    path = Path(path)
    suffix = _image_suffix(path)
    return path.name[: -len(suffix)] if suffix and not path.is_dir() else path.name


def _is_dicom_series_folder(folder: Path, series=None) -> bool:
    series = series_in(folder) if series is None else series
    return any(len(files) > 1 for _, files in series) or (
        len(series) == 1 and not any(_image_suffix(p) and compound_suffix(p) not in DICOM_SUFFIXES
                                     for p in _entries(folder) if not p.is_dir()))


def _entries(folder: Path) -> list[Path]:
    try:
        return [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")]
    except OSError as error:
        raise InputError(f"{folder}: cannot list the folder ({error.strerror})") from None


def _looks_like_labelmap(path: Path) -> bool:
    stem = case_name(path).lower()
    return (path.name.lower().endswith(".seg.nrrd") or stem.startswith(_LABELMAP_STEMS)
            or label_table_path(path, "ctbl").is_file() or label_table_path(path, "json").is_file())


def find_cases(inputs, say: Callable[[str], None] = lambda message: None) -> list[Case]:
    """The cases in the paths given, each folder reported through `say` in one line."""
    cases: list[Case] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists() and not path.is_symlink():
            raise InputError(f"{path}: no such file or folder")
        if not path.is_dir():
            cases.append(Case(path, case_name(path)))
            continue
        cases += _folder_cases(path, say)
    seen: dict[Path, Case] = {}
    for case in cases:
        key = case.path.resolve()
        if key in seen:
            say(f"{case.path}: given twice, segmented once")
        seen.setdefault(key, case)
    return list(seen.values())


def expand_inputs(inputs) -> list[Path]:
    """The image files and DICOM series folders in the paths given (see `find_cases`)."""
    return [case.path for case in find_cases(inputs)]


def _folder_cases(folder: Path, say) -> list[Case]:
    entries = _entries(folder)
    files = [p for p in entries if not p.is_dir()]
    series = series_in(folder)
    if _is_dicom_series_folder(folder, series):
        say(f"{folder}: a DICOM series folder")
        return [Case(folder, folder.name)]
    dicom_files = {Path(f).name for _, fs in series for f in fs}
    images = [p for p in files if _image_suffix(p) or p.name in dicom_files]
    others = [p.name for p in files if p not in images]
    ignored = f"; ignored {len(others)} other file(s): {', '.join(others[:3])}" + (", ..." if len(others) > 3 else "") \
        if others else ""
    if images:
        folders = [p.name for p in entries if p.is_dir()]
        if folders:
            ignored += f"; sub-folders not searched: {', '.join(folders[:3])}" + (", ..." if len(folders) > 3 else "")
        say(f"{folder}: a folder of {len(images)} image file(s){ignored}")
        return [Case(p, case_name(p)) for p in images]
    subfolders = [p for p in entries if p.is_dir()]
    if not subfolders:
        raise InputError(f"{folder}: no images or DICOM series found in this folder")
    cases = [_case_folder(sub) for sub in subfolders]
    say(f"{folder}: a folder of {len(cases)} case folder(s){ignored}")
    return cases


def _case_folder(folder: Path) -> Case:
    """A case folder: a DICOM series, a single image, or a single DICOM series sub-folder."""
    series = series_in(folder)
    if series and _is_dicom_series_folder(folder, series):
        return Case(folder, folder.name)
    entries = _entries(folder)
    dicom_files = {Path(f).name for _, fs in series for f in fs}
    images = [p for p in entries if not p.is_dir() and (_image_suffix(p) or p.name in dicom_files)
              and not _looks_like_labelmap(p)]
    if not images:
        series_folders = [p for p in entries if p.is_dir() and _is_dicom_series_folder(p)]
        if len(series_folders) == 1:
            return Case(series_folders[0], folder.name)
    if len(images) == 1:
        return Case(images[0], folder.name)
    found = f"{len(images)} images ({', '.join(p.name for p in images[:3])})" if images else "no image"
    raise InputError(f"{folder}: a case folder needs one image or one DICOM series, it has {found}")


# ---------------------------------------------------------------------------------------------- outputs


def output_paths(cases: list[Case], output, fmt: str, say: Callable[[str], None] = lambda message: None) -> list[Path]:
    """One labelmap path per case: `output` itself for a single case named like a labelmap, else in the folder."""
    output = Path(output)
    suffix = compound_suffix(output)
    if not output.is_dir():
        if suffix in LABELMAP_SUFFIXES:
            if len(cases) > 1:
                raise InputError(f"{output}: {len(cases)} cases need an output folder, not a file name")
            return [output]
        if suffix in IMAGE_SUFFIXES or output.exists():
            raise InputError(f"{output}: not a labelmap name (.seg.nrrd, .nrrd, .nii.gz or .nii) nor a folder")
    names = distinct_names(cases)
    for case, name in zip(cases, names):
        if name != case.name:
            say(f"{case.path}: result named {name}.{fmt} ({case.name} is taken by another case)")
    return [output / f"{name}.{fmt}" for name in names]


def plan_outputs(cases: list[Case], output, fmt: str, table: str = "ctbl", preview: bool = False,
                 say: Callable[[str], None] = lambda message: None) -> list[Path]:
    """`output_paths`, checked before any work: no file written (labelmap, table, preview) replaces an input."""
    outputs = output_paths(cases, output, fmt, say)
    written = [[out] + ([] if compound_suffix(out) == ".seg.nrrd" else [label_table_path(out, table)])
               + ([preview_path(out)] if preview else []) for out in outputs]
    check_no_input_overwritten(cases, written)
    return outputs


def preview_path(out) -> Path:
    """`case.seg.nrrd` -> `case-preview.png`."""
    out = Path(out)
    return out.with_name(out.name[: len(out.name) - len(compound_suffix(out))] + "-preview.png")


def distinct_names(cases: list[Case]) -> list[str]:
    """The cases' names, made distinct (letter case ignored) by the rule in NAMING_RULE."""
    names = [case.name for case in cases]

    def clashing() -> list[list[int]]:
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            groups.setdefault(name.casefold(), []).append(i)
        return [group for group in groups.values() if len(group) > 1]

    def parent(i):  # the folder that holds the case (for a case folder's image, the folder above it)
        path = cases[i].path
        return (path if case_name(path) == cases[i].name else path.parent).parent.name

    def extension(i):
        suffix = "" if cases[i].path.is_dir() else _image_suffix(cases[i].path)
        return cases[i].path.name[len(cases[i].path.name) - len(suffix):].lstrip(".").replace(".", "_")

    for tell_apart in (lambda i: parent(i) + "_" + names[i] if parent(i) else names[i],
                       lambda i: names[i] + "_" + extension(i) if extension(i) else names[i]):
        for group in clashing():
            if len({tell_apart(i).casefold() for i in group}) > 1:
                for i in group:
                    names[i] = tell_apart(i)
    for group in clashing():
        for number, i in enumerate(group[1:], start=2):
            names[i] = f"{names[i]}-{number}"
    return names


def check_no_input_overwritten(cases: list[Case], outputs: list[list[Path]]) -> None:
    """Refuse, before any work, an output file (labelmap, table, preview) that is one of the inputs' files."""
    inputs: dict[Path, Path] = {}
    for case in cases:
        files = [p for p in case.path.iterdir() if p.is_file()] if case.path.is_dir() else [case.path]
        for file in files:
            inputs[file.resolve()] = case.path
    planned: dict[Path, Path] = {}
    for case, files in zip(cases, outputs):
        for file in files:
            target = file.resolve()
            if target in inputs:
                raise InputError(f"{file}: this output would replace the input {inputs[target]}; "
                                 "choose another output name or folder")
            if target in planned:
                raise InputError(f"{file}: two cases ({planned[target]}, {case.path}) would write this file")
            planned[target] = case.path


def single_slice_volume(path) -> bool:
    """Whether `path` is one slice of a volume (a 3D file of one slice, or a CT/MR/PET DICOM slice): the
    built-in models would take it for a radiograph."""
    path = Path(path)
    if path.is_dir():
        series = series_in(path)
        if not series or len(series[0][1]) != 1:
            return False
        path = Path(series[0][1][0])
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return False
    if reader.GetDimension() != 3 or reader.GetSize()[2] != 1:
        return False
    if reader.HasMetaDataKey(MODALITY):
        return reader.GetMetaData(MODALITY).strip().upper() in VOLUME_MODALITIES
    return compound_suffix(path) in VOLUME_SUFFIXES


def refuse_single_slice_volume(case, dimension: int) -> None:
    """Refuse to pick the radiograph model for one slice of a CT volume (a model given by name is used as asked)."""
    if dimension == 2 and single_slice_volume(case):
        raise InputError(f"{case}: a single slice of a volume (not a radiograph); the built-in models segment CT "
                         "volumes or radiographs, so give --model to segment it as a 2D image")
