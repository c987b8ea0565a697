"""unimiss.data: reading CT volumes and radiographs, refusing bad inputs in one line, labelmap round trips.

Everything is read from the real data kit in ../shared/data; bad files are derived from it in tmp_path.
"""
from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from testkit import SHARED
from unimiss.data import ImageData, InputError, Label, atomic_output, read_image, read_labelmap, write_labelmap

DATA = SHARED / "data"
LIDC = DATA / "ct" / "lidc-idri-0001"
TS_ABDOMEN = DATA / "ct" / "ts-abdomen"
DICOM_FOLDER = DATA / "ct" / "ts-dicom" / "dicom"
PNG = DATA / "xray" / "nih-00000001_000.png"
CR = DATA / "xray" / "siim-chest-cr.dcm"
SPLEEN_TERMINOLOGY = {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "78961009", "Spleen"]}


def assert_geometry_of(data: ImageData, image: sitk.Image):
    """`data` has the size, spacing, origin and direction SimpleITK gives (a single slice counting as 2D)."""
    dimension = data.dimension
    assert data.size == image.GetSize()[:dimension]
    np.testing.assert_allclose(data.spacing, image.GetSpacing()[:dimension], rtol=1e-6)
    np.testing.assert_allclose(data.origin, image.GetOrigin()[:dimension], rtol=1e-6, atol=1e-6)
    direction = np.reshape(image.GetDirection(), (image.GetDimension(),) * 2)[:dimension, :dimension]
    np.testing.assert_allclose(data.direction, direction.ravel(), atol=1e-9)


def slab(image: ImageData, start: int, stop: int) -> ImageData:
    """Slices start..stop-1 of a volume, with the origin moved accordingly."""
    return ImageData.from_sitk(image.to_sitk()[:, :, start:stop])


@pytest.fixture(scope="module")
def lidc():
    return read_image(LIDC / "image.nii.gz")


@pytest.fixture(scope="module")
def lidc_labels(lidc):
    """The real LIDC labelmap, its names from labels.json, a terminology code for the spleen and one absent class."""
    labelmap = ImageData.from_sitk(sitk.ReadImage(str(LIDC / "labels.nii.gz")))
    names = json.loads((LIDC / "labels.json").read_text())["labels"]
    rng = np.random.default_rng(0)
    labels = [Label(int(v), name, tuple(int(c) for c in rng.integers(0, 256, 3)),
                    SPLEEN_TERMINOLOGY if name == "spleen" else {}) for v, name in names.items()]
    labels.append(Label(117, "carpal", (10, 20, 30)))  # defined by the source, absent from the voxels
    return labelmap, sorted(labels, key=lambda label: label.value)


# ------------------------------------------------------------------------------------------ reading images


def test_nifti_ct_is_read_as_simpleitk_reads_it(lidc):
    reference = sitk.ReadImage(str(LIDC / "image.nii.gz"))
    assert lidc.dimension == 3
    assert lidc.array.shape == (133, 512, 512)
    assert lidc.array.dtype == np.int16
    assert_geometry_of(lidc, reference)
    assert lidc.direction == (1, 0, 0, 0, -1, 0, 0, 0, 1)  # LAS
    np.testing.assert_array_equal(lidc.array, sitk.GetArrayViewFromImage(reference))


def test_dicom_folder_is_read_as_one_volume_and_the_series_named():
    messages = []
    volume = read_image(DICOM_FOLDER, on_message=messages.append)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(DICOM_FOLDER)))
    reference = reader.Execute()
    assert volume.dimension == 3 and volume.array.shape == (20, 512, 512)
    assert_geometry_of(volume, reference)
    np.testing.assert_allclose(volume.spacing, (0.9765625, 0.9765625, 2.0))
    np.testing.assert_array_equal(volume.array, sitk.GetArrayViewFromImage(reference))
    assert len(messages) == 1 and "CT Body 3.0" in messages[0] and "20 slices" in messages[0]


