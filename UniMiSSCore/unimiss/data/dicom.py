"""DICOM series folders: which files make the volume, and whether their slices lie on a regular grid.

ITK stacks whatever slices it is given and spreads any gap over the whole volume (a 2 mm series missing one
slice of 20 becomes 19 slices at 2.11 mm) with only a warning, which this package does not show. Instead,
every series is checked here from the slice positions and orientations in the headers, before the voxels are
read: a gap, uneven steps, two slices at one position, mixed orientations or a sheared (gantry-tilted) stack
are refused in one line that names the folder and the slices.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from .errors import InputError

POSITION, ORIENTATION, MODALITY = "0020|0032", "0020|0037", "0008|0060"
SERIES_UID, SERIES_DESCRIPTION = "0020|000e", "0008|103e"
DICOM_SUFFIXES = (".dcm", ".dicom")
ORIENTATION_TOLERANCE = 1e-3  # direction cosines


def series_in(folder: Path) -> list[tuple[str, list[str]]]:
    """(series UID, files ordered by GDCM) for each DICOM series directly in `folder`, largest first."""
    try:
        found = [(uid, list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)))
                 for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))]
    except RuntimeError:
        return []
    return sorted(((uid, files) for uid, files in found if files), key=lambda item: -len(item[1]))


def read_series(folder: Path, say: Callable[[str], None]) -> tuple[sitk.Image, dict[str, str]]:
    """The largest DICOM series in `folder` (not its sub-folders), checked, and the tags of its first file."""
    entries = [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")]
    for entry in entries:  # GDCM skips what it cannot open: a broken link would silently drop a slice
        if entry.is_symlink() and not entry.exists():
            raise InputError(f"{folder}: {entry.name} is a broken link (a slice of the series may be missing)")
        if entry.is_file() and not os.access(entry, os.R_OK):
            raise InputError(f"{folder}: {entry.name} cannot be read (permission denied)")
    series = series_in(folder)
    if not series:
        raise InputError(f"{folder}: no DICOM series in this folder (sub-folders are not searched)")
    uid, files = series[0]
    in_series = {Path(f).name for _, fs in series for f in fs}
    damaged = [p.name for p in entries if p.is_file() and p.name not in in_series
               and p.name.lower().endswith(DICOM_SUFFIXES)]
    if damaged:
        raise InputError(f"{folder}: {damaged[0]} is not readable DICOM"
                         + (f" (nor {len(damaged) - 1} more)" if len(damaged) > 1 else "")
                         + "; a slice of the series may be missing")
    headers = [_header(folder, Path(f)) for f in files]
    first = headers[0]
    uid = first.get(SERIES_UID) or uid
    description = first.get(SERIES_DESCRIPTION)
    message = (f"DICOM series '{description}'" if description else "DICOM series") + \
        f" ({f'UID {uid}' if uid else 'no series UID'}, {len(files)} slices)"
    if len(series) > 1:
        others = ", ".join(f"UID {other} ({len(fs)} files)" for other, fs in series[1:4])
        message += f" (the largest of {len(series)} series in the folder; not read: {others}" + \
            (", ..." if len(series) > 4 else "") + ")"
    ignored = [p.name for p in entries if p.is_file() and p.name not in in_series]
    if ignored:
        message += f"; ignored {len(ignored)} non-DICOM file(s): {', '.join(ignored[:3])}" + \
            (", ..." if len(ignored) > 3 else "")
    say(message)
    check_slices(folder, [Path(f).name for f in files], headers)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(f"{folder}: could not read the DICOM series ({_last_line(error)[:200]})") from None
    return image, first


def check_slices(folder: Path, names: list[str], headers: list[dict[str, str]]) -> None:
    """Refuse a series whose slices are not evenly spaced along one normal, with one line naming them."""
    if len(headers) < 2:
        return
    orientations, positions = [], []
    for name, header in zip(names, headers):
        orientation, position = _numbers(header.get(ORIENTATION), 6), _numbers(header.get(POSITION), 3)
        if orientation is None or position is None:
            missing = "ImageOrientationPatient" if orientation is None else "ImagePositionPatient"
            raise InputError(f"{folder}: {name} has no slice position ({missing}); the {len(names)} files "
                             "do not make a volume (give the files one by one to segment each as an image)")
        orientations.append(orientation)
        positions.append(position)
    orientations, positions = np.array(orientations), np.array(positions)
    odd = np.flatnonzero(np.abs(orientations - orientations[0]).max(axis=1) > ORIENTATION_TOLERANCE)
    if odd.size:
        raise InputError(f"{folder}: mixed slice orientations ({names[odd[0]]} is oriented differently "
                         f"from {names[0]})")
    row, column = orientations[0, :3], orientations[0, 3:]
    normal = np.cross(row, column)
    order = np.argsort(positions @ normal, kind="stable")
    along = (positions @ normal)[order]
    names = [names[i] for i in order]
    steps = np.diff(along)
    step = float(np.median(steps))
    tolerance = max(0.02, 0.01 * abs(step))  # positions are often written with 0.01 mm precision
    for i, gap in enumerate(steps):
        between = f"slices {i + 1} and {i + 2} of {len(names)} ({names[i]}, {names[i + 1]})"
        if gap <= tolerance:
            raise InputError(f"{folder}: two slices at the same position, {between} "
                             f"(at {along[i]:.2f} mm along the slice normal)")
        if abs(gap - step) > tolerance:
            missing = round(gap / step) - 1
            if missing >= 1 and abs(gap - (missing + 1) * step) <= tolerance:
                problem = f"{missing} slice{'s' if missing > 1 else ''} missing between {between}"
            else:
                problem = f"uneven slice spacing between {between}"
            raise InputError(f"{folder}: {problem}: positions jump {gap:.2f} mm where the series steps "
                             f"{step:.2f} mm")
    in_plane = (positions[order] - positions[order][0]) @ np.stack([row, column], axis=1)
    shift = np.linalg.norm(in_plane, axis=1)
    if shift.max() > max(0.05, 0.1 * abs(step)):  # a tenth of a slice in total: harmless
        worst = int(shift.argmax())
        raise InputError(f"{folder}: the slices are not stacked along their normal ({names[worst]} is shifted "
                         f"{shift[worst]:.2f} mm in its plane; gantry tilt?), so they do not make a regular volume")


def _header(folder: Path, path: Path) -> dict[str, str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"{folder}: {path.name} is not readable DICOM; a slice of the series may be missing") from None
    return {key: reader.GetMetaData(key).strip() for key in reader.GetMetaDataKeys()}


def _numbers(text: str | None, count: int):
    try:
        values = [float(v) for v in (text or "").split("\\")]
    except ValueError:
        return None
    return values if len(values) == count and all(np.isfinite(values)) else None


def _last_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
