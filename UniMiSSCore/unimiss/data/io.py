"""Reading images (CT volumes, radiographs) and reading and writing labelmaps with their names and colours.

Every problem with an input file is an `InputError` whose message is one line naming the file;
SimpleITK's multi-line exceptions never get through.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import re
import secrets
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import SimpleITK as sitk
import slicerio

from . import dicom
from .dicom import DICOM_SUFFIXES
from .errors import InputError
from .. import leftovers
from .image import ImageData
from .labels import Label, find_label_table, label_table_text

# ITK's warnings are multi-line noise for a user; the one that matters, "non-uniform sampling or missing
# slices" of DICOM series, is replaced by dicom.check_slices, which refuses such a series.
sitk.ProcessObject_SetGlobalWarningDisplay(False)

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LABELMAP_SUFFIXES = (".seg.nrrd", ".nrrd", ".nii.gz", ".nii")
MIN_IN_PLANE = 8  # voxels along x and y; anything smaller is not a medical image

PHOTOMETRIC, PIXEL_SPACING, IMAGER_PIXEL_SPACING = "0028|0004", "0028|0030", "0018|1164"
NIFTI_FLOATS = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 and float64
LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)


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
    exception propagates, so a half-written file never appears under the final name. The temporary name
    carries the process id: those of killed processes are removed here, the next time `path` is written.
    """
    path = Path(path)
    leftovers.remove_stale(path.parent, rf"\.tmp-(?P<pid>\d+)-[0-9a-f]{{8}}-{re.escape(path.name)}")
    temporary = path.with_name(f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{path.name}")
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
        image, tags = dicom.read_series(path, say)
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
        if _png_colour_type(path) == 4:  # grey + alpha: ITK knows no such pixel type
            return _grey_of_grey_alpha_png(path), {}
        raise _error(path, "not a readable image (unknown format or damaged header)") from None
    if reader.GetDimension() > 3:
        raise _error(path, f"4D images are not supported (size {_size_text(reader.GetSize())})")
    if compound_suffix(path) in (".nii", ".nii.gz"):
        _check_nifti(path)
    try:
        image = reader.Execute()
    except RuntimeError:
        raise _error(path, "could not read the voxels (the file is truncated or damaged)") from None
    tags = {key: reader.GetMetaData(key).strip() for key in (PHOTOMETRIC, PIXEL_SPACING, IMAGER_PIXEL_SPACING)
            if reader.HasMetaDataKey(key)}
    return image, tags


def _check_nifti(path: Path) -> None:
    """What ITK does not check in a NIfTI: a truncated file (the missing voxels would become zeros) and
    NaN or infinite float voxels (ITK reads them as 0, which is water in a CT)."""
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"  # ITK also reads a plain file named .nii.gz
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as stream:
            header = stream.read(544)
            start, end, dtype = _nifti_layout(header)
            length, bad = path.stat().st_size, 0
            if gzipped or dtype is not None:  # reading a gzip to the end checks its end marker and CRC as well
                length, pending = len(header), header[start:end] if dtype is not None else b""
                while True:
                    chunk = stream.read(1 << 22)
                    if dtype is not None:  # count in whole voxels; the data may begin inside the header's bytes
                        pending += chunk[max(start - length, 0): max(end - length, 0)]
                        usable = len(pending) - len(pending) % dtype.itemsize
                        bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(pending[:usable], dtype))))
                        pending = pending[usable:]
                    if not chunk:
                        break
                    length += len(chunk)
    except (OSError, EOFError, zlib.error):
        raise _error(path, "the file is truncated or damaged (incomplete gzip stream)") from None
    if end and length < end:
        raise _error(path, f"the file is truncated ({length} of {end} bytes)")
    if bad:
        raise _error(path, f"{bad} voxels are NaN or infinite")


def _nifti_layout(header: bytes) -> tuple[int, int, np.dtype | None]:
    """(start, end) of the voxel data of a NIfTI-1 or NIfTI-2 header (0, 0 when it is not one), and the
    numpy type of float voxels (None for other types)."""
    end = _nifti_data_end(header)
    if not end:
        return 0, 0, None
    for endian in "<>":
        if struct.unpack(endian + "i", header[:4])[0] == 348:
            code, start = struct.unpack(endian + "h", header[70:72])[0], int(struct.unpack(endian + "f", header[108:112])[0])
        elif struct.unpack(endian + "i", header[:4])[0] == 540:
            code, start = struct.unpack(endian + "h", header[12:14])[0], struct.unpack(endian + "q", header[168:176])[0]
        else:
            continue
        kind = NIFTI_FLOATS.get(code)
        return start, end, np.dtype(endian + kind) if kind else None
    return 0, 0, None


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


