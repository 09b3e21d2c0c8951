"""Annotation keys and label masks, against an independent rasteriser (scikit-image)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import polygon as sk_polygon

from napari_slideseg import AnnotationKey, AnnotationLayer, AnnotationSet, Region, rasterize


def sk_fill(ring, h, w, x0=0.0, y0=0.0, ds=1.0):
    """scikit-image fill of a level-0 ring into the (h, w) grid of a window."""
    px = (ring[:, 0] - x0) / ds - 0.5  # pixel-centre coordinates of the window
    py = (ring[:, 1] - y0) / ds - 0.5
    mask = np.zeros((h, w), bool)
    rr, cc = sk_polygon(py, px, (h, w))
    mask[rr, cc] = True
    return mask


def blob(rng, cx, cy, r0, r1, n=16):
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(r0, r1, n)
    return np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])


@pytest.fixture
def scene():
    rng = np.random.default_rng(12)
    tumour = blob(rng, 300.3, 250.7, 120, 180)
    lumen = blob(rng, 300.3, 250.7, 20, 45)
    stroma = blob(rng, 420.1, 330.9, 80, 140)  # overlaps the tumour
    other = blob(rng, 120.6, 420.2, 30, 60)
    ann = AnnotationSet([
        AnnotationLayer(name="tumour", color=(255, 0, 0), regions=[
            Region(tumour, text="t"), Region(lumen, negative=True),
            Region([[0, 0], [500, 500]], type="arrow")]),
        AnnotationLayer(name="stroma", color=(0, 255, 0), regions=[
            Region(stroma, text="s"), Region(other, text="t")]),
    ])
    return ann, tumour, lumen, stroma, other


@pytest.mark.parametrize("ds, window", [(1.0, (37.25, 12.5, 560, 520)),
                                        (4.0, (0, 0, 150, 140)),
                                        (4.0013, (17.0, 5.0, 140, 130))])
def test_masks_equal_scikit_image_with_holes_overlaps_and_priority(scene, ds, window):
    ann, tumour, lumen, stroma, other = scene
    key = AnnotationKey.from_annotations([ann])
    assert key.values == {"stroma": 1, "tumour": 2}  # sorted names; background 0
    x0, y0, w, h = window
    mask = rasterize(ann, key, (x0, y0, w, h), downsample=ds)
    assert mask.dtype == np.uint8 and mask.shape == (h, w)
    t = sk_fill(tumour, h, w, x0, y0, ds) & ~sk_fill(lumen, h, w, x0, y0, ds)
    s = sk_fill(stroma, h, w, x0, y0, ds) | sk_fill(other, h, w, x0, y0, ds)
    expected = np.zeros((h, w), np.uint8)
    expected[s] = 1
    expected[t] = 2  # default priority: the highest value (tumour) wins overlaps
    np.testing.assert_array_equal(mask, expected)
    # the other way round when asked; the arrow is never filled
    key = AnnotationKey(key.values, priority=["tumour", "stroma"])
    mask = rasterize(ann, key, (x0, y0, w, h), downsample=ds)
    expected = np.zeros((h, w), np.uint8)
    expected[t] = 2
    expected[s] = 1
    np.testing.assert_array_equal(mask, expected)


def test_class_from_text_and_unknown_classes(scene):
    ann, tumour, lumen, stroma, other = scene
    key = AnnotationKey.from_annotations([ann], class_from="text")
    assert key.values == {"s": 1, "t": 2}
    mask = rasterize(ann, key, (0, 0, 600, 600))
    t = (sk_fill(tumour, 600, 600) & ~sk_fill(lumen, 600, 600)) | sk_fill(other, 600, 600)
    np.testing.assert_array_equal(mask == 2, t)
    only = AnnotationKey({"t": 7}, class_from="text")  # classes outside the key: unfilled
    mask = rasterize(ann, only, (0, 0, 600, 600))
    assert set(np.unique(mask)) == {0, 7} and (mask == 7).sum() == t.sum()


@pytest.mark.parametrize("suffix", [".json", ".tsv"])
def test_key_files_round_trip(tmp_path, suffix):
    key = AnnotationKey({"tumour": 2, "stroma": 1, "fat & vessels": 300},
                        {"tumour": (255, 0, 0), "stroma": (0, 255, 0)},
                        priority=["tumour"], class_from="text")
    assert key.priority == ["stroma", "fat & vessels", "tumour"]
    assert key.dtype == np.uint16
    back = AnnotationKey.load(key.save(tmp_path / f"key{suffix}"))
    assert back == key


def test_bad_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match="share value"):
        AnnotationKey({"a": 1, "b": 1})
    with pytest.raises(ValueError, match="background"):
        AnnotationKey({"a": 0})
    with pytest.raises(ValueError, match="does not have"):
        AnnotationKey({"a": 1}, priority=["b"])
    bad = tmp_path / "key.json"
    bad.write_text('{"classes": [{"name": "a"}]}')
    from napari_slideseg import SlideSegError

    with pytest.raises(SlideSegError, match="not a valid annotation key"):
        AnnotationKey.load(bad)


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_whole_slide_mask_pyramid_lines_up_and_saves(svs, scene, tmp_path, suffix):
    import tifffile
    import zarr

    from napari_slideseg import open_slide
    from napari_slideseg.core.masks import mask_pyramid, save_mask

    ann = scene[0]
    key = AnnotationKey.from_annotations([ann])
    with open_slide(svs.path) as slide:
        levels = mask_pyramid(ann, key, list(slide.level_dimensions),
                              list(slide.level_downsamples), chunk=300)
        for level, (w, h) in zip(levels, slide.level_dimensions, strict=True):
            assert level.shape == (h, w) and level.dtype == np.uint8
        ds1 = slide.level_downsamples[1]
        np.testing.assert_array_equal(np.asarray(levels[1][20:120, 30:150]),
                                      rasterize(ann, key, (30 * ds1, 20 * ds1, 120, 100), ds1))
    path = save_mask(levels, tmp_path / f"mask{suffix}", mpp=0.2527, tile=128)
    expected = [np.asarray(level) for level in levels]
    if suffix == ".tif":
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            got = [series.levels[i].asarray() for i in range(len(series.levels))]
            assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    else:
        group = zarr.open_group(str(path), mode="r")
        got = [np.asarray(group[str(i)]) for i in range(len(levels))]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)
    assert not list(tmp_path.glob(".*.part"))
