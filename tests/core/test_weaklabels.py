"""Tile truth, per-class tile metrics, weak-label datasets and pseudo-masks: known answers."""

from __future__ import annotations

import itertools
import json
import threading

import cv2
import numpy as np
import pandas as pd
import pytest

from napari_slideseg.core.annotations import AnnotationLayer, AnnotationSet, Region
from napari_slideseg.core.errors import SlideSegError
from napari_slideseg.core.review import set_element_attributes
from napari_slideseg.core.slide import open_slide
from napari_slideseg.core.tiles import TileGrid, TilePredictions, read_tile, tile_grid
from napari_slideseg.core.weaklabels import (
    METRIC_COLUMNS,
    export_weak_labels,
    prediction_metrics,
    pseudo_mask,
    review_truth,
    save_pseudo_mask,
    tile_metrics,
    tile_truth,
)

T = 256  # tile side in level-0 pixels


def _box(c0, r0, c1, r1, status=None):
    """A rectangle over level-0 [c0, c1) x [r0, r1), in tiles (fractions allowed)."""
    region = Region([[c0 * T, r0 * T], [c1 * T, r0 * T], [c1 * T, r1 * T], [c0 * T, r1 * T]],
                    type="rectangle")
    if status:
        set_element_attributes(region, {"review_status": status})
    return region


def _grid(rows=7, cols=9):
    rr, cc = np.mgrid[0:rows, 0:cols]
    return TileGrid(cc.ravel(), rr.ravel(), T, float(T), 0, 1.0, (rows, cols))


def _scene():
    """tumour: tiles (rows 1-2, cols 1-3) accepted, tile (5, 0) pending; stroma: tile
    (4, 5) and half of (4, 6) rejected, a quarter of (0, 8) added by the reviewer, tile
    (6, 8) the user's own (no review status)."""
    return AnnotationSet([
        AnnotationLayer(name="tumour", color=(255, 0, 0),
                        regions=[_box(1, 1, 4, 3, "accepted"), _box(0, 5, 1, 6, "pending")]),
        AnnotationLayer(name="stroma", color=(0, 255, 0),
                        regions=[_box(5, 4, 6.5, 5, "rejected"), _box(8, 0, 8.5, 0.5, "added"),
                                 _box(8, 6, 9, 7)]),
    ])


def _expected(source):
    """(rows, cols) coverage by tumour and stroma of the scene's tiles."""
    tumour, stroma = np.zeros((7, 9)), np.zeros((7, 9))
    tumour[1:3, 1:4] = 1
    stroma[0, 8], stroma[6, 8] = 0.25, 1
    if source == "annotations":
        tumour[5, 0] = 1
        stroma[4, 5], stroma[4, 6] = 1, 0.5
    return tumour, stroma


# -- tile truth and metrics -------------------------------------------------------------

def test_tile_truth_of_a_rectangle_is_exactly_its_tiles():
    grid = _grid()
    ann = AnnotationSet([AnnotationLayer(name="tumour", regions=[_box(1, 1, 4, 3)])])
    truth = grid.to_image(tile_truth(grid, ann, ["stroma", "tumour"]), fill=-9)
    expected = np.full((7, 9), -1)
    expected[1:3, 1:4] = 1
    np.testing.assert_array_equal(truth, expected)


def test_tile_truth_min_fraction_rejected_and_review_source():
    grid = _grid()
    ann = _scene()
    truth = grid.to_image(tile_truth(grid, ann, ["tumour", "stroma"]), fill=-9)
    assert truth[4, 5] == -1 and truth[4, 6] == -1  # rejected: not truth by default
    assert truth[5, 0] == 0 and truth[1, 1] == 0 and truth[0, 8] == -1  # 0.25 < 0.5
    kept = grid.to_image(tile_truth(grid, ann, ["tumour", "stroma"],
                                    exclude_rejected=False), fill=-9)
    assert kept[4, 5] == 1 and kept[4, 6] == 1  # half a tile: exactly min_fraction 0.5
    strict = grid.to_image(tile_truth(grid, ann, ["tumour", "stroma"], min_fraction=0.6,
                                      exclude_rejected=False), fill=-9)
    assert strict[4, 5] == 1 and strict[4, 6] == -1
    low = grid.to_image(tile_truth(grid, ann, ["tumour", "stroma"], min_fraction=0.2,
                                   source="review"), fill=-9)
    assert low[0, 8] == 1 and low[5, 0] == -1  # added counts, pending does not
    assert low[6, 8] == 1  # no status: the user's own region
    assert [len(layer.regions) for layer in review_truth(ann)] == [1, 2]
    with pytest.raises(SlideSegError, match="min_fraction"):
        tile_truth(grid, ann, ["tumour"], min_fraction=0)
    with pytest.raises(SlideSegError, match="source"):
        tile_truth(grid, ann, ["tumour"], source="predictions")


