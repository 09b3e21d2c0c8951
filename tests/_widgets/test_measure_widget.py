"""The Measure dock in a real napari viewer: features, table, selection both ways, plots,
summary, classification and export, on objects whose answers are known."""

from __future__ import annotations

import json
import time
import zipfile

import numpy as np
import pandas as pd
import pytest

from napari_slideseg import AnnotationLayer, AnnotationSet, Region, measure, open_slide

pytestmark = pytest.mark.gui

MPP = 0.5
# the image's frame: a slide layer's (half a pixel of translate), so that level-0 point
# (x, y) is at world (y, x) * MPP
SCALE = (MPP, MPP)
TRANSLATE = (MPP / 2, MPP / 2)


def discs(shape=(300, 400), centres=((50, 60), (150, 200), (250, 330), (60, 320)),
          radii=(15, 10, 20, 8)):
    """Labels 1..n: discs of pixel centres within radius r of pixel (row, col)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    labels = np.zeros(shape, np.int32)
    for k, ((r, c), rad) in enumerate(zip(centres, radii, strict=True)):
        labels[(yy - r) ** 2 + (xx - c) ** 2 <= rad * rad] = k + 1
    rgb = np.full((h, w, 3), 225, np.uint8)
    rgb[labels > 0] = (110, 60, 160)
    rgb[labels == 3] = (200, 120, 170)
    return labels, rgb


def populations(n_side=8, seed=0):
    """Two kinds of nuclei on a grid: 'small' dark purple, 'large' pale pink."""
    rng = np.random.default_rng(seed)
    step = 40
    h = w = n_side * step
    yy, xx = np.mgrid[0:step, 0:step]
    labels = np.zeros((h, w), np.int32)
    rgb = np.full((h, w, 3), 235, np.uint8)
    truth = {}
    for k in range(n_side * n_side):
        i, j = divmod(k, n_side)
        kind = "small" if rng.random() < 0.5 else "large"
        r = rng.uniform(5, 7) if kind == "small" else rng.uniform(11, 13)
        inside = (yy - 20) ** 2 + (xx - 20) ** 2 <= r * r  # in the object's cell
        cell = (slice(i * step, (i + 1) * step), slice(j * step, (j + 1) * step))
        labels[cell][inside] = k + 1
        colour = (90, 40, 140) if kind == "small" else (230, 150, 190)
        rgb[cell][inside] = np.clip(np.asarray(colour) + rng.integers(
            -12, 13, (int(inside.sum()), 3)), 0, 255).astype(np.uint8)
        truth[k + 1] = kind
    return labels, rgb, truth


@pytest.fixture
def dock(make_napari_viewer, qtbot):
    """A shown viewer with an RGB image, labels over it and the Measure dock."""
    from napari_slideseg._widgets.measure import MeasureWidget

    viewer = make_napari_viewer(show=True)

    def make(labels, rgb, name="objects"):
        image = viewer.add_image(rgb, rgb=True, scale=SCALE, translate=TRANSLATE,
                                 units=("µm", "µm"), name="image")
        layer = viewer.add_labels(labels, scale=SCALE, translate=TRANSLATE,
                                  units=("µm", "µm"), name=name)
        widget = MeasureWidget(viewer)
        viewer.window.add_dock_widget(widget)
        widget.objects.value = layer
        widget.image.value = image
        return viewer, layer, widget

    return make


def _camera(viewer):
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera


def _wait(qtbot, widget, timeout=60000):
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


def _run(qtbot, widget):
    widget.run.changed.emit(True)
    _wait(qtbot, widget)
    assert widget.last_error == ""


def _click_row(qtbot, widget, view_row, modifier=None):
    from qtpy.QtCore import Qt

    index = widget.proxy.index(view_row, 1)
    widget.view.scrollTo(index)
    rect = widget.view.visualRect(index)
    qtbot.mouseClick(widget.view.viewport(), Qt.MouseButton.LeftButton,
                     modifier or Qt.KeyboardModifier.NoModifier, rect.center())


def _canvas_click(viewer, world):
    """Press and release the left button on the canvas at a world (row, col) point."""
    camera = _camera(viewer)
    cy, cx = np.asarray(camera.center, float)[-2:]
    h, w = viewer.canvas.size
    pos = ((world[1] - cx) * camera.zoom + w / 2, (world[0] - cy) * camera.zoom + h / 2)
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    canvas.events.mouse_press(pos=pos, button=1, modifiers=())
    canvas.events.mouse_release(pos=pos, button=1, modifiers=())


# -- measuring -----------------------------------------------------------------------------


def test_every_control_has_a_tooltip(dock):
    _, _, widget = dock(*discs())
    for name in ("objects", "image", "level", "tissue", "intensity", "stains", "run",
                 "cancel", "filter", "hist_feature", "x_feature", "y_feature", "class_name",
                 "assign", "unassign", "features", "train", "show_classes", "model_file",
                 "save_model", "load_model", "out", "only_shown", "contour", "export"):
        assert getattr(widget, name).tooltip, name
    assert widget.view.toolTip() and widget.hist.toolTip() and widget.scatter.toolTip()


def test_run_fills_features_with_the_rows_of_measure(dock, qtbot):
    labels, rgb = discs()
    _, layer, widget = dock(labels, rgb)
    _run(qtbot, widget)
    expected = measure(labels, rgb, mpp=MPP)
    features = layer.features
    assert features["index"].tolist() == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(features.drop(columns="index"), expected)
    pd.testing.assert_frame_equal(widget.table, expected)
    assert widget.model.rowCount() == widget.proxy.rowCount() == 4
    assert widget.status.value.startswith("4 objects of 'objects'")
    # napari shows the features under the cursor: label 3's row
    status = layer.get_status((250 * MPP, 330 * MPP), world=True)
    assert "area_um2" in str(status)
    # the same through the scripting function
    from napari_slideseg._widgets.measure import measure_layers

    layer.features = pd.DataFrame()
    pd.testing.assert_frame_equal(measure_layers(layer, widget.image.value), expected)
    assert layer.features["index"].tolist() == [1, 2, 3, 4]
    # plots got the features
    assert widget.hist_feature.value == "area_um2"
    assert widget.hist.values.size == 4
    assert widget.scatter.x.size == 4


def test_a_threshold_result_over_a_slide_is_measured_in_slide_coordinates(
        make_napari_viewer, qtbot, svs):
    """A result at level 1 over part of the slide: level-0 coordinates, slide pixels."""
    from napari_slideseg._widgets.measure import MeasureWidget
    from napari_slideseg._widgets.threshold import read_image, show_threshold, threshold_input
    from napari_slideseg.core.threshold import ThresholdParams

    viewer = make_napari_viewer()
    (slide_layer,) = viewer.open(str(svs.path), plugin="napari-slideseg")
    inp = read_image(slide_layer, level=1)
    result = threshold_input(inp, ThresholdParams(channel="hematoxylin", sigma_um=1.0,
                                                  min_area_um2=20.0))
    labels_layer = show_threshold(viewer, result, inp, slide_layer)
    widget = MeasureWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.objects.value is labels_layer  # the result is offered first
    assert widget.image.value is slide_layer  # and its image with it
    _run(qtbot, widget)
    with open_slide(svs.path) as slide:
        expected = measure(result.labels, slide, downsample=result.downsample,
                           origin=result.origin)
    pd.testing.assert_frame_equal(widget.table, expected)
    assert widget.table.attrs["downsample"] == pytest.approx(slide.level_downsamples[1])
    # the centroid of an object is where napari shows its pixels
    row = int(np.argmax(widget.table["area_um2"].to_numpy()))
    widget.select_rows([row])
    centre = np.asarray(_camera(viewer).center, float)[-2:]
    label = int(widget.table["label"].iat[row])
    assert labels_layer.get_value(centre, world=True) == label or \
        widget.table["solidity"].iat[row] < 0.9  # a concave object may miss its centroid
    x, y = widget.table["centroid_x"].iat[row], widget.table["centroid_y"].iat[row]
    np.testing.assert_allclose(centre, (y * 0.2527, x * 0.2527), rtol=1e-9)


def test_errors_are_reported_in_the_widget(make_napari_viewer):
    from napari_slideseg._widgets.measure import MeasureWidget

    viewer = make_napari_viewer()
    widget = MeasureWidget(viewer)
    widget.run.changed.emit(True)
    assert widget.status.value.startswith("Error: choose the objects to measure")
    widget.assign.changed.emit(True)
    assert widget.class_status.value == "Error: measure objects first."
    widget.export.changed.emit(True)
    assert widget.export_status.value == "Error: measure objects first."


# -- selection both ways --------------------------------------------------------------------


def test_clicking_a_row_centres_the_camera_on_the_object_and_rings_it(dock, qtbot):
    from napari_slideseg._widgets.measure import MARKER_LAYER

    labels, rgb = discs()
    viewer, layer, widget = dock(labels, rgb)
    _run(qtbot, widget)
    camera = _camera(viewer)
    camera.zoom = 4.0  # objects span 30-80 screen pixels: no zoom change on selection
    _click_row(qtbot, widget, 2)  # label 3: disc at pixel (250, 330)
    assert widget.selected_rows().tolist() == [2]
    # level-0 centroid (330.5, 250.5) -> world (row, col) = (250.5, 330.5) * MPP
    np.testing.assert_allclose(np.asarray(camera.center, float)[-2:],
                               (250.5 * MPP, 330.5 * MPP), atol=1e-9)
    assert camera.zoom == 4.0
    assert layer.get_value(np.asarray(camera.center)[-2:], world=True) == 3
    assert layer.selected_label == 3
    markers = viewer.layers[MARKER_LAYER]
    np.testing.assert_allclose(markers.data_to_world(markers.data[0])[-2:],
                               (250.5 * MPP, 330.5 * MPP))
    assert markers.size[0] == pytest.approx(41 * 1.5)  # 41 px across, circled wider
    assert viewer.layers.selection.active is not markers  # the user's layer stays active
    # Ctrl-click adds a row: both ringed, the camera on the new one
    from qtpy.QtCore import Qt

    _click_row(qtbot, widget, 0, Qt.KeyboardModifier.ControlModifier)
    assert widget.selected_rows().tolist() == [0, 2]
    assert len(markers.data) == 2
    np.testing.assert_allclose(np.asarray(camera.center, float)[-2:],
                               (50.5 * MPP, 60.5 * MPP), atol=1e-9)
    # the histogram and scatter plot follow the selection
    np.testing.assert_allclose(np.sort(widget.hist.selected),
                               np.sort(widget.table["area_um2"].to_numpy()[[0, 2]]))
    assert widget.scatter.selected.tolist() == [0, 2]


def test_a_tiny_object_is_zoomed_to(dock, qtbot):
    labels, rgb = discs()
    viewer, _, widget = dock(labels, rgb)
    _run(qtbot, widget)
    camera = _camera(viewer)
    camera.zoom = 0.01  # the 8 µm disc would be a fraction of a screen pixel
    widget.select_rows([3])
    size = 17 * MPP  # label 4: radius 8, 17 px across
    assert camera.zoom * size == pytest.approx(min(viewer.canvas.size) / 6)


def test_clicking_an_object_in_the_viewer_selects_its_row(dock, qtbot):
    from qtpy.QtCore import Qt

    labels, rgb = discs()
    viewer, layer, widget = dock(labels, rgb)
    _run(qtbot, widget)
    viewer.reset_view()
    centre_before = np.asarray(_camera(viewer).center, float).copy()
    widget.view.sortByColumn(widget.model.column_index("area_um2"),
                             Qt.SortOrder.DescendingOrder)
    _canvas_click(viewer, (150 * MPP, 200 * MPP))  # label 2
    qtbot.waitUntil(lambda: widget.selected_rows().tolist() == [1], timeout=3000)
    current = widget.view.currentIndex()
    assert widget.proxy.df_row(current.row()) == 1
    # the table is sorted by area, largest first: label 2 (radius 10) is third
    assert current.row() == 2
    assert widget.view.selectionModel().isRowSelected(2)
    # the camera does not jump to an object the user just clicked
    np.testing.assert_allclose(np.asarray(_camera(viewer).center, float), centre_before)
    # background: nothing changes; a drag (pan) picks nothing
    _canvas_click(viewer, (5 * MPP, 5 * MPP))
    assert widget.selected_rows().tolist() == [1]
    # a Ctrl-click adds an object
    row = widget.pick_at((250 * MPP, 330 * MPP), add=True)
    assert row == 2 and widget.selected_rows().tolist() == [1, 2]
    # in paint mode a click paints (with the selected object's label), it does not pick
    viewer.layers.selection.active = layer
    layer.mode = "paint"
    _canvas_click(viewer, (50 * MPP, 60 * MPP))  # in label 1
    assert widget.selected_rows().tolist() == [1, 2]
    assert layer.data[50, 60] == 3
    layer.mode = "pan_zoom"
    _canvas_click(viewer, (60 * MPP, 320 * MPP))  # label 4
    assert widget.selected_rows().tolist() == [3]


def test_clicking_a_scatter_point_selects_its_row(dock, qtbot):
    from qtpy.QtCore import QPoint, Qt

    labels, rgb = discs()
    viewer, _, widget = dock(labels, rgb)
    _run(qtbot, widget)
    qtbot.waitUntil(lambda: widget.scatter.isVisible(), timeout=3000)
    x, y = widget.scatter.point_position(3)
    qtbot.mouseClick(widget.scatter, Qt.MouseButton.LeftButton, pos=QPoint(round(x), round(y)))
    assert widget.selected_rows().tolist() == [3]
    np.testing.assert_allclose(np.asarray(_camera(viewer).center, float)[-2:],
                               (60.5 * MPP, 320.5 * MPP), atol=1e-9)


# -- sorting, filtering -------------------------------------------------------------------------


def test_sorting_and_filtering_go_through_the_proxy(dock, qtbot):
    from qtpy.QtCore import Qt

    labels, rgb = discs()
    _, _, widget = dock(labels, rgb)
    _run(qtbot, widget)
    area = widget.model.column_index("area_um2")

    def shown_labels():
        col = widget.model.column_index("label")
        return [int(widget.proxy.index(r, col).data()) for r in range(widget.proxy.rowCount())]

    # a click on the header sorts (descending on the second click)
    header = widget.view.horizontalHeader()
    x = header.sectionViewportPosition(area) + header.sectionSize(area) // 2
    from qtpy.QtCore import QPoint

    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton,
                     pos=QPoint(x, header.height() // 2))
    first = shown_labels()
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton,
                     pos=QPoint(x, header.height() // 2))
    second = shown_labels()
    assert {tuple(first), tuple(second)} == {(4, 2, 1, 3), (3, 1, 2, 4)}
    # the selection follows its rows through a sort
    widget.select_rows([0])  # label 1
    widget.view.sortByColumn(area, Qt.SortOrder.AscendingOrder)
    assert shown_labels() == [4, 2, 1, 3]
    rows = [i.row() for i in widget.view.selectionModel().selectedRows()]
    assert rows == [2]
    # a condition
    widget.filter.value = "area_um2 > 60"
    assert shown_labels() == [2, 1, 3]
    assert widget.shown.value == "3 / 4"
    assert widget.hist.values.size == 3  # the plots show the rows shown
    widget.filter.value = "area_um2 > 60 and red_mean < 150"
    assert shown_labels() == [2, 1]
    widget.filter.value = "label == 4"
    assert shown_labels() == [4]
    # the selected row stays selected while hidden, and shows again
    assert widget.selected_rows().tolist() == [0]
    widget.filter.value = ""
    assert shown_labels() == [4, 2, 1, 3]
    assert [i.row() for i in widget.view.selectionModel().selectedRows()] == [2]
    # an invalid condition says so and keeps the rows
    widget.filter.value = "nonsense > 3"
    assert widget.shown.value == "invalid" and "nonsense" in widget.shown.tooltip
    assert widget.proxy.rowCount() == 4
    # words are looked for in text columns (classes)
    widget.filter.value = ""
    widget.assign_class("tumour", [0, 2])
    widget.filter.value = "TUM"
    assert shown_labels() == [1, 3]
    widget.filter.value = "3"  # a number is a label too
    assert shown_labels() == [3]


def test_a_100k_row_table_builds_and_scrolls_quickly(dock, qtbot):
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    from napari_slideseg._widgets._object_table import filter_mask

    labels, rgb = discs()
    _, _, widget = dock(labels, rgb)
    _run(qtbot, widget)
    rng = np.random.default_rng(0)
    n = 100_000
    template = widget.table
    df = pd.DataFrame({c: (np.arange(1, n + 1) if c == "label" else
                           rng.normal(50, 10, n)) for c in template.columns})
    df.insert(1, "class", np.where(rng.random(n) < 0.5, "a", "b").astype(object))
    started = time.perf_counter()
    widget.model.set_table(df)
    widget.proxy.set_mask(None)
    widget.view.scrollToBottom()
    QApplication.processEvents()
    build = time.perf_counter() - started
    started = time.perf_counter()
    for row in range(0, n, n // 20):  # jump through the table
        widget.view.scrollTo(widget.proxy.index(row, 0))
        widget.view.viewport().repaint()
    scroll = (time.perf_counter() - started) / 20
    started = time.perf_counter()
    widget.view.sortByColumn(widget.model.column_index("area_um2"),
                             Qt.SortOrder.DescendingOrder)
    QApplication.processEvents()
    sort = time.perf_counter() - started
    values = df["area_um2"].to_numpy()
    top = widget.proxy.index(0, widget.model.column_index("area_um2")).data()
    assert float(top) == pytest.approx(values.max(), abs=0.01)
    started = time.perf_counter()
    widget.proxy.set_mask(filter_mask(df, "area_um2 > 60"))
    QApplication.processEvents()
    filtering = time.perf_counter() - started
    assert widget.proxy.rowCount() == int((values > 60).sum())
    print(f"\n100k rows x {df.shape[1]} columns: build and show {build:.3f} s, one scroll "
          f"and repaint {1000 * scroll:.1f} ms, sort {sort:.3f} s, filter {filtering:.3f} s")
    assert build < 3.0 and scroll < 0.2 and sort < 3.0 and filtering < 3.0


# -- classes -------------------------------------------------------------------------------------


def test_summary_counts_per_class_with_and_without_tissue(dock, qtbot):
    labels, rgb = discs()
    viewer, layer, widget = dock(labels, rgb)
    original = layer.colormap
    _run(qtbot, widget)
    area = widget.table["area_um2"].to_numpy()
    s = widget.summary_frame()
    assert s["class"].tolist() == ["Unclassified", "All"] and s["count"].tolist() == [4, 4]
    widget.select_rows([0, 1])
    widget.class_name.value = "a"
    widget.assign.changed.emit(True)
    assert widget.class_status.value.startswith("2 objects classed 'a' by hand")
    widget.assign_class("b", [3])
    s = widget.summary_frame().set_index("class")
    assert s.loc["a", "count"] == 2 and s.loc["b", "count"] == 1
    assert s.loc["Unclassified", "count"] == 1 and s.loc["All", "count"] == 4
    assert s.loc["a", "area_um2"] == pytest.approx(area[0] + area[1])
    # without tissue: fraction of the objects' area; density per mm² of the field
    assert s.loc["b", "area_fraction"] == pytest.approx(area[3] / area.sum())
    field = 300 * 400 * MPP * MPP / 1e6
    assert s.loc["a", "density_per_mm2"] == pytest.approx(2 / field)
    # a tissue mask: a 200 x 100 px rectangle, at half the resolution and elsewhere
    tissue = np.zeros((150, 200), np.uint8)
    tissue[10:110, 20:70] = 1
    viewer.add_labels(tissue, scale=(2 * MPP, 2 * MPP), translate=(3.0, 5.0),
                      units=("µm", "µm"), name="tissue")
    widget.tissue.value = viewer.layers["tissue"]
    tissue_um2 = 100 * 50 * (2 * MPP) ** 2
    s = widget.summary_frame().set_index("class")
    assert s.loc["a", "area_fraction"] == pytest.approx((area[0] + area[1]) / tissue_um2)
    assert s.loc["All", "density_per_mm2"] == pytest.approx(4 / (tissue_um2 / 1e6))
    # the table widget shows it
    assert widget.summary.rowCount() == 4
    assert widget.summary.horizontalHeaderItem(3).text() == "% of tissue"
    assert widget.summary.item(0, 0).text() == "a" and widget.summary.item(0, 1).text() == "2"
    # a summary row gives its class name
    widget.summary.cellClicked.emit(1, 0)
    assert widget.class_name.value == "b"
    # classes are shown as the objects' colours
    from napari_slideseg._layers import UNCLASSIFIED_COLOR

    colors = layer.colormap.color_dict
    np.testing.assert_allclose(colors[1], widget._class_colors["a"])
    np.testing.assert_allclose(colors[4], widget._class_colors["b"])
    np.testing.assert_allclose(layer.colormap.map(3), UNCLASSIFIED_COLOR, atol=1e-6)
    assert layer.features.loc[layer.features["index"] == 4, "class"].item() == "b"
    widget.show_classes.value = False  # the layer's own colours again
    assert layer.colormap is original


def test_hand_classes_then_train_and_classify_the_rest(dock, qtbot, tmp_path):
    labels, rgb, truth = populations()
    _, layer, widget = dock(labels, rgb)
    _run(qtbot, widget)
    df = widget.table
    hand = [k for k in range(len(df)) if k % 4 == 0]
    for kind in ("small", "large"):
        rows = [k for k in hand if truth[int(df["label"].iat[k])] == kind]
        widget.select_rows(rows)
        widget.class_name.value = kind
        widget.assign.changed.emit(True)
    assert (widget.table["class_source"] == "hand").sum() == len(hand)
    widget.train.changed.emit(True)
    _wait(qtbot, widget)
    assert widget.last_error == ""
    status = widget.class_status.value
    assert status.startswith(f"Trained on {len(hand)} objects (2 classes")
    accuracy = float(status.split("accuracy ")[1].split(" ")[0])
    assert accuracy > 95
    table = widget.table
    expected = np.array([truth[int(v)] for v in table["label"]], object)
    rest = table["class_source"].to_numpy() == "classifier"
    assert rest.sum() == len(table) - len(hand)
    assert (table["class"].to_numpy()[rest] == expected[rest]).mean() > 0.95
    assert table["class_probability"][rest].between(0.5, 1).all()
    assert table["class_probability"][~rest].isna().all()
    # hand classes are kept, and the layer shows every class
    assert (table["class"].to_numpy()[~rest] == expected[~rest]).all()
    colors = layer.colormap.color_dict
    for label in (1, 2, 3):
        np.testing.assert_allclose(colors[label], widget._class_colors[truth[label]])
    assert (layer.features["class"].to_numpy() == table["class"].to_numpy()).all()
    col = widget.model.column_index("class")
    assert widget.proxy.index(0, col).data() == table["class"].iat[0]
    # save, then load into a fresh measurement: the same classes
    model = tmp_path / "nuclei.joblib"
    widget.model_file.value = model
    widget.save_model.changed.emit(True)
    assert widget.class_status.value == f"Model saved to {model}."
    before = table["class"].copy()
    _run(qtbot, widget)  # measured again: no classes
    assert "class" not in widget.table.columns
    widget.load_model.changed.emit(True)
    assert widget.class_status.value.startswith("Model nuclei.joblib loaded (large, small)")
    assert (widget.table["class"].to_numpy() == before.to_numpy()).mean() > 0.95
    # a model whose features the table lacks is refused, in the widget
    widget.intensity.value = False
    _run(qtbot, widget)
    widget.load_model.changed.emit(True)
    assert widget.class_status.value.startswith("Error: the table lacks the feature columns")


def test_training_needs_two_classes(dock, qtbot):
    labels, rgb = discs()
    _, _, widget = dock(labels, rgb)
    _run(qtbot, widget)
    widget.assign_class("a", [0, 1])
    widget.train.changed.emit(True)
    _wait(qtbot, widget)
    assert "at least two classes" in widget.class_status.value
    widget.assign_class("b", [2])  # one example of b: trained, no cross-validation
    cv = widget.train_and_classify()
    assert cv is None and widget.table["class"].iat[3] in ("a", "b")


# -- shapes ----------------------------------------------------------------------------------


def _annotations():
    tumour = AnnotationLayer(name="Tumour", color=(220, 30, 30), regions=[
        Region([[20, 20], [120, 20], [120, 80], [20, 80]], type="polygon"),
        Region([[200, 100], [260, 160]], type="ellipse")])
    stroma = AnnotationLayer(name="Stroma", color=(20, 160, 60), regions=[
        Region([[300, 200], [380, 200], [380, 280], [300, 280]], type="rectangle"),
        Region([[10, 200], [60, 250]], type="ruler")])
    return AnnotationSet([tumour, stroma], mpp=MPP)


def test_annotation_shapes_are_measured_with_their_classes(make_napari_viewer, qtbot):
    from napari_slideseg._layers import annotation_layers_data
    from napari_slideseg._widgets.measure import ALL_SHAPES, MeasureWidget

    viewer = make_napari_viewer()
    _, rgb = discs()
    image = viewer.add_image(rgb, rgb=True, scale=SCALE, translate=TRANSLATE,
                             units=("µm", "µm"), name="image")
    ann = _annotations()
    shapes = [viewer.add_shapes(d, **k) for d, k, _ in annotation_layers_data(
        ann, SCALE, ("µm", "µm"), mpp=MPP)]
    widget = MeasureWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.objects.value = ALL_SHAPES
    widget.image.value = image
    _run(qtbot, widget)
    # the regions measured as annotations: the same rows
    area = AnnotationSet([AnnotationLayer(name=la.name, regions=[
        r for r in la.regions if r.type != "ruler"]) for la in ann], mpp=MPP)
    expected = measure(area, rgb, mpp=MPP)
    got = widget.table
    assert got["class"].tolist() == ["Tumour", "Tumour", "Stroma"]
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9)
    # each Shapes layer got its shapes' rows (the ruler has none)
    stroma = [la for la in shapes if la.name == "Stroma"][0]
    assert stroma.features["area_um2"].iloc[0] == pytest.approx(80 * 80 * MPP * MPP)
    assert np.isnan(stroma.features["area_um2"].iloc[1])
    # picking a shape in the viewer selects its row
    row = widget.pick_at((240 * MPP, 340 * MPP))
    assert row == 2 and widget.selected_rows().tolist() == [2]
    # the class summary
    s = widget.summary_frame().set_index("class")
    assert s.loc["Tumour", "count"] == 2 and s.loc["Stroma", "count"] == 1


# -- export ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".geojson", ".zip"])
def test_export_buttons_write_each_format(dock, qtbot, tmp_path, suffix):
    labels, rgb = discs()
    _, _, widget = dock(labels, rgb)
    _run(qtbot, widget)
    widget.assign_class("tumour", [0, 2])
    widget.filter.value = "class == 'tumour'"
    widget.only_shown.value = True
    path = tmp_path / f"objects{suffix}"
    widget.out.value = path
    widget.export.changed.emit(True)
    _wait(qtbot, widget)
    assert widget.last_error == "" and path.is_file()
    assert widget.export_status.value.startswith(f"2 objects -> {path}")
    if suffix == ".csv":
        back = pd.read_csv(path)
        assert back["label"].tolist() == [1, 3] and back["class"].tolist() == ["tumour"] * 2
    elif suffix == ".tsv":
        assert pd.read_csv(path, sep="\t")["label"].tolist() == [1, 3]
    elif suffix == ".parquet":
        assert pd.read_parquet(path)["label"].tolist() == [1, 3]
    elif suffix == ".geojson":
        features = json.loads(path.read_text())["features"]
        assert len(features) == 2
        assert {f["properties"]["classification"]["name"] for f in features} == {"tumour"}
        assert "area_um2" in features[0]["properties"]["measurements"]
    else:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        assert sum(n.endswith(".png") for n in names) == 2
        assert any(n.startswith("ecotaxa_") and n.endswith(".tsv") for n in names)


def test_export_errors_are_reported(dock, qtbot, tmp_path):
    labels, rgb = discs()
    _, _, widget = dock(labels, rgb)
    _run(qtbot, widget)
    widget.out.value = tmp_path / "objects.xlsx"
    widget.export.changed.emit(True)
    _wait(qtbot, widget)
    assert widget.export_status.value.startswith("Error: objects.xlsx: export as .csv")


# -- large tables and label values --------------------------------------------------------


def test_thousands_of_scattered_rows_are_drawn_selected_by_the_model(dock, qtbot):
    from qtpy.QtCore import Qt

    from napari_slideseg._widgets.measure import MAX_RUNS

    labels, rgb, _ = populations(n_side=48)  # 2304 objects
    _, _, widget = dock(labels, rgb)
    _run(qtbot, widget)
    rows = np.arange(0, len(widget.table), 2)  # every other row: > MAX_RUNS runs
    assert len(rows) > MAX_RUNS
    started = time.perf_counter()
    widget.select_rows(rows)
    assert time.perf_counter() - started < 2.0
    assert widget.selected_rows().tolist() == rows.tolist()
    assert widget.model.marked is not None
    background = widget.proxy.index(2, 0).data(Qt.ItemDataRole.BackgroundRole)
    assert background is not None
    assert widget.proxy.index(1, 0).data(Qt.ItemDataRole.BackgroundRole) is None
    # a click on one row replaces the selection, drawn by Qt's selection again
    _click_row(qtbot, widget, 5)
    assert widget.selected_rows().tolist() == [5] and widget.model.marked is None
    # class assignment of many rows is quick
    widget.select_rows(rows)
    started = time.perf_counter()
    widget.assign_class("even")
    assert time.perf_counter() - started < 3.0
    assert (widget.table["class"].to_numpy()[rows] == "even").all()


def test_label_values_beyond_a_colormap_get_a_classes_layer(dock, qtbot, monkeypatch):
    """napari colours labels above 65,535 directly only with numba: a classes layer."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "numba" else real(name, *a))
    labels, rgb = discs()
    big = np.where(labels > 0, labels + 70_000, 0).astype(np.int32)
    viewer, layer, widget = dock(big, rgb)
    _run(qtbot, widget)
    original = layer.colormap
    widget.assign_class("a", [0, 2])
    widget.assign_class("b", [1])
    classes = viewer.layers[f"{layer.name} classes"]
    assert layer.colormap is original
    data = np.asarray(classes.data)
    assert data[50, 60] == 1 and data[250, 330] == 1 and data[150, 200] == 2
    assert data[60, 320] == 3 and data[0, 0] == 0  # unclassified, background
    np.testing.assert_allclose(classes.colormap.color_dict[1], widget._class_colors["a"])
    np.testing.assert_allclose(classes.translate, layer.translate)
    assert classes not in widget.objects.choices
    assert widget.object_at((150 * MPP, 200 * MPP)) == 1
    widget.show_classes.value = False
    assert f"{layer.name} classes" not in viewer.layers