def _grey_of_grey_alpha_png(path: Path) -> sitk.Image:
    from PIL import Image

    try:
        with Image.open(path) as picture:
            grey = np.asarray(picture.getchannel(0))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise _error(path, f"a grey + alpha PNG that could not be read ({_last_line(error)})") from None
    return sitk.GetImageFromArray(np.ascontiguousarray(grey))


def _png_colour_type(path: Path) -> int | None:
    """The colour type in a PNG's header (4: grey + alpha), None for anything else."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(26)
    except OSError:
        return None
    return head[25] if len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" else None


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


def write_labelmap(labelmap: ImageData, path, labels: list[Label], table: str = "ctbl") -> Path:
    """Write a labelmap on its own grid; the format follows the extension.

    `.seg.nrrd`: a 3D Slicer segmentation with one named, coloured segment per label (present or not);
    `.nrrd`, `.nii.gz`, `.nii`: the labelmap plus a table of its names beside it, `<name>.ctbl` (a 3D Slicer
    colour table) or with `table="json"` `<name>.json` (`{"labels": {"1": "liver"}, ...}`, as TotalSegmentator).
    Voxel values without a label are kept and named `label_<value>`.
    """
    path = Path(path)
    check_labelmap_output(path, labels)
    labelmap = labelmap.with_array(_label_voxels(labelmap.array))
    labels = _complete_labels(labelmap.array, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if compound_suffix(path) == ".seg.nrrd":
            with atomic_output(path) as temporary:
                _write_segmentation(labelmap, temporary, labels)
        else:
            table_path = label_table_path(path, table)
            # A labelmap and its table are two files, so two writers (or a kill between two renames) could leave
            # one run's labelmap beside another's table. The table records the sha256 of the labelmap it was
            # written with and read_labelmap refuses a pair that does not match, so such a pair is never read
            # with the wrong names. The table goes in place first, the labelmap last.
            with atomic_output(path) as temporary, atomic_output(table_path) as temporary_table:
                sitk.WriteImage(labelmap.to_sitk(), str(temporary), useCompression=True)
                temporary_table.write_text(label_table_text(labels, table, table_path.name, _sha256(temporary)),
                                           encoding="utf-8")
                for stale in {label_table_path(path, "ctbl"), label_table_path(path, "json")} - {table_path}:
                    stale.unlink(missing_ok=True)  # the table of the labelmap being replaced
    except RuntimeError as error:  # SimpleITK: no space left, no permission, ...
        raise OSError(f"{path}: could not write the labelmap ({_last_line(error)})") from None
    return path


def check_labelmap_output(path, labels: list[Label]) -> None:
    """Refuse, before any work, a labelmap name whose format is unknown or cannot hold these label names."""
    path = Path(path)
    suffix = compound_suffix(path)
    if suffix not in LABELMAP_SUFFIXES:
        raise _error(path, f"unsupported labelmap format '{suffix or 'no extension'}' "
                           f"(use {', '.join(LABELMAP_SUFFIXES)})")
    if suffix == ".seg.nrrd":  # NRRD headers are ASCII (pynrrd, which slicerio uses, writes nothing else)
        foreign = next((label.name for label in labels if not label.name.isascii()), None)
        if foreign is not None:
            raise ValueError(f"{path}: the label name {foreign!r} has non-ASCII characters, which a .seg.nrrd "
                             "cannot hold; write .nii.gz or .nrrd (names go into a UTF-8 table beside it)")


def label_table_path(path, kind: str = "ctbl") -> Path:
    """The table of names beside a NIfTI/NRRD labelmap: `case.nii.gz` -> `case.ctbl` or `case.json`."""
    if kind not in ("ctbl", "json"):
        raise ValueError(f"unknown label table kind {kind!r} (ctbl or json)")
    return colour_table_path(path).with_suffix("." + kind)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


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


def read_labelmap(path, on_message: Callable[[str], None] | None = None,
                  name_all: bool = True) -> tuple[ImageData, list[Label]]:
    """A labelmap and its labels (sorted by value, background excluded).

    Names come from the segments of a `.seg.nrrd`, or for NRRD/NIfTI from the first table found beside it
    (`case.ctbl`, `case.json`, `dataset.json` here or one folder up; see `labels.table_candidates`). A table
    that unimiss wrote for another version of the labelmap is refused. Voxel values that no name covers are
    named `label_<value>`, or left out with `name_all=False` (to tell named from unnamed values).
    `on_message` hears what merging overlapping `.seg.nrrd` layers changed.
    """
    path = Path(path)
    _check_file(path, LABELMAP_SUFFIXES)
    if compound_suffix(path) == ".seg.nrrd":
        data, labels = _read_segmentation(path, on_message or (lambda message: None))
        return data, _complete_labels(data.array, labels) if name_all else labels
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
    table = find_label_table(path)
    if table is not None and table.labelmap_sha256 and table.labelmap_sha256 != _sha256(path):
        raise _error(table.path, f"this table was written with another version of {path.name} (the checksum it "
                                 "records differs), so its names may not be this labelmap's; write the labelmap "
                                 "again, or remove the checksum line if you know the names are right")
    labels = table.labels if table is not None else []
    return data, _complete_labels(data.array, labels) if name_all else labels


def _read_segmentation(path: Path, say: Callable[[str], None]) -> tuple[ImageData, list[Label]]:
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
    # Sized by the segments' values, not the voxels' (a stray 1e9 must not ask for gigabytes); voxels above
    # every segment's value belong to none and map through the last entry, 0.
    top = max([int(s.get("labelValue", 1)) for s in segmentation.get("segments", [])], default=0)
    if top > np.iinfo(np.uint16).max:
        raise _error(path, f"segment value {top} does not fit a 16-bit labelmap")
    tables = np.zeros((layers.shape[0], max(top, 0) + 2), np.int64)
    labels = []
    for segment in segmentation.get("segments", []):
        file_value, layer = int(segment.get("labelValue", 1)), int(segment.get("layer", 0))
        if file_value <= 0:
            continue
        value = file_value if file_value not in used else max(used) + 1
        used.add(value)
        if 0 <= layer < layers.shape[0] and file_value < tables.shape[1]:
            tables[layer, file_value] = value
        labels.append(_segment_label(path, segment, value))
    if max(used, default=0) > np.iinfo(np.uint16).max:
        raise _error(path, "too many segments for a 16-bit labelmap")
    dtype = np.uint8 if max(used, default=0) <= np.iinfo(np.uint8).max else np.uint16
    merged = tables[0].astype(dtype)[np.minimum(layers[0], tables.shape[1] - 1)]
    drawn = np.bincount(merged.reshape(-1), minlength=max(used, default=0) + 1) if layers.shape[0] > 1 else None
    for layer in range(1, layers.shape[0]):
        mapped = tables[layer].astype(dtype)[np.minimum(layers[layer], tables.shape[1] - 1)]
        drawn += np.bincount(mapped.reshape(-1), minlength=drawn.size)
        np.copyto(merged, mapped, where=mapped > 0)
    if drawn is not None:  # one labelmap holds one class per voxel: later layers cover earlier ones
        kept = np.bincount(merged.reshape(-1), minlength=drawn.size)
        for label in labels:
            lost = int(drawn[label.value] - kept[label.value])
            if lost and not kept[label.value]:
                raise _error(path, f"segment '{label.name}' lies entirely under segments of a later layer; one "
                                   "labelmap cannot hold both (save the overlapping segments in separate files)")
            if lost:
                say(f"{path.name}: {lost} of {int(drawn[label.value])} voxels of segment '{label.name}' lie under "
                    "segments of a later layer and belong to those")
    data = ImageData.from_ijk_to_lps(np.ascontiguousarray(merged.T), segmentation["ijkToLPS"]).squeeze_slice()
    return data, sorted(labels, key=lambda label: label.value)


def _segment_label(path: Path, segment: dict, value: int) -> Label:
    colour = tuple(int(round(min(max(c, 0.0), 1.0) * 255)) for c in segment.get("color", (0.5, 0.5, 0.5)))
    try:
        return Label(value, segment.get("name") or segment.get("id") or f"label_{value}", colour,
                     dict(segment.get("terminology", {})))
    except ValueError as error:
        raise _error(path, f"segment {segment.get('id', value)}: {error}") from None
