"""Auto-annotation end to end on a slide with a known region of distinct colour and texture.

The slide (1536 x 1152 px, 0.5 µm/px, 3 levels, written with tifffile) is pink
fibrous 'stroma' everywhere with a 'tumour' region of purple, densely dotted texture
(an L shape plus a separate block). Training annotations cover part of the tumour only;
the classifier must find the rest.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_slideseg import open_slide
from napari_slideseg.core.annotations import (
    AnnotationLayer,
    AnnotationSet,
    Region,
    read_annotations,
    write_annotations,
)
from napari_slideseg.core.autoannotate import (
    auto_annotate,
    iteration_dirs,
    load_predictions,
    next_training,
    read_metrics,
    record_review,
    run_iteration,
    train_tile_classifier,
    truth_annotations,
)
from napari_slideseg.core.errors import Cancelled, SlideSegError
from napari_slideseg.core.review import element_attributes, review_of, set_element_attributes
from napari_slideseg.core.tiles import read_tile, tile_class_fractions, tile_grid

# the tumour_slide fixture's geometry (tests/conftest.py): a 24 x 18 grid of 64-px tiles
W, H, T = 1536, 1152, 64
TUMOUR_TILES = [(3, 3, 12, 7), (3, 7, 7, 14), (16, 9, 21, 15)]
TRAIN_TILES = (3, 3, 8, 7)  # the part of the L the user annotates


def _rect_layer(name: str, boxes: list[tuple[int, int, int, int]]) -> AnnotationLayer:
    regions = [Region([[c0 * T, r0 * T], [c1 * T, r0 * T], [c1 * T, r1 * T], [c0 * T, r1 * T]])
               for c0, r0, c1, r1 in boxes]
    return AnnotationLayer(name=name, regions=regions)


@pytest.fixture(autouse=True)
def _same_geometry(tumour_geometry) -> None:  # type: ignore[no-untyped-def]
    assert tumour_geometry == ((W, H), T, TUMOUR_TILES)


def training() -> AnnotationSet:
    return AnnotationSet([_rect_layer("tumour", [TRAIN_TILES])], mpp=0.5)


def truth_tiles() -> np.ndarray:
    """(rows, cols) bool: the tiles of the tumour."""
    out = np.zeros((H // T, W // T), bool)
    for c0, r0, c1, r1 in TUMOUR_TILES:
        out[r0:r1, c0:c1] = True
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


PARAMS = dict(size=T, min_tissue=0.0, eps=1.5, min_samples=3, outline="tiles", workers=2)


def test_grid_covers_the_slide_and_tiles_read_exactly(tumour_slide: Path) -> None:
    with open_slide(tumour_slide) as slide:
        grid = tile_grid(slide, T, tissue=False)
        assert grid.shape == (H // T, W // T) and len(grid) == (H // T) * (W // T)
        i = int(np.flatnonzero((grid.col == 5) & (grid.row == 2))[0])
        tile = read_tile(slide, grid, i)
        assert np.array_equal(tile, slide.read_region((5 * T, 2 * T), 0, (T, T)))
        # at level 1 a tile of 64 px covers 128 level-0 px
        g1 = tile_grid(slide, T, level=1, tissue=False)
        assert g1.size0 == 2 * T and g1.shape == (H // (2 * T), W // (2 * T))
        # a target pixel size of 1.5 µm/px reads level 1 (1 µm/px) and resizes
        g3 = tile_grid(slide, T, mpp=1.5, tissue=False)
        assert g3.level == 1 and g3.read_size == 96 and g3.size0 == pytest.approx(192)
        assert read_tile(slide, g3, 0).shape == (T, T, 3)
        with pytest.raises(SlideSegError, match="finer"):
            tile_grid(slide, T, mpp=0.1)


def test_class_fractions_of_a_rectangle(tumour_slide: Path) -> None:
    with open_slide(tumour_slide) as slide:
        grid = tile_grid(slide, T, tissue=False)
    # half a tile: columns 3..7 fully, column 8 half
    layer = AnnotationLayer(name="a", regions=[Region(
        [[3 * T, 3 * T], [8.5 * T, 3 * T], [8.5 * T, 7 * T], [3 * T, 7 * T]])])
    frac = tile_class_fractions(grid, AnnotationSet([layer]), ["a", "b"])
    image = grid.to_image(frac[:, 0], fill=0.0)
    expected = np.zeros(grid.shape)
    expected[3:7, 3:8] = 1.0
    expected[3:7, 8] = 0.5
    assert np.array_equal(image, expected)
    assert not frac[:, 1].any()


def test_trained_classifier_finds_the_rest_of_the_region(tumour_slide: Path) -> None:
    result = auto_annotate(tumour_slide, None, training(), **PARAMS)
    counts = result.training.counts()
    # 'other': 5 x the annotated tiles drawn from the rest, less those that look like
    # tumour (unannotated tumour tiles among them)
    assert counts["tumour"] == 20
    assert counts["other"] + result.training.cleaned == 100 and result.training.cleaned > 0
    labels = result.predictions.labels(0.5)
    found = result.grid.to_image(
        labels == result.predictions.classes.index("tumour"), fill=False).astype(bool)
    truth = truth_tiles()
    assert _dice(found, truth) >= 0.8
    # the regions: one per cluster (the L and the block), pending review
    convex = auto_annotate(tumour_slide, result.model, **{**PARAMS, "outline": "convex"})
    layer = [la for la in convex.annotations if la.name == "tumour"][0]
    assert len(layer.regions) == 2
    for region in layer.regions:
        attrs = element_attributes(region)
        assert attrs["review_status"] == "pending"
        assert 0.5 <= float(attrs["probability_mean"]) <= 1.0
    # the predicted regions rasterised back at tile resolution match the truth
    region_tiles = tile_class_fractions(result.grid, result.annotations, ["tumour"])[:, 0]
    assert _dice(result.grid.to_image(region_tiles >= 0.5, fill=False).astype(bool),
                 truth) >= 0.8
    assert set(result.clusters.columns) >= {"class", "tile_count", "mean", "std", "var",
                                            "kept"}


def test_heatmap_is_the_probability_per_tile(tumour_slide: Path) -> None:
    with open_slide(tumour_slide) as slide:
        model, tset = train_tile_classifier(slide, training(), size=T, min_tissue=0.0)
        grid = tile_grid(slide, T, tissue=False)
        from napari_slideseg.core.autoannotate import predict_tiles

        pred = predict_tiles(slide, grid, model)
        heat = pred.heatmap("tumour")
        assert heat.shape == grid.shape
        i = 7
        assert heat[grid.row[i], grid.col[i]] == pytest.approx(pred.probability("tumour")[i])
        assert np.allclose(pred.proba.sum(axis=1), 1, atol=1e-5)


def test_saved_model_predicts_the_same(tumour_slide: Path, tmp_path: Path) -> None:
    from napari_slideseg.core.tilemodels import load_model

    first = auto_annotate(tumour_slide, None, training(), **PARAMS)
    first.model.save(tmp_path / "m.joblib")
    again = auto_annotate(tumour_slide, load_model(tmp_path / "m.joblib"), **PARAMS)
    assert np.array_equal(first.predictions.proba, again.predictions.proba)
    assert again.training is None


def test_cluster_filters_and_written_xml(tumour_slide: Path, tmp_path: Path) -> None:
    # the block (5 x 6 = 30 tiles) is smaller than the L (36 + 28 = 64)
    result = auto_annotate(tumour_slide, None, training(), **{**PARAMS, "min_tiles": 40})
    tumour = result.clusters[result.clusters["class"] == "tumour"]
    assert tumour["kept"].sum() == 1 and (~tumour["kept"]).sum() >= 1
    assert tumour.loc[~tumour["kept"], "reason"].str.len().min() > 0
    path = tmp_path / "predicted.xml"
    write_annotations(result.annotations, path)
    back = read_annotations(path)
    region = [la for la in back if la.name == "tumour"][0].regions[0]
    assert element_attributes(region)["review_status"] == "pending"
    assert int(element_attributes(region)["tile_count"]) >= 40


def test_no_annotations_no_model_is_an_error(tumour_slide: Path) -> None:
    with pytest.raises(SlideSegError, match="model or annotations"):
        auto_annotate(tumour_slide, None, None, **PARAMS)
    one_class = AnnotationSet([_rect_layer("tumour", [(0, 0, 24, 18)])])
    with pytest.raises(SlideSegError, match="two classes"):
        auto_annotate(tumour_slide, None, one_class, **PARAMS)


def test_cancel_raises_and_keeps_nothing(tumour_slide: Path, tmp_path: Path) -> None:
    import threading

    cancel = threading.Event()
    seen = []

    def progress(step: str, done: int, total: int) -> None:
        seen.append(step)
        if step == "tiles" and done >= 16:
            cancel.set()

    with pytest.raises(Cancelled):
        run_iteration(tmp_path / "work", tumour_slide, training(), progress=progress,
                      cancel=cancel, **PARAMS)
    assert iteration_dirs(tmp_path / "work") == []
    assert not list((tmp_path / "work").glob("*.part"))


def _review(predicted: AnnotationSet) -> AnnotationSet:
    """An expert's review that accepts every predicted region."""
    for _layer, region in predicted.regions():
        if not region.negative:
            set_element_attributes(region, {"review_status": "accepted",
                                            "reviewer": "pathologist"})
    return predicted


