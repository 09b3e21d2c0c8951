"""The Export patches dock in a real napari viewer: preview, export, cancel, mask."""

from __future__ import annotations

import csv
import inspect

import numpy as np
import pytest

from napari_slideseg import (
    AnnotationKey,
    AnnotationLayer,
    AnnotationSet,
    Region,
    export_patches,
    plan_patches,
    rasterize,
    read_annotations,
    write_annotations,
)

pytestmark = pytest.mark.gui

MPP = 0.2527  # the svs fixture's pixel size


@pytest.fixture
def annotation_file(tmp_path):
    """Aperio XML over the svs fixture (2501 x 1803): a tumour with a hole, a stroma box."""
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    outer = np.column_stack([900.4 + 420 * np.cos(angles), 800.2 + 380 * np.sin(angles)])
    hole = np.array([[850.3, 750.1], [990.7, 760.4], [940.2, 880.9]])
    box = np.array([[1500.3, 200.2], [1900.7, 200.2], [1900.7, 500.6], [1500.3, 500.6]])
    ann = AnnotationSet([
        AnnotationLayer(name="tumour", color=(255, 0, 0), regions=[
            Region(outer), Region(hole, negative=True)]),
        AnnotationLayer(name="stroma", color=(0, 255, 0), regions=[
            Region(box, type="rectangle")]),
    ], mpp=MPP)
    path = tmp_path / "regions.xml"
    write_annotations(ann, path)
    return path


@pytest.fixture
def shown(make_napari_viewer, svs, annotation_file):
    """A viewer with the slide, its annotation layers and the Export patches dock."""
    from napari_slideseg._widgets.export import ExportWidget

    viewer = make_napari_viewer()
    (slide_layer,) = viewer.open(str(svs.path), plugin="napari-slideseg")
    viewer.open(str(annotation_file), plugin="napari-slideseg")
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, slide_layer, widget


def _wait(qtbot, widget, timeout=60000):
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


def _shown(field):
    """Whether the form shows a field (``visible`` is False while the window is hidden)."""
    return not field.native.isHidden()


def _manifest(folder):
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_widget_offers_the_parameters_of_export_patches(shown):
    _, _, widget = shown
    given_apart = {"slide", "annotations", "out", "progress", "cancel"}
    not_offered = {"scheduler"}  # a dask cluster is for the command line and scripts
    expected = set(inspect.signature(export_patches).parameters) - given_apart - not_offered
    assert set(widget.export_kwargs()) == expected
    assert set(widget.plan_kwargs()) <= set(inspect.signature(plan_patches).parameters)


def test_defaults_and_the_slides_annotation_layers(shown):
    viewer, slide_layer, widget = shown
    assert widget.slide.value is slide_layer
    assert [la.name for la in widget.layers.value] == ["tumour", "stroma"]
    assert list(widget.classes.choices) == ["stroma", "tumour"]
    assert list(widget.level.choices) == [0, 1, 2]
    kwargs = widget.export_kwargs()
    assert (kwargs["size"], kwargs["level"], kwargs["image_format"], kwargs["quality"],
            kwargs["annotated_only"], kwargs["region"]) == (256, 0, "jpg", 90, True, None)
    assert widget.mpp.value == pytest.approx(MPP)  # never finer than the slide
    # a drawn layer is offered, not ticked; the preview grid is never offered
    drawn = viewer.add_shapes(scale=slide_layer.scale, name="drawn")
    assert drawn in widget.layers.choices and drawn not in widget.layers.value
    # what is ticked survives layer events: a rename, a new layer, a removal
    tumour, stroma = widget.layers.value
    widget.layers.value = [stroma]
    stroma.name = "stroma (edited)"
    viewer.add_points(name="other")
    viewer.layers.remove(drawn)
    assert widget.layers.value == [stroma] and drawn not in widget.layers.choices
    assert list(widget.classes.choices) == ["stroma (edited)"]  # a layer's name is its class
    for name in ("slide", "source", "layers", "annotation_file", "class_from", "key", "out",
                 "size", "overlap", "scale_by", "level", "mpp", "magnification", "region",
                 "rectangle", "edge", "workers", "annotated_only", "min_fraction", "classes",
                 "min_tissue", "use_ratio", "ratio", "seed", "image_format", "quality",
                 "mask_format", "png_compression", "dataset", "preview", "show_mask", "run",
                 "cancel"):
        assert getattr(widget, name).tooltip, name