def test_tile_metrics_exact_values():
    predicted = np.array([0, 0, 1, -1, 1, 0, -1, -1])
    truth = np.array([0, 1, 1, 1, -1, 0, -1, -1])
    df = tile_metrics(predicted, truth, ["a", "b", "c"])
    assert list(df.columns) == METRIC_COLUMNS
    assert list(df["class"]) == ["a", "b", "c"]
    a, b, c = (df.iloc[i] for i in range(3))
    assert (a.tp, a.fp, a.fn, a.n_true, a.n_pred) == (2, 1, 0, 2, 3)
    assert a.dice == pytest.approx(0.8) and a.iou == pytest.approx(2 / 3)
    assert (b.tp, b.fp, b.fn, b.n_true, b.n_pred) == (1, 1, 2, 3, 2)
    assert b.dice == pytest.approx(0.4) and b.iou == pytest.approx(0.25)
    assert (c.tp, c.fp, c.fn) == (0, 0, 0) and np.isnan(c.dice) and np.isnan(c.iou)
    perfect = tile_metrics(truth, truth, ["a", "b"])
    assert list(perfect["dice"]) == [1.0, 1.0] and list(perfect["iou"]) == [1.0, 1.0]
    with pytest.raises(SlideSegError, match="same tile grid"):
        tile_metrics(predicted[:3], truth, ["a", "b"])
    with pytest.raises(SlideSegError, match="index below 1"):
        tile_metrics(predicted, truth, ["a"])


def test_prediction_metrics_counts_uncovered_tiles_as_other():
    grid = _grid(2, 3)  # 6 tiles; tumour annotated on (0, 0) and (0, 1)
    ann = AnnotationSet([AnnotationLayer(name="tumour", regions=[_box(0, 0, 2, 1)])])
    proba = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.9, 0.1], [0.9, 0.1],
                      [0.55, 0.45]])
    df = prediction_metrics(TilePredictions(grid, ["other", "tumour"], proba), ann,
                            threshold=0.6).set_index("class")
    # predicted: tumour, other, tumour, other, other, none; truth: T, T, O, O, O, O
    assert (df.loc["tumour", "tp"], df.loc["tumour", "fp"], df.loc["tumour", "fn"]) == (1, 1, 1)
    assert (df.loc["other", "tp"], df.loc["other", "fp"], df.loc["other", "fn"]) == (2, 1, 2)
    assert df.loc["other", "dice"] == pytest.approx(4 / 7)


# -- weak-label export --------------------------------------------------------------------

