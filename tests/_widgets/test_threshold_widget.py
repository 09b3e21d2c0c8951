"""The Threshold dock in a real napari viewer: view, whole slide, any image, live slider."""

from __future__ import annotations

import time
from dataclasses import asdict, fields

import numpy as np
import pytest

from napari_slideseg import open_slide, polygons_to_labels, read_annotations
from napari_slideseg.core import synthetic as sy
from napari_slideseg.core.threshold import (
    ThresholdParams,
    threshold_image,
    threshold_level,
)

pytestmark = pytest.mark.gui

MPP = 0.2527  # the svs fixture's pixel size


@pytest.fixture
def shown(make_napari_viewer, svs):
    """A shown viewer (napari picks pyramid levels as it draws) with the slide and dock."""
    from napari_slideseg._widgets.threshold import ThresholdWidget

    viewer = make_napari_viewer(show=True)
    (slide_layer,) = viewer.open(str(svs.path), plugin="napari-slideseg")
    widget = ThresholdWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, slide_layer, widget


def _camera(viewer):
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera


def _wait(qtbot, widget, timeout=60000):
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


def _run(qtbot, widget):
    widget.run.changed.emit(True)
    _wait(qtbot, widget)
    assert widget.last_error == ""


def _show_level(qtbot, viewer, layer, level, center, zoom):
    """Point the camera and wait until napari draws ``level``."""
    camera = _camera(viewer)
    camera.center = center
    camera.zoom = zoom
    qtbot.waitUntil(lambda: layer.data_level == level, timeout=5000)


def _values_at(layer, world_points):
    return np.array([layer.get_value(p, world=True) for p in world_points])


def test_widget_offers_every_threshold_parameter(shown):
    _, slide_layer, widget = shown
    assert widget.image.value is slide_layer
    assert {f.name for f in fields(ThresholdParams)} == set(asdict(widget.params()))
    widget.channel.value = "od"
    widget.sigma_um.value = 2.5
    widget.value.value = 0.3
    widget.method.value = "manual"
    widget.quantile.value = 0.25
    widget.side.value = "below"
    widget.open_um.value = 1.5
    widget.close_um.value = 3.0
    widget.fill_holes.value = True
    widget.min_area_um2.value = 100.0
    widget.min_hole_um2.value = 20.0
    widget.flatten_um.value = 500.0
    assert widget.params() == ThresholdParams(
        channel="od", sigma_um=2.5, method="manual", value=pytest.approx(0.3, abs=0.01),
        quantile=0.25, above=False, open_um=1.5, close_um=3.0, fill_holes=True,
        min_area_um2=100.0, min_hole_um2=20.0, flatten_um=500.0)
    for name in ("image", "region", "scale_by", "level", "mpp", "channel", "sigma_um",
                 "method", "quantile", "value", "side", "open_um", "close_um", "fill_holes",
                 "min_area_um2", "min_hole_um2", "flatten_um", "tissue", "run", "cancel",
                 "tolerance_um", "polygons"):
        assert getattr(widget, name).tooltip, name


