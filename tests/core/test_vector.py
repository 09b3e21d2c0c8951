"""Labels <-> polygons: pixel-edge outlines, holes, pieces, and exact round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.measure import label as label_pieces

from napari_slideseg import (
    AnnotationKey,
    AnnotationLayer,
    AnnotationSet,
    Region,
    labels_to_polygons,
    polygons_to_labels,
    rasterize,
    read_annotations,
    write_annotations,
)
from napari_slideseg.core.raster import RegionIndex, rasterize_window


def regions_of(annotations):
    return [r for _, r in annotations.regions()]


def back_to_values(annotations, shape, **kw):
    """Fill the regions back (one id each) and map ids to the label values they carry."""
    ids = polygons_to_labels(annotations, shape, **kw)
    lut = np.array([0] + [r.attributes["label"] for r in regions_of(annotations)])
    return lut[ids]


def signed_area(ring):
    x, y = ring[:, 0], ring[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2


def check_round_trip(labels, downsample=1.0, origin=(0.0, 0.0)):
    """Every check of the module notes, on one label array."""
    ann = labels_to_polygons(labels, downsample=downsample, origin=origin)
    regions = regions_of(ann)
    # exactly the pixels of each value, through per-region ids...
    np.testing.assert_array_equal(
        back_to_values(ann, labels.shape, downsample=downsample, origin=origin), labels)
    # ... and through the public rasteriser with one class per value
    values = [int(v) for v in np.unique(labels) if v]
    by_class = labels_to_polygons(labels, downsample=downsample, origin=origin,
                                  names={v: f"class {v}" for v in values})
    if values:
        key = AnnotationKey({f"class {v}": v for v in values})
        h, w = labels.shape
        np.testing.assert_array_equal(
            rasterize(by_class, key, (origin[0], origin[1], w, h), downsample), labels)
    # one region per 4-connected piece of one value, and each region is one piece
    pieces = label_pieces(labels, background=0, connectivity=1)
    assert len(regions) == pieces.max()
    ids = polygons_to_labels(ann, labels.shape, downsample=downsample, origin=origin)
    fg = labels != 0
    assert len(np.unique(np.stack([ids[fg], pieces[fg]]), axis=1).T) == pieces.max()
    for region in regions:
        assert region.type == "polygon"
        # simple rings on level-0 pixel corners: outer clockwise on screen, holes not
        for ring, sign in [(region.vertices, 1), *((h, -1) for h in region.holes)]:
            assert len(np.unique(ring, axis=0)) == len(ring) >= 4
            corners = (ring - origin) / downsample
            np.testing.assert_allclose(corners, np.round(corners), atol=1e-9)
            assert sign * signed_area(ring) > 0
    return ann


# -- known answers ---------------------------------------------------------------------


def test_one_pixel_is_a_unit_square_on_pixel_edges():
    labels = np.zeros((3, 4), np.uint8)
    labels[1, 2] = 5
    (region,) = regions_of(labels_to_polygons(labels))
    np.testing.assert_array_equal(region.vertices, [[2, 1], [3, 1], [3, 2], [2, 2]])
    assert region.text == "5" and region.attributes == {"label": 5} and region.holes == []
    assert region.vertices.dtype == np.float64


def test_downsample_and_origin_give_level0_coordinates():
    labels = np.zeros((3, 4), np.int32)
    labels[1, 2] = 1
    (region,) = regions_of(labels_to_polygons(labels, downsample=4.0, origin=(100.0, 50.0)))
    np.testing.assert_array_equal(region.vertices,
                                  [[108, 54], [112, 54], [112, 58], [108, 58]])
    assert region.area() == 16.0


def test_hole_is_kept_and_filled_back_exactly():
    labels = np.zeros((7, 7), np.int32)
    labels[1:6, 1:6] = 3
    labels[2:5, 2:5] = 0
    labels[3, 3] = 4  # an island of another value in the hole
    ann = check_round_trip(labels)
    ring3, ring4 = regions_of(ann)
    assert ring3.text == "3" and len(ring3.holes) == 1 and ring4.text == "4"
    assert ring3.area() == 16.0
    np.testing.assert_array_equal(ring3.holes[0], [[2, 5], [5, 5], [5, 2], [2, 2]])


def test_diagonal_pixels_are_separate_regions_meeting_at_a_corner():
    labels = np.zeros((4, 4), np.int32)
    labels[1, 1] = labels[2, 2] = 7
    ann = check_round_trip(labels)
    a, b = regions_of(ann)
    assert a.group == b.group == "label-7"
    shared = {tuple(v) for v in a.vertices} & {tuple(v) for v in b.vertices}
    assert shared == {(2.0, 2.0)}


def test_hole_touching_the_outside_at_one_corner_stays_a_hole():
    labels = np.zeros((5, 5), np.int32)
    labels[1:4, 1:4] = 1
    labels[2, 2] = 0
    labels[1, 1] = 0  # the hole now meets the outside at the corner (2, 2)
    ann = check_round_trip(labels)
    (region,) = regions_of(ann)
    assert len(region.holes) == 1
    assert (2.0, 2.0) in {tuple(v) for v in region.vertices}
    assert (2.0, 2.0) in {tuple(v) for v in region.holes[0]}


def test_checkerboard_of_two_values():
    labels = (np.indices((6, 6)).sum(axis=0) % 2 + 1).astype(np.int32)
    labels[0, 0] = 0
    check_round_trip(labels)


def test_objects_touching_the_border_and_the_whole_array():
    labels = np.zeros((5, 6), np.int32)
    labels[:, :2] = 1
    labels[3:, 4:] = 2
    check_round_trip(labels)
    full = np.full((4, 3), 9, np.int16)
    (region,) = regions_of(check_round_trip(full))
    np.testing.assert_array_equal(region.vertices, [[0, 0], [3, 0], [3, 4], [0, 4]])


def test_bool_and_empty_arrays():
    mask = np.zeros((4, 4), bool)
    assert [la.name for la in labels_to_polygons(mask)] == ["labels"]
    assert labels_to_polygons(mask).region_count == 0
    mask[1:3, 1:3] = True
    (region,) = regions_of(labels_to_polygons(mask))
    assert region.attributes["label"] == 1
    with pytest.raises(TypeError, match="integer or bool"):
        labels_to_polygons(np.zeros((3, 3), np.float32))


def test_names_make_class_layers_and_select_values():
    labels = np.zeros((6, 9), np.int32)
    labels[1:3, 1:3] = 1
    labels[1:3, 4:6] = 2
    labels[4:6, 1:3] = 3
    labels[4:6, 6:8] = 1
    ann = labels_to_polygons(labels, names={2: "stroma", 1: "tumour", 3: "tumour"})
    assert [layer.name for layer in ann] == ["stroma", "tumour"]
    assert [r.text for r in ann[1].regions] == ["1", "1", "3"]
    assert [r.group for r in ann[1].regions] == ["label-1", "label-1", None]
    only = labels_to_polygons(labels, names={3: "third"})
    assert [r.text for _, r in only.regions()] == ["3"]


def test_min_area_in_level0_pixels():
    labels = np.zeros((10, 10), np.int32)
    labels[0, 0] = 1  # 1 px
    labels[2:4, 2:4] = 2  # 4 px
    labels[5:9, 5:9] = 3  # 16 px, with a 4 px hole: 12 px
    labels[6:8, 6:8] = 0
    kept = [r.text for _, r in labels_to_polygons(labels, min_area=4).regions()]
    assert kept == ["2", "3"]
    kept = [r.text for _, r in labels_to_polygons(labels, min_area=12.5).regions()]
    assert kept == []
    # at downsample 2 each pixel is 4 level-0 px^2
    kept = [r.text for _, r in labels_to_polygons(labels, downsample=2, min_area=16).regions()]
    assert kept == ["2", "3"]


def test_tolerance_simplifies_within_the_tolerance():
    yy, xx = np.mgrid[:200, :200]
    disc = ((yy - 99.5) ** 2 + (xx - 99.5) ** 2 < 80**2).astype(np.uint8)
    exact = regions_of(labels_to_polygons(disc))[0]
    simple = regions_of(labels_to_polygons(disc, tolerance=2.0))[0]
    assert len(simple.vertices) < len(exact.vertices) / 4
    # Douglas-Peucker keeps a subset of the vertices, each dropped one within tolerance
    exact_set = {tuple(v) for v in exact.vertices}
    assert {tuple(v) for v in simple.vertices} <= exact_set
    a, b = simple.vertices, np.roll(simple.vertices, -1, axis=0)
    d = b - a
    t = np.clip(((exact.vertices[:, None] - a) * d).sum(-1) / (d * d).sum(-1), 0, 1)
    dist = np.linalg.norm(exact.vertices[:, None] - (a + t[..., None] * d), axis=-1).min(1)
    assert dist.max() <= 2.0
    assert abs(simple.area() - exact.area()) / exact.area() < 0.02
    # level-0 tolerance: at downsample 4 the same outline needs 4 x the tolerance
    coarse = regions_of(labels_to_polygons(disc, downsample=4, tolerance=8.0))[0]
    np.testing.assert_array_equal(coarse.vertices, simple.vertices * 4)


def test_tolerance_drops_rings_that_collapse():
    labels = np.zeros((20, 20), np.int32)
    labels[2:18, 2:18] = 1
    labels[9, 9] = 0  # a one-pixel hole
    labels[0, 19] = 2  # a one-pixel object
    (region,) = regions_of(labels_to_polygons(labels, tolerance=1.0))
    assert region.text == "1" and region.holes == []


def test_round_trip_through_geojson_and_aperio_files(tmp_path):
    rng = np.random.default_rng(7)
    labels = (rng.random((40, 50)) < 0.45) * rng.integers(1, 4, (40, 50))
    ann = labels_to_polygons(labels, downsample=2.0, origin=(1000.0, 2000.0))
    for name in ("labels.geojson", "labels.xml"):
        write_annotations(ann, tmp_path / name)
        again = read_annotations(tmp_path / name)
        key = AnnotationKey({"labels": 1})
        got = rasterize(again, key, (1000.0, 2000.0, 50, 40), 2.0)
        np.testing.assert_array_equal(got, (labels != 0).astype(np.uint8))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labels=arrays(np.int16, st.tuples(st.integers(1, 14), st.integers(1, 14)),
                     elements=st.sampled_from([0, 0, 1, 2, 3])),
       downsample=st.sampled_from([1.0, 0.5, 2.0, 3.7]),
       origin=st.tuples(st.floats(-50, 50), st.floats(-50, 50)))
def test_round_trip_is_pixel_exact_for_random_masks(labels, downsample, origin):
    check_round_trip(labels, downsample, origin)


def test_round_trip_of_many_cells():
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    rng = np.random.default_rng(3)
    markers = np.zeros((512, 512), np.int32)
    markers[rng.integers(0, 512, 300), rng.integers(0, 512, 300)] = np.arange(1, 301)
    dist = ndi.distance_transform_edt(markers == 0)
    cells = watershed(dist, markers, mask=dist < 12)
    cells[100:140, 100:140] = 0
    check_round_trip(cells, 2.0, (5000.0, 7000.0))


# -- polygons -> labels ----------------------------------------------------------------


def star(rng, cx, cy, r0, r1):
    n = int(rng.integers(3, 20))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(r0, r1, n)
    return np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])


def random_annotations(rng):
    layers = []
    for li in range(int(rng.integers(1, 4))):
        regions = []
        for _ in range(int(rng.integers(1, 6))):
            kind = str(rng.choice(["polygon", "ellipse", "rectangle", "line"]))
            cx, cy = rng.uniform(-10, 70, 2)
            holes = []
            if kind == "polygon":
                vertices = star(rng, cx, cy, 2, 25)
                if rng.random() < 0.5:
                    holes = [star(rng, cx, cy, 0.5, 3)]  # may reach out of its outer ring
            elif kind == "ellipse":
                vertices = [[cx, cy], [cx + rng.uniform(1, 30), cy + rng.uniform(1, 30)]]
            elif kind == "rectangle":
                x1, y1 = cx + rng.uniform(1, 30), cy + rng.uniform(1, 30)
                vertices = [[cx, cy], [x1, cy], [x1, y1], [cx, y1]]
            else:
                vertices = star(rng, cx, cy, 2, 25)
            regions.append(Region(vertices, type=kind, holes=holes,
                                  negative=bool(rng.random() < 0.15)))
        layers.append(AnnotationLayer(name=f"layer {li}", regions=regions))
    return AnnotationSet(layers)


@pytest.mark.parametrize("seed", range(60))
def test_polygons_to_labels_is_the_rasteriser_with_one_id_per_region(seed):
    rng = np.random.default_rng(seed)
    ann = random_annotations(rng)
    downsample = float(rng.choice([1.0, 2.0, 0.7]))
    origin = tuple(float(v) for v in rng.uniform(-5, 5, 2))
    h, w = (int(v) for v in rng.integers(10, 60, 2))
    got = polygons_to_labels(ann, (h, w), downsample=downsample, origin=origin)
    counter = iter(range(1, 1000))
    index = RegionIndex.from_annotations(ann, lambda layer, region: next(counter))
    want = rasterize_window(index, origin[0], origin[1], w, h, downsample, np.int32)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_polygons_to_labels_ids_follow_file_order_and_later_wins():
    first = Region([[0, 0], [6, 0], [6, 6], [0, 6]])
    arrow = Region([[0, 0], [5, 5]], type="arrow")
    second = Region([[3, 3], [8, 3], [8, 8], [3, 8]])
    ann = AnnotationSet([AnnotationLayer(regions=[first, arrow]),
                         AnnotationLayer(regions=[second])])
    got = polygons_to_labels(ann, (8, 8))
    assert got[0, 0] == 1 and got[4, 4] == 2 and got[7, 7] == 2
    assert set(np.unique(got)) == {0, 1, 2}


def test_polygons_to_labels_with_a_key_is_rasterize():
    rng = np.random.default_rng(11)
    ann = random_annotations(rng)
    key = AnnotationKey.from_annotations([ann])
    got = polygons_to_labels(ann, (30, 40), downsample=2.0, origin=(3.0, -4.0), key=key)
    np.testing.assert_array_equal(got, rasterize(ann, key, (3.0, -4.0, 40, 30), 2.0))
