"""Digitally reconstructed radiographs: a CT and its labels projected to a frontal radiograph and 2D masks.

The bridge UniMiSS+ uses between 3D and 2D: labelled CTs become labelled radiographs. Parallel projection
along the anterior-posterior axis (not a cone beam). Each radiograph is randomised the way real ones vary:
patient rotation about the long axis, tube voltage (bone contrast), exposure, scatter, detector blur and
noise, field of view and collimation, and the grey-level response of the detector and its processing,
which can be taken from real radiographs (histogram matching), so that one CT gives many varied images.
"""
from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from .image import ImageData

MU_WATER_PER_MM = 0.02  # linear attenuation of water near 70 keV, 1/mm
HIDE_MM = 5.0           # a hidden structure this deep along a ray hides the lung behind or before it
MU_SOFT_TISSUE = 1.04   # attenuation relative to water of what surrounds a clavicle (40 HU)
UPRIGHT_CLAVICLES = 0.8  # share of randomised radiographs whose clavicles are turned to an upright patient's pose


class Projector:
    """Projects one CT (and its labels) into any number of randomised radiographs.

    The line integrals are computed once per patient rotation in `rotations` (degrees about the long axis);
    each radiograph then only costs 2D work. Rows run from head to feet, columns from the patient's right to
    left (the usual display of a frontal chest radiograph).

    The masks follow the conventions of manually drawn chest radiograph references (JSRT/SCR): a pixel
    gets a label where the ray crosses at least `min_depth_fraction` of the structure's largest depth (thin
    margins stay out); labels later in `labels` are drawn over earlier ones (the heart over the lungs);
    the labels in `hidden` (e.g. the aorta, the mediastinum, the organs below the diaphragm) erase the lung
    fields (labels named lung*) wherever the ray crosses HIDE_MM of them and are not drawn themselves, so
    the lung fields are where radiation passed through lung and none of those; and clavicles are drawn
    only where they cross the lung fields and the rib cage (between the lungs' outer edges). Randomised
    radiographs mostly show the clavicles as a standing patient's (`UPRIGHT_CLAVICLES`).
    """

    def __init__(self, ct: ImageData, labelmap: ImageData | None = None, labels=(), min_depth_fraction: float = 0.25,
                 rotations=(0.0,), hidden=()):
        volume = sitk.DICOMOrient(ct.to_sitk(), "LPS")  # axes: z inferior->superior, y anterior->posterior, x right->left
        lab = sitk.DICOMOrient(labelmap.to_sitk(), "LPS") if labelmap is not None else None
        sx, sy, sz = volume.GetSpacing()
        self.spacing = (sx, sz)
        self.lung_values = [l.value for l in labels if l.name.lower().startswith("lung")]
        # Per rotation: soft-tissue path, bone path, masks, the field a radiograph shows, clavicles, masks under them.
        self.views = []
        for angle in rotations:
            hu_image, lab_image = _rotated(volume, angle, -1024.0), _rotated(lab, angle, 0) if lab else None
            hu = sitk.GetArrayFromImage(hu_image).astype(np.float32)
            hu[hu < -1024] = -1024  # outside a scanner's field of view: air
            mu = np.clip(1.0 + hu / 1000.0, 0.0, None)
            dense = mu * np.clip(hu - 200.0, 0.0, None) / 1000.0
            projected = lambda values: (values.sum(axis=1) * sy * MU_WATER_PER_MM)[::-1]  # noqa: E731
            # Bone contrast varies with the tube voltage: the path integral is linear in that factor,
            # so keep its two parts apart and mix them per radiograph.
            soft, bone = projected(mu), projected(dense)
            masks = np.zeros(soft.shape, np.uint8)
            clavicles = []  # (value, projection, its attenuation over soft tissue, its bone part), drawn last
            if lab_image is not None:
                lab_array = sitk.GetArrayFromImage(lab_image)
                for label in labels:
                    depth = _depth(lab_array, label.value)
                    if depth.max() == 0:
                        continue
                    drawn = depth >= min_depth_fraction * depth.max()
                    if label.name.lower().startswith("clavic"):
                        inside = lab_array == label.value
                        clavicles.append((label.value, drawn, projected(np.where(inside, mu - MU_SOFT_TISSUE, 0.0)),
                                          projected(np.where(inside, dense, 0.0))))
                    else:
                        masks[drawn] = label.value
                for label in hidden:
                    masks[(_depth(lab_array, label.value) * sy >= HIDE_MM) & np.isin(masks, self.lung_values)] = 0
            under = masks.copy()  # what lies under the clavicles, for moving them
            for value, drawn, _, _ in clavicles:
                masks[_within_rib_cage(drawn, np.isin(under, self.lung_values))] = value
            self.views.append((soft, bone, masks, _frame(masks, self.spacing), clavicles, under))

    def radiograph(self, rng: np.random.Generator, size: int = 512, randomise: bool = True, references=()):
        """(radiograph, 2D labelmap): uint8 image on a size x size grid, labels on the same grid.

        `references`: uint8 arrays of real radiographs; a randomised radiograph takes on the grey-level
        distribution of one of them."""
        view = self.views[int(rng.integers(len(self.views)))] if randomise else self.views[0]
        soft, bone, masks, frame, clavicles, under = view
        bone_weight = rng.uniform(0.4, 1.6) if randomise else 0.8
        path = soft + bone_weight * bone
        if randomise and clavicles and rng.random() < UPRIGHT_CLAVICLES:
            path, masks = self._upright_clavicles(path, under, clavicles, bone_weight, rng)
        # Beer-Lambert: the detector sees exp(-path) plus scatter (a wide blur of it), blurred and noisy.
        exposure = np.exp(-path * (rng.uniform(0.8, 1.2) if randomise else 1.0))
        if randomise:
            scatter = _blurred(exposure, self.spacing, rng.uniform(15, 40))
            exposure = _blurred(exposure + rng.uniform(0.0, 0.15) * scatter, self.spacing, rng.uniform(0.2, 1.0))
            exposure = exposure * (1 + rng.normal(0, rng.uniform(0.0, 0.03), exposure.shape))
        density = -np.log(np.clip(exposure, 1e-6, None))  # what radiographs display: bright where attenuating
        low, high = np.percentile(density, 1), np.percentile(density, 99.5)
        image = np.clip((density - low) / max(high - low, 1e-6), 0, 1)
        projection = sitk.GetImageFromArray(image.astype(np.float32))
        projection.SetSpacing(self.spacing)
        label_image = sitk.GetImageFromArray(masks)
        label_image.CopyInformation(projection)
        out, lab, geometry = _square(projection, label_image, frame, rng, size, randomise)
        if randomise:
            out = _response(out, rng, references)
            out = _collimate(out, rng)
        out = np.clip(out * 255.0, 0, 255).astype(np.uint8)
        return ImageData(out, *geometry), ImageData(lab.astype(np.uint8), *geometry)

    def _upright_clavicles(self, path, under, clavicles, bone_weight, rng):
        """The clavicles as a standing patient's: CT patients lie with their arms raised, which tilts the clavicles
        steeply up towards the shoulders, above the lung apices; on an upright radiograph they run nearly level
        (rising 0-20 degrees laterally) across the apices. Each clavicle's own attenuation and label are turned
        about its medial end to such a slope and lowered a little; where it was, soft tissue remains."""
        masks = under.copy()
        lungs = np.isin(under, self.lung_values)
        columns = np.flatnonzero(lungs.any(axis=0))
        if columns.size == 0:
            return path, masks
        midline = (columns.min() + columns.max()) / 2
        sx, sz = self.spacing
        for value, drawn, excess, bone_part in clavicles:
            rows, cols = np.nonzero(drawn)
            if rows.size < 10:
                continue
            lateral_sign = 1.0 if cols.mean() > midline else -1.0  # columns grow to the patient's left
            medial = np.abs(cols - midline) <= np.abs(cols - midline).min() + 0.1 * np.ptp(cols) + 1
            lateral = np.abs(cols - midline) >= np.abs(cols - midline).max() - 0.1 * np.ptp(cols) - 1
            centre = np.array([cols[medial].mean() * sx, rows[medial].mean() * sz])  # (x, y) mm, y to the feet
            along = np.array([cols[lateral].mean() * sx, rows[lateral].mean() * sz]) - centre
            slope = math.radians(rng.uniform(0.0, 20.0))
            turn = math.atan2(-math.sin(slope), lateral_sign * math.cos(slope)) - math.atan2(along[1], along[0])
            drop = rng.uniform(0.0, 20.0)
            # sitk maps output points to input points: the inverse of "turn about the medial end, then drop".
            transform = sitk.Euler2DTransform((centre + [0.0, drop]).tolist(), -turn, (0.0, -drop))
            moved = [_moved(a, self.spacing, transform, sitk.sitkLinear) for a in (excess, bone_part)]
            path = path - (excess + bone_weight * bone_part) + (moved[0] + bone_weight * moved[1])
            shown = _moved(drawn.astype(np.float32), self.spacing, transform, sitk.sitkNearestNeighbor) > 0.5
            masks[_within_rib_cage(shown, lungs)] = value
        return path, masks


