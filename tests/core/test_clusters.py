"""Tile clusters and their outlines: DBSCAN, statistics, filters and hulls on hand-made
tile grids, with known answers, and the predicted regions through Aperio XML."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy.spatial import ConvexHull

from napari_slideseg import SlideSegError, read_annotations, write_annotations
from napari_slideseg.core.annotations import polygon_area
from napari_slideseg.core.clusters import (
    CLASS_PALETTE,
    TABLE_COLUMNS,
    ClusterStats,
    cluster_outline,
    cluster_stats,
    dbscan_tiles,
    find_regions,
    graham_scan,
)
from napari_slideseg.core.review import element_attributes
from napari_slideseg.core.tiles import TileGrid, TilePredictions

S = 512.0  # tile side in level-0 px


def tiles_of(picture):
    """(col, row) of the '#' cells of a list of strings (one string per tile row)."""
    cells = [(c, r) for r, line in enumerate(picture) for c, ch in enumerate(line) if ch == "#"]
    col, row = np.array(cells, np.int64).reshape(-1, 2).T
    return col, row


def signed_area(ring):
    x, y = ring[:, 0], ring[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2


def area_of(polygons):
    return sum(polygon_area(o) - sum(polygon_area(h) for h in holes) for o, holes in polygons)


def rotated_to_start(ring):
    """The ring from its topmost, then leftmost vertex (a canonical start)."""
    first = int(np.lexsort((ring[:, 0], ring[:, 1]))[0])
    return np.roll(ring, -first, axis=0)


def canonical(polygons):
    return sorted((tuple(map(tuple, rotated_to_start(o))),
                   tuple(sorted(tuple(map(tuple, rotated_to_start(h))) for h in holes)))
                  for o, holes in polygons)


def strictly_inside(points, polygons):
    """Points strictly inside an outer ring and outside its holes (OpenCV's test)."""
    def inside(ring, p):
        contour = np.asarray(ring, np.float32).reshape(-1, 1, 2)
        return cv2.pointPolygonTest(contour, (float(p[0]), float(p[1])), False) > 0

    def outside(ring, p):
        contour = np.asarray(ring, np.float32).reshape(-1, 1, 2)
        return cv2.pointPolygonTest(contour, (float(p[0]), float(p[1])), False) < 0

    return np.array([any(inside(o, p) and all(outside(h, p) for h in holes)
                         for o, holes in polygons) for p in points])


def centres(col, row, size0=S):
    return np.column_stack([(col + 0.5) * size0, (row + 0.5) * size0])


# -- DBSCAN -----------------------------------------------------------------------------


def test_two_separate_blobs_are_two_clusters():
    col, row = tiles_of(["##.....",
                         "##...##",
                         ".....##",
                         ".....#."])
    labels = dbscan_tiles(col, row)
    left = col < 3
    assert labels.dtype == np.int64
    assert set(labels[left]) == {labels[left][0]} and set(labels[~left]) == {labels[~left][0]}
    assert sorted(set(labels)) == [0, 1]


def test_diagonal_chain_joins_at_eps_1_5_only():
    col = row = np.arange(6)
    assert (dbscan_tiles(col, row, eps=1.5, min_samples=2) == 0).all()
    assert (dbscan_tiles(col, row, eps=1.0, min_samples=2) == -1).all()
    # with one tile enough for a cluster, eps 1.0 makes each tile its own
    assert sorted(dbscan_tiles(col, row, eps=1.0, min_samples=1)) == list(range(6))
    # edge neighbours are within eps 1.0 (the radius is inclusive)
    assert (dbscan_tiles(np.arange(5), np.zeros(5), eps=1.0, min_samples=3) == 0).all()


def test_min_samples_leaves_isolated_tiles_as_noise():
    col, row = tiles_of(["###...#",
                         "###....",
                         "###....",
                         "...#...",
                         "......#"])
    labels = dbscan_tiles(col, row, eps=1.5, min_samples=3)
    lone = {(6, 0), (6, 4)}
    for c, r, label in zip(col, row, labels, strict=True):
        # the tile at (3, 3) touches the block's corner: a border tile of its cluster
        assert (label == -1) == ((c, r) in lone)
    assert set(labels[labels >= 0]) == {0}
    assert (dbscan_tiles(col, row, min_samples=1) >= 0).all()


def test_dbscan_edge_cases():
    assert dbscan_tiles([], []).shape == (0,)
    with pytest.raises(SlideSegError, match="eps"):
        dbscan_tiles([0], [0], eps=0)
    with pytest.raises(SlideSegError, match="min_samples"):
        dbscan_tiles([0], [0], min_samples=0)
    with pytest.raises(ValueError):
        dbscan_tiles([0, 1], [0])


# -- statistics -------------------------------------------------------------------------


def test_cluster_stats_are_population_figures():
    stats = cluster_stats([0.5, 0.7, 0.9])
    assert isinstance(stats, ClusterStats)
    assert stats.count == 3
    assert stats.mean == pytest.approx(0.7)
    assert stats.var == pytest.approx(0.08 / 3)  # ddof = 0
    assert stats.std == pytest.approx(math.sqrt(0.08 / 3))
    assert (stats.min, stats.max) == (0.5, 0.9)
    one = cluster_stats(np.float32([0.8]))
    assert one.count == 1 and one.std == 0 and one.var == 0
    empty = cluster_stats([])
    assert empty.count == 0 and math.isnan(empty.mean) and math.isnan(empty.std)


# -- Graham scan ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_graham_scan_matches_scipy_on_random_points(seed):
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(int(rng.integers(3, 300)), 2)) * rng.uniform(1, 1e4)
    hull = graham_scan(pts)
    expected = pts[ConvexHull(pts).vertices]
    assert set(map(tuple, hull)) == set(map(tuple, expected))
    assert signed_area(hull) > 0
    assert signed_area(hull) == pytest.approx(ConvexHull(pts).volume)
    # the pivot first: smallest y, then smallest x
    top = pts[np.lexsort((pts[:, 0], pts[:, 1]))[0]]
    np.testing.assert_array_equal(hull[0], top)
    # counter-clockwise in (x, y) at every vertex: every point on the left of every edge
    a, b = hull, np.roll(hull, -1, axis=0)
    cross = ((b - a)[:, None, 0] * (pts[None, :, 1] - a[:, None, 1])
             - (b - a)[:, None, 1] * (pts[None, :, 0] - a[:, None, 0]))
    assert (cross >= -1e-6 * np.abs(pts).max() ** 2).all()