def test_dicom_folder_with_two_series_takes_the_larger(tmp_path):
    for file in DICOM_FOLDER.iterdir():
        shutil.copy(file, tmp_path)
    ct = sitk.ReadImage(str(TS_ABDOMEN / "image.nii.gz"))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # keep the series UID set below
    for k in range(3):
        slice_ = ct[:, :, k]
        for tag, value in {"0008|0060": "CT", "0008|103e": "scout", "0020|0013": str(k + 1),
                           "0020|000e": "1.2.826.0.1.3680043.2.1125.1.424242",
                           "0020|0032": "\\".join(str(v) for v in ct.TransformIndexToPhysicalPoint((0, 0, k)))}.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"scout{k}.dcm"))
        writer.Execute(slice_)
    messages = []
    volume = read_image(tmp_path, on_message=messages.append)
    assert volume.array.shape == (20, 512, 512)
    assert "CT Body 3.0" in messages[0] and "largest of" in messages[0]


def test_png_radiograph_is_2d():
    picture = read_image(PNG)
    reference = sitk.ReadImage(str(PNG))
    assert picture.dimension == 2 and picture.array.shape == (512, 512) and picture.array.dtype == np.uint8
    assert_geometry_of(picture, reference)
    np.testing.assert_array_equal(picture.array, sitk.GetArrayViewFromImage(reference))


def test_dicom_cr_is_2d_with_its_pixel_spacing():
    radiograph = read_image(CR)
    reference = sitk.ReadImage(str(CR))  # SimpleITK: 1024 x 1024 x 1
    assert radiograph.dimension == 2 and radiograph.array.shape == (1024, 1024)
    np.testing.assert_allclose(radiograph.spacing, (0.168, 0.168))
    assert_geometry_of(radiograph, reference)
    np.testing.assert_array_equal(radiograph.array, sitk.GetArrayViewFromImage(reference)[0])


def test_colour_picture_becomes_luminance_grey(tmp_path):
    grey = sitk.ReadImage(str(PNG))
    red, green, blue = grey, sitk.InvertIntensity(grey, 255), grey // 2
    sitk.WriteImage(sitk.Compose(red, green, blue), str(tmp_path / "rgb.png"))
    sitk.WriteImage(sitk.Compose(red, green, blue, grey * 0 + 255), str(tmp_path / "rgba.png"))
    expected = sum(w * sitk.GetArrayFromImage(c).astype(np.float32)
                   for w, c in zip((0.299, 0.587, 0.114), (red, green, blue)))
    for name in ("rgb.png", "rgba.png"):
        messages = []
        picture = read_image(tmp_path / name, on_message=messages.append)
        assert picture.dimension == 2 and picture.array.dtype == np.float32 and picture.array.shape == (512, 512)
        np.testing.assert_allclose(picture.array, expected, rtol=1e-5, atol=1e-3)
        assert messages and "grey" in messages[0]


def test_monochrome1_radiograph_has_dense_tissue_bright_and_imager_spacing(tmp_path):
    # An uncompressed copy of the real CR, patched to MONOCHROME1 with ImagerPixelSpacing 0.2 (rows) x 0.1 (columns).
    image = sitk.ReadImage(str(CR))[:, :, 0]
    image.SetSpacing((1.0, 1.0))
    image.SetMetaData("0008|0060", "CR")
    sitk.WriteImage(image, str(tmp_path / "plain.dcm"))
    raw = (tmp_path / "plain.dcm").read_bytes()
    old_spacing = b"\x18\x00\x64\x11\x04\x00\x00\x001\\1 "  # implicit VR: tag, 4-byte length, value
    assert raw.count(old_spacing) == 1 and raw.count(b"MONOCHROME2") == 1
    raw = raw.replace(old_spacing, b"\x18\x00\x64\x11\x08\x00\x00\x000.2\\0.1 ").replace(b"MONOCHROME2", b"MONOCHROME1")
    (tmp_path / "m1").write_bytes(raw)  # no extension: recognised as DICOM by content
    messages = []
    radiograph = read_image(tmp_path / "m1", on_message=messages.append)
    stored = sitk.GetArrayFromImage(image)
    # MONOCHROME1 stores dense tissue dark: the reader returns it inverted over the 8 stored bits, once.
    np.testing.assert_array_equal(radiograph.array, 255 - stored)
    assert radiograph.array.dtype == np.uint8
    np.testing.assert_allclose(radiograph.spacing, (0.1, 0.2))
    assert any("MONOCHROME1" in m for m in messages)