def test_iteration_loop_twice_records_two_metric_rows(tumour_slide: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    folder1, first = run_iteration(work, tumour_slide, training(), **PARAMS)
    assert folder1.name == "iteration_001"
    for name in ("training.xml", "predicted.xml", "model.joblib", "clusters.csv",
                 "predictions.npz", "params.json"):
        assert (folder1 / name).exists(), name
    saved = load_predictions(folder1 / "predictions.npz")
    assert np.array_equal(saved.proba, first.predictions.proba)
    # review: accept everything predicted
    reviewed = read_annotations(folder1 / "predicted.xml")
    _review(reviewed)
    rows1 = record_review(work, reviewed)
    assert list(rows1["iteration"]) == [1] and list(rows1["class"]) == ["tumour"]
    # accepting everything: the prediction equals the truth
    assert rows1["dice"].iloc[0] == pytest.approx(1.0)
    assert rows1["n_accepted"].iloc[0] == sum(not r.negative for _, r in reviewed.regions()) == 2
    folder2, second = run_iteration(work, tumour_slide, next_training(work), **PARAMS)
    assert folder2.name == "iteration_002"
    # the second round trained on the accepted regions too: more tumour tiles
    assert second.training.counts()["tumour"] > first.training.counts()["tumour"]
    reviewed2 = read_annotations(folder2 / "predicted.xml")
    layer = [la for la in reviewed2 if la.name == "tumour"][0]
    set_element_attributes(layer.regions[0], {"review_status": "rejected"})
    for region in layer.regions[1:]:
        set_element_attributes(region, {"review_status": "accepted"})
    rows2 = record_review(work, reviewed2)
    table = read_metrics(work)
    assert len(table) == 2 and list(table["iteration"]) == [1, 2]
    assert rows2["dice"].iloc[0] < 1.0  # a rejected region was a false positive
    assert (folder2 / "reviewed.xml").exists()
    # recording the same round again replaces its row
    record_review(work, reviewed2, iteration=2)
    assert len(read_metrics(work)) == 2


def test_truth_leaves_out_rejected_and_pending() -> None:
    regions = [Region([[0, 0], [1, 0], [1, 1]]) for _ in range(5)]
    for region, status in zip(regions, ["accepted", "rejected", "pending", "edited", None],
                              strict=True):
        if status:
            set_element_attributes(region, {"review_status": status})
    truth = truth_annotations(AnnotationSet([AnnotationLayer(name="t", regions=regions)]))
    kept = [review_of(r).get("status", "") for r in truth[0].regions]
    assert kept == ["accepted", "edited", ""]


def test_cli_auto_annotate_and_loop(tumour_slide: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from napari_slideseg.cli import main

    train = tmp_path / "train.xml"
    write_annotations(training(), train)
    out = tmp_path / "predicted.xml"
    args = [str(tumour_slide), "--size", str(T), "--min-tissue", "0", "--outline", "tiles"]
    assert main(["auto-annotate", *args, "--annotations", str(train), "--out", str(out),
                 "--save-model", str(tmp_path / "m.joblib"),
                 "--clusters", str(tmp_path / "c.csv")]) == 0
    printed = capsys.readouterr().out
    assert "clusters kept" in printed and "trained on" in printed
    api = auto_annotate(tumour_slide, None, training(), **PARAMS)
    back = read_annotations(out)

    def outlines(annotations: AnnotationSet) -> int:  # Aperio writes holes as regions
        return sum(not r.negative for _, r in annotations.regions())

    assert outlines(back) == outlines(api.annotations) == 2
    clusters = pd.read_csv(tmp_path / "c.csv")
    assert len(clusters) == len(api.clusters)
    # the saved model, used again
    assert main(["auto-annotate", *args, "--model", str(tmp_path / "m.joblib"), "--out",
                 str(tmp_path / "again.xml")]) == 0
    assert outlines(read_annotations(tmp_path / "again.xml")) == 2
    # the loop: a first round, a review (headless), a second round from the review
    work = tmp_path / "work"
    assert main(["auto-annotate", *args, "--annotations", str(train), "--workdir",
                 str(work)]) == 0
    predicted = work / "iteration_001" / "predicted.xml"
    ids = [r.id for _, r in read_annotations(predicted).regions()]
    assert main(["review", str(predicted), "--set", *[f"{i}=accepted" for i in ids],
                 "--reviewer", "dr x", "--slide-opinion", "two foci"]) == 0
    assert main(["auto-annotate", *args, "--workdir", str(work), "--reviewed",
                 str(predicted)]) == 0
    assert "Dice 1.000" in capsys.readouterr().out
    assert [p.name for p in iteration_dirs(work)] == ["iteration_001", "iteration_002"]
    assert len(read_metrics(work)) == 1
    assert main(["auto-annotate", str(tumour_slide), "--out", str(out)]) == 2
    assert math.isfinite(float(read_metrics(work)["iou"].iloc[0]))
