"""Reading images (CT volumes, radiographs) and reading and writing labelmaps with their names and colours.

Every problem with an input file is an `InputError` whose message is one line naming the file;
SimpleITK's multi-line exceptions never get through.
"""
from __future__ import annotations

import gzip
import math
import os
import secrets
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import SimpleITK as sitk
import slicerio

from .image import ImageData
from .labels import Label

sitk.ProcessObject_SetGlobalWarningDisplay(False)

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom")
LABELMAP_SUFFIXES = (".seg.nrrd", ".nrrd", ".nii.gz", ".nii")
MIN_IN_PLANE = 8  # voxels along x and y; anything smaller is not a medical image

PHOTOMETRIC, PIXEL_SPACING, IMAGER_PIXEL_SPACING = "0028|0004", "0028|0030", "0018|1164"
SERIES_UID, SERIES_DESCRIPTION = "0020|000e", "0008|103e"
LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class InputError(ValueError):
    """A problem with an input file; the message is a single line that names the file."""

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))


def _error(path, problem: str) -> InputError:
    return InputError(f"{path}: {problem}")


def compound_suffix(path) -> str:
    """Lower-case extension, with .nii.gz and .seg.nrrd taken as one."""
    name = Path(path).name.lower()
    for compound in (".nii.gz", ".seg.nrrd"):
        if name.endswith(compound):
            return compound
    return Path(name).suffix


def colour_table_path(path) -> Path:
    """The colour-table sidecar of a labelmap: `case.nii.gz` -> `case.ctbl`."""
    path = Path(path)
    return path.with_name(path.name[: len(path.name) - len(compound_suffix(path))] + ".ctbl")


@contextmanager
def atomic_output(path) -> Iterator[Path]:
    """Yield a temporary path beside `path`, ending with the same name so that writers pick the same format.

    On success it replaces `path`; on any exception (KeyboardInterrupt included) it is removed and the
    exception propagates, so a half-written file never appears under the final name.
    """
    path = Path(path)
    temporary = path.with_name(f".tmp-{secrets.token_hex(4)}-{path.name}")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------- images


def read_image(path, on_message: Callable[[str], None] | None = None) -> ImageData:
    """A CT volume (NIfTI, NRRD, MHA, DICOM series folder) or a radiograph (PNG, JPEG, DICOM CR/DX, 2D NIfTI/NRRD).

    Scalar voxels keep the file's type; colour pictures become float32 grey. A single-slice volume is
    returned as 2D. `on_message` hears what was chosen or changed (DICOM series, colour, inversion).
    """
    path = Path(path)
    say = on_message or (lambda message: None)
    if path.is_dir():
        image, tags = _read_dicom_series(path, say)
    else:
        _check_file(path, VOLUME_SUFFIXES + PICTURE_SUFFIXES + DICOM_SUFFIXES)
        image, tags = _read_file(path)
    data = _scalar(path, image, say)
    data = _apply_dicom_tags(path, data, tags, say)
    _check_voxels(path, data)
    return data


def _check_file(path: Path, suffixes: tuple[str, ...]) -> None:
    if not path.exists():
        raise _error(path, "no such file or folder")
    if not path.is_file():
        raise _error(path, "not a regular file")
    if path.stat().st_size == 0:
        raise _error(path, "the file is empty")
    suffix = compound_suffix(path)
    if suffix in suffixes:
        return
    dicom_allowed = set(DICOM_SUFFIXES) <= set(suffixes)
    # DICOM files often have no or odd extensions: accept whatever GDCM recognises by content.
    try:
        if dicom_allowed and sitk.ImageFileReader.GetImageIOFromFileName(str(path)) == "GDCMImageIO":
            return
    except RuntimeError:
        pass
    raise _error(path, f"unsupported file type '{suffix or 'no extension'}' (expected one of {', '.join(suffixes)}"
                       + (" or a DICOM folder)" if dicom_allowed else ")"))