# ------------------------------------------------------------------------------------------ bad inputs


def _nifti_4d(tmp_path):
    ct = sitk.ReadImage(str(TS_ABDOMEN / "image.nii.gz"))[:40, :40, :10]
    path = tmp_path / "4d.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([ct, ct]), str(path))
    return path


def _nan_volume(tmp_path):
    ct = sitk.Cast(sitk.ReadImage(str(TS_ABDOMEN / "image.nii.gz"))[:40, :40, :10], sitk.sitkFloat32)
    ct[5, 5, 5] = float("nan")
    ct[6, 5, 5] = float("inf")
    path = tmp_path / "nan.nrrd"
    sitk.WriteImage(ct, str(path))
    return path


def _tiny_png(tmp_path):
    path = tmp_path / "one.png"
    sitk.WriteImage(sitk.ReadImage(str(PNG))[:1, :1], str(path))
    return path


def _thin_volume(tmp_path):
    path = tmp_path / "thin.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(TS_ABDOMEN / "image.nii.gz"))[:4, :, :], str(path))
    return path


def _truncated(tmp_path, name="cut.nii.gz", gzipped=True):
    data = (TS_ABDOMEN / "image.nii.gz").read_bytes()
    if not gzipped:
        data = gzip.decompress(data)
    path = tmp_path / name
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _text_named_nifti(tmp_path):
    path = tmp_path / "x.nii.gz"
    path.write_text("this is not an image\nsecond line\n")
    return path


def _empty_file(tmp_path):
    path = tmp_path / "empty.nii.gz"
    path.touch()
    return path


def _empty_folder(tmp_path):
    path = tmp_path / "empty_folder"
    path.mkdir()
    return path


def _folder_of_text(tmp_path):
    path = tmp_path / "notes"
    path.mkdir()
    for k in range(3):
        (path / f"slice{k}.dcm").write_text(f"note {k}\n")
    return path


def _unsupported_extension(tmp_path):
    path = tmp_path / "report.txt"
    path.write_text("a chest CT\n")
    return path