def _moved(array: np.ndarray, spacing, transform, interpolator) -> np.ndarray:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(tuple(float(s) for s in spacing))
    return sitk.GetArrayFromImage(sitk.Resample(image, image, transform, interpolator, 0.0))


def _within_rib_cage(drawn: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """A clavicle is drawn only between the lungs' outer edges (where it crosses the lung fields and mediastinum)."""
    columns = np.flatnonzero(lungs.any(axis=0))
    if columns.size == 0:
        return drawn
    out = drawn.copy()
    out[:, :columns.min()] = False
    out[:, columns.max() + 1:] = False
    return out


def _depth(labels: np.ndarray, value: int) -> np.ndarray:
    """Voxels of `value` along each anterior-posterior ray of an LPS (z, y, x) labelmap, as radiograph rows."""
    return (labels == value).sum(axis=1)[::-1].astype(np.float32)


def _blurred(array: np.ndarray, spacing, sigma_mm: float) -> np.ndarray:
    """A Gaussian blur of `sigma_mm` of a 2D array with pixels of `spacing` (x, y) mm."""
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(tuple(float(s) for s in spacing))
    return sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, float(sigma_mm)))


def _rotated(volume: sitk.Image, degrees: float, fill):
    """The volume turned about its long (z) axis through its centre, on its own grid."""
    if volume is None or degrees == 0:
        return volume
    centre = volume.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in volume.GetSize()])
    transform = sitk.Euler3DTransform(centre, 0.0, 0.0, math.radians(degrees))
    interpolator = sitk.sitkLinear if fill != 0 else sitk.sitkNearestNeighbor
    return sitk.Resample(volume, volume, transform, interpolator, fill, volume.GetPixelID())