def _read(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_export_weak_labels_files_labels_and_pixels(svs, tmp_path):
    with open_slide(svs.path) as slide:
        grid = tile_grid(slide, T, tissue=False)
        assert grid.shape == (7, 9) and len(grid) == 63
        df = export_weak_labels(slide, _scene(), tmp_path / "a", grid=grid, workers=2)
        review = export_weak_labels(slide, _scene(), tmp_path / "r", grid=grid,
                                    source="review", min_fraction=0.3)
        assert list(df.columns) == ["file", "x", "y", "level", "size", "downsample", "mpp",
                                    "tissue", "stroma", "tumour", "frac_stroma",
                                    "frac_tumour"]
        assert pd.read_csv(tmp_path / "a" / "labels.csv").equals(df)
        for name, table, at in (("annotations", df, 0.05), ("review", review, 0.3)):
            tumour, stroma = _expected(name)
            got_t = grid.to_image(table["frac_tumour"].to_numpy())
            got_s = grid.to_image(table["frac_stroma"].to_numpy())
            np.testing.assert_array_equal(got_t, tumour)
            np.testing.assert_array_equal(got_s, stroma)
            np.testing.assert_array_equal(grid.to_image(table["tumour"].to_numpy()),
                                          tumour >= at)
            np.testing.assert_array_equal(grid.to_image(table["stroma"].to_numpy()),
                                          stroma >= at)
        assert review["stroma"].sum() == 1  # the added quarter tile is below 0.3
        row = df.iloc[10]  # tile (row 1, col 1)
        assert (row.x, row.y, row.level, row["size"], row.downsample) == (T, T, 0, T, 1.0)
        assert row.file == f"tiles/synthetic_slide_x{T}_y{T}.png"
        assert row.mpp == pytest.approx(0.2527) and row.tissue == 1.0
        for i, file in enumerate(df["file"]):
            np.testing.assert_array_equal(_read(tmp_path / "a" / file),
                                          read_tile(slide, grid, i))
    doc = json.loads((tmp_path / "a" / "classes.json").read_text())
    assert doc["classes"] == ["stroma", "tumour"] and doc["complete"] is True
    assert doc["grid"]["size0"] == T and doc["grid"]["shape"] == [7, 9]
    assert doc["params"]["source"] == "annotations" and doc["written"] == 63


def test_rerun_rewrites_only_the_missing_tile(svs, tmp_path):
    ann = _scene()
    with open_slide(svs.path) as slide:
        grid = tile_grid(slide, T, tissue=False).subset(slice(0, 20))
    first = export_weak_labels(svs.path, ann, tmp_path, grid=grid)
    csv = (tmp_path / "labels.csv").read_text()
    tiles = sorted((tmp_path / "tiles").iterdir())
    assert len(tiles) == 20
    stamps = {p.name: p.stat().st_mtime_ns for p in tiles}
    victim = tiles[7]
    victim.unlink()
    stale = tmp_path / "tiles" / f".{tiles[3].name}.99.1.part"
    stale.write_bytes(b"half")
    (tmp_path / ".labels.csv.99.1.part").write_bytes(b"half")
    seen = []
    again = export_weak_labels(svs.path, ann, tmp_path, grid=grid,
                               progress=lambda d, t: seen.append((d, t)))
    assert again.equals(first) and (tmp_path / "labels.csv").read_text() == csv
    assert seen[-1] == (20, 20)
    changed = {p.name for p in (tmp_path / "tiles").iterdir()
               if p.stat().st_mtime_ns != stamps.get(p.name)}
    assert changed == {victim.name}
    assert not list(tmp_path.rglob("*.part"))
    with pytest.raises(SlideSegError, match="another export"):
        export_weak_labels(svs.path, ann, tmp_path, size=128, level=0)


def test_cancel_leaves_only_whole_files_and_a_rerun_completes(svs, tmp_path):
    ann = _scene()
    with open_slide(svs.path) as slide:
        grid = tile_grid(slide, T, tissue=False)
        full = export_weak_labels(slide, ann, tmp_path / "full", grid=grid)
        calls = itertools.count()
        # a callable: every chunk asks once before it starts; 8 tiles per chunk of 2048 px
        part = export_weak_labels(slide, ann, tmp_path / "cut", grid=grid, workers=3,
                                  cancel=lambda: next(calls) >= 2)
        assert len(part) == 16
        files = sorted(p.name for p in (tmp_path / "cut" / "tiles").iterdir())
        assert files == sorted(f.split("/")[1] for f in part["file"])
        assert not list((tmp_path / "cut").rglob(".*"))  # no temporary files
        for i in np.flatnonzero(full["file"].isin(part["file"]).to_numpy()):
            np.testing.assert_array_equal(_read(tmp_path / "cut" / full["file"][i]),
                                          read_tile(slide, grid, i))
        doc = json.loads((tmp_path / "cut" / "classes.json").read_text())
        assert doc["complete"] is False and doc["written"] == 16
        stop = threading.Event()
        stop.set()  # an Event, as export_patches takes: nothing more is written
        assert len(export_weak_labels(slide, ann, tmp_path / "cut", grid=grid,
                                      cancel=stop)) == 16
        export_weak_labels(slide, ann, tmp_path / "cut", grid=grid)
    assert ((tmp_path / "cut" / "labels.csv").read_text()
            == (tmp_path / "full" / "labels.csv").read_text())


def test_default_grid_jpeg_and_bad_parameters(svs, tmp_path):
    df = export_weak_labels(svs.path, _scene(), tmp_path, size=128, level=1,
                            image_format="jpg", quality=95, min_tissue=0.0)
    with open_slide(svs.path) as slide:
        grid = tile_grid(slide, 128, level=1, min_tissue=0.0)
        assert len(df) == len(grid) > 0
        assert (df["level"] == 1).all() and np.allclose(df["downsample"], grid.downsample)
        image = _read(tmp_path / df["file"][0])
        diff = np.abs(image.astype(int) - read_tile(slide, grid, 0).astype(int))
        assert diff.mean() < 3
    with pytest.raises(SlideSegError, match="source"):
        export_weak_labels(svs.path, _scene(), tmp_path / "x", source="model")
    with pytest.raises(SlideSegError, match="image format"):
        export_weak_labels(svs.path, _scene(), tmp_path / "x", image_format="gif")
    with pytest.raises(SlideSegError, match="clash"):
        export_weak_labels(svs.path, _scene(), tmp_path / "x", classes=["file"])


# -- pseudo-masks ---------------------------------------------------------------------------

def _predictions():
    grid = TileGrid([0, 1, 2, 0], [0, 0, 1, 2], 512, 1024.0, 1, 2.0, (3, 4), mpp=0.5)
    proba = np.array([[0.1, 0.8, 0.1],  # tumour -> 2
                      [0.7, 0.2, 0.1],  # other -> background 0
                      [0.3, 0.3, 0.4],  # uncertain -> 255
                      [0.05, 0.05, 0.9]])  # stroma -> 3
    return TilePredictions(grid, ["other", "tumour", "stroma"], proba)


EXPECTED = np.array([[2, 0, 0, 0],
                     [0, 0, 255, 0],
                     [3, 0, 0, 0]], np.uint8)


def test_pseudo_mask_values():
    pred = _predictions()
    mask = pseudo_mask(pred)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, EXPECTED)
    np.testing.assert_array_equal(pseudo_mask(pred, upsample=3),
                                  np.kron(EXPECTED, np.ones((3, 3), np.uint8)))
    low = pseudo_mask(pred, threshold=0.4, ignore=200, background=9)
    np.testing.assert_array_equal(low, np.where(EXPECTED == 0, 9, np.where(
        EXPECTED == 255, 3, EXPECTED)))
    with pytest.raises(SlideSegError, match="collide"):
        pseudo_mask(pred, ignore=2)
    with pytest.raises(SlideSegError, match="upsample"):
        pseudo_mask(pred, upsample=0)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_saved_pseudo_mask_reads_back(tmp_path, suffix):
    import tifffile

    pred = _predictions()
    up = 1 if suffix == ".png" else 100  # 300 x 400: the TIFF gets a reduced level
    path = save_pseudo_mask(pred, tmp_path / f"pseudo{suffix}", upsample=up)
    expected = np.kron(EXPECTED, np.ones((up, up), np.uint8))
    if suffix == ".png":
        np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), expected)
    else:
        with tifffile.TiffFile(path) as tif:
            levels = tif.series[0].levels
            np.testing.assert_array_equal(levels[0].asarray(), expected)
            np.testing.assert_array_equal(levels[1].asarray(), expected[::2, ::2])
    doc = json.loads((tmp_path / "pseudo.json").read_text())
    assert doc["values"] == {"other": 0, "tumour": 2, "stroma": 3}
    assert doc["classes"] == ["other", "tumour", "stroma"]
    assert (doc["background"], doc["ignore"], doc["threshold"]) == (0, 255, 0.5)
    assert doc["downsample"] == 1024.0 / up and doc["origin"] == [0.0, 0.0]
    assert doc["shape"] == [3 * up, 4 * up] and doc["mpp"] == pytest.approx(256.0 / up)
    proba = np.load(tmp_path / doc["probabilities"])
    assert proba.dtype == np.float16 and proba.shape == (3, 4, 3)
    np.testing.assert_allclose(proba[0, 0], [0.1, 0.8, 0.1], atol=1e-3)
    np.testing.assert_allclose(proba[2, 0], [0.05, 0.05, 0.9], atol=1e-3)
    assert np.isnan(proba[1, 1]).all() and np.isnan(proba).sum() == 8 * 3
    assert not list(tmp_path.glob(".*"))
    save_pseudo_mask(pred, tmp_path / "plain.png", probabilities=False)
    assert json.loads((tmp_path / "plain.json").read_text())["probabilities"] is None
    assert not (tmp_path / "plain.proba.npy").exists()