BAD_INPUTS = {
    "missing": (lambda tmp_path: tmp_path / "nowhere.nii.gz", "no such file or folder"),
    "empty file": (_empty_file, "empty"),
    "text named .nii.gz": (_text_named_nifti, "not a readable image"),
    "truncated .nii.gz": (_truncated, "truncated"),
    "truncated .nii": (lambda tmp_path: _truncated(tmp_path, "cut.nii", gzipped=False), "truncated"),
    "4D NIfTI": (_nifti_4d, "4D images are not supported"),
    "NaN voxels": (_nan_volume, "NaN"),
    "1x1 PNG": (_tiny_png, "too small"),
    "4 voxels wide": (_thin_volume, "too small"),
    "empty folder": (_empty_folder, "no DICOM series"),
    "folder of text files": (_folder_of_text, "no DICOM series"),
    "unsupported extension": (_unsupported_extension, "unsupported file type"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_gives_one_line_naming_the_file(tmp_path, case):
    make, problem = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(InputError) as caught:
        read_image(path)
    message = str(caught.value)
    assert "\n" not in message and path.name in message and problem in message
    context = caught.value.__context__  # no SimpleITK traceback shown along with it
    assert caught.value.__cause__ is None and (context is None or caught.value.__suppress_context__)


def test_rgb_volume_is_refused_as_4d(tmp_path):
    ct = sitk.Cast(sitk.ReadImage(str(TS_ABDOMEN / "image.nii.gz"))[:20, :20, :10], sitk.sitkInt16)
    path = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.Compose(ct, ct, ct), str(path))
    with pytest.raises(InputError, match="4D images are not supported"):
        read_image(path)


# ------------------------------------------------------------------------------------------ labelmaps


def test_seg_nrrd_round_trip_on_the_ct_grid(tmp_path, lidc, lidc_labels):
    labelmap, labels = lidc_labels
    path = write_labelmap(labelmap, tmp_path / "case.seg.nrrd", labels)
    assert path == tmp_path / "case.seg.nrrd" and sorted(p.name for p in tmp_path.iterdir()) == ["case.seg.nrrd"]

    back, back_labels = read_labelmap(path)
    assert back.same_grid(lidc)
    np.testing.assert_array_equal(back.array, labelmap.array)
    assert back_labels == labels  # values, names and colours
    spleen = next(label for label in back_labels if label.name == "spleen")
    assert spleen.terminology["type"] == SPLEEN_TERMINOLOGY["type"]

    # What Slicer reads: one segment per class (the absent one too), voxels indexed (i, j, k), LPS geometry.
    segmentation = slicerio.read_segmentation(str(path))
    assert slicerio.segment_names(segmentation) == [label.name for label in labels]
    np.testing.assert_array_equal(segmentation["voxels"], labelmap.array.T)
    np.testing.assert_allclose(segmentation["ijkToLPS"], lidc.ijk_to_lps(), atol=1e-9)
    assert not slicerio.segment_mask(segmentation, "carpal").any()
    liver = slicerio.segment_from_name(segmentation, "liver")
    assert liver["labelValue"] == 5
    np.testing.assert_allclose(liver["color"], [c / 255 for c in labels[[lb.name for lb in labels].index("liver")].color])


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_labelmap_with_colour_table_round_trip(tmp_path, lidc, lidc_labels, suffix):
    labelmap, labels = lidc_labels
    path = write_labelmap(labelmap, tmp_path / f"case{suffix}", labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"case{suffix}", "case.ctbl"])

    written = sitk.ReadImage(str(path))
    assert_geometry_of(lidc, written)
    back, back_labels = read_labelmap(path)
    assert back.same_grid(lidc)
    np.testing.assert_array_equal(back.array, labelmap.array)
    assert back_labels == labels

    table = (tmp_path / "case.ctbl").read_text().splitlines()
    assert table[0].startswith("# Color table file") and "0 background 0 0 0 0" in table
    liver = next(label for label in labels if label.name == "liver")
    assert f"5 liver {liver.color[0]} {liver.color[1]} {liver.color[2]} 255" in table


def test_labelmap_without_colour_table_gets_numbered_names(tmp_path, lidc_labels):
    labelmap, _ = lidc_labels
    crop = slab(labelmap, 60, 70)  # only the names matter here
    path = tmp_path / "plain.nii.gz"
    sitk.WriteImage(crop.to_sitk(), str(path))
    back, labels = read_labelmap(path)
    present = sorted(int(v) for v in np.unique(crop.array) if v)
    assert [label.value for label in labels] == present
    assert all(label.name == f"label_{label.value}" for label in labels)


def test_2d_labelmap_on_a_radiograph_grid(tmp_path):
    radiograph = read_image(CR)
    voxels = np.zeros(radiograph.array.shape, np.uint8)
    voxels[radiograph.array > 200] = 1
    voxels[300:700, 200:480] = 2
    labelmap = radiograph.with_array(voxels)
    labels = [Label(1, "bright bone", (241, 214, 145)), Label(2, "right lung", (128, 174, 128))]
    for name in ("xray.seg.nrrd", "xray.nrrd", "xray.nii.gz"):
        back, back_labels = read_labelmap(write_labelmap(labelmap, tmp_path / name, labels))
        assert back.dimension == 2 and back.same_grid(radiograph)
        np.testing.assert_array_equal(back.array, voxels)
        expected = labels if name.endswith(".seg.nrrd") else [  # a colour table has no spaces in names
            Label(1, "bright_bone", labels[0].color), Label(2, "right_lung", labels[1].color)]
        assert back_labels == expected
    segmentation = slicerio.read_segmentation(str(tmp_path / "xray.seg.nrrd"))
    assert segmentation["voxels"].shape == (1024, 1024, 1)
    np.testing.assert_allclose(np.diag(segmentation["ijkToLPS"])[:2], (0.168, 0.168))