def _frame(masks: np.ndarray, spacing):
    """(centre, side) in mm of the field a radiograph shows: the labelled structures with a margin of
    about a fifth on each side (a chest radiograph frames the lungs, not the abdomen below them), kept
    within the CT at the top (and the bottom where it is long enough); or the whole projection without labels."""
    spacing = np.asarray(spacing, float)
    extent = np.array(masks.shape[::-1]) * spacing  # (x, z) mm
    rows, cols = np.nonzero(masks)
    if rows.size == 0:
        return extent / 2 - spacing / 2, float(extent.max())
    low, high = np.array([cols.min(), rows.min()]), np.array([cols.max(), rows.max()])
    centre, side = (low + high) / 2 * spacing, float(((high - low + 1) * spacing).max()) * 1.4
    # Beyond the scan's first and last slices there is nothing to project: keep the frame's top inside the
    # scan (the lung apices are close to a chest CT's first slice), and its bottom where the scan is long enough.
    if side < extent[1]:
        centre[1] = min(centre[1], extent[1] - side / 2)
    centre[1] = max(centre[1], 0.46 * side)
    return centre, side


def _square(image: sitk.Image, labels: sitk.Image, frame, rng, size: int, randomise: bool):
    """Resample `frame` onto a square grid with a random in-plane rotation, field of view and shift."""
    centre, side = frame
    extent = np.array([side, side])
    spacing = side / size
    transform = sitk.Euler2DTransform()
    transform.SetCenter(centre.tolist())
    if randomise:
        transform.SetAngle(math.radians(rng.uniform(-6, 6)))
        transform.SetTranslation((rng.uniform(-0.06, 0.06, 2) * extent * [1.0, 0.5]).tolist())
        spacing *= rng.uniform(0.8, 1.25)
    origin = (centre - spacing * (size - 1) / 2).tolist()
    grid = dict(size=[size, size], outputOrigin=origin, outputSpacing=[spacing, spacing], outputDirection=[1, 0, 0, 1])
    # Beyond the CT (above the neck, beside a narrow field of view) the nearest edge continues.
    out = sitk.GetArrayFromImage(sitk.Resample(image, transform=transform, interpolator=sitk.sitkLinear,
                                               useNearestNeighborExtrapolator=True, **grid))
    lab = sitk.GetArrayFromImage(sitk.Resample(labels, transform=transform, interpolator=sitk.sitkNearestNeighbor,
                                               defaultPixelValue=0, **grid))
    return out, lab, ((spacing, spacing), tuple(origin), (1.0, 0.0, 0.0, 1.0))


def _response(image: np.ndarray, rng, references) -> np.ndarray:
    """The detector's and processing's grey-level curve: a real radiograph's histogram when given, else an
    S-curve of random slope and centre and a random gamma; values 0..1."""
    if len(references):
        reference = references[int(rng.integers(len(references)))].ravel()
        ranks = np.argsort(np.argsort(image.ravel(), kind="stable"), kind="stable") / max(image.size - 1, 1)
        return (np.quantile(reference, ranks) / 255.0).reshape(image.shape)
    slope = rng.uniform(4, 10)
    centre = rng.uniform(0.35, 0.65)
    curve = 1 / (1 + np.exp(-slope * (image - centre)))
    lo, hi = 1 / (1 + np.exp(slope * centre)), 1 / (1 + np.exp(-slope * (1 - centre)))
    return np.clip((curve - lo) / (hi - lo), 0, 1) ** rng.uniform(0.7, 1.4)


def _collimate(image: np.ndarray, rng) -> np.ndarray:
    """Now and then a collimator's edge: a band along a side, unexposed (bright) or cropped (black)."""
    out = image.copy()
    n = image.shape[0]
    for side in range(4):
        if rng.random() < 0.15:
            width = int(rng.uniform(0.02, 0.1) * n)
            band = (slice(None, width), slice(None)) if side < 2 else (slice(None), slice(None, width))
            view = out if side % 2 == 0 else out[::-1, ::-1]
            view[band] = rng.choice([0.0, rng.uniform(0.85, 1.0)])
    return out
