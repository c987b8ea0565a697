"""Segment one image with a model package: preprocess, sliding window, back onto the input's grid."""
from __future__ import annotations

import contextlib
import itertools

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from .. import cpu
from ..data.image import ImageData
from ..models.layers import cast_for_inference
from . import preflight, resample
from .preprocessing import prepare
from .sliding_window import sliding_window


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but PyTorch sees no CUDA GPU")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device, training: bool = False) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. `auto` follows the per-CPU policy of unimiss.cpu.

    For inference, bf16 autocast agrees with fp32 on about 99 % of voxels even with random
    weights (Testing/benchmarks/bench_mit.py) and runs 2-3x faster on CPUs with native bf16.
    For training on CPUs it is used only where the whole step is faster (bench_training.py).
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}; choose auto, fp32, bf16 or fp16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if training:
        return torch.bfloat16 if cpu.bf16_training() else None
    return torch.bfloat16 if cpu.has_native_bf16() else None


class Predictor:
    """A model package made ready to segment images.

    `predict(image)` returns a labelmap (ImageData, uint8 or uint16) on exactly
    the input's grid. Class probabilities exist only on the model's working grid;
    they reach the input grid by bounded slabs of labels (inference/resample.py), so
    memory stays bounded on large volumes.
    """

    def __init__(self, package, device="auto", overlap=0.5, tta=False, precision="auto", batch_size=2,
                 largest_component=None, progress=None, max_memory_gb=None):
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), not {overlap}")
        self.package = package
        self.device = resolve_device(device)
        self.autocast = resolve_precision(precision, self.device)
        self.network = package.build_network(self.device)
        if self.device.type == "cpu" and self.autocast == torch.bfloat16:
            cast_for_inference(self.network, torch.bfloat16)
        # Mirrored passes only for a model that learnt from mirrored images: `unimiss finetune` never mirrors (left
        # and right are different labels), and mirrored CTs cost its built-in model 0.1-0.8 Dice per organ
        # (docs/benchmarks/builtin-ct-1.2.0/).
        self.overlap, self.batch_size = overlap, batch_size
        self.tta = tta and package.test_time_mirroring
        if tta and not self.tta and progress is not None:
            progress.message(f"--tta: {package.reference} learnt from unmirrored images only, so mirrored passes "
                             "would lower its accuracy; segmenting without them")
        self.mirrored_classes = self._mirrored_classes()
        self.zoom_shift = zoom_shift_transforms(package.dimension) if package.test_time_zoom_shift else [None]
        # None: as the model says (the built-in models keep each organ's largest part; a fine-tuned model that of
        # each class its cases drew as one piece); True or False: every class or none
        names = [label.name for label in package.labels]
        self.one_piece = (package.largest_component_classes if largest_component is None
                          else names if largest_component else [])
        self.progress = progress
        self.max_memory_gb = max_memory_gb  # refuse images whose work would need more (default: most of the RAM)

    @property
    def num_classes(self) -> int:
        return self.package.meta["network"]["num_classes"]

    def _mirrored_classes(self) -> list[int]:
        """Channel order that exchanges each *left* class with its *right* namesake (kidney_left, kidney_right)."""
        order = list(range(self.num_classes))
        value = {label.name: label.value for label in self.package.labels}
        for name, v in value.items():
            for a, b in (("left", "right"), ("right", "left")):
                twin = name.replace(a, b)
                if a in name and twin in value and v < self.num_classes:
                    order[v] = value[twin]
        return order

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        context = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast
                   else contextlib.nullcontext())
        batch = batch.to(self.device)
        flips = [()]
        if self.tta:
            axes = range(2, batch.ndim)
            flips = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
        total = None
        sides = batch.ndim - 1  # the last axis runs from the patient's right to left (LPS; radiographs as viewed)
        with torch.inference_mode(), context:
            for dims, transform in itertools.product(flips, self.zoom_shift):
                x = batch.flip(dims) if dims else batch
                x = moved(x, *transform) if transform else x
                p = torch.softmax(self.network(x).float(), dim=1)
                p = moved(p, *transform, back=True) if transform else p
                p = p.flip(dims) if dims else p
                if sides in dims:  # a mirrored patient's left organs look like right ones: swap them back
                    p = p[:, self.mirrored_classes]
                total = p if total is None else total + p
        return total / (len(flips) * len(self.zoom_shift))

    def predict(self, image: ImageData, source="the image") -> ImageData:
        dim = self.package.dimension
        if image.dimension != dim:
            kind = {2: "2D images (radiographs)", 3: "3D volumes (CT)"}[dim]
            raise ValueError(f"model {self.package.reference} segments {kind}; this input is "
                             f"{'a 3D volume' if image.dimension == 3 else 'a 2D image'}")
        preflight.check(image, self.package, self.batch_size, self.overlap, self.max_memory_gb, source)
        self._report("preprocess", 0, 1)
        prepared = prepare(image, self.package.preprocessing)
        volume = torch.from_numpy(prepared.array)[None]
        channels = self.package.meta["network"].get("in_channels", 1)
        if channels > 1:
            volume = volume.expand(channels, *volume.shape[1:])
        self._report("preprocess", 1, 1)
        probs = sliding_window(self._forward, volume, self.package.patch_size, self.num_classes, self.overlap,
                               self.batch_size, on_window=lambda d, t: self._report("inference", d, t),
                               dtype=torch.float16)
        del volume, prepared.array
        labels = self._to_input_grid(probs.cpu().numpy(), prepared.grid, image)
        labels = clip_below(labels, self.package.labels, self.package.not_below)
        return keep_parts(labels, self.package, self.one_piece)

    def _to_input_grid(self, probs: np.ndarray, grid: sitk.Image, image: ImageData) -> ImageData:
        """Labels on the input grid: the classes that win somewhere, interpolated linearly from the working
        grid by slabs of input slices (separably in torch when the grids are not oblique to each other)."""
        classes = resample.winning_classes(probs)
        dtype = np.uint8 if self.num_classes <= 256 else np.uint16
        on_slab = lambda done, total: self._report("resample", done, total)  # noqa: E731
        maps = resample.axis_maps(grid, image)
        if maps is None:
            labels = resample.labels_by_sitk(probs, grid, image, classes, dtype, on_slab)
        else:
            labels = resample.labels_on_input_grid(probs, maps, image.array.shape, classes, dtype, on_slab)
        return image.with_array(labels)

    def _report(self, stage, done, total):
        if self.progress is not None:
            self.progress.progress(stage, done, total)