@pytest.mark.parametrize("seed", range(6))
def test_graham_scan_on_lattices_drops_collinear_points(seed):
    rng = np.random.default_rng(100 + seed)
    pts = rng.integers(0, 7, size=(int(rng.integers(4, 60)), 2)).astype(float)
    pts = np.concatenate([pts, pts[:5]])  # duplicates
    try:
        expected = pts[ConvexHull(pts).vertices]
    except Exception:  # all on one line: scipy refuses
        pytest.skip("degenerate draw")
    hull = graham_scan(pts)
    assert set(map(tuple, hull)) == set(map(tuple, expected))
    assert len(hull) == len(set(map(tuple, hull)))


def test_graham_scan_full_grid_gives_its_corners():
    pts = np.mgrid[0:9, 0:5].reshape(2, -1).T[:, ::-1].astype(float) * 3  # x 0..12, y 0..24
    np.testing.assert_array_equal(graham_scan(pts), [[0, 0], [12, 0], [12, 24], [0, 24]])


def test_graham_scan_degenerate_inputs():
    assert graham_scan(np.empty((0, 2))).shape == (0, 2)
    np.testing.assert_array_equal(graham_scan([[3, 4], [3, 4]]), [[3, 4]])
    np.testing.assert_array_equal(graham_scan([[5, 1], [2, 7], [5, 1]]), [[2, 7], [5, 1]])
    # collinear points: the two ends, pivot first
    line = np.column_stack([np.arange(10.0), 2 * np.arange(10.0)])[::-1]
    np.testing.assert_array_equal(graham_scan(line), [[0, 0], [9, 18]])
    # points on every edge of a triangle, and inside it
    tri = [[0, 0], [4, 0], [0, 4], [2, 0], [1, 0], [2, 2], [1, 3], [0, 2], [1, 1]]
    np.testing.assert_array_equal(graham_scan(tri), [[0, 0], [4, 0], [0, 4]])
    with pytest.raises(ValueError):
        graham_scan([[0, np.nan], [1, 1], [2, 0]])
    with pytest.raises(ValueError):
        graham_scan([1, 2, 3])