def _read_file(path: Path) -> tuple[sitk.Image, dict[str, str]]:
    """The image as SimpleITK reads it, and the DICOM tags that matter for radiographs."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise _error(path, "not a readable image (unknown format or damaged header)") from None
    if reader.GetDimension() > 3:
        raise _error(path, f"4D images are not supported (size {_size_text(reader.GetSize())})")
    if compound_suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
    try:
        image = reader.Execute()
    except RuntimeError:
        raise _error(path, "could not read the voxels (the file is truncated or damaged)") from None
    tags = {key: reader.GetMetaData(key).strip() for key in (PHOTOMETRIC, PIXEL_SPACING, IMAGER_PIXEL_SPACING)
            if reader.HasMetaDataKey(key)}
    return image, tags


def _check_nifti_complete(path: Path) -> None:
    """ITK reads a truncated NIfTI without complaint (the missing voxels become zeros): check the length here."""
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"  # ITK also reads a plain file named .nii.gz
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as stream:
            header = stream.read(544)
            length = path.stat().st_size
            if gzipped:  # reading to the end checks the gzip end marker and CRC as well
                length = len(header)
                while chunk := stream.read(1 << 22):
                    length += len(chunk)
    except (OSError, EOFError, zlib.error):
        raise _error(path, "the file is truncated or damaged (incomplete gzip stream)") from None
    expected = _nifti_data_end(header)
    if expected and length < expected:
        raise _error(path, f"the file is truncated ({length} of {expected} bytes)")


def _nifti_data_end(header: bytes) -> int:
    """Offset of the end of the voxel data from a NIfTI-1 or NIfTI-2 header; 0 when it is not one."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = struct.unpack(endian + "f", header[108:112])[0]
        elif len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = struct.unpack(endian + "q", header[168:176])[0]
        else:
            continue
        if not 1 <= dims[0] <= 7 or not math.isfinite(offset):
            return 0
        return int(offset) + math.prod(dims[1: dims[0] + 1]) * bitpix // 8
    return 0


def _read_dicom_series(folder: Path, say) -> tuple[sitk.Image, dict[str, str]]:
    """The DICOM series with the most files in `folder` (not its sub-folders), slices ordered by position."""
    try:
        series = [(uid, sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
                  for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))]
    except RuntimeError:
        series = []
    series = [(uid, files) for uid, files in series if files]
    if not series:
        raise _error(folder, "no DICOM series in this folder (sub-folders are not searched)")
    uid, files = max(series, key=lambda item: len(item[1]))
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    try:
        reader.ReadImageInformation()
        first = {key: reader.GetMetaData(key).strip() for key in reader.GetMetaDataKeys()}
    except RuntimeError:
        first = {}
    uid = first.get(SERIES_UID) or uid
    description = first.get(SERIES_DESCRIPTION)
    message = (f"DICOM series '{description}'" if description else "DICOM series") + \
        f" ({f'UID {uid}' if uid else 'no series UID'}, {len(files)} slices)"
    if len(series) > 1:
        message += f" (the largest of {len(series)} series in the folder)"
    say(message)
    series_reader = sitk.ImageSeriesReader()
    series_reader.SetFileNames(files)
    try:
        image = series_reader.Execute()
    except RuntimeError as error:
        raise _error(folder, f"could not read the DICOM series ({_last_line(error)[:200]})") from None
    tags = {key: first[key] for key in (PHOTOMETRIC, PIXEL_SPACING, IMAGER_PIXEL_SPACING) if key in first}
    return image, tags


def _scalar(path: Path, image: sitk.Image, say) -> ImageData:
    """Scalar voxels: a single slice becomes 2D, colour becomes grey, anything with more axes is refused."""
    size = image.GetSize()
    components = image.GetNumberOfComponentsPerPixel()
    flat = image.GetDimension() == 2 or size[2] == 1
    if components == 1:
        return ImageData.from_sitk(image).squeeze_slice()
    if not flat or components > 4:
        raise _error(path, f"4D images are not supported (size {_size_text(size)} with {components} values per voxel)")
    voxels = sitk.GetArrayFromImage(image).reshape(size[1], size[0], components)
    if components == 2:  # grey + alpha
        grey = voxels[..., 0]
    else:  # RGB or RGBA: drop alpha
        grey = voxels[..., :3].astype(np.float32) @ LUMINANCE
        say(f"{path.name}: colour image converted to grey")
    spacing, origin, direction = image.GetSpacing(), image.GetOrigin(), image.GetDirection()
    if image.GetDimension() == 3:
        spacing, origin, direction = spacing[:2], origin[:2], np.reshape(direction, (3, 3))[:2, :2].ravel()
    return ImageData(grey, spacing, origin, direction)


def _apply_dicom_tags(path: Path, data: ImageData, tags: dict[str, str], say) -> ImageData:
    if data.dimension == 2 and data.spacing == (1.0, 1.0):
        # GDCM may leave 1 x 1 mm for projection radiographs; DICOM writes spacing as "row\column" = (y, x).
        for key in (IMAGER_PIXEL_SPACING, PIXEL_SPACING):
            try:
                row, column = (float(v) for v in tags[key].split("\\"))
            except (KeyError, ValueError):
                continue
            if row > 0 and column > 0:
                data = ImageData(data.array, (column, row), data.origin, data.direction)
                break
    if tags.get(PHOTOMETRIC) == "MONOCHROME1":
        # ITK's GDCMImageIO (since ITK 5.1, i.e. every SimpleITK this package accepts) already converts
        # MONOCHROME1 to MONOCHROME2 while reading; inverting again here would undo it.
        say(f"{path.name}: MONOCHROME1 pixels were inverted so that dense tissue is bright")
    return data


