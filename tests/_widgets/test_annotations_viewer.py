"""Annotation files in a real napari viewer: sidecars, alignment, saving drawn shapes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slideseg import read_annotations
from napari_slideseg.core import synthetic as sy

pytestmark = pytest.mark.gui

MPP = 0.5
BOX = (100, 60, 200, 140)  # x0, y0, x1, y1: level-0 pixels [100, 200) x [60, 140)


def _box_slide(folder):
    """A white slide with one black box, and an Aperio rectangle on the box's edges."""
    w, h = 400, 300
    image = np.full((h, w, 3), 255, np.uint8)
    x0, y0, x1, y1 = BOX
    image[y0:y1, x0:x1] = 0
    sizes = sy.pyramid_dimensions(w, h, (1, 2))
    levels = sy.downsample_levels(image, sizes)
    path = folder / "box.svs"
    sy.write_aperio_svs(path, sizes, sy.array_tile_reader(levels), tile=128, mpp=MPP,
                        app_mag=20, quality=100)
    (folder / "box.xml").write_text(
        f'<Annotations MicronsPerPixel="{MPP}"><Annotation Id="1" Name="Box" '
        'LineColor="255"><Regions><Region Id="1" Type="1"><Vertices>'
        f'<Vertex X="{x0}" Y="{y0}"/><Vertex X="{x1}" Y="{y0}"/><Vertex X="{x1}" Y="{y1}"/>'
        f'<Vertex X="{x0}" Y="{y1}"/></Vertices></Region></Regions></Annotation>'
        '</Annotations>')
    return path


def _bbox(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return rows[0], rows[-1], cols[0], cols[-1]


def test_sidecar_opens_with_the_slide_and_lines_up_pixel_exactly(make_napari_viewer,
                                                                 tmp_path):
    path = _box_slide(tmp_path)
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(path), plugin="napari-slideseg")
    assert [la.name for la in layers] == ["box.svs", "Box"]
    image, shapes = layers
    np.testing.assert_allclose(shapes.scale, image.scale)
    assert shapes.shape_type == ["rectangle"]
    assert shapes.features["area_um2"][0] == pytest.approx(100 * 80 * MPP ** 2)
    # 6 screen pixels per level-0 pixel: half a pixel off would show as 3 screen pixels
    viewer.scene.camera.center = (100 * MPP, 150 * MPP)
    viewer.scene.camera.zoom = 6 / MPP
    shapes.visible = False
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    black = shot.sum(axis=2) < 60
    shapes.visible, image.visible = True, False
    shapes.face_color = "red"
    shapes.edge_width = 0
    shapes.opacity = 1.0
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    red = (shot[..., 0] > 200) & (shot[..., 1] < 60) & (shot[..., 2] < 60)
    assert black.sum() > 1000 and red.sum() > 1000
    box_image, box_shape = _bbox(black), _bbox(red)
    assert np.abs(np.subtract(box_image, box_shape)).max() <= 1, (box_image, box_shape)
    # the box is 100 x 80 level-0 pixels: 600 x 480 screen pixels
    assert abs((box_image[3] - box_image[2] + 1) - 600) <= 1


def test_annotation_file_aligns_to_the_slide_in_the_viewer(make_napari_viewer, svs,
                                                           aperio_file):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(svs.path), plugin="napari-slideseg")
    layers = viewer.open(str(aperio_file), plugin="napari-slideseg")
    assert [la.name for la in layers] == ["Tumour", "2", "Stroma & <other>"]
    for shapes in layers:
        np.testing.assert_allclose(shapes.scale, image.scale)  # the slide's 0.2527 µm/px
    np.testing.assert_array_equal(layers[0].data[0][0], [100, 100])  # (row, col) level 0


def test_shapes_drawn_in_napari_save_and_reload(make_napari_viewer, svs, tmp_path):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(svs.path), plugin="napari-slideseg")
    drawn = viewer.add_shapes(name="Necrosis", scale=image.scale, edge_color="#00ff00")
    drawn.add_polygons([np.array([[10, 10], [10, 90], [70, 90]], float)])
    drawn.add_rectangles([np.array([[200, 300], [260, 380]], float)])
    drawn.add_ellipses([np.array([[400, 400], [400, 480], [440, 480], [440, 400]], float)])
    out = tmp_path / "drawn.xml"
    viewer.layers.selection = {drawn}
    saved = viewer.layers.save(str(out), selected=True, plugin="napari-slideseg")
    assert saved == [str(out)]
    ann = read_annotations(out)
    assert ann.mpp == pytest.approx(0.2527) and ann[0].name == "Necrosis"
    assert ann[0].color == (0, 255, 0)
    assert [r.type for r in ann[0].regions] == ["polygon", "rectangle", "ellipse"]
    np.testing.assert_array_equal(ann[0].regions[0].vertices, [[10, 10], [90, 10], [90, 70]])
    np.testing.assert_array_equal(ann[0].regions[2].vertices, [[400, 400], [480, 440]])
    assert len({r.id for r in ann[0].regions}) == 3
    viewer.layers.remove(drawn)
    (reloaded,) = viewer.open(str(out), plugin="napari-slideseg")
    assert reloaded.shape_type == ["polygon", "rectangle", "ellipse"]
    np.testing.assert_array_equal(reloaded.data[0], [[10, 10], [10, 90], [70, 90]])
    np.testing.assert_allclose(reloaded.scale, image.scale)


