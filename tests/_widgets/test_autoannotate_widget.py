"""The Auto-annotate dock in a real napari viewer: train, predict, heatmap, review loop."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_slideseg.core.annotations import (
    AnnotationLayer,
    AnnotationSet,
    Region,
    read_annotations,
    write_annotations,
)
from napari_slideseg.core.review import element_attributes

pytestmark = pytest.mark.gui

T = 64  # the tumour_slide fixture's tile size (tests/conftest.py)


@pytest.fixture
def shown(make_napari_viewer, tumour_slide, tumour_geometry, tmp_path):
    """The tumour slide, a 'tumour' training layer over part of it, and the dock."""
    from napari_slideseg._widgets.autoannotate import AutoAnnotateWidget

    (w, h), t, _ = tumour_geometry
    assert t == T
    train = AnnotationSet([AnnotationLayer(name="tumour", color=(255, 0, 0), regions=[
        Region([[3 * T, 3 * T], [8 * T, 3 * T], [8 * T, 7 * T], [3 * T, 7 * T]])])], mpp=0.5)
    path = tmp_path / "train.xml"
    write_annotations(train, path)
    viewer = make_napari_viewer()
    (slide_layer,) = viewer.open(str(tumour_slide), plugin="napari-slideseg")
    viewer.open(str(path), plugin="napari-slideseg")
    widget = AutoAnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.size.value = T
    widget.min_tissue.value = 0.0
    widget.outline.value = "convex"
    widget.workdir.value = tmp_path / "work"
    return viewer, slide_layer, widget


def _wait(qtbot, widget, timeout=120000):
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


def test_run_shows_predicted_layers_and_an_aligned_heatmap(shown, qtbot, tmp_path):
    viewer, slide_layer, widget = shown
    assert [la.name for la in widget.layers.value] == ["tumour"]
    widget.start_run()
    _wait(qtbot, widget)
    assert widget.last_error == ""
    assert (tmp_path / "work" / "iteration_001" / "predicted.xml").exists()
    predicted = widget.predicted_layers()
    assert [la.name for la in predicted] == ["tumour [1]"]  # beside the training layer
    layer = predicted[0]
    assert len(layer.data) == 2  # the L and the block
    assert set(layer.features["review_status"]) == {"pending"}
    # the heatmap: tile (r, c) covers level-0 [c*T, (c+1)*T): its centre in world
    # coordinates is the slide's world position of that level-0 point
    heat = widget.heatmap_layer()
    assert heat is not None and heat.colormap.name == "inferno"
    pred = widget.result.predictions
    r, c = 4, 5
    centre0 = np.array([(r + 0.5) * T, (c + 0.5) * T])  # level-0 (row, col) of the centre
    world = slide_layer.data_to_world(centre0 - 0.5)  # pixel centres sit at their index
    index = np.round(heat.world_to_data(world)).astype(int)
    assert tuple(index[-2:]) == (r, c)
    assert heat.data[r, c] == pytest.approx(pred.heatmap("tumour")[r, c])
    # colormap and opacity follow the dock
    widget.colormap.value = "viridis"
    widget.opacity.value = 0.8
    assert heat.colormap.name == "viridis" and heat.opacity == pytest.approx(0.8)
    # the heatmap lies under the outlines
    assert viewer.layers.index(heat) < viewer.layers.index(layer)


def test_review_retrain_records_metrics_and_plots_them(shown, qtbot, tmp_path):
    viewer, _, widget = shown
    widget.start_run()
    _wait(qtbot, widget)
    layer = widget.predicted_layers()[0]
    # the expert accepts the first region and rejects the second
    status = list(layer.features["review_status"])
    status[0], status[1] = "accepted", "rejected"
    layer.features["review_status"] = status
    widget.start_retrain()
    _wait(qtbot, widget)
    assert widget.last_error == ""
    work = tmp_path / "work"
    assert (work / "iteration_002" / "predicted.xml").exists()
    with open(work / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["iteration"], r["class"]) for r in rows] == [("1", "tumour")]
    assert float(rows[0]["dice"]) < 1.0  # the rejected region was a false positive
    assert "tumour" in widget.plot.series
    x, y = widget.plot.series["tumour"]
    assert list(x) == [1] and y[0] == pytest.approx(float(rows[0]["dice"]))
    reviewed = read_annotations(work / "iteration_001" / "reviewed.xml")
    statuses = sorted(element_attributes(r).get("review_status", "")
                      for _, r in reviewed.regions() if not r.negative)
    assert statuses == ["accepted", "rejected"]
    # the second round replaced the first round's layers
    assert len(widget.predicted_layers()) == 1
    assert widget.predicted_layers()[0].metadata["slideseg_predicted"] == 2


def test_exports_xml_model_weak_labels_and_pseudo_mask(shown, qtbot, tmp_path):
    _, _, widget = shown
    widget.start_run()
    _wait(qtbot, widget)
    xml = widget.save_annotations(tmp_path / "out.xml")
    back = read_annotations(xml)
    assert back.region_count == 2
    model = widget.save_model(tmp_path / "m.joblib")
    assert model.exists()
    table = widget.export_weak_labels(tmp_path / "weak")
    assert len(table) == len(widget.result.grid)
    assert (tmp_path / "weak" / "labels.csv").exists()
    widget.start_weak_labels(tmp_path / "weak2")  # the dock's button: in the background
    _wait(qtbot, widget)
    assert widget.last_error == "" and "Wrote" in widget.status.value
    with open(tmp_path / "weak2" / "labels.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(table)
    mask_path = widget.save_pseudo_mask(tmp_path / "pseudo.png")
    assert mask_path.exists()
    meta = json.loads((tmp_path / "pseudo.json").read_text())
    assert "tumour" in json.dumps(meta)


def test_errors_are_shown_in_the_dock(shown, qtbot):
    _, _, widget = shown
    widget.layers.value = []
    widget.start_run()
    assert "train from" in widget.last_error
    widget.source.value = "model file"
    widget.start_run()
    assert "model file" in widget.last_error


def test_cancel_keeps_no_iteration(shown, qtbot, tmp_path):
    _, _, widget = shown
    widget.start_run()
    assert widget.running and widget.cancel.enabled and not widget.run.enabled
    widget.cancel.changed.emit(True)  # the Cancel button
    _wait(qtbot, widget)
    assert widget.status.value == "Cancelled: nothing was kept."
    assert widget.last_error == ""
    work = tmp_path / "work"
    assert not list(work.glob("iteration_*")) and not widget.predicted_layers()
    assert widget.run.enabled and not widget.cancel.enabled


def test_review_dock_on_the_prediction_then_retrain(shown, qtbot, tmp_path):
    """The whole loop in the GUI: predict, review in the Review dock (accept one, an
    opinion typed on another, a missed region drawn, the slide's opinion), retrain; the
    review reaches reviewed.xml."""
    from napari_slideseg._widgets.review import ReviewWidget

    viewer, _, widget = shown
    widget.start_run()
    _wait(qtbot, widget)
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review)
    layer = widget.predicted_layers()[0]
    assert layer in review.review_layers()
    review.reviewer.value = "dr x"
    review.advance.value = False
    first = review.go_next()
    assert first is not None and first[0] is layer
    review.opinion.value = "solid tumour"
    review.review("accepted")
    second = review.go_next()
    assert second is not None and second[1] != first[1]
    review.opinion.value = "unsure, typed only"  # kept without pressing a button
    # a missed region drawn with the polygon tool: status 'added'
    layer.add_polygons([np.array([[700.0, 100.0], [700.0, 300.0], [900.0, 300.0]])])
    review.slide_opinion.value = "one focus"
    widget.start_retrain()
    _wait(qtbot, widget)
    assert widget.last_error == ""
    reviewed = read_annotations(tmp_path / "work" / "iteration_001" / "reviewed.xml")
    found = {}
    for _, region in reviewed.regions():
        attrs = element_attributes(region)
        if attrs.get("review_status"):
            found.setdefault(attrs["review_status"], []).append(attrs)
    assert len(found["accepted"]) == 1 and found["accepted"][0]["reviewer"] == "dr x"
    assert found["accepted"][0]["opinion"] == "solid tumour"
    assert [a.get("opinion") for a in found["pending"]] == ["unsure, typed only"]
    assert len(found["added"]) == 1 and "rejected" not in found
    from napari_slideseg.core.review import slide_opinion

    assert slide_opinion(reviewed)["opinion"] == "one focus"
    # the second round trained on the accepted and added regions too
    assert (tmp_path / "work" / "iteration_002" / "model.joblib").exists()