# -- outlines ---------------------------------------------------------------------------

L_SHAPE = ["#..",
           "#..",
           "###"]
RING = ["###",
        "#.#",
        "###"]
C_SHAPE = ["#####",
           "#....",
           "#....",
           "#....",
           "#####"]


def test_convex_outline_of_an_l_shape():
    col, row = tiles_of(L_SHAPE)
    [(outer, holes)] = cluster_outline(col, row, S, "convex")
    np.testing.assert_array_equal(outer, [[0, 0], [S, 0], [3 * S, 2 * S], [3 * S, 3 * S],
                                          [0, 3 * S]])
    assert holes == [] and outer.dtype == np.float64


def test_convex_outline_of_one_tile_is_its_square():
    [(outer, holes)] = cluster_outline([4], [2], 256.0)
    np.testing.assert_array_equal(outer, [[1024, 512], [1280, 512], [1280, 768], [1024, 768]])


def test_tiles_outline_of_an_l_shape_is_exact():
    col, row = tiles_of(L_SHAPE)
    polygons = cluster_outline(col + 10, row + 20, S, "tiles")
    assert canonical(polygons) == canonical([(np.array(
        [[0, 0], [S, 0], [S, 2 * S], [3 * S, 2 * S], [3 * S, 3 * S], [0, 3 * S]])
        + (10 * S, 20 * S), [])])
    assert area_of(polygons) == 5 * S * S
    assert signed_area(polygons[0][0]) > 0


def test_tiles_outline_of_a_ring_has_its_hole():
    col, row = tiles_of(RING)
    [(outer, holes)] = cluster_outline(col, row, S, "tiles")
    assert canonical([(outer, holes)]) == canonical([(
        np.array([[0, 0], [3 * S, 0], [3 * S, 3 * S], [0, 3 * S]]),
        [np.array([[S, S], [S, 2 * S], [2 * S, 2 * S], [2 * S, S]])])])
    assert signed_area(outer) > 0 and signed_area(holes[0]) < 0
    assert area_of([(outer, holes)]) == 8 * S * S
    assert not strictly_inside(centres(np.array([1]), np.array([1])), [(outer, holes)])[0]


def test_tiles_touching_at_a_corner_are_separate_polygons():
    col, row = tiles_of(["#.",
                         ".#"])
    polygons = cluster_outline(col, row, S, "tiles")
    assert canonical(polygons) == canonical([
        (np.array([[0, 0], [S, 0], [S, S], [0, S]]), []),
        (np.array([[S, S], [2 * S, S], [2 * S, 2 * S], [S, 2 * S]]), [])])


def test_concave_outline_of_a_c_shape_is_between_tiles_and_convex():
    col, row = tiles_of(C_SHAPE)
    tiles = area_of(cluster_outline(col, row, S, "tiles"))
    convex = area_of(cluster_outline(col, row, S, "convex"))
    polygons = cluster_outline(col, row, S, "concave")
    concave = area_of(polygons)
    assert tiles == 13 * S * S and convex == 25 * S * S
    # concavity 1 fills half of each of the two inner corner tiles and leaves the bay
    assert concave == 14 * S * S
    assert len(polygons) == 1 and polygons[0][1] == []
    bay = centres(np.array([2, 3, 4, 2]), np.array([2, 2, 2, 1]))
    assert not strictly_inside(bay, polygons).any()
    assert strictly_inside(bay, cluster_outline(col, row, S, "convex")).all()
    # a looser concave hull closes the bay: the 3-tile gap needs circumradius 1.5 and more
    assert area_of(cluster_outline(col, row, S, "concave", concavity=1.49)) < convex
    assert area_of(cluster_outline(col, row, S, "concave", concavity=3.0)) == convex


