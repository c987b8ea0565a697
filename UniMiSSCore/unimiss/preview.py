"""PNG previews of a segmentation: three orthogonal planes of a CT, or the radiograph, with the segments
outlined over them and a legend of their names and colours."""
from __future__ import annotations

import re

import numpy as np
import SimpleITK as sitk

from .data.image import ImageData
from .data.io import atomic_output
from .data.labels import Label

# Well-separated, saturated colours (Tableau 10 and brighter companions), taken in order when a label's own
# colour is too close to one already shown: organ colour tables give liver, kidneys, aorta and heart
# near-identical salmon shades, and left and right organs one colour.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (23, 190, 207),
           (188, 189, 34), (227, 119, 194), (255, 221, 0), (0, 210, 120), (120, 60, 255), (255, 60, 140),
           (140, 86, 75), (0, 90, 255), (160, 255, 80), (255, 160, 120)]
MIN_DISTANCE = 70.0  # RGB distance below which two display colours count as the same
MIN_SATURATION = 0.3  # greyish colours vanish on a grey image
FILL = 0.25  # opacity of the fill inside the outlines


def _distance(a, b) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float32)))


def _saturation(color) -> float:
    return (max(color) - min(color)) / max(max(color), 1)


def _shade(color) -> tuple[int, int, int]:
    """The same hue, clearly lighter (for dark colours) or darker (for light ones)."""
    rgb = np.array(color, dtype=np.float32)
    luminance = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    target = 255.0 if luminance < 128 else 0.0
    return tuple(int(round(v)) for v in rgb + 0.5 * (target - rgb))


def _partner(name: str) -> str | None:
    """`kidney_right` -> `kidney_left`, `Left lung` -> `Right lung`: the same organ's other side, if named so."""
    match = re.fullmatch(r"(.*?)(left|right)(.*)", name, flags=re.IGNORECASE)
    if match is None:
        return None
    side = match[2]
    other = {"left": "right", "right": "left"}[side.lower()]
    other = other.capitalize() if side[0].isupper() else other
    return match[1] + (other.upper() if side.isupper() else other) + match[3]


def display_colors(labels: list[Label]) -> dict[int, tuple[int, int, int]]:
    """A colour per label value that differs visibly from every other, derived deterministically.

    A label keeps its own colour unless it is greyish or too close to one already given; the right (or left) side of an
    organ whose other side is shown gets a shade of that side's colour; otherwise the next distinct palette
    colour is used.
    """
    shown: dict[int, tuple[int, int, int]] = {}
    by_name = {label.name.lower(): label for label in sorted(labels, key=lambda l: l.value)}
    for label in sorted(labels, key=lambda l: l.value):
        color = tuple(int(c) for c in label.color)
        taken = list(shown.values())
        if _saturation(color) < MIN_SATURATION or any(_distance(color, c) < MIN_DISTANCE for c in taken):
            partner = by_name.get((_partner(label.name) or "").lower())
            shaded = _shade(shown[partner.value]) if partner is not None and partner.value in shown else None
            if shaded is not None and all(_distance(shaded, c) >= MIN_DISTANCE for c in taken):
                color = shaded
            else:
                color = next((p for p in PALETTE if all(_distance(p, c) >= MIN_DISTANCE for c in taken)),
                             PALETTE[len(shown) % len(PALETTE)])
        shown[label.value] = color
    return shown


