"""The Review dock in a real napari viewer: stepping through pending regions (the view
centred on each), accept / reject / class change / drawing / reshaping / deleting,
opinions, and the reviewed XML read back (and reopened through the reader)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slideseg._layers import REVIEW_COLUMNS
from napari_slideseg.core.annotations import (
    AnnotationLayer,
    AnnotationSet,
    Region,
    read_annotations,
    write_annotations,
)
from napari_slideseg.core.review import (
    element_attributes,
    review_counts,
    review_of,
    set_element_attributes,
    slide_opinion,
    status_of,
)

pytestmark = pytest.mark.gui

MPP = 0.5
# (x0, y0, x1, y1) level-0 boxes of the predicted regions, in review order
BOXES = {("Tumour", 0): (100, 200, 300, 300), ("Tumour", 1): (1000, 1500, 1100, 1900),
         ("Stroma", 0): (2500, 400, 2900, 700)}


def polygon(x0, y0, x1, y1):
    """A pentagon inside the box whose bounding box is the box."""
    xm = (x0 + x1) / 2
    return np.array([[x0, y0 + (y1 - y0) / 3], [xm, y0], [x1, y0 + (y1 - y0) / 3],
                     [x1, y1], [x0, y1]], float)


def predicted(box, p, tiles):
    region = Region(polygon(*box))
    set_element_attributes(region, {"review_status": "pending", "probability_mean": p,
                                    "probability_std": 0.04, "probability_var": 0.0016,
                                    "tile_count": tiles, "cluster": tiles,
                                    "outline": "convex"})
    return region


@pytest.fixture
def predictions_file(tmp_path):
    """Predicted regions (made by hand, as the auto-annotation writes them) in an Aperio
    file: two pending in Tumour, one pending and one drawn by hand in Stroma."""
    tumour = AnnotationLayer("Tumour", (220, 30, 30), [
        predicted(BOXES["Tumour", 0], 0.91, 6), predicted(BOXES["Tumour", 1], 0.62, 8)])
    stroma = AnnotationLayer("Stroma", (30, 160, 30), [
        predicted(BOXES["Stroma", 0], 0.77, 12), Region(polygon(3000, 3000, 3200, 3100))])
    path = tmp_path / "predictions.xml"
    write_annotations(AnnotationSet([tumour, stroma], mpp=MPP), path, format="aperio")
    return path


@pytest.fixture
def review(make_napari_viewer, qtbot, tmp_path, monkeypatch, predictions_file):
    """A shown viewer with the predictions opened through the plugin's reader and the
    Review dock (its settings in a temporary file)."""
    from qtpy.QtCore import QSettings

    from napari_slideseg._reader import napari_get_annotation_reader
    from napari_slideseg._widgets import review as module

    monkeypatch.setattr(module, "_settings", lambda: QSettings(
        str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1200, 900)
    for data, kwargs, kind in napari_get_annotation_reader(str(predictions_file))(
            str(predictions_file)):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = module.ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reviewer.value = "Dr Test"
    qtbot.wait(10)
    return viewer, widget


def world_centre(key):
    x0, y0, x1, y1 = BOXES[key]
    return np.array([(y0 + y1) / 2, (x0 + x1) / 2]) * MPP


def camera(viewer):
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def check_view(viewer, widget, key):
    layer, index = widget.current
    assert (layer.name, index) == key
    assert layer.selected_data == {index}
    assert viewer.layers.selection.active is layer
    np.testing.assert_allclose(np.asarray(camera(viewer).center)[-2:], world_centre(key),
                               atol=1e-6)
    # zoomed so that the region fills the canvas but for a margin
    x0, y0, x1, y1 = BOXES[key]
    size = np.array([y1 - y0, x1 - x0]) * MPP * camera(viewer).zoom
    canvas = np.asarray(viewer.canvas.size, float)
    assert np.all(size <= canvas / 1.4) and np.any(size >= canvas / 1.6)


def test_step_review_move_draw_save_and_reopen(review, tmp_path):
    from napari_slideseg._reader import napari_get_annotation_reader
    from napari_slideseg._widgets.review import ReviewWidget

    viewer, widget = review
    tumour, stroma = viewer.layers["Tumour"], viewer.layers["Stroma"]
    assert [la.name for la in widget.review_layers()] == ["Tumour", "Stroma"]
    for column in REVIEW_COLUMNS:
        assert column in tumour.features
    assert widget.counts.value == ("pending 3 · accepted 0 · rejected 0 · edited 0 · "
                                   "added 0 · unreviewed 1")
    assert widget.klass.choices == ("Tumour", "Stroma", "new class...")

    # the three pending regions in order, the view on each
    widget.advance.value = False
    for key in BOXES:
        widget.next.changed.emit(True)
        check_view(viewer, widget, key)
    widget.next.changed.emit(True)  # round to the first again
    check_view(viewer, widget, ("Tumour", 0))
    assert "Tumour, shape 1: pending · p = 0.91 ± 0.04, 6 tiles · pending 1 of 3" == \
        widget.position.value
    widget.previous.changed.emit(True)  # before the first: the last region
    assert (widget.current[0].name, widget.current[1]) == ("Stroma", 1)
    widget.advance.value = True

    # accept the first with an opinion; the dock goes on to the next pending one
    widget.next.changed.emit(True)
    check_view(viewer, widget, ("Tumour", 0))
    widget.opinion.value = "Clear tumour.\n\tHigh grade & \"solid\" <sheet>"
    widget.accept.changed.emit(True)
    check_view(viewer, widget, ("Tumour", 1))
    assert tumour.features["review_status"].tolist() == ["accepted", "pending"]
    assert tumour.features["reviewer"].tolist() == ["Dr Test", ""]
    assert widget.opinion.value == ""
    # reject the second (its opinion is saved too); then the Stroma one
    widget.opinion.value = "Reactive stroma, not tumour."
    widget.reject.changed.emit(True)
    check_view(viewer, widget, ("Stroma", 0))
    assert widget.counts.value.startswith("pending 1 · accepted 1 · rejected 1 · edited 0")

    # the third changes class: a new class, whose layer the dock makes
    widget.opinion.value = "Necrotic centre."
    moved = widget.set_class("Necrosis")
    necrosis = viewer.layers["Necrosis"]
    assert moved == [(necrosis, 0)] and widget.current == (necrosis, 0)
    assert len(stroma.data) == 1 and len(necrosis.data) == 1
    assert necrosis.features["review_status"].tolist() == ["edited"]
    assert necrosis.features["class"].tolist() == ["Necrosis"]
    assert necrosis.features["opinion"].tolist() == ["Necrotic centre."]
    assert necrosis.features["probability_mean"].tolist() == [0.77]
    np.testing.assert_allclose(necrosis.data[0][:, ::-1], polygon(*BOXES["Stroma", 0]))
    assert any(necrosis is la for la in widget.review_layers())
    assert widget.klass.value == "Necrosis"
    assert widget.go_next() is None  # nothing pending any more
    assert "No region is pending" in widget.status.value

    # a region the prediction missed, drawn in Tumour: 'added', by the reviewer
    tumour.add_polygons([polygon(1500, 100, 1700, 250)[:, ::-1]])
    assert tumour.features["review_status"].tolist() == ["accepted", "rejected", "added"]
    assert tumour.features["reviewer"].tolist()[-1] == "Dr Test"
    assert widget.counts.value == ("pending 0 · accepted 1 · rejected 1 · edited 1 · "
                                   "added 1 · unreviewed 1")

    widget.slide_opinion.value = "Invasive carcinoma,\nmargins clear."
    saved = widget.save(tmp_path / "reviewed.xml")
    assert saved.name == "reviewed.xml" and "Saved reviewed.xml" in widget.status.value
    back = read_annotations(saved)
    assert [la.name for la in back] == ["Tumour", "Stroma", "Necrosis"]
    t, s, n = (la.regions for la in back)
    assert [status_of(r) for r in t] == ["accepted", "rejected", "added"]
    assert review_of(t[0])["opinion"] == "Clear tumour.\n\tHigh grade & \"solid\" <sheet>"
    assert review_of(t[0])["reviewer"] == "Dr Test"
    assert review_of(t[1])["opinion"] == "Reactive stroma, not tumour."
    assert review_of(t[2])["reviewer"] == "Dr Test"
    original = read_annotations(tmp_path / "predictions.xml")
    assert t[0].id == original[0].regions[0].id and t[1].id == original[0].regions[1].id
    assert [status_of(r) for r in s] == [None]  # the hand-drawn region, as it was
    assert review_of(n[0]) == {"status": "edited", "reviewer": "Dr Test",
                               "reviewed_at": review_of(n[0])["reviewed_at"],
                               "opinion": "Necrotic centre."}
    assert element_attributes(n[0])["cluster"] == "12"  # the prediction's figures kept
    np.testing.assert_allclose(n[0].vertices, polygon(*BOXES["Stroma", 0]))
    assert slide_opinion(back)["opinion"] == "Invasive carcinoma,\nmargins clear."
    assert slide_opinion(back)["reviewer"] == "Dr Test"
    assert review_counts(back) == {"pending": 0, "accepted": 1, "rejected": 1, "edited": 1,
                                   "added": 1, "unreviewed": 1}
    assert back.mpp == MPP

    # reopened through the reader: the review columns again, and the slide's opinion
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    for data, kwargs, kind in napari_get_annotation_reader(str(saved))(str(saved)):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    assert viewer.layers["Tumour"].features["review_status"].tolist() == \
        ["accepted", "rejected", "added"]
    assert viewer.layers["Necrosis"].features["opinion"].tolist() == ["Necrotic centre."]
    again = ReviewWidget(viewer)
    viewer.window.add_dock_widget(again)
    assert again.slide_opinion.value == "Invasive carcinoma,\nmargins clear."
    assert again.counts.value == widget.counts.value
    assert again.reviewer.value == "Dr Test"  # remembered


def test_reshape_delete_keys_and_existing_class(review, qtbot, tmp_path):
    from qtpy.QtCore import Qt

    viewer, widget = review
    tumour, stroma = viewer.layers["Tumour"], viewer.layers["Stroma"]
    # reshaping a pending prediction makes it 'edited' (only the shape changed)
    data = [np.array(d) for d in tumour.data]
    data[1] = data[1] * 1.05
    tumour.data = data
    assert tumour.features["review_status"].tolist() == ["pending", "edited"]
    assert tumour.features["reviewer"].tolist() == ["", "Dr Test"]

    # keys on the dock: N next pending, A accept
    from qtpy.QtWidgets import QApplication

    window = viewer.window._qt_window
    window.raise_()
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=3000)
    widget.next.native.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is widget.next.native, timeout=3000)
    qtbot.keyClick(widget.next.native, Qt.Key.Key_N)
    assert widget.current == (tumour, 0)
    qtbot.keyClick(widget.next.native, Qt.Key.Key_A)
    assert tumour.features["review_status"].tolist()[0] == "accepted"
    assert widget.current == (stroma, 0)  # went on
    # typing in the opinion box is text, not a shortcut
    widget.opinion.native.setFocus()
    qtbot.keyClicks(widget.opinion.native, "Ran")
    assert widget.opinion.value == "Ran"
    assert stroma.features["review_status"].tolist()[0] == "pending"

    # a class change into an existing layer; clicking a shape makes it current
    widget.set_class("Tumour")
    assert len(tumour.data) == 3 and len(stroma.data) == 1
    assert tumour.features["review_status"].tolist()[2] == "edited"
    assert tumour.features["opinion"].tolist()[2] == "Ran"
    tumour.selected_data = {0}
    assert widget.current == (tumour, 0)
    assert widget.klass.value == "Tumour"

    # delete removes the region: it is not saved
    widget.advance.value = False
    assert widget.delete_selected() == 1
    assert len(tumour.data) == 2 and widget.current is None
    widget.review("accepted")
    assert "Select a region first" in widget.status.value
    back = read_annotations(widget.save(tmp_path / "out.xml"))
    assert [status_of(r) for r in back[0].regions] == ["edited", "edited"]
    assert [status_of(r) for r in back[1].regions] == [None]
    # the reshaped one keeps its id; the one moved in kept its figures
    assert element_attributes(back[0].regions[1])["tile_count"] == "12"


def test_layers_without_review_columns_can_be_reviewed(make_napari_viewer, tmp_path,
                                                        monkeypatch):
    from qtpy.QtCore import QSettings

    from napari_slideseg._widgets import review as module

    monkeypatch.setattr(module, "_settings", lambda: QSettings(
        str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    monkeypatch.setattr(module.getpass, "getuser", lambda: "login-name")
    viewer = make_napari_viewer()
    layer = viewer.add_shapes([polygon(0, 0, 10, 10)], shape_type="polygon", name="drawn")
    widget = module.ReviewWidget(viewer)
    assert widget.reviewer.value == "login-name"
    assert widget.review_layers() == []  # no review columns: not chosen
    assert "No region" in widget.position.value
    widget.layers.value = [layer]
    assert layer.features["review_status"].tolist() == [""]
    assert widget.counts.value.endswith("unreviewed 1")
    layer.selected_data = {0}
    widget.review("rejected")
    assert layer.features["review_status"].tolist() == ["rejected"]
    layer.add_rectangles([np.array([[20, 20], [30, 30]], float)])
    assert layer.features["review_status"].tolist() == ["rejected", "added"]