def zoom_shift_transforms(dimension: int) -> list[tuple[float, tuple[float, ...]]]:
    """(zoom, shift) pairs a model's `postprocessing.test_time_zoom_shift` averages over: the image as it is,
    zoomed 0.9 and 1.1 about its centre, and moved 2.5 % of its field each way along each axis."""
    still = (0.0,) * dimension
    moves = [tuple(step if a == axis else 0.0 for a in range(dimension)) for axis in range(dimension)
             for step in (0.05, -0.05)]  # affine_grid's coordinates span [-1, 1]: 0.05 is 2.5 % of the field
    return [(1.0, still), (0.9, still), (1.1, still)] + [(1.0, move) for move in moves]


def moved(batch: torch.Tensor, zoom: float, shift, back: bool = False) -> torch.Tensor:
    """The batch zoomed about its centre and shifted (borders continued), or with `back` that undone."""
    nd = batch.ndim - 2
    theta = torch.zeros(batch.shape[0], nd, nd + 1, dtype=torch.float32, device=batch.device)
    shift = torch.tensor(shift, dtype=torch.float32, device=batch.device)
    theta[:, range(nd), range(nd)] = zoom if back else 1 / zoom
    theta[:, :, nd] = -shift * zoom if back else shift
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def clip_below(labels: ImageData, names, not_below: dict) -> ImageData:
    """In a 2D image, each bounded class removed from the rows below the lowest row the largest parts of its
    limit classes reach (the model's `postprocessing.not_below`; stray specks of a limit class do not count);
    a class whose limits are absent is left as it is."""
    value = {label.name: label.value for label in names}
    array = labels.array
    for bounded, limits in not_below.items():
        limit = np.where(np.isin(array, [value[n] for n in limits]), array, 0)
        limit = keep_largest_components(labels.with_array(limit)).array
        rows = np.flatnonzero((limit > 0).any(axis=-1).reshape(-1))
        if rows.size:
            array = array.copy() if array is labels.array else array
            below = array[..., rows.max() + 1:, :]
            below[below == value[bounded]] = 0
    return labels if array is labels.array else labels.with_array(array)


