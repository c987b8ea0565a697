"""Previews a reader can decode: every segment outlined in a colour of its own, named in a legend."""
from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk

from testkit import DATA
from unimiss.data.image import ImageData
from unimiss.data.io import read_image
from unimiss.data.labels import Label
from unimiss.preview import MIN_DISTANCE, display_colors, render
from unimiss.zoo import default_model


def test_builtin_labels_get_distinct_colours_and_sides_distinct_shades():
    for dimension in (3, 2):
        labels = default_model(dimension).labels
        colors = display_colors(labels)
        assert colors == display_colors(labels)  # deterministic
        for a, b in itertools.combinations(colors.values(), 2):
            assert np.linalg.norm(np.subtract(a, b)) >= MIN_DISTANCE
    ct = {l.name: l.value for l in default_model(3).labels}
    colors = display_colors(default_model(3).labels)
    assert colors[ct["kidney_left"]] != colors[ct["kidney_right"]]
    assert colors[ct["liver"]] == tuple(next(l.color for l in default_model(3).labels if l.name == "liver"))


def test_preview_outlines_each_present_segment_and_adds_a_legend():
    image = read_image(DATA / "xray" / "nih-00000001_000.png")
    labels = default_model(2).labels
    labelmap = np.zeros(image.array.shape, np.uint8)
    labelmap[100:300, 60:220] = 1   # lung_left
    labelmap[100:300, 300:460] = 2  # lung_right; the heart and clavicles are absent
    picture = render(image, image.with_array(labelmap), labels, modality_ct=False)
    colors = display_colors(labels)
    height, width = image.array.shape
    assert picture.shape[1] == width and picture.shape[0] > height  # a legend strip below the image
    body, legend = picture[:height], picture[height:]
    for value in (1, 2):
        color = np.array(colors[value])
        outline = (body == color).all(axis=-1)
        assert outline.sum() > 4 * 150  # a border around the rectangle...
        inside = body[150:250, 110:170] if value == 1 else body[150:250, 350:410]
        assert not (inside == color).all(axis=-1).any()  # ...not a filled area
        assert (legend == color).all(axis=-1).sum() > 50  # its swatch in the legend
    for value in (3, 4, 5):  # absent labels are neither drawn nor listed
        assert not (picture == np.array(colors[value])).all(axis=-1).any()
    assert (legend > 200).all(axis=-1).sum() > 200  # the names, in white


def test_ct_preview_is_three_planes_with_legend():
    ct = sitk.ReadImage(str(DATA / "ct" / "ts-abdomen" / "image.nii.gz"))
    labels = sitk.ReadImage(str(DATA / "ct" / "ts-abdomen" / "labels.nii.gz"))
    image, labelmap = ImageData.from_sitk(ct), ImageData.from_sitk(labels == 5)  # TotalSegmentator 5: liver
    picture = render(image, labelmap, [Label(1, "liver", (221, 130, 101))])
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.shape[1] > 3 * 100
    assert (picture == (221, 130, 101)).all(axis=-1).sum() > 500