def test_current_view_at_a_reduced_level_is_read_region_and_lines_up(shown, qtbot):
    viewer, slide_layer, widget = shown
    # level-0 (x, y) = (1200, 900) in the middle, 0.15 screen pixels per level-0 pixel:
    # napari draws level 1
    _show_level(qtbot, viewer, slide_layer, 1, (900 * MPP, 1200 * MPP), 0.15 / MPP)
    widget.channel.value = "od"
    widget.sigma_um.value = 1.0
    widget.min_area_um2.value = 20.0
    _run(qtbot, widget)
    result = widget.last_result
    slide = open_slide(widget.image.value.metadata["path"])
    ds = slide.level_downsamples[1]
    assert result.downsample == pytest.approx(ds)
    x0, y0 = result.origin
    h, w = result.labels.shape
    assert (x0 / ds, y0 / ds) == pytest.approx((round(x0 / ds), round(y0 / ds)))
    # the same region read with Slide.read_region at that level, thresholded alike
    rgb = slide.read_region((round(x0), round(y0)), 1, (w, h))
    expected = threshold_image(rgb, widget.params(), mpp=MPP * ds)
    np.testing.assert_array_equal(result.labels, expected.labels)
    assert result.threshold == pytest.approx(expected.threshold)
    assert 0 < result.count and 0.05 < result.fraction() < 0.95
    # the view is covered
    from napari_slideseg._widgets.annotations import view_box

    bx0, by0, bx1, by1 = view_box(viewer, slide_layer)
    assert x0 <= max(bx0, 0) and x0 + w * ds >= min(bx1, 2501) - ds
    assert y0 <= max(by0, 0) and y0 + h * ds >= min(by1, 1803) - ds
    # in world coordinates, level-0 point (x, y) lies in label pixel
    # (floor((y - y0) / ds), floor((x - x0) / ds))
    layer = viewer.layers["threshold"]
    rng = np.random.default_rng(1)
    xs = rng.uniform(x0 + 1, x0 + w * ds - 1, 300)
    ys = rng.uniform(y0 + 1, y0 + h * ds - 1, 300)
    world = np.column_stack([ys * MPP, xs * MPP])
    rows = np.floor((ys - y0) / ds).astype(int)
    cols = np.floor((xs - x0) / ds).astype(int)
    np.testing.assert_array_equal(_values_at(layer, world), result.labels[rows, cols])
    # the label pixel's corner is the slide's level-0 point (x0, y0): world (y0, x0) * mpp
    corner = layer.data_to_world((-0.5, -0.5))
    np.testing.assert_allclose(corner, (y0 * MPP, x0 * MPP), atol=1e-9)
    assert widget.status.value.startswith(f"{result.count} object")
    assert f"threshold {result.threshold:.4g}" in widget.status.value


def test_whole_slide_at_a_level_and_at_a_pixel_size(shown, qtbot):
    viewer, slide_layer, widget = shown
    widget.region.value = "whole image"
    assert widget.level.value == 2  # the smallest level by default
    widget.level.value = 1
    widget.tissue.changed.emit(True)
    assert widget.level.value == 2 and widget.region.value == "whole image"  # ~8 µm/px
    widget.level.value = 1
    _run(qtbot, widget)
    result = widget.last_result
    with open_slide(slide_layer.metadata["path"]) as slide:
        ds = slide.level_downsamples[1]
        expected = threshold_image(slide.pyramid[1].compute(), widget.params(), mpp=MPP * ds)
    np.testing.assert_array_equal(result.labels, expected.labels)
    assert result.count >= 1 and result.origin == (0, 0)
    layer = viewer.layers["threshold"]
    np.testing.assert_allclose(layer.scale, (ds * MPP, ds * MPP))
    np.testing.assert_allclose(layer.translate, (ds * MPP / 2, ds * MPP / 2))
    # at a pixel size: read at 2 µm/px
    widget.scale_by.value = "mpp"
    widget.mpp.value = 2.0
    _run(qtbot, widget)
    result = widget.last_result
    assert result.downsample == pytest.approx(2.0 / MPP, rel=0.01)
    assert result.labels.shape == (round(1803 * MPP / 2), round(2501 * MPP / 2))
    assert [la.name for la in viewer.layers].count("threshold") == 1