def test_concave_outline_bridges_one_tile_gaps_only():
    [(outer, holes)] = cluster_outline([0, 2], [0, 0], S, "concave")
    np.testing.assert_array_equal(outer, [[0, 0], [3 * S, 0], [3 * S, S], [0, S]])
    apart = cluster_outline([0, 3], [0, 0], S, "concave")
    assert canonical(apart) == canonical(cluster_outline([0, 3], [0, 0], S, "tiles"))


def test_concave_outline_keeps_holes_and_separate_pieces():
    col, row = tiles_of(["#####",
                         "#...#",
                         "#...#",
                         "#...#",
                         "#####",
                         ".....",
                         ".....",
                         "##..."])
    polygons = cluster_outline(col, row, S, "concave")
    assert len(polygons) == 2
    ring = next(p for p in polygons if len(p[1]))
    assert len(ring[1]) == 1 and signed_area(ring[1][0]) < 0
    assert not strictly_inside(centres(np.array([2]), np.array([2])), [ring])[0]


@pytest.mark.parametrize("method", ["convex", "tiles", "concave"])
@pytest.mark.parametrize("seed", range(6))
def test_every_outline_holds_every_tile_centre(method, seed):
    rng = np.random.default_rng(seed)
    cells = rng.random((9, 11)) < rng.uniform(0.25, 0.8)
    row, col = np.nonzero(cells)
    size0 = float(rng.choice([256, 512, 1000]))
    polygons = cluster_outline(col, row, size0, method)
    assert strictly_inside(centres(col, row, size0), polygons).all()
    for outer, holes in polygons:
        assert outer.dtype == np.float64 and signed_area(outer) > 0
        assert all(signed_area(h) < 0 for h in holes)
    if method == "tiles":
        assert area_of(polygons) == len(col) * size0 ** 2


@pytest.mark.parametrize("seed", range(25))
def test_concave_outline_grows_from_the_tiles_to_the_convex_hull(seed):
    rng = np.random.default_rng(1000 + seed)
    cells = rng.random((8, 8)) < rng.uniform(0.2, 0.8)
    row, col = np.nonzero(cells)
    if not len(col):
        return
    tiles = cluster_outline(col, row, 1.0, "tiles")
    # at concavity 0.5 only the triangles inside the tiles are kept: exactly the tiles,
    # with the same rings, holes and touching pieces
    assert canonical(cluster_outline(col, row, 1.0, "concave", concavity=0.5)) \
        == canonical(tiles)
    convex = area_of(cluster_outline(col, row, 1.0, "convex"))
    previous = float(len(col))
    for concavity in (0.8, 1.0, 1.5, 2.5):
        area = area_of(cluster_outline(col, row, 1.0, "concave", concavity=concavity))
        assert previous <= area <= convex
        previous = area
    assert area_of(cluster_outline(col, row, 1.0, "concave", concavity=50.0)) == convex


def test_outline_edge_cases():
    assert cluster_outline([], [], S) == []
    with pytest.raises(SlideSegError, match="outline"):
        cluster_outline([0], [0], S, "round")
    with pytest.raises(SlideSegError, match="concavity"):
        cluster_outline([0], [0], S, "concave", concavity=0)
    with pytest.raises(SlideSegError, match="tile size"):
        cluster_outline([0], [0], 0.0)


# -- find_regions -----------------------------------------------------------------------

CLASSES = ["other", "tumour", "stroma"]


