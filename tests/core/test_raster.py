"""Rasterising annotations: the pixel-centre rule, holes, overlaps, levels, chunks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slideseg import AnnotationLayer, AnnotationSet, Region
from napari_slideseg.core.raster import (
    RegionIndex,
    label_pyramid,
    rasterize_window,
    region_mask,
)


def brute_force(rings, h, w, x0=0.0, y0=0.0, ds=1.0):
    """Every pixel centre tested against each ring on its own (the definition): inside
    or on the first ring (even-odd), and neither inside nor on any other ring (holes).
    A centre within 1e-7 px of an edge is on it."""
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    yy, xx = y0 + (yy + 0.5) * ds, x0 + (xx + 0.5) * ds

    def closed(ring):
        inside = np.zeros((h, w), bool)
        on = np.zeros((h, w), bool)
        for (ax, ay), (bx, by) in zip(ring, np.roll(ring, -1, axis=0), strict=True):
            cond = (yy >= min(ay, by)) & (yy < max(ay, by))
            with np.errstate(divide="ignore", invalid="ignore"):
                xc = ax + (yy - ay) * (bx - ax) / (by - ay)
            inside ^= cond & (xx >= xc)
            # distance from the centre to the segment, in output pixels
            dx, dy = bx - ax, by - ay
            t = np.clip(((xx - ax) * dx + (yy - ay) * dy) / max(dx * dx + dy * dy, 1e-300),
                        0, 1)
            on |= np.hypot(xx - ax - t * dx, yy - ay - t * dy) / ds <= 1e-7
        return inside | on

    result = closed(rings[0])
    for ring in rings[1:]:
        result &= ~closed(ring)
    return result


def star(rng, cx, cy, r0, r1, n=None):
    n = n or int(rng.integers(3, 30))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(r0, r1, n)
    return np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])


def test_box_on_pixel_edges_is_exact():
    ann = AnnotationSet([AnnotationLayer(regions=[
        Region([[100, 60], [200, 60], [200, 140], [100, 140]], type="rectangle")])])
    labels = rasterize_window(RegionIndex.from_annotations(ann), 0, 0, 300, 200)
    expected = np.zeros((200, 300), np.uint8)
    expected[60:140, 100:200] = 1
    np.testing.assert_array_equal(labels, expected)
    # at downsample 4 the box covers level-1 pixels 25..49 x 15..34 exactly
    labels = rasterize_window(RegionIndex.from_annotations(ann), 0, 0, 75, 50, downsample=4)
    expected = np.zeros((50, 75), np.uint8)
    expected[15:35, 25:50] = 1
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("seed", range(6))
def test_random_polygons_with_holes_match_the_centre_rule(seed):
    rng = np.random.default_rng(seed)
    outer = star(rng, 100, 90, 40, 90)
    hole = star(rng, 100, 90, 5, 20)
    if seed % 2:
        outer, hole = np.round(outer * 4) / 4, np.round(hole * 4) / 4  # ties on centres
    ann = AnnotationSet([AnnotationLayer(regions=[Region(outer, holes=[hole])])])
    for x0, y0, ds, h, w in ((0, 0, 1.0, 200, 210), (37.5, 11, 1.0, 90, 120),
                             (0, 0, 3.7, 60, 60)):
        got = rasterize_window(RegionIndex.from_annotations(ann), x0, y0, w, h, ds)
        np.testing.assert_array_equal(got.astype(bool),
                                      brute_force([outer, hole], h, w, x0, y0, ds))


def test_overlaps_negatives_and_layer_order():
    square = np.array([[10, 10], [60, 10], [60, 60], [10, 60]], float)
    ann = AnnotationSet([
        AnnotationLayer(name="a", regions=[
            Region(square), Region(square + 20),  # overlapping positives stay filled
            Region(square / 5 + 28, negative=True)]),  # a cut-out inside the first
        AnnotationLayer(name="b", regions=[Region(square / 2 + 50)]),  # later layer wins
        AnnotationLayer(name="c", regions=[Region(square / 5 + 30, negative=True),
                                           Region([[0, 0], [5, 0]], type="ruler")]),
    ])
    got = rasterize_window(RegionIndex.from_annotations(ann), 0, 0, 100, 100)
    a = brute_force([square], 100, 100) | brute_force([square + 20], 100, 100)
    a &= ~brute_force([square / 5 + 28], 100, 100)
    b = brute_force([square / 2 + 50], 100, 100)
    expected = np.where(b, 2, np.where(a, 1, 0))
    np.testing.assert_array_equal(got, expected)  # layer c: only a negative and a ruler
    assert (got[(expected == 1)] == 1).all() and got[37, 37] == 0  # the cut-out is open


def test_region_mask_equals_the_definition():
    rng = np.random.default_rng(9)
    rings = [star(rng, 50, 50, 20, 45), star(rng, 50, 50, 2, 10)]
    np.testing.assert_array_equal(region_mask([r - 0.5 for r in rings], 100, 100),
                                  brute_force(rings, 100, 100))


def test_label_pyramid_chunks_agree_with_direct_windows():
    rng = np.random.default_rng(4)
    regions = [Region(star(rng, *rng.uniform(0, 3000, 2), 20, 200)) for _ in range(40)]
    ann = AnnotationSet([AnnotationLayer(regions=regions[:20]),
                         AnnotationLayer(regions=regions[20:])])
    index = RegionIndex.from_annotations(ann)
    dims, downsamples = [(3001, 2203), (750, 550)], [1.0, 4.0013]
    pyramid = label_pyramid(index, dims, downsamples, chunk=512)
    assert [a.shape for a in pyramid] == [(2203, 3001), (550, 750)]
    assert pyramid[0].chunks[0][0] == 512 and len(pyramid[0].dask.layers) == 1
    for level, (arr, ds, (r0, c0)) in enumerate(zip(pyramid, downsamples,
                                                    [(400, 450), (100, 200)], strict=True)):
        window = np.asarray(arr[r0:r0 + 300, c0:c0 + 450])  # crosses chunk boundaries
        direct = rasterize_window(index, c0 * ds, r0 * ds, 450, 300, ds)
        np.testing.assert_array_equal(window, direct, err_msg=f"level {level}")
    assert np.asarray(pyramid[0]).max() == 2


def test_a_hole_poking_out_of_its_ring_is_found_by_window_queries():
    from napari_slideseg import AnnotationKey, AnnotationLayer, AnnotationSet, Region, rasterize

    outer = np.array([[10.0, 10.0], [50.0, 10.0], [50.0, 50.0], [10.0, 50.0]])
    hole = np.array([[40.0, 20.0], [90.0, 20.0], [90.0, 30.0], [40.0, 30.0]])  # out to x=90
    ann = AnnotationSet([AnnotationLayer(name="a", regions=[Region(outer, holes=[hole])])])
    key = AnnotationKey({"a": 1})
    whole = rasterize(ann, key, (0, 0, 100, 60))
    assert whole[25, 70] == 1  # even-odd: inside the hole's ring only
    window = rasterize(ann, key, (60, 0, 40, 60))  # meets the hole, not the outer ring
    np.testing.assert_array_equal(window, whole[:, 60:100])


@pytest.mark.parametrize("seed", range(4))
def test_whole_number_vertices_match_scikit_image(seed):
    """Edges between whole-number vertices pass through pixel centres: those pixels are
    inside on an outline and outside on a hole's outline, as skimage.draw.polygon has it."""
    from skimage.draw import polygon as sk_polygon

    rng = np.random.default_rng(100 + seed)
    outer = np.round(star(rng, 80, 70, 30, 65))
    hole = np.round(star(rng, 80, 70, 6, 18))
    ann = AnnotationSet([AnnotationLayer(regions=[Region(outer, holes=[hole])])])
    index = RegionIndex.from_annotations(ann)
    for ds in (1.0, 2.0, 4.0):
        n = int(160 / ds)

        def sk(ring, n=n, ds=ds):
            m = np.zeros((n, n), bool)
            rr, cc = sk_polygon(ring[:, 1] / ds - 0.5, ring[:, 0] / ds - 0.5, (n, n))
            m[rr, cc] = True
            return m

        got = rasterize_window(index, 0, 0, n, n, ds).astype(bool)
        np.testing.assert_array_equal(got, sk(outer) & ~sk(hole), err_msg=f"ds {ds}")