@pytest.mark.shared
def test_packer_example_asap_lines_up_on_its_slide(make_napari_viewer, shared_data):
    slide = shared_data / "slides" / "packer-example.tif"
    viewer = make_napari_viewer(show=True)
    (image,) = viewer.open(str(slide), plugin="napari-slideseg")
    (shapes,) = viewer.open(str(shared_data / "annotations/asap/packer-example.xml"),
                            plugin="napari-slideseg")
    np.testing.assert_allclose(shapes.scale, image.scale)  # 0.9872 µm/px from the slide
    vertices = read_annotations(shared_data / "annotations/asap/packer-example.xml")[0] \
        .regions[0].vertices
    x0, y0 = vertices.min(axis=0)
    x1, y1 = vertices.max(axis=0)
    mpp = image.scale[0]
    f = 1.5  # screen pixels per level-0 pixel
    zoom = f / mpp
    viewer.scene.camera.center = ((y0 + y1) / 2 * mpp, (x0 + x1) / 2 * mpp)
    viewer.scene.camera.zoom = zoom
    image.visible = False
    shapes.face_color = "red"
    shapes.edge_width = 0
    shapes.opacity = 1.0
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    red = (shot[..., 0] > 200) & (shot[..., 1] < 60) & (shot[..., 2] < 60)
    top, bottom, left, right = _bbox(red)
    h, w = red.shape
    # world (µm) -> screen: centre of the canvas is the camera centre
    expect_left = (x0 - (x0 + x1) / 2) * f + w / 2
    expect_top = (y0 - (y0 + y1) / 2) * f + h / 2
    assert abs(left - expect_left) <= 1 and abs(top - expect_top) <= 1
    assert abs((right + 1 - left) - (x1 - x0) * f) <= 2
    assert abs((bottom + 1 - top) - (y1 - y0) * f) <= 2


def test_large_sets_show_as_labels_and_edit_in_view(make_napari_viewer, tmp_path,
                                                     monkeypatch):
    """Above the Shapes limit a file opens as lazy labels; the regions in view are edited
    as shapes and folded back; saving keeps the regions never shown."""
    from napari_slideseg import AnnotationLayer, AnnotationSet, Region, write_annotations
    from napari_slideseg._layers import META_SET
    from napari_slideseg._widgets.annotations import AnnotationsWidget

    monkeypatch.setenv("SLIDESEG_SHAPES_LIMIT", "10")
    path = _box_slide(tmp_path)
    squares = [Region([[x, y], [x + 20, y], [x + 20, y + 20], [x, y + 20]], type="polygon",
                      text=f"s{i}")
               for i, (x, y) in enumerate((x, y) for y in range(0, 300, 40)
                                          for x in range(0, 400, 40))]
    write_annotations(AnnotationSet([AnnotationLayer(name="cells", color=(0, 0, 255),
                                                     regions=squares)], mpp=MPP),
                      tmp_path / "box.xml")  # the sidecar: 80 regions
    viewer = make_napari_viewer(show=True)
    image, labels = viewer.open(str(path), plugin="napari-slideseg")
    assert labels._type_string == "labels" and labels.name == "box.xml [80 regions]"
    np.testing.assert_allclose(labels.scale, image.scale)
    level0 = np.asarray(labels.data[0][:45, :45])
    expected = np.zeros((45, 45), np.uint8)
    expected[0:20, 0:20] = expected[0:20, 40:45] = expected[40:45, 0:20] = 1
    expected[40:45, 40:45] = 1
    np.testing.assert_array_equal(level0, expected)  # pixel-exact squares, label 1
    widget = AnnotationsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.layer.value is labels
    viewer.scene.camera.center = (50 * MPP, 50 * MPP)  # level-0 (x, y) = (50, 50)
    viewer.scene.camera.zoom = 10 / MPP  # 10 screen px per level-0 px: ~70 x 60 px shown
    widget.edit.changed.emit(True)
    shapes = viewer.layers[-1]
    assert shapes._type_string == "shapes" and 1 <= len(shapes.data) < 80
    assert "regions in view" in widget.status.value
    # move the first square shown by 5 px down, then fold the edit back into the labels
    first = int(shapes.features["region"][0])
    moved = shapes.data[0] + [5, 0]
    shapes.data = [moved, *shapes.data[1:]]
    original = labels.metadata[META_SET][0].regions[first]
    widget.apply.changed.emit(True)
    assert shapes not in viewer.layers
    x, y = squares[first].vertices[0].astype(int)
    level0 = np.asarray(labels.data[0][y:y + 30, x:x + 20])
    assert (level0[:5] == 0).all() and (level0[5:25] == 1).all() and (level0[25:] == 0).all()
    # the full set, with the move, is what saving the regions writes
    edited = labels.metadata[META_SET]
    assert edited.region_count == 80
    np.testing.assert_array_equal(edited[0].regions[first].vertices[0], [x, y + 5])
    assert edited[0].regions[first].id == original.id and original.id is not None


def test_imported_layers_saved_from_the_viewer_are_unchanged(make_napari_viewer, aperio_file,
                                                             svs, tmp_path, xml_equal):
    viewer = make_napari_viewer()
    layers = viewer.open(str(aperio_file), plugin="napari-slideseg")
    out = tmp_path / "saved.xml"
    viewer.layers.selection = set(layers)
    assert viewer.layers.save(str(out), selected=True, plugin="napari-slideseg") == [str(out)]
    xml_equal(aperio_file, out)  # every element and attribute, in order
    # over a slide, the slide's pixel size is what the file records
    viewer.layers.clear()
    viewer.open(str(svs.path), plugin="napari-slideseg")
    layers = viewer.open(str(aperio_file), plugin="napari-slideseg")
    viewer.layers.selection = set(layers)
    viewer.layers.save(str(out), selected=True, plugin="napari-slideseg")
    assert read_annotations(out).mpp == pytest.approx(0.2527)
    assert (tmp_path / "saved.xml~").exists()
