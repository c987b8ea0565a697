"""Labels of RICORD-1B (another patient's contrast chest CT) by atlas registration from LIDC-IDRI-0001.

    python scripts/ricord_atlas_labels.py DATA_DIR [--preview PNG]

DATA_DIR is scripts/prepare_demo_data.py's output. LIDC-IDRI-0001 and its TotalSegmentator labels (the atlas)
are registered onto RICORD-1B: affine by mutual information, then symmetric-forces demons. The warped heart
and aorta are then fitted to RICORD's own contrast: the aorta is the contrast-filled lumen (150-900 HU) within
a voxel of the warped aorta, its largest part, with a voxel of wall; the heart is what is denser than fat
(-30 HU) within a voxel of the warped heart, without the aorta, its largest part, holes filled. The lungs are
RICORD's lungs by threshold (prepare_demo_data.py); liver, spleen and kidneys are the warped atlas's. Each
clavicle is the bone (180 HU or more, gaps of a voxel closed) within three voxels of the warped clavicle, the part
that overlaps it most, holes filled: the clavicles of DRRs drawn as JSRT/SCR draw (scripts/ricord_scr_labels.py).

Writes DATA_DIR/ricord.nrrd, ricord.seg.nrrd (the eight classes, to train on) and ricord-heart-aorta.seg.nrrd
with ricord-heldout.csv (heart, aorta and lungs only: the reference held-out figures are measured against),
DATA_DIR/chest/ricord-native.nrrd, its blood pool and organs in the native phase (radiographs see no iodine), and
ricord-venous.nrrd with ricord-phases.csv (the scan in the three phases, to train on), and
DATA_DIR/chest/ricord-clavicles.seg.nrrd.
These are pseudo-labels, looked at slice by slice (--preview), not drawn by hand: figures against them say
how a model agrees with a registered atlas on a patient it never saw.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from unimiss.data import read_image, read_labelmap, write_labelmap

from contrast_phases import enhance
from prepare_demo_data import heart_aorta_lungs


def register(fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
    """A transform from `fixed`'s space to `moving`'s: affine (Mattes mutual information), then demons."""
    clamp = lambda image: sitk.Clamp(sitk.Cast(image, sitk.sitkFloat32), sitk.sitkFloat32, -1000, 600)  # noqa: E731
    f = clamp(fixed)
    grid = sitk.Image([round(n * s / 2.0) for n, s in zip(moving.GetSize(), moving.GetSpacing())], sitk.sitkFloat32)
    grid.SetSpacing((2.0, 2.0, 2.0))
    grid.SetOrigin(moving.GetOrigin())
    grid.SetDirection(moving.GetDirection())
    m = sitk.Resample(sitk.SmoothingRecursiveGaussian(clamp(moving), 0.8), grid, sitk.Transform(), sitk.sitkLinear,
                      -1000)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.1, 1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(2.0, 1e-3, 200, relaxationFactor=0.7)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2, 1, 0])
    method.SetInitialTransform(sitk.CenteredTransformInitializer(
        f, m, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS), inPlace=False)
    affine = method.Execute(f, m)
    scaled = lambda image: sitk.Cast((image + 1000) / 1600.0, sitk.sitkFloat32)  # noqa: E731
    f, m = scaled(f), scaled(sitk.Resample(m, f, affine, sitk.sitkLinear, -1000))
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(60)
    demons.SetStandardDeviations(1.5)
    field = None
    for shrink in (4, 2, 1):
        fs, ms = sitk.Shrink(f, [shrink] * 3), sitk.Shrink(m, [shrink] * 3)
        if field is not None:
            field = sitk.Resample(field, fs, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
        field = demons.Execute(fs, ms) if field is None else demons.Execute(fs, ms, field)
    field = sitk.Resample(field, f, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
    return sitk.CompositeTransform([affine, sitk.DisplacementFieldTransform(field)])  # demons first, then affine


def largest(mask: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """The connected part of `mask` with the most voxels, or with `weight` the most voxels of `weight`."""
    parts, count = ndimage.label(mask)
    if count == 0:
        return mask
    return parts == 1 + int(np.argmax(ndimage.sum(mask if weight is None else weight, parts, range(1, count + 1))))


def fitted_bone(hu: np.ndarray, warped: np.ndarray) -> np.ndarray:
    """The bone near a warped bone's mask, the part that overlaps the mask most."""
    cross = ndimage.generate_binary_structure(3, 1)
    near = ndimage.binary_dilation(warped, cross, iterations=3)
    return ndimage.binary_fill_holes(largest(ndimage.binary_closing(hu >= 180, cross) & near, warped))