def test_manual_slider_updates_the_result_live_and_fast(make_napari_viewer, qtbot):
    """A 2048 x 2048 image layer (not from this plugin), thresholded in view; the slider
    re-thresholds the kept channel."""
    from napari_slideseg._widgets.threshold import ThresholdWidget

    viewer = make_napari_viewer(show=True)
    image, _ = sy.tissue_image(2048, 2048, seed=4)
    layer = viewer.add_image(image, rgb=True, name="plain rgb")
    viewer.reset_view()
    widget = ThresholdWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.image.value is layer
    widget.channel.value = "grey"
    widget.side.value = "below"
    widget.sigma_um.value = 2.0  # pixels: the layer has no pixel size
    _run(qtbot, widget)
    first = widget.last_result
    assert first.labels.shape == (2048, 2048)  # the whole image is in view
    widget.method.value = "manual"
    assert widget.value.enabled
    lo, hi = widget.value.min, widget.value.max
    assert lo < first.threshold < hi
    labels = viewer.layers["threshold"]
    seconds, walls = [], []
    for value in np.linspace(first.threshold - 30, first.threshold + 30, 7):
        before = labels.data
        started = time.perf_counter()
        widget.value.value = float(value)
        qtbot.waitUntil(lambda before=before: labels.data is not before, timeout=5000)
        walls.append(time.perf_counter() - started)
        seconds.append(widget.last_update_seconds)
        expected = threshold_image(image, channel="grey", above=False, sigma_um=2.0,
                                   method="manual", value=float(widget.value.value))
        np.testing.assert_array_equal(labels.data, expected.labels)
        assert f"threshold {float(widget.value.value):.4g}" in widget.status.value
    assert viewer.layers["threshold"] is labels  # updated in place, not re-added
    print(f"\nmanual threshold on 2048 x 2048: update {np.median(seconds) * 1000:.0f} ms "
          f"median (re-threshold, label, layer data), {np.median(walls) * 1000:.0f} ms "
          "from the slider move")
    assert np.median(seconds) < 1.0
    # a burst of moves computes the last one only
    for value in (first.threshold - 5, first.threshold, first.threshold + 5):
        widget.value.value = float(value)
    qtbot.waitUntil(lambda: not widget._timer.isActive(), timeout=5000)
    qtbot.wait(50)
    expected = threshold_image(image, channel="grey", above=False, sigma_um=2.0,
                               method="manual", value=float(widget.value.value))
    np.testing.assert_array_equal(labels.data, expected.labels)


def test_any_image_layer_in_its_own_frame(make_napari_viewer, qtbot):
    """A single-channel float layer with a scale and translate: the result lies over it."""
    from napari_slideseg._widgets.threshold import threshold_layer

    viewer = make_napari_viewer()
    yy, xx = np.mgrid[:300, :400]
    channel = np.where((yy - 150) ** 2 + (xx - 120) ** 2 < 60 ** 2, 5.0, 1.0)
    channel[20:60, 300:380] = 4.0
    layer = viewer.add_image(channel, scale=(2.5, 2.5), translate=(10.0, -7.0),
                             units=("µm", "µm"))
    result = threshold_layer(viewer, layer, method="otsu")
    assert result.count == 2
    labels = viewer.layers["threshold"]
    # every pixel centre of the image has its label's value there
    rows, cols = np.mgrid[0:300:7, 0:400:7]
    world = [layer.data_to_world((r, c)) for r, c in zip(rows.ravel(), cols.ravel(),
                                                          strict=True)]
    np.testing.assert_array_equal(_values_at(labels, world),
                                  result.labels[rows.ravel(), cols.ravel()])
    np.testing.assert_allclose(labels.scale, layer.scale)
    np.testing.assert_allclose(labels.translate, layer.translate)
    # areas in µm² use the layer's scale: the 40 x 80 px block is 20000 µm², the disc
    # about 70700 µm²
    assert threshold_layer(viewer, layer, method="otsu", min_area_um2=19000).count == 2
    assert threshold_layer(viewer, layer, method="otsu", min_area_um2=21000).count == 1


