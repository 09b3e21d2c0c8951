"""The Edit segments dock in a real napari viewer: gestures in world coordinates, undo."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

# the labels' frame: world = translate + (row, col) * scale
SCALE = (0.5, 0.5)
TRANSLATE = (3.0, -7.0)


def _world(rc):
    return np.asarray(TRANSLATE) + np.asarray(rc, float) * np.asarray(SCALE)


@pytest.fixture
def editor(make_napari_viewer):
    from napari_slideseg._widgets.edit import EditWidget

    viewer = make_napari_viewer()

    def make(labels, name="segments"):
        layer = viewer.add_labels(labels, name=name, scale=SCALE, translate=TRANSLATE)
        widget = EditWidget(viewer)
        viewer.window.add_dock_widget(widget)
        widget.target.value = layer
        return viewer, layer, widget

    return make


def ctrl_z(layer):
    """What napari runs for Ctrl+Z on a Labels layer: its key binding."""
    from app_model.types import KeyBinding, KeyCode, KeyMod

    type(layer).class_keymap[KeyBinding.from_int(KeyMod.CtrlCmd | KeyCode.KeyZ)](layer)


def _gestures_in_another_frame(viewer):
    """A gestures layer with its own scale and translate: only world positions count."""
    return viewer.add_shapes(name="gestures", scale=(2.0, 2.0), translate=(1.0, 1.0))


def _to_frame(layer, world):
    return (np.asarray(world, float) - np.asarray(layer.translate)) / np.asarray(layer.scale)


def test_every_gesture_has_its_help_line_and_tooltip(editor):
    from napari_slideseg._widgets.edit import HELP

    _, _, widget = editor(np.zeros((10, 10), np.int32))
    shown = [w.value for w in widget if hasattr(w, "value") and isinstance(w.value, str)]
    for text in HELP.values():
        assert text in shown
    for name in ("target", "draw_line", "place_markers", "fill_gap", "line_width", "merge",
                 "ids", "add_selected", "merge_selected", "split", "cut", "new", "undo",
                 "redo", "view"):
        assert getattr(widget, name).tooltip, name


def test_merge_a_path_through_three_pieces_then_undo(editor):
    labels = np.zeros((40, 60), np.int32)
    labels[10:30, 5:18] = 4
    labels[10:30, 20:38] = 2  # a one-pixel gap on each side
    labels[10:30, 40:55] = 9
    labels[0:5, 0:5] = 7  # elsewhere: untouched
    original = labels.copy()
    viewer, layer, widget = editor(labels)
    gestures = _gestures_in_another_frame(viewer)
    path = _to_frame(gestures, _world([[20, 8], [21, 30], [19, 50]]))
    gestures.add_paths([path])
    widget.merge.changed.emit(True)
    assert widget.last_error == ""
    data = layer.data
    pieces = original[10:30, 5:55] > 0
    assert set(np.unique(data[10:30, 5:55][pieces])) == {2}  # one object, the lowest id
    assert data[20, 18] == 2 and data[20, 39] == 2  # the gaps under the line filled
    assert data[12, 18] == 0  # not the gaps away from the line
    assert (data[0:5, 0:5] == 7).all()
    assert len(gestures.data) == 0  # the line used is removed
    assert widget.status.value.startswith("Merged:")
    ctrl_z(layer)  # one step restores everything
    np.testing.assert_array_equal(layer.data, original)
    layer.redo()
    assert set(np.unique(layer.data[10:30, 5:55][pieces])) == {2}
    widget.undo.changed.emit(True)
    np.testing.assert_array_equal(layer.data, original)


def test_merge_without_filling_the_gap(editor):
    labels = np.zeros((20, 30), np.int32)
    labels[5:15, 2:10] = 3
    labels[5:15, 12:25] = 5
    viewer, layer, widget = editor(labels)
    widget.draw_line.changed.emit(True)  # makes the gestures layer over the labels
    gestures = viewer.layers["gestures"]
    assert gestures.mode == "add_path" and viewer.layers.selection.active is gestures
    assert widget.target.value is layer
    gestures.add_paths([np.array([[10.0, 4.0], [10.0, 20.0]])])  # same frame as labels
    widget.fill_gap.value = False
    widget.merge.changed.emit(True)
    assert set(np.unique(layer.data)) == {0, 3} and layer.data[10, 11] == 0


def test_split_two_touching_discs_at_two_markers(editor):
    yy, xx = np.mgrid[:60, :100]
    left = (yy - 30) ** 2 + (xx - 33) ** 2 < 20 ** 2
    right = (yy - 30) ** 2 + (xx - 66) ** 2 < 20 ** 2
    labels = np.where(left | right, 6, 0).astype(np.int32)
    labels[0:3, 0:3] = 2
    original = labels.copy()
    viewer, layer, widget = editor(labels)
    widget.place_markers.changed.emit(True)
    markers = viewer.layers["markers"]
    assert markers.mode == "add"
    markers.add(_to_frame(markers, _world([[30, 33], [30, 66]])))
    widget.split.changed.emit(True)
    assert widget.last_error == ""
    data = layer.data
    assert set(np.unique(data[left | right])) == {6, 7}  # the first marker keeps the id
    assert (data[left & ~right] == 6).mean() > 0.99
    assert (data[right & ~left] == 7).mean() > 0.99
    outside = ~(left | right)
    outside[0:3, 0:3] = False
    assert (data[0:3, 0:3] == 2).all() and (data[outside] == 0).all()
    assert len(markers.data) == 0
    ctrl_z(layer)
    np.testing.assert_array_equal(layer.data, original)


def test_cut_along_a_line(editor):
    labels = np.zeros((30, 50), np.int32)
    labels[5:25, 5:45] = 3
    viewer, layer, widget = editor(labels)
    gestures = _gestures_in_another_frame(viewer)
    gestures.add_paths([_to_frame(gestures, _world([[0, 20], [29, 20]]))])
    widget.cut.changed.emit(True)
    data = layer.data
    assert set(np.unique(data)) == {0, 3, 4}
    assert (data[5:25, 5:20] == 3).all() or (data[5:25, 21:45] == 3).all()
    assert (data > 0).sum() == 20 * 40  # the cut keeps every pixel
    layer.undo()
    assert set(np.unique(layer.data)) == {0, 3}


def test_merge_selected_ids_typed_picked_and_under_markers(editor):
    labels = np.zeros((20, 40), np.int32)
    for k, c in enumerate(range(0, 40, 8)):
        labels[5:15, c + 1:c + 7] = k + 1  # ids 1..5
    viewer, layer, widget = editor(labels)
    widget.ids.value = "4"
    layer.selected_label = 5
    widget.add_selected.changed.emit(True)
    assert widget.ids.value == "4, 5"
    widget.place_markers.changed.emit(True)
    viewer.layers["markers"].add(np.array([[10.0, 19.0]]))  # on id 3
    widget.merge_selected.changed.emit(True)
    assert widget.last_error == ""
    assert set(np.unique(layer.data)) == {0, 1, 2, 3}
    assert (layer.data[5:15, 25:39][labels[5:15, 25:39] > 0] == 3).all()
    assert widget.ids.value == "" and len(viewer.layers["markers"].data) == 0
    widget.ids.value = "1, x"
    widget.merge_selected.changed.emit(True)
    assert widget.last_error.startswith("'x' is not a label id")


def test_new_object_picks_the_next_free_id(editor):
    labels = np.zeros((10, 10), np.int32)
    labels[2, 2], labels[5, 5] = 3, 7
    viewer, layer, widget = editor(labels)
    widget.new.changed.emit(True)
    assert layer.selected_label == 8 and layer.mode == "paint"
    assert viewer.layers.selection.active is layer
    assert "id 8" in widget.status.value


def test_a_lazy_layer_is_edited_through_a_copy_of_the_view(make_napari_viewer, svs, qtbot):
    """A whole-slide threshold (lazy, multiscale): 'Edit view' gives an aligned numpy copy."""
    from napari_slideseg._widgets.edit import EditWidget
    from napari_slideseg._widgets.threshold import threshold_slide

    viewer = make_napari_viewer()
    (slide_layer,) = viewer.open(str(svs.path), plugin="napari-slideseg")
    threshold_slide(viewer, slide_layer, level=0, lazy=True, channel="hematoxylin",
                    sigma_um=1.0)
    lazy = viewer.layers["threshold"]
    assert lazy.multiscale
    widget = EditWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.target.value = lazy
    assert not widget.split.enabled and widget.view.enabled
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    mpp = 0.2527
    camera.center = (700 * mpp, 1200 * mpp)
    camera.zoom = 1.0 / mpp  # one screen pixel per level-0 pixel
    widget.view.changed.emit(True)
    assert widget.last_error == ""
    copy = widget.target.value
    assert copy is not lazy and copy.name == "threshold (view)"
    assert isinstance(copy.data, np.ndarray) and copy.data.dtype == np.int32
    assert widget.split.enabled
    name, level, (r0, r1, c0, c1) = copy.metadata["slideseg_view_of"]
    assert (name, level) == ("threshold", 0)
    h, w = viewer.canvas.size
    assert r1 - r0 >= h - 2 and c1 - c0 >= w - 2
    mask = np.asarray(lazy.data[0][r0:r1, c0:c1])
    np.testing.assert_array_equal(copy.data > 0, mask > 0)  # objects numbered, same pixels
    assert copy.data.max() > 1
    # aligned: the same world point shows the same pixel in both layers
    rng = np.random.default_rng(0)
    rows = rng.integers(r0, r1, 100)
    cols = rng.integers(c0, c1, 100)
    for r, c in zip(rows, cols, strict=True):
        world = lazy.data_to_world((r, c))
        assert (copy.get_value(world, world=True) > 0) == bool(mask[r - r0, c - c0])