def test_regions_give_each_object_its_annotation(make_napari_viewer, qtbot):
    from napari_slideseg._layers import annotation_layers_data
    from napari_slideseg._widgets.measure import MeasureWidget

    viewer = make_napari_viewer()
    labels, rgb = discs()
    image = viewer.add_image(rgb, rgb=True, scale=SCALE, translate=TRANSLATE,
                             units=("µm", "µm"), name="image")
    layer = viewer.add_labels(labels, scale=SCALE, translate=TRANSLATE, units=("µm", "µm"),
                              name="objects")
    for d, k, _ in annotation_layers_data(_annotations(), SCALE, ("µm", "µm"), mpp=MPP):
        viewer.add_shapes(d, **k)
    widget = MeasureWidget(viewer)
    widget.objects.value, widget.image.value = layer, image
    widget.regions.value = [v for v in widget.regions.choices if isinstance(v, str)][0]
    _run(qtbot, widget)
    # label 1 at (x, y) = (60, 50) lies in the first Tumour polygon; label 3 at (330, 250)
    # in the Stroma rectangle; label 2 at (200, 150) in none
    classes = widget.table["region_class"].tolist()
    assert classes[0] == "Tumour" and pd.isna(classes[1]) and classes[2] == "Stroma"
    assert widget.table["region"].iat[0] is not None


def test_cancel_stops_a_measurement(make_napari_viewer, qtbot):
    from napari_slideseg._widgets.measure import MeasureWidget

    viewer = make_napari_viewer()
    labels = np.zeros((8200, 8200), np.uint8)
    labels[::64, ::64] = 1
    layer = viewer.add_labels(labels, name="many windows")
    widget = MeasureWidget(viewer)
    widget.objects.value = layer
    widget.run.changed.emit(True)
    widget.cancel.changed.emit(True)
    _wait(qtbot, widget)
    assert widget.status.value == "Cancelled."
    assert widget.table is None and not len(layer.features.columns)