def test_whole_slide_at_a_large_level_is_a_lazy_multiscale_mask(shown, qtbot, monkeypatch):
    from napari_slideseg._widgets import threshold as module

    viewer, slide_layer, widget = shown
    monkeypatch.setattr(module, "LAZY_PIXELS", 1_000_000)  # level 0 (4.5 MP) is large
    widget.region.value = "whole image"
    widget.level.value = 0
    widget.channel.value = "od"
    widget.sigma_um.value = 2.0
    widget.close_um.value = 2.0
    _run(qtbot, widget)
    layer = viewer.layers["threshold"]
    assert layer.multiscale and len(layer.data) == 3
    assert [d.shape for d in layer.data] == [(1803, 2501), (450, 625), (112, 156)]
    assert all(hasattr(d, "dask") for d in layer.data)  # nothing computed up front
    np.testing.assert_allclose(layer.scale, (MPP, MPP))
    np.testing.assert_allclose(layer.translate, slide_layer.translate)
    masks = widget.last_result
    with open_slide(slide_layer.metadata["path"]) as slide:
        expected, t = threshold_level(slide, 0, widget.params())
        assert masks.threshold == pytest.approx(t)
        window = np.asarray(layer.data[0][600:1100, 900:1500])
        np.testing.assert_array_equal(window, expected[600:1100, 900:1500].compute())
    assert set(np.unique(window)) == {0, 1}
    assert widget.status.value.startswith("Mask of level 0 (2501 x 1803 px")
    # the same through the scripting function
    again = module.threshold_slide(viewer, slide_layer, widget.params(), level=0, lazy=True)
    assert again.level == 0 and len(again.masks) == 3
    # outlines of a lazy result come from its largest level under the limit
    added = module.threshold_to_shapes(viewer)
    assert added and added[0].name == "threshold outlines"


def test_to_polygons_rasterise_back_to_the_labels(shown, qtbot, tmp_path):
    from napari_slideseg._layers import shapes_to_annotations
    from napari_slideseg._writer import write_shapes

    viewer, slide_layer, widget = shown
    widget.region.value = "whole image"
    widget.level.value = 1
    widget.channel.value = "hematoxylin"
    widget.sigma_um.value = 1.0
    _run(qtbot, widget)
    result = widget.last_result
    assert result.count > 3
    widget.tolerance_um.value = 0.0
    widget.polygons.changed.emit(True)
    shapes = viewer.layers["threshold outlines"]
    assert widget.status.value.startswith(f"{len(shapes.data)} outline")
    data, attrs, _ = shapes.as_layer_data_tuple()
    ann = shapes_to_annotations([(data, attrs)])
    assert any(r.holes for _, r in ann.regions())  # holes are kept
    h, w = result.labels.shape
    back = polygons_to_labels(ann, (h, w), downsample=result.downsample,
                              origin=result.origin)
    np.testing.assert_array_equal(back > 0, result.labels > 0)
    # saved with the plugin's writer: GeoJSON in level-0 pixels (holes per polygon), the
    # same pixels
    path = tmp_path / "outlines.geojson"
    write_shapes(str(path), [(data, attrs, "shapes")])
    saved = read_annotations(path)
    back = polygons_to_labels(saved, (h, w), downsample=result.downsample)
    np.testing.assert_array_equal(back > 0, result.labels > 0)
    # a tolerance in µm simplifies
    widget.tolerance_um.value = 2.0
    widget.polygons.changed.emit(True)
    simplified = [la for la in viewer.layers if la.name.startswith("threshold outlines")][-1]
    assert sum(len(d) for d in simplified.data) < sum(len(d) for d in shapes.data)


def test_errors_are_reported_in_the_widget(shown, qtbot):
    viewer, slide_layer, widget = shown
    _camera(viewer).center = (-1e6, -1e6)  # far from the slide
    widget.run.changed.emit(True)
    _wait(qtbot, widget)
    assert widget.status.value.startswith("Error: the current view does not show")
    assert "threshold" not in viewer.layers
    widget.polygons.changed.emit(True)
    assert widget.status.value == "Error: no result to outline: run a threshold first."