def _window(array: np.ndarray, modality_ct: bool) -> np.ndarray:
    if modality_ct:
        low, high = -160.0, 240.0  # soft-tissue window: W 400, L 40
    else:
        low, high = np.percentile(array, (0.5, 99.5))
    return np.clip((array.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1)


def _edges(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels of `mask` within `width` pixels of its border (4-connected erosion)."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return mask & ~inner


def _overlay(grey: np.ndarray, labels: np.ndarray, colors: dict[int, tuple]) -> np.ndarray:
    """The image in grey, each segment filled faintly and outlined in its display colour."""
    rgb = np.repeat(grey[..., None] * 255.0, 3, axis=-1)
    for value, color in colors.items():
        mask = labels == value
        if not mask.any():
            continue
        rgb[mask] = (1 - FILL) * rgb[mask] + FILL * np.array(color, dtype=np.float32)
        rgb[_edges(mask)] = color
    return rgb.astype(np.uint8)


def _isotropic(plane: np.ndarray, row_mm: float, col_mm: float, pixel: float) -> np.ndarray:
    """Resample a plane (nearest neighbour) to square pixels of `pixel` mm; anisotropic CT otherwise looks squashed."""
    rows, cols = (int(round(n * s / pixel)) for n, s in zip(plane.shape, (row_mm, col_mm)))
    r = np.minimum((np.arange(rows) + 0.5) * pixel / row_mm, plane.shape[0] - 1).astype(int)
    c = np.minimum((np.arange(cols) + 0.5) * pixel / col_mm, plane.shape[1] - 1).astype(int)
    return plane[np.ix_(r, c)]


def _legend(width: int, entries: list[tuple[str, tuple]]) -> np.ndarray:
    """Rows of colour swatches and names, as wide as the picture."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=14)
    swatch, gap, row_height = 14, 18, 22
    cells = [(name, color, swatch + 6 + int(font.getlength(name))) for name, color in entries]
    rows, x = [[]], 8
    for cell in cells:
        if rows[-1] and x + cell[2] > width - 8:
            rows.append([])
            x = 8
        rows[-1].append((x, cell))
        x += cell[2] + gap
    picture = Image.new("RGB", (width, 8 + row_height * len(rows)), (0, 0, 0))
    draw = ImageDraw.Draw(picture)
    for i, row in enumerate(rows):
        y = 6 + i * row_height
        for x, (name, color, _) in row:
            draw.rectangle([x, y + 2, x + swatch - 1, y + swatch + 1], fill=tuple(color), outline=(255, 255, 255))
            draw.text((x + swatch + 6, y), name, fill=(255, 255, 255), font=font)
    return np.asarray(picture)


def render(image: ImageData, labelmap: ImageData, labels: list[Label], modality_ct: bool = True) -> np.ndarray:
    """An RGB uint8 picture: axial, coronal and sagittal planes through the segments' centre, or the 2D image,
    above a legend of the labels that occur."""
    colors = display_colors(labels)
    present = set(np.unique(labelmap.array).tolist())
    if image.dimension == 2:
        picture = _overlay(_window(image.array, modality_ct), labelmap.array, colors)
    else:
        # Radiological display: patient's right on the left of the picture, head at the top.
        oriented = sitk.DICOMOrient(image.to_sitk(), "LPS")
        ct = sitk.GetArrayFromImage(oriented)
        lab = sitk.GetArrayFromImage(sitk.DICOMOrient(labelmap.to_sitk(), "LPS"))
        sx, sy, sz = oriented.GetSpacing()
        fg = np.argwhere(lab > 0)
        z, y, x = (fg.mean(axis=0).round().astype(int) if len(fg) else np.array(lab.shape) // 2)
        planes = [(ct[z], lab[z], sy, sx), (ct[::-1, y], lab[::-1, y], sz, sx), (ct[::-1, :, x], lab[::-1, :, x], sz, sy)]
        # Square pixels, fine enough that the largest side has at least 384 of them.
        pixel = min(sx, sy, sz, max(n * s for n, s in zip(ct.shape, (sz, sy, sx))) / 384)
        panels = []
        for grey, seg, row_mm, col_mm in planes:
            panels.append(_overlay(_isotropic(_window(grey, modality_ct), row_mm, col_mm, pixel),
                                   _isotropic(seg, row_mm, col_mm, pixel), colors))
        height = max(p.shape[0] for p in panels)
        picture = np.concatenate([np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0))) for p in panels], axis=1)
    entries = [(l.name, colors[l.value]) for l in sorted(labels, key=lambda l: l.value) if l.value in present]
    if not entries:
        entries = [("no segment found", (0, 0, 0))]
    return np.concatenate([picture, _legend(picture.shape[1], entries)], axis=0)


def write_preview(path, image: ImageData, labelmap: ImageData, labels: list[Label], modality_ct: bool = True):
    picture = render(image, labelmap, labels, modality_ct)
    with atomic_output(path) as tmp:
        sitk.WriteImage(sitk.GetImageFromArray(picture, isVector=True), str(tmp))
    return path