def test_preview_draws_the_planned_patches_where_they_are(shown, qtbot, svs,
                                                          annotation_file):
    viewer, slide_layer, widget = shown
    widget.size.value = 128
    widget.overlap.value = 28
    widget.preview.changed.emit(True)
    _wait(qtbot, widget)
    expected = plan_patches(svs.path, annotation_file, size=128, overlap=28, level=0,
                            annotated_only=True)
    assert widget.last_error == ""
    grid = viewer.layers["patch grid"]
    np.testing.assert_array_equal(grid.metadata["slideseg_patches"], expected)
    assert widget.count.value.startswith(f"{len(expected)} patches")
    assert 0 < len(expected) < 15 * 20  # annotated only: fewer than the whole grid
    np.testing.assert_allclose(grid.scale, slide_layer.scale)
    np.testing.assert_allclose(grid.translate, slide_layer.translate)
    level0 = np.asarray(grid.data[0])
    for x, y, w, h, _ in expected.astype(int):
        # the edge line is centred on the patch's edge: world x * mpp lies between
        # pixels x - 1 and x, both drawn; the middle of the patch is inside
        assert level0[y + h // 2, x] == 2 and level0[y + h // 2, x + w - 1] == 2
        assert level0[y, x + w // 2] == 2 and level0[y + h - 1, x + w // 2] == 2
        assert level0[y + h // 2, max(x - 1, 0)] == 2 and level0[max(y - 1, 0), x + w // 2] == 2
        assert level0[y + h // 2, x + w // 2] == 1
        left_edge = grid.data_to_world((y + h // 2, x))[-1] - 0.5 * grid.scale[-1]
        assert left_edge == pytest.approx(x * MPP)
    outside = np.ones(level0.shape, bool)
    for x, y, w, h, _ in expected.astype(int):
        outside[max(0, y - 1):y + h + 1, max(0, x - 1):x + w + 1] = False
    assert not level0[outside].any()
    # coarser levels of the grid keep every edge (no line lost to the downsample)
    for k in range(1, len(grid.data)):
        ds = np.asarray(grid.downsample_factors[k], float)[-2:]
        level = np.asarray(grid.data[k])
        for x, y, w, h, _ in expected.astype(int)[::5]:
            row = int((y + h / 2) / ds[0])
            first, end = (int(np.ceil(v / ds[1] - 0.5)) for v in (x, x + w))
            assert level[row, first] == 2 and level[row, end - 1] == 2
    # a second preview replaces the layer
    widget.annotated_only.value = False
    widget.preview.changed.emit(True)
    _wait(qtbot, widget)
    assert [la.name for la in viewer.layers].count("patch grid") == 1
    assert len(viewer.layers["patch grid"].metadata["slideseg_patches"]) == \
        len(plan_patches(svs.path, None, size=128, overlap=28))


def test_export_from_the_widget_writes_what_the_api_writes(shown, qtbot, svs,
                                                           annotation_file, tmp_path):
    _, _, widget = shown
    widget.out.value = tmp_path / "widget"
    widget.size.value = 96
    widget.overlap.value = 16
    widget.level.value = 1
    widget.image_format.value = "png"
    widget.min_fraction.value = 0.1
    widget.classes.value = ["tumour"]
    widget.run.changed.emit(True)
    assert widget.running and not widget.run.enabled and widget.cancel.enabled
    _wait(qtbot, widget)
    assert widget.last_error == ""
    assert widget.run.enabled and widget.preview.enabled and not widget.cancel.enabled
    assert widget.bar.value == widget.bar.max > 1  # progress reached the widget as it ran
    rows = export_patches(svs.path, annotation_file, tmp_path / "api", size=96, overlap=16,
                          level=1, image_format="png", annotated_only=True,
                          min_fraction=0.1, classes=["tumour"], workers=2)
    assert 0 < len(rows) == len(widget.last_rows)
    assert (tmp_path / "widget" / "manifest.csv").read_text() == \
        (tmp_path / "api" / "manifest.csv").read_text()
    assert (tmp_path / "widget" / "key.json").read_text() == \
        (tmp_path / "api" / "key.json").read_text()
    for row in _manifest(tmp_path / "widget")[::4]:
        assert (tmp_path / "widget" / row["image"]).read_bytes() == \
            (tmp_path / "api" / row["image"]).read_bytes()
    report = widget.status.value
    assert report.startswith(f"Wrote {len(rows)} patches in ")
    assert str(tmp_path / "widget") in report and "stroma=1, tumour=2" in report


def test_current_view_exports_only_patches_in_view(shown, qtbot, svs, tmp_path):
    from napari_slideseg._widgets.export import export_from_viewer, view_region

    viewer, slide_layer, widget = shown
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = (600 * MPP, 1000 * MPP)  # level-0 (x, y) = (1000, 600)
    camera.zoom = 1.0 / MPP  # one screen pixel per level-0 pixel
    region = view_region(viewer, slide_layer)
    x0, y0, w, h = region
    assert 0 < w < 2501 and 0 < h < 1803
    widget.region.value = "current view"
    widget.annotated_only.value = False
    widget.size.value = 64
    widget.out.value = tmp_path / "view"
    widget.run.changed.emit(True)
    _wait(qtbot, widget)
    rows = _manifest(tmp_path / "view")
    expected = plan_patches(svs.path, None, size=64, region=region)
    assert len(rows) == len(expected) > 0
    for row in rows:
        x, y = int(row["x"]), int(row["y"])
        assert x0 <= x and x + 64 <= x0 + w and y0 <= y and y + 64 <= y0 + h
    # the scripting function takes the same view
    again = export_from_viewer(viewer, tmp_path / "script", slide_layer=slide_layer,
                               layers=[], region="view", size=64)
    assert [(r["x"], r["y"]) for r in again] == [(int(r["x"]), int(r["y"])) for r in rows]


def test_drawn_rectangle_is_the_region(shown, qtbot, svs):
    from napari_slideseg._widgets.export import rectangle_region

    viewer, slide_layer, widget = shown
    # drawn in a layer of its own frame: world µm = data * 2 + (10, 20)
    top, left, bottom, right = 300 * MPP, 400 * MPP, 900 * MPP, 1300 * MPP
    data = (np.array([[top, left], [bottom, right]]) - [10, 20]) / 2
    shapes = viewer.add_shapes([data], shape_type="rectangle", scale=(2, 2),
                               translate=(10, 20), name="box")
    np.testing.assert_allclose(rectangle_region(shapes, slide_layer), [400, 300, 900, 600])
    widget.region.value = "drawn rectangle"
    assert widget.rectangle.value is shapes and _shown(widget.rectangle)
    widget.annotated_only.value = False
    widget.size.value = 100
    widget.preview.changed.emit(True)
    _wait(qtbot, widget)
    plan = viewer.layers["patch grid"].metadata["slideseg_patches"]
    np.testing.assert_array_equal(plan, plan_patches(svs.path, None, size=100,
                                                     region=[400, 300, 900, 600]))
    assert len(plan) == 9 * 6 and plan[:, 0].min() == 400 and plan[:, 1].min() == 300


def test_cancel_stops_early_and_leaves_no_partial_files(shown, qtbot, tmp_path):
    _, _, widget = shown
    out = tmp_path / "cancelled"
    widget.out.value = out
    widget.annotated_only.value = False
    widget.size.value = 32
    widget.image_format.value = "png"
    widget.workers.value = 1
    seen = []

    def cancel_on_first_progress(done, total):
        seen.append((done, total))
        if len(seen) == 1:
            assert not widget.run.enabled and not widget.preview.enabled
            widget.cancel.changed.emit(True)

    widget._progress.changed.connect(cancel_on_first_progress)
    widget.run.changed.emit(True)
    _wait(qtbot, widget)
    total = seen[0][1]
    assert total == (2501 // 32) * (1803 // 32)
    rows = _manifest(out)
    assert 0 < len(rows) < total
    assert widget.status.value.startswith(f"Cancelled: wrote {len(rows)} patches")
    assert not list(out.rglob(".*"))  # no temporary (hidden) file is left behind
    images = sorted(p.name for p in out.rglob("images/*.png"))
    assert images == sorted(row["image"].rsplit("/", 1)[-1] for row in rows)
    assert widget.run.enabled and not widget.cancel.enabled


def test_show_mask_is_the_rasterised_annotations(shown, qtbot, svs, annotation_file):
    viewer, slide_layer, widget = shown
    widget.show_mask.changed.emit(True)
    _wait(qtbot, widget)
    mask = viewer.layers[f"{slide_layer.name} mask"]
    assert mask.multiscale and len(mask.data) == 3
    np.testing.assert_allclose(mask.scale, slide_layer.scale)
    np.testing.assert_allclose(mask.translate, slide_layer.translate)
    ann = read_annotations(annotation_file)
    key = AnnotationKey.from_annotations([ann])
    assert key.values == {"stroma": 1, "tumour": 2}
    slide = slide_layer.metadata["slideseg_slide"]
    for k, ds in enumerate(slide.level_downsamples):
        w, h = slide.level_dimensions[k]
        assert mask.data[k].shape == (h, w)
        # level 0: a window over both classes; the reduced levels whole
        r0, r1, c0, c1 = (300, 700, 1000, 1600) if k == 0 else (0, h, 0, w)
        window = np.asarray(mask.data[k][r0:r1, c0:c1])
        expected = rasterize(ann, key, (c0 * ds, r0 * ds, c1 - c0, r1 - r0), ds)
        np.testing.assert_array_equal(window, expected)
        assert set(np.unique(window)) == {0, 1, 2}
    assert tuple(mask.colormap.map(2)[:3]) == pytest.approx((1, 0, 0))
    assert tuple(mask.colormap.map(1)[:3]) == pytest.approx((0, 1, 0))
    assert widget.status.value == "Mask shown: stroma=1, tumour=2."


def test_errors_are_reported_in_the_widget(shown, qtbot, tmp_path):
    _, _, widget = shown
    widget.run.changed.emit(True)  # no output folder yet
    assert widget.status.value == "Error: choose an output folder first."
    widget.scale_by.value = "mpp"
    widget.mpp.value = 0.1  # finer than the slide's 0.2527 µm/px
    assert _shown(widget.mpp) and not _shown(widget.level)
    widget.preview.changed.emit(True)
    _wait(qtbot, widget)
    assert widget.count.value.startswith("Error: ") and "finer than" in widget.count.value
    assert widget.preview.enabled and "patch grid" not in widget.viewer.layers
    widget.scale_by.value = "level"
    widget.source.value = "file"
    assert _shown(widget.annotation_file) and not _shown(widget.layers)
    widget.preview.changed.emit(True)
    assert widget.count.value == ("Error: choose an annotation file, or take the viewer's "
                                  "layers.")
    widget.annotation_file.value = tmp_path / "missing.xml"
    widget.preview.changed.emit(True)
    _wait(qtbot, widget)
    assert widget.count.value.startswith("Error: ") and "missing.xml" in widget.count.value


def test_a_large_annotation_file_shown_as_labels_is_offered(make_napari_viewer, svs,
                                                             annotation_file, monkeypatch,
                                                             qtbot):
    from napari_slideseg._widgets.export import ExportWidget

    monkeypatch.setenv("SLIDESEG_SHAPES_LIMIT", "1")  # two area regions: shown as labels
    viewer = make_napari_viewer()
    viewer.open(str(svs.path), plugin="napari-slideseg")
    (labels,) = viewer.open(str(annotation_file), plugin="napari-slideseg")
    assert labels._type_string == "labels"
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.layers.value == [labels]
    widget.size.value = 128
    widget.preview.changed.emit(True)
    _wait(qtbot, widget)
    np.testing.assert_array_equal(
        viewer.layers["patch grid"].metadata["slideseg_patches"],
        plan_patches(svs.path, annotation_file, size=128, annotated_only=True))