def keep_parts(labels: ImageData, package, classes: list[str]) -> ImageData:
    """Each of `classes` reduced to its largest part as `package` keeps it (its join gaps, its comparable parts)."""
    if not classes:
        return labels
    value = {label.name: label.value for label in package.labels}
    return keep_largest_components(labels, {value[n]: mm for n, mm in package.join_gaps_mm.items()},
                                   only={value[n] for n in classes}, comparable=package.comparable_parts)


def keep_largest_components(labels: ImageData, join_gaps_mm: dict[int, float] | None = None,
                            only: set[int] | None = None, comparable: float = 0.0) -> ImageData:
    """For each label (of `only`, when given), keep only its largest connected component, and with `comparable`
    (0..1) every other component holding at least that share of the largest one's voxels (when a network is
    unsure which of two similar parts is the organ, both stay). For a label in `join_gaps_mm` ({value: mm}),
    parts separated by gaps of at most that many mm count as one component."""
    out = labels.array.copy()
    for value in np.unique(labels.array):
        if value == 0 or only is not None and int(value) not in only:
            continue
        mask = labels.array == value
        gap = (join_gaps_mm or {}).get(int(value))
        out[mask & ~_largest_parts(mask, labels.spacing, gap, comparable)] = 0
    return labels.with_array(out)


def _largest_parts(mask: np.ndarray, spacing, gap_mm: float | None, comparable: float) -> np.ndarray:
    """The largest connected part of `mask` (and those at least `comparable` of its size); with `gap_mm`, parts of
    the mask grown by half the gap each way, cut back to the mask. Computed within the mask's bounding box (plus
    the growth), so a small class stays cheap."""
    radius = [int(round(gap_mm / 2 / s)) for s in spacing][::-1] if gap_mm else [0] * mask.ndim
    box, parts, sizes = connected_parts(mask, radius)
    kept = np.flatnonzero(sizes >= max(comparable * sizes.max(), 1)) if comparable else [int(np.argmax(sizes))]
    keep = np.zeros_like(mask)
    keep[box] = np.isin(parts, kept)
    return keep & mask


def connected_parts(mask: np.ndarray, radius=None, fully_connected: bool = False):
    """(box, parts, sizes): the mask's bounding box (grown by `radius` voxels per axis), its connected parts there
    (of the mask dilated by `radius`), and each part's count of mask voxels (`sizes[0]` is 0)."""
    radius = radius if radius is not None else [0] * mask.ndim
    box = tuple(slice(max(int(i.min()) - r, 0), int(i.max()) + r + 1) for i, r in zip(np.nonzero(mask), radius))
    image = sitk.GetImageFromArray(mask[box].astype(np.uint8))
    grown = sitk.BinaryDilate(image, radius[::-1], sitk.sitkBall) if any(radius) else image
    parts = sitk.GetArrayFromImage(sitk.ConnectedComponent(grown, fully_connected))
    sizes = np.bincount(parts[mask[box]])
    sizes[0] = 0
    return box, parts, sizes