def _check_voxels(path: Path, data: ImageData) -> None:
    in_plane = data.size[:2]
    if min(in_plane) < MIN_IN_PLANE:
        raise _error(path, f"the image is too small ({_size_text(data.size)} voxels; "
                           f"at least {MIN_IN_PLANE} x {MIN_IN_PLANE} in-plane are needed)")
    if np.issubdtype(data.array.dtype, np.floating) and not np.isfinite(data.array).all():
        bad = int(np.count_nonzero(~np.isfinite(data.array)))
        raise _error(path, f"{bad} voxels are NaN or infinite")


def _last_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _size_text(size) -> str:
    return " x ".join(str(n) for n in size)


# ---------------------------------------------------------------------------------------------- labelmaps


def write_labelmap(labelmap: ImageData, path, labels: list[Label]) -> Path:
    """Write a labelmap on its own grid; the format follows the extension.

    `.seg.nrrd`: a 3D Slicer segmentation with one named, coloured segment per label (present or not);
    `.nrrd`, `.nii.gz`, `.nii`: the labelmap plus a `.ctbl` colour table beside it.
    Voxel values without a label are kept and named `label_<value>`.
    """
    path = Path(path)
    suffix = compound_suffix(path)
    if suffix not in LABELMAP_SUFFIXES:
        raise _error(path, f"unsupported labelmap format '{suffix or 'no extension'}' "
                           f"(use {', '.join(LABELMAP_SUFFIXES)})")
    labelmap = labelmap.with_array(_label_voxels(labelmap.array))
    labels = _complete_labels(labelmap.array, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if suffix == ".seg.nrrd":
            with atomic_output(path) as temporary:
                _write_segmentation(labelmap, temporary, labels)
        else:
            table = colour_table_path(path)
            # The table is put in place first: a labelmap under its final name always has its names.
            with atomic_output(path) as temporary, atomic_output(table) as temporary_table:
                sitk.WriteImage(labelmap.to_sitk(), str(temporary), useCompression=True)
                temporary_table.write_text(_colour_table_text(labels, table.name))
    except RuntimeError as error:  # SimpleITK: no space left, no permission, ...
        raise OSError(f"{path}: could not write the labelmap ({_last_line(error)})") from None
    return path


def _label_voxels(array: np.ndarray) -> np.ndarray:
    """Labels as the smallest unsigned type that holds them (uint8 or uint16)."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"labelmap voxels must be integers, got {array.dtype}")
    if array.size and array.min() < 0:
        raise ValueError("labelmap voxels must not be negative")
    high = int(array.max()) if array.size else 0
    if high > np.iinfo(np.uint16).max:
        raise ValueError(f"label value {high} does not fit a 16-bit labelmap")
    target = np.uint8 if high <= np.iinfo(np.uint8).max else np.uint16
    return array if array.dtype == target else array.astype(target)


def label_values(array: np.ndarray) -> list[int]:
    """The non-zero values present in an unsigned labelmap (counted in slabs to keep memory small)."""
    if array.size == 0:
        return []
    counts = np.zeros(int(array.max()) + 1, np.int64)
    for slab in np.array_split(array.reshape(-1), max(1, array.size >> 22)):
        counts += np.bincount(slab, minlength=counts.size)
    return [int(v) for v in np.flatnonzero(counts[1:]) + 1]


def _complete_labels(array: np.ndarray, labels: list[Label]) -> list[Label]:
    values = [label.value for label in labels]
    if len(set(values)) != len(values) or any(v <= 0 for v in values):
        raise ValueError(f"label values must be positive and unique, got {values}")
    missing = [Label(v, f"label_{v}") for v in label_values(array) if v not in set(values)]
    return sorted([*labels, *missing], key=lambda label: label.value)


def _write_segmentation(labelmap: ImageData, path: Path, labels: list[Label]) -> None:
    voxels = labelmap.array if labelmap.dimension == 3 else labelmap.array[np.newaxis]
    segments = []
    for label in labels:
        segment = {"id": f"Segment_{label.value}", "name": label.name, "nameAutoGenerated": False,
                   "color": [c / 255 for c in label.color], "colorAutoGenerated": False,
                   "labelValue": label.value, "layer": 0}
        if terminology := label.terminology_string():
            segment["tags"] = {"TerminologyEntry": terminology}  # read back by slicerio as "terminology"
        segments.append(segment)
    segmentation = {"voxels": voxels.T,  # slicerio indexes (i, j, k) = (x, y, z)
                    "ijkToLPS": labelmap.ijk_to_lps(),
                    "containedRepresentationNames": ["Binary labelmap"],
                    "segments": segments}
    slicerio.write_segmentation(str(path), segmentation, compression_level=1)


def _colour_table_text(labels: list[Label], name: str) -> str:
    lines = [f"# Color table file {name}", f"# {len(labels) + 1} values", "0 background 0 0 0 0"]
    lines += [f"{label.value} {'_'.join(label.name.split()) or f'label_{label.value}'} "
              f"{label.color[0]} {label.color[1]} {label.color[2]} 255" for label in labels]
    return "\n".join(lines) + "\n"


def read_labelmap(path) -> tuple[ImageData, list[Label]]:
    """A labelmap and its labels (sorted by value, background excluded), from `.seg.nrrd` or NRRD/NIfTI + `.ctbl`."""
    path = Path(path)
    _check_file(path, LABELMAP_SUFFIXES)
    if compound_suffix(path) == ".seg.nrrd":
        return _read_segmentation(path)
    image, _ = _read_file(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise _error(path, "not a labelmap (more than one value per voxel)")
    data = ImageData.from_sitk(image).squeeze_slice()
    voxels = data.array
    if not np.issubdtype(voxels.dtype, np.integer):
        if not np.isfinite(voxels).all() or (voxels != np.round(voxels)).any():
            raise _error(path, "not a labelmap (the voxels are not whole numbers)")
    if voxels.size and voxels.min() < 0:
        raise _error(path, "not a labelmap (negative voxel values)")
    if voxels.size and voxels.max() > np.iinfo(np.uint16).max:
        raise _error(path, "not a labelmap (values above 65535)")
    data = data.with_array(_label_voxels(voxels.astype(np.uint16) if voxels.dtype.kind == "f" else voxels))
    table = colour_table_path(path)
    labels = _read_colour_table(table) if table.is_file() else []
    return data, _complete_labels(data.array, labels)


def _read_colour_table(path: Path) -> list[Label]:
    labels = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as error:
        raise _error(path, f"cannot read the colour table ({error.strerror})") from None
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            value, name, colour = int(fields[0]), fields[1], tuple(int(c) for c in fields[2:5])
        except (ValueError, IndexError):
            raise _error(path, f"line {number} is not 'value name R G B A'") from None
        if value in {label.value for label in labels}:
            raise _error(path, f"line {number} repeats value {value}")
        if value > 0 and len(colour) == 3:
            labels.append(Label(value, name, colour))
    return labels


def _read_segmentation(path: Path) -> tuple[ImageData, list[Label]]:
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as error:  # slicerio and pynrrd raise many kinds; the user needs one line
        raise _error(path, f"not a readable segmentation file ({_last_line(error)[:200]})") from None
    voxels = segmentation["voxels"]
    layers = voxels if voxels.ndim == 4 else voxels[np.newaxis]
    if layers.ndim != 4 or not np.issubdtype(layers.dtype, np.integer):
        raise _error(path, "not a segmentation (expected integer voxels in 3 dimensions)")
    if layers.size and layers.min() < 0:
        raise _error(path, "not a segmentation (negative voxel values)")
    # Each segment keeps its value unless a segment of another layer has taken it; layers are merged in order.
    used: set[int] = set()
    tables = np.zeros((layers.shape[0], int(layers.max(initial=0)) + 1), np.int64)
    labels = []
    for segment in segmentation.get("segments", []):
        file_value, layer = int(segment.get("labelValue", 1)), int(segment.get("layer", 0))
        if file_value <= 0:
            continue
        value = file_value if file_value not in used else max(used) + 1
        used.add(value)
        if 0 <= layer < layers.shape[0] and file_value < tables.shape[1]:
            tables[layer, file_value] = value
        labels.append(_segment_label(segment, value))
    if max(used, default=0) > np.iinfo(np.uint16).max:
        raise _error(path, "too many segments for a 16-bit labelmap")
    dtype = np.uint8 if max(used, default=0) <= np.iinfo(np.uint8).max else np.uint16
    merged = tables[0].astype(dtype)[layers[0]]
    for layer in range(1, layers.shape[0]):
        mapped = tables[layer].astype(dtype)[layers[layer]]
        np.copyto(merged, mapped, where=mapped > 0)
    data = ImageData.from_ijk_to_lps(np.ascontiguousarray(merged.T), segmentation["ijkToLPS"]).squeeze_slice()
    return data, sorted(labels, key=lambda label: label.value)


def _segment_label(segment: dict, value: int) -> Label:
    colour = tuple(int(round(min(max(c, 0.0), 1.0) * 255)) for c in segment.get("color", (0.5, 0.5, 0.5)))
    return Label(value, segment.get("name") or segment.get("id") or f"label_{value}", colour,
                 dict(segment.get("terminology", {})))