def main():
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # the same labels on every run
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--preview", type=Path, help="write axial, coronal and sagittal slices with the labels")
    args = parser.parse_args()
    data = args.data
    ricord = read_image(data / "chest" / "ricord.nrrd")
    fixed = sitk.DICOMOrient(ricord.to_sitk(), "LPS")
    transform = register(fixed, sitk.DICOMOrient(read_image(data / "lidc.nrrd").to_sitk(), "LPS"))
    warp = lambda labelmap: sitk.GetArrayFromImage(sitk.Resample(  # noqa: E731
        sitk.DICOMOrient(labelmap.to_sitk(), "LPS"), fixed, transform, sitk.sitkNearestNeighbor, 0))
    atlas, labels = read_labelmap(data / "lidc.seg.nrrd")
    warped = warp(atlas)
    hu = sitk.GetArrayFromImage(fixed)
    value = {label.name: label.value for label in labels}
    grow = lambda mask: ndimage.binary_dilation(mask, ndimage.generate_binary_structure(3, 1))  # noqa: E731

    aorta = warped == value["aorta"]
    lumen = largest(grow(aorta) & (hu >= 150) & (hu <= 900))
    aorta = grow(lumen) & grow(aorta)
    heart = largest(grow(warped == value["heart"]) & (hu > -30) & ~aorta)
    heart = ndimage.binary_fill_holes(heart) & ~aorta

    lungs, lung_labels = read_labelmap(data / "chest" / "ricord.seg.nrrd")
    lung_lps = sitk.GetArrayFromImage(sitk.DICOMOrient(lungs.to_sitk(), "LPS"))
    lung_value = {label.name: label.value for label in lung_labels}
    out = np.where(np.isin(warped, [value[n] for n in ("liver", "spleen", "kidney_left", "kidney_right")]), warped, 0)
    for name in ("lung_left", "lung_right"):
        out[lung_lps == lung_value[name]] = value[name]
    out[heart] = value["heart"]
    out[aorta] = value["aorta"]

    def to_input_grid(array):
        image = sitk.GetImageFromArray(array.astype(np.uint8))
        image.CopyInformation(fixed)
        return ricord.with_array(sitk.GetArrayFromImage(
            sitk.Resample(image, ricord.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor)))

    labelled = to_input_grid(out)
    chest_atlas, chest_labels = read_labelmap(data / "chest" / "lidc.seg.nrrd")
    warped_chest = warp(chest_atlas)
    clavicles = [label for label in chest_labels if label.name.startswith("clavicula")]
    bones = np.zeros_like(out)
    for label in clavicles:
        bones[fitted_bone(hu, warped_chest == label.value)] = label.value
    write_labelmap(to_input_grid(bones), data / "chest" / "ricord-clavicles.seg.nrrd", clavicles)
    sitk.WriteImage(ricord.to_sitk(), str(data / "ricord.nrrd"), True)
    write_labelmap(labelled, data / "ricord.seg.nrrd", labels)
    reference, kept = heart_aorta_lungs(out, labels)
    write_labelmap(to_input_grid(reference), data / "ricord-heart-aorta.seg.nrrd", kept)
    (data / "ricord-heldout.csv").write_text("image,label\nricord.nrrd,ricord-heart-aorta.seg.nrrd\n")
    # The scan in the two phases it lacks: native for DRRs (a radiograph sees no iodine) and, with venous, to train on
    # in all three phases, as prepare_demo_data.py writes the other CTs.
    spacing_zyx = tuple(ricord.spacing[::-1])
    for phase, path, seed in (("native", "chest/ricord-native.nrrd", 0), ("venous", "ricord-venous.nrrd", 1)):
        hu_phase = enhance(ricord.array, labelled.array, value, spacing_zyx, phase, np.random.default_rng(seed))
        sitk.WriteImage(ricord.with_array(hu_phase).to_sitk(), str(data / path), True)
    (data / "ricord-phases.csv").write_text("image,label\nricord.nrrd,ricord.seg.nrrd\n"
                                             "chest/ricord-native.nrrd,ricord.seg.nrrd\nricord-venous.nrrd,ricord.seg.nrrd\n")
    for label in labels:
        print(f"{label.name}: {int((out == label.value).sum())} voxels")
    for label in clavicles:
        print(f"{label.name}: {int((bones == label.value).sum())} voxels")
    if args.preview:
        colours = {value["heart"]: (0, 255, 0), value["aorta"]: (255, 128, 0), value["lung_left"]: (255, 0, 0),
                   value["lung_right"]: (0, 200, 255), value["liver"]: (200, 100, 50)}
        colours.update({100 + label.value: (255, 255, 0) for label in clavicles})  # 100+: apart from the organs
        sheet(hu, np.where(bones > 0, 100 + bones, out), colours, args.preview)


def sheet(hu: np.ndarray, labels: np.ndarray, colors: dict, path: Path) -> None:
    """Every eighth axial slice from the lung bases up, and three coronal and sagittal planes, outlines drawn."""
    from PIL import Image

    def tile(plane, marks):
        rgb = np.repeat((np.clip((plane + 160) / 400, 0, 1) * 255)[..., None], 3, axis=-1)
        for v, color in colors.items():
            mask = marks == v
            rgb[mask & ~ndimage.binary_erosion(mask)] = color
        return rgb
    z, y, x = hu.shape
    axial = [tile(hu[k], labels[k]) for k in range(z // 5, z - z // 8, 8)]
    side = [tile(hu[:, k][::-1], labels[:, k][::-1]) for k in (y * 2 // 5, y // 2, y * 3 // 5)]
    side += [tile(hu[:, :, k][::-1], labels[:, :, k][::-1]) for k in (x * 2 // 5, x // 2, x * 3 // 5)]
    rows = [np.concatenate(axial[i:i + 6], 1) for i in range(0, len(axial), 6)] + [np.concatenate(side, 1)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    Image.fromarray(np.concatenate(rows, 0).astype(np.uint8)).resize((width * 2, sum(r.shape[0] for r in rows) * 2),
                                                                     Image.NEAREST).save(path)


if __name__ == "__main__":
    main()
