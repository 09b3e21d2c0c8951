"""Annotations <-> napari Shapes layer data, without a viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slideseg import read_annotations, write_annotations
from napari_slideseg._layers import annotation_layers_data, shapes_to_annotations
from napari_slideseg._writer import write_shapes


def _pairs(layers):
    """Editable copies of layer data: lists of shapes, feature columns as lists."""
    out = []
    for data, kwargs, _ in layers:
        kw = dict(kwargs, features={k: list(v) for k, v in kwargs["features"].items()})
        out.append((list(data), kw))
    return out


def test_layers_follow_the_file(aperio_file):
    ann = read_annotations(aperio_file)
    layers = annotation_layers_data(ann, scale=(0.25, 0.25), units=("µm", "µm"))
    assert [kw["name"] for _, kw, _ in layers] == ["Tumour", "2", "Stroma & <other>"]
    data, kw, kind = layers[0]
    assert kind == "shapes" and kw["scale"] == (0.25, 0.25)
    # the negative region lies inside region 1: one polygon with a hole, not two shapes
    assert kw["shape_type"] == ["polygon", "rectangle", "ellipse", "line", "line"]
    assert list(kw["features"]["id"]) == ["1", "3", "4", "5", "6"]
    assert list(kw["features"]["type"]) == ["polygon", "rectangle", "ellipse", "arrow",
                                            "ruler"]
    np.testing.assert_allclose(kw["edge_color"][0], [1, 0, 0, 1])  # COLORREF 255 = red
    polygon = data[0]  # (row, col): the outer ring, then the hole and back
    np.testing.assert_array_equal(polygon[0], [100, 100])
    assert [120, 120] in polygon.tolist() and [140, 140] in polygon.tolist()
    # area in µm² at the file's 0.252 µm/px, hole subtracted; rulers have no area
    hole_area = 0.5 * 20 * 20
    assert kw["features"]["area_um2"][0] == pytest.approx((100.5 * 100.25 - hole_area)
                                                          * 0.252 ** 2)
    assert kw["features"]["area_um2"][4] == 0 and kw["features"]["length_um"][4] == \
        pytest.approx(50 * 0.252)
    np.testing.assert_array_equal(data[2], [[500, 500], [500, 600], [560, 600], [560, 500]])


def test_untouched_layers_save_unchanged(aperio_file, tmp_path, xml_equal):
    ann = read_annotations(aperio_file)
    layers = annotation_layers_data(ann, scale=(0.252, 0.252))
    out = tmp_path / "saved.xml"
    assert write_shapes(str(out), [(d, k, "shapes") for d, k, _ in layers]) == [str(out)]
    xml_equal(aperio_file, out)


def test_edited_layers_keep_ids_and_new_shapes_get_fresh_ones(aperio_file, tmp_path):
    ann = read_annotations(aperio_file)
    pairs = _pairs(annotation_layers_data(ann, scale=(0.252, 0.252), units=("µm", "µm")))
    data, kw = pairs[0]
    # move the polygon (with its hole) by (+10 rows, +20 cols); delete the arrow
    data[0] = data[0] + [10, 20]
    del data[3]
    kw["shape_type"] = kw["shape_type"][:3] + kw["shape_type"][4:]
    kw["features"] = {k: v[:3] + v[4:] for k, v in kw["features"].items()}
    # a rectangle drawn in napari: no region index
    data.append(np.array([[0, 0], [0, 50], [30, 50], [30, 0]], float))
    kw["shape_type"].append("rectangle")
    for k, v in kw["features"].items():
        v.append(kw["feature_defaults"][k])
    kw["features"]["text"][-1] = "drawn"
    back = shapes_to_annotations(pairs, mpp=0.252)
    out = tmp_path / "edited.xml"
    write_annotations(back, out)
    again = read_annotations(out)
    tumour = again[0]
    assert [r.id for r in tumour.regions] == ["1", "2", "3", "4", "6", "8"]
    moved, hole = tumour.regions[0], tumour.regions[1]
    assert moved.attributes["GeoShape"] == "Polygon" and moved.text == "tumour a"
    np.testing.assert_array_equal(moved.vertices[0], [120, 110])  # x + 20, y + 10
    assert hole.negative and hole.id == "2"
    np.testing.assert_array_equal(hole.vertices[0], [140, 130])
    # the moved region's measures are recomputed; the untouched ones are kept verbatim
    assert float(moved.attributes["Area"]) == pytest.approx(100.5 * 100.25)
    assert float(moved.attributes["AreaMicrons"]) == pytest.approx(100.5 * 100.25 * 0.252 ** 2)
    assert tumour.regions[2].attributes == ann[0].regions[2].attributes
    drawn = tumour.regions[-1]
    assert drawn.type == "rectangle" and drawn.text == "drawn"
    np.testing.assert_array_equal(drawn.vertices, [[0, 0], [50, 0], [50, 30], [0, 30]])
    assert float(drawn.attributes["Area"]) == 1500.0
    assert again[1].name == "" and again[2].regions[0].attributes == ann[2].regions[0].attributes


def test_layers_drawn_from_scratch_save_as_every_format(tmp_path):
    kw = {"name": "Necrosis", "shape_type": ["polygon", "ellipse", "path"],
          "edge_color": np.array([[0, 0.5, 1, 1]] * 3), "scale": (0.5, 0.5),
          "units": ("µm", "µm"), "features": {}}
    data = [np.array([[0, 0], [0, 10], [10, 10]], float),
            np.array([[20, 20], [20, 40], [30, 40], [30, 20]], float),
            np.array([[0, 0], [5, 5], [5, 9]], float)]
    for suffix, fmt, loss in ((".xml", "aperio", "ImageScope has no 'line'"),
                              (".geojson", "geojson", "ellipse is written as a 64-point")):
        out = tmp_path / f"drawn{suffix}"
        with pytest.warns(UserWarning, match=loss):
            write_shapes(str(out), [(data, kw, "shapes")])
        ann = read_annotations(out)
        assert ann.format == fmt and ann[0].name == "Necrosis"
        assert ann[0].color == (0, 128, 255)
        types = [r.type for r in ann[0].regions]
        np.testing.assert_array_equal(ann[0].regions[0].vertices[:3], [[0, 0], [10, 0],
                                                                       [10, 10]])
        if fmt == "aperio":  # an open path becomes a freehand region; the ellipse stays
            assert ann.mpp == 0.5 and types == ["polygon", "ellipse", "polygon"]
            np.testing.assert_array_equal(ann[0].regions[1].vertices, [[20, 20], [40, 30]])
        else:
            assert types == ["polygon", "polygon", "line"]


@pytest.mark.parametrize(("scale", "translate"), [((0.25, 0.25), (0.125, 0.125)),
                                                  ((2.0, 3.0), (10.0, -7.0))])
@pytest.mark.parametrize(("downsample", "origin"), [(1.0, (0.0, 0.0)),
                                                    (4.0016, (1200.6, 803.2)),
                                                    (16.03, (0.0, 0.0))])
def test_threshold_labels_lie_where_their_pixels_are(scale, translate, downsample, origin):
    """Label (i, j) at downsample d from origin (x0, y0) covers the source's level-0
    pixel-corner box [x0 + j d, x0 + (j + 1) d) x [y0 + i d, y0 + (i + 1) d); the source
    layer centres its pixel (r, c) on world translate + (r, c) * scale."""
    from napari_slideseg._layers import threshold_labels_data

    _, kwargs, kind = threshold_labels_data(np.zeros((5, 7), np.int32), downsample, origin,
                                            scale, translate)
    assert kind == "labels"
    s, t = np.asarray(kwargs["scale"]), np.asarray(kwargs["translate"])
    x0, y0 = origin
    for i, j in ((0, 0), (4, 6), (2, 3)):
        centre_world = t + np.array([i, j]) * s  # napari centres label (i, j) here
        # the source's level-0 corner coordinates of that world point
        corner = (centre_world - np.asarray(translate)) / np.asarray(scale) + 0.5
        np.testing.assert_allclose(corner, (y0 + (i + 0.5) * downsample,
                                            x0 + (j + 0.5) * downsample))
    np.testing.assert_allclose(s, np.asarray(scale) * downsample)


def test_outlines_over_a_slide_have_no_translate_and_over_other_images_do():
    from napari_slideseg import AnnotationLayer, AnnotationSet, Region
    from napari_slideseg._layers import outline_layers_data

    ann = AnnotationSet([AnnotationLayer(name="t", regions=[
        Region([[0, 0], [4, 0], [4, 2], [0, 2]])])])
    (_, kwargs, _), = outline_layers_data(ann, (0.5, 0.5), (0.25, 0.25))
    assert "translate" not in kwargs  # a slide: world = level-0 (x, y) * mpp
    (_, kwargs, _), = outline_layers_data(ann, (2.0, 2.0), (10.0, 0.0))
    # pixel (0, 0) is centred on world (10, 0): its corner is at (9, -1)
    assert kwargs["translate"] == (9.0, -1.0)
