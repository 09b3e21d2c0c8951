"""The plugin inside a real napari viewer (Qt under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slideseg import SlideSegError

pytestmark = pytest.mark.gui


def _open(viewer, path):
    layers = viewer.open(str(path), plugin="napari-slideseg")
    assert len(layers) == 1
    return layers[0]


def test_slide_opens_at_physical_scale(make_napari_viewer, svs):
    viewer = make_napari_viewer()
    layer = _open(viewer, svs.path)
    assert layer.multiscale and layer.rgb
    assert len(layer.data) == 3
    np.testing.assert_allclose(layer.scale, (0.2527, 0.2527))
    assert tuple(str(u) for u in layer.units) == ("micrometer", "micrometer")
    # world extent is the slide's physical size in µm
    extent = layer.extent.world
    np.testing.assert_allclose(extent[1] - extent[0], (1803 * 0.2527, 2501 * 0.2527), rtol=1e-3)


def test_slide_info_widget_and_associated_images(make_napari_viewer, svs):
    from napari_slideseg._widgets.slide_info import SlideInfoWidget

    viewer = make_napari_viewer()
    layer = _open(viewer, svs.path)
    widget = SlideInfoWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.layer_combo.currentText() == layer.name
    assert widget.fields["Vendor"].text() == "aperio (openslide)"
    assert widget.fields["Pixel size"].text() == "0.2527 x 0.2527 µm/px"
    assert widget.fields["Objective"].text() == "40x"
    assert widget.levels.rowCount() == 3
    assert widget.levels.item(1, 0).text() == "625"
    assert [widget.associated_combo.itemText(i) for i in range(widget.associated_combo.count())] \
        == ["label", "macro", "thumbnail"]
    widget.associated_combo.setCurrentText("label")
    widget.add_associated.click()
    added = viewer.layers[-1]
    assert added.name.endswith("[label]")
    np.testing.assert_array_equal(np.asarray(added.data), svs.label)


def test_slide_info_follows_the_level_napari_shows(make_napari_viewer, svs, qtbot):
    from napari_slideseg._widgets.slide_info import SlideInfoWidget

    viewer = make_napari_viewer(show=True)  # levels are chosen when the canvas draws
    layer = _open(viewer, svs.path)
    widget = SlideInfoWidget(viewer)
    viewer.window.add_dock_widget(widget)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = (200.0, 200.0)
    camera.zoom = 8.0  # 8 screen px per µm: finer than level 0 (0.25 µm/px)
    qtbot.waitUntil(lambda: layer.data_level == 0, timeout=5000)
    qtbot.waitUntil(lambda: widget.fields["Level shown"].text().startswith("0 "), timeout=5000)
    # napari takes the coarsest level that still gives one data pixel per screen pixel
    for zoom, level in ((0.3, 1), (0.04, 2)):  # canvas ~600 px: ~8000 / ~60000 px in view
        camera.zoom = zoom
        qtbot.waitUntil(lambda level=level: layer.data_level == level, timeout=5000)
        qtbot.waitUntil(
            lambda level=level: widget.fields["Level shown"].text().startswith(f"{level} "),
            timeout=5000)
        ds = layer.metadata["slideseg_slide"].level_downsamples[level]
        assert widget.fields["Level shown"].text() == f"{level} (downsample {ds:.3f})"


def test_every_readable_shared_slide_opens(make_napari_viewer, shared_data):
    viewer = make_napari_viewer()
    expected_scale = {"CMU-1-Small-Region.svs": 0.499, "boxes.tiff": 1.0,  # no pixel size
                      "packer-example.tif": 0.98720, "dicom-boxes": 0.499,
                      "OS-1-detail.ome.tif": 0.2271, "OS-2-ndpi.ome.tif": 0.2271}
    for name, mpp in expected_scale.items():
        layer = _open(viewer, shared_data / "slides" / name)
        np.testing.assert_allclose(layer.scale, (mpp, mpp), rtol=1e-4)


def test_unopenable_file_gives_clear_error_not_crash(make_napari_viewer, tmp_path):
    path = tmp_path / "damaged.svs"
    path.write_bytes(b"II*\x00" + b"\x01" * 200)
    viewer = make_napari_viewer()
    with pytest.raises(SlideSegError, match="damaged.svs.*holds no image"):
        viewer.open(str(path), plugin="napari-slideseg")
    assert len(viewer.layers) == 0


def test_screenshot_shows_the_slide(make_napari_viewer, svs):
    viewer = make_napari_viewer(show=True)
    _open(viewer, svs.path)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    rgb = shot[..., :3].astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    tissue = (r - g > 40) & (b - g > 10)  # pink/purple H&E
    glass = (r > 225) & (g > 225) & (b > 225)
    assert tissue.mean() > 0.05, "no tissue colours on screen"
    assert glass.mean() > 0.05, "no glass background on screen"


def test_corrupt_tile_does_not_kill_the_viewer(make_napari_viewer, corrupt_svs):
    path, (x, y) = corrupt_svs
    viewer = make_napari_viewer(show=True)
    # napari may read the damaged tile as soon as the layer is added
    with pytest.warns(RuntimeWarning, match="Shown as background"):
        layer = _open(viewer, path)
        block = np.asarray(layer.data[0][:512, :1024])
        viewer.reset_view()
        viewer.screenshot(canvas_only=True, flash=False)
    assert (block[y:y + 256, x:x + 256] == 255).all()
    assert len(viewer.layers) == 1


def test_sample_data_in_viewer(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-slideseg", "sample_slide")
    assert [la.name for la in layers] == ["sample slide", "Tumour", "Stroma", "Glass"]
    image, tumour, stroma, glass = layers
    np.testing.assert_allclose(image.scale, (0.5, 0.5))
    for shapes in (tumour, stroma, glass):
        np.testing.assert_allclose(shapes.scale, image.scale)
    assert stroma.shape_type == ["rectangle"] and glass.shape_type == ["ellipse"]
    # lumens (ImageScope negative regions) are holes of the tumour polygons
    assert any(holes for holes, _ in tumour.metadata["slideseg_shapes"].values())
    # the annotations lie on the slide: every vertex inside the level-0 extent
    h, w = image.data[0].shape[:2]
    for shapes in (tumour, stroma, glass):
        for vertices in shapes.data:
            assert (vertices[:, 0] >= 0).all() and (vertices[:, 0] <= h).all()
            assert (vertices[:, 1] >= 0).all() and (vertices[:, 1] <= w).all()