def test_overlapping_segments_in_layers_are_merged(tmp_path, lidc_labels):
    labelmap, _ = lidc_labels
    crop = slab(labelmap, 60, 64)
    liver = crop.array.T == 5
    body = crop.array.T > 0  # overlaps the liver: slicerio puts it in a second layer
    body[..., 0] &= ~liver[..., 0]  # but not in the first slice
    segmentation = slicerio.create_segmentation(liver.shape, crop.ijk_to_lps())
    slicerio.add_segment(segmentation, liver, {"id": "liver", "name": "liver", "color": [0.6, 0.2, 0.1]})
    slicerio.add_segment(segmentation, body, {"id": "body", "name": "body", "color": [0.9, 0.9, 0.9]})
    assert segmentation["voxels"].ndim == 4
    slicerio.write_segmentation(str(tmp_path / "layers.seg.nrrd"), segmentation)

    messages = []
    back, labels = read_labelmap(tmp_path / "layers.seg.nrrd", on_message=messages.append)
    assert back.same_grid(crop)
    assert [(label.value, label.name) for label in labels] == [(1, "liver"), (2, "body")]
    expected = np.where(body.T, 2, np.where(liver.T, 1, 0))  # the later layer on top
    np.testing.assert_array_equal(back.array, expected)
    covered = int(liver.sum() - liver[..., 0].sum())
    assert messages == [f"layers.seg.nrrd: {covered} of {int(liver.sum())} voxels of segment 'liver' lie under "
                        "segments of a later layer and belong to those"]


def test_unsupported_labelmap_format(tmp_path, lidc_labels):
    labelmap, labels = lidc_labels
    with pytest.raises(InputError, match="unsupported labelmap format") as caught:
        write_labelmap(labelmap, tmp_path / "case.png", labels)
    assert "\n" not in str(caught.value)
    assert not any(tmp_path.iterdir())


def test_broken_seg_nrrd_gives_one_line(tmp_path):
    path = tmp_path / "broken.seg.nrrd"
    path.write_text("NRRD0004\ntype: what\n")
    with pytest.raises(InputError, match="broken.seg.nrrd") as caught:
        read_labelmap(path)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------------ atomic writes


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_output_leaves_nothing_on_error(tmp_path, error):
    final = tmp_path / "result.nii.gz"
    with pytest.raises(error):
        with atomic_output(final) as temporary:
            assert temporary.parent == tmp_path and temporary.name.endswith(".nii.gz")
            temporary.write_bytes(b"half a file")
            raise error("stopped")
    assert not any(tmp_path.iterdir())


def test_atomic_output_replaces_on_success(tmp_path):
    final = tmp_path / "result.txt"
    final.write_text("old")
    with atomic_output(final) as temporary:
        temporary.write_text("new")
    assert final.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["result.txt"]


def test_interrupted_labelmap_write_leaves_no_file(tmp_path, lidc_labels, monkeypatch):
    labelmap, labels = lidc_labels
    crop = slab(labelmap, 60, 64)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("unimiss.data.io.label_table_text", interrupt)  # after the labelmap is written
    with pytest.raises(KeyboardInterrupt):
        write_labelmap(crop, tmp_path / "case.nii.gz", labels)
    monkeypatch.setattr(slicerio, "write_segmentation", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_labelmap(crop, tmp_path / "case.seg.nrrd", labels)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ the image type


def test_image_data_geometry_helpers():
    radiograph = read_image(CR)
    again = ImageData.from_sitk(radiograph.to_sitk())
    assert again.same_grid(radiograph) and np.array_equal(again.array, radiograph.array)
    shifted = ImageData(radiograph.array, radiograph.spacing, (0.0, 0.01), radiograph.direction)
    assert not shifted.same_grid(radiograph)
    assert radiograph.with_array(radiograph.array > 100).same_grid(radiograph)
    with pytest.raises(ValueError):
        radiograph.with_array(radiograph.array[:10])