def predictions_of(pictures, shape=(10, 12), mpp=0.5, downsample=1.0):
    """Every tile of a grid, 'other' unless a picture gives a class and probability.

    ``pictures`` maps class -> (list of strings, probability or (rows, cols) array).
    """
    rows, cols = shape
    rr, cc = np.mgrid[0:rows, 0:cols]
    grid = TileGrid(cc.ravel(), rr.ravel(), size=512, size0=S * downsample, level=0,
                    downsample=downsample, shape=shape, mpp=mpp)
    proba = np.zeros((rows, cols, len(CLASSES)), np.float32)
    proba[..., 0] = 1.0
    for cls, (picture, p) in pictures.items():
        k = CLASSES.index(cls)
        mask = np.zeros(shape, bool)
        col, row = tiles_of(picture)
        mask[row, col] = True
        value = np.broadcast_to(np.asarray(p, np.float32), shape)
        proba[mask, k] = value[mask]
        proba[mask, 0] = 1.0 - value[mask]
    return TilePredictions(grid, list(CLASSES), proba.reshape(-1, len(CLASSES)))


def test_find_regions_end_to_end(tmp_path):
    pred = predictions_of({
        "tumour": (["###.........",
                    "###.........",
                    "###.......#."], 0.9),
        "stroma": ([".",
                    ".",
                    ".",
                    ".",
                    ".",
                    "......###",
                    "......#.#",
                    "......###"], 0.8)})
    annotations, table = find_regions(pred, outline="tiles")
    assert [layer.name for layer in annotations] == ["tumour", "stroma"]
    assert [layer.color for layer in annotations] == [CLASS_PALETTE[1], CLASS_PALETTE[2]]
    assert annotations.mpp == pytest.approx(0.5)
    tumour, stroma = annotations
    [region] = tumour.regions  # the lone tumour tile is noise
    assert region.text == "tumour" and region.type == "polygon"
    np.testing.assert_array_equal(region.vertices, [[0, 0], [3 * S, 0], [3 * S, 3 * S],
                                                    [0, 3 * S]])
    attrs = element_attributes(region)
    assert attrs == {"class": "tumour", "probability_mean": "0.9", "probability_std": "0",
                     "probability_var": "0", "tile_count": "9", "cluster": "0",
                     "outline": "tiles", "review_status": "pending"}
    [ring] = stroma.regions
    assert len(ring.holes) == 1 and ring.area() == 8 * S * S
    assert element_attributes(ring)["tile_count"] == "8"

    assert list(table.columns) == list(TABLE_COLUMNS)
    assert len(table) == 2 and table["kept"].all() and (table["reason"] == "").all()
    first = table.iloc[0]
    assert (first["class"], first["cluster"], first["tile_count"]) == ("tumour", 0, 9)
    assert (first["centroid_x"], first["centroid_y"]) == (1.5 * S, 1.5 * S)
    assert first["area_px"] == 9 * S * S
    assert first["mean"] == pytest.approx(0.9) and first["std"] == pytest.approx(0)

    # Aperio XML and back: layers, texts and every attribute
    path = tmp_path / "predicted.xml"
    write_annotations(annotations, path)
    back = read_annotations(path)
    assert [layer.name for layer in back] == ["tumour", "stroma"]
    assert [layer.color for layer in back] == [CLASS_PALETTE[1], CLASS_PALETTE[2]]
    assert back.mpp == pytest.approx(0.5)
    for before, after in zip(annotations, back, strict=True):
        positives = [r for r in after.regions if not r.negative]
        assert len(positives) == len(before.regions)
        for a, b in zip(before.regions, positives, strict=True):
            assert element_attributes(b) == element_attributes(a)
            assert b.text == a.text
            np.testing.assert_array_equal(b.vertices, a.vertices)
    # the ring's hole is written as ImageScope writes holes: a negative region
    assert sum(r.negative for r in back[1].regions) == 1


def test_find_regions_filters_say_why():
    noisy = np.full((10, 12), 0.95, np.float32)
    noisy[5:7, 0:4] = [[0.6, 1.0, 0.6, 1.0], [1.0, 0.6, 1.0, 0.6]]
    pred = predictions_of({
        "tumour": (["###.....##..",
                    "###.....##..",
                    "###.........",
                    "............",
                    "............",
                    "####........",
                    "####........"], noisy),
        "stroma": (["............",
                    "............",
                    "....###.....",
                    "....###.....",
                    "....###....."], 0.55)})
    annotations, table = find_regions(pred, min_tiles=5, min_mean=0.6, max_std=0.15,
                                      max_var=0.01)
    rows = {(r["class"], r["tile_count"], r["mean"] > 0.9): r for _, r in table.iterrows()}
    good = rows[("tumour", 9, True)]
    assert good["kept"] and good["reason"] == ""
    small = rows[("tumour", 4, True)]
    assert not small["kept"] and small["reason"] == "tile_count 4 < min_tiles 5"
    spread = rows[("tumour", 8, False)]
    assert spread["mean"] == pytest.approx(0.8)
    assert spread["std"] == pytest.approx(0.2) and spread["var"] == pytest.approx(0.04)
    assert not spread["kept"]
    assert spread["reason"] == "std 0.2 > max_std 0.15; var 0.04 > max_var 0.01"
    faint = rows[("stroma", 9, False)]
    assert not faint["kept"] and faint["reason"] == "mean 0.55 < min_mean 0.6"
    assert table["area_px"].gt(0).all()  # dropped clusters are measured too
    tumour, stroma = annotations
    assert len(tumour.regions) == 1 and stroma.regions == []
    assert element_attributes(tumour.regions[0])["cluster"] == str(good["cluster"])


def test_positive_tiles_need_the_threshold_and_the_top_class():
    pred = predictions_of({"tumour": (["###", "###", "###"], 0.9)}, shape=(4, 4))
    proba = pred.proba.reshape(4, 4, 3)
    proba[0, 0] = [0.0, 0.4, 0.6]  # tumour below the threshold and not the top class
    proba[1, 1] = [0.45, 0.55, 0.0]  # still the top class, but under 0.6
    proba[2, 2] = [0.5, 0.5, 0.0]  # tied with 'other': the first class wins
    pred.proba = proba.reshape(-1, 3)
    _, table = find_regions(pred, classes="tumour", threshold=0.6, min_samples=1)
    assert table["tile_count"].sum() == 6
    _, table = find_regions(pred, classes=["tumour"], threshold=0.3, min_samples=1)
    assert table["tile_count"].sum() == 7  # 0.4 is not the top class; the tie is other's
    # inclusive, in the probabilities' precision: the float32 0.9 tiles pass 0.9
    _, table = find_regions(pred, classes="tumour", threshold=0.9, min_samples=1)
    assert table["tile_count"].sum() == 6


def test_find_regions_outlines_and_classes():
    pred = predictions_of({"tumour": (C_SHAPE, 0.9)}, shape=(6, 6))
    for outline, area in (("convex", 25), ("tiles", 13), ("concave", 14)):
        annotations, table = find_regions(pred, outline=outline)
        assert table["area_px"].tolist() == [area * S * S]
        assert element_attributes(annotations[0].regions[0])["outline"] == outline
        assert annotations[1].regions == []  # stroma: an empty layer
    annotations, _ = find_regions(pred, classes=None, exclude=())
    assert [layer.name for layer in annotations] == CLASSES
    assert annotations[0].color == CLASS_PALETTE[0]
    with pytest.raises(SlideSegError, match="'tumor'.*'tumour'"):
        find_regions(pred, classes=["tumor"])
    with pytest.raises(SlideSegError, match="outline"):
        find_regions(pred, outline="hull")


def test_find_regions_level0_mpp_and_empty_results():
    pred = predictions_of({"tumour": (["##", "##"], 0.9)}, mpp=2.0, downsample=4.0)
    annotations, table = find_regions(pred)
    assert annotations.mpp == pytest.approx(0.5)
    assert annotations[0].regions[0].area() == 4 * (4 * S) ** 2
    nothing, table = find_regions(pred, threshold=0.95)
    assert [len(layer.regions) for layer in nothing] == [0, 0]
    assert table.empty and list(table.columns) == list(TABLE_COLUMNS)
    unknown = predictions_of({}, mpp=None)
    assert find_regions(unknown)[0].mpp is None
