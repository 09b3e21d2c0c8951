"""npe2 reader and sample data, without a viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slideseg import SlideSegError
from napari_slideseg._reader import napari_get_reader, read_slide


@pytest.mark.parametrize("name", ["image.png", "notes.txt", "table.csv"])
def test_reader_declines_other_files(tmp_path, name):
    (tmp_path / name).write_bytes(b"x")
    assert napari_get_reader(str(tmp_path / name)) is None


def test_reader_declines_folder_without_dicom(tmp_path):
    assert napari_get_reader(str(tmp_path)) is None


def test_reader_layer_data(svs):
    reader = napari_get_reader(str(svs.path))
    assert reader is read_slide
    (layer,) = reader(str(svs.path))
    data, kwargs, kind = layer
    assert kind == "image"
    assert kwargs["multiscale"] and kwargs["rgb"]
    assert kwargs["contrast_limits"] == (0, 255)
    assert kwargs["scale"] == pytest.approx((0.2527, 0.2527))
    assert kwargs["units"] == ("µm", "µm")
    assert kwargs["metadata"]["properties"]["openslide.vendor"] == "aperio"
    assert [a.shape for a in data] == [(1803, 2501, 3), (450, 625, 3), (112, 156, 3)]
    slide = kwargs["metadata"]["slideseg_slide"]
    assert slide.cache_info()["backend_reads"] == 0
    np.testing.assert_array_equal(data[1][10:20, 10:20].compute(),
                                  slide.read_region((40, 40), 1, (10, 10)))


def test_reader_raises_package_error_for_damaged_file(tmp_path):
    path = tmp_path / "damaged.svs"
    path.write_bytes(b"II*\x00" + b"\x01" * 200)
    reader = napari_get_reader(str(path))
    assert reader is not None
    with pytest.raises(SlideSegError, match="damaged.svs"):
        reader(str(path))


def test_sample_layers(tmp_path):
    from napari_slideseg._sample_data import sample_layers

    layers = sample_layers(tmp_path)
    kinds = [kind for _, _, kind in layers]
    assert kinds == ["image", "shapes", "shapes", "shapes"]
    names = [kw["name"] for _, kw, _ in layers]
    assert names == ["sample slide", "Tumour", "Stroma", "Glass"]
    image, image_kwargs, _ = layers[0]
    assert len(image) == 3 and image_kwargs["scale"] == (0.5, 0.5)
    tumour_data, tumour, _ = layers[1]
    regions = tumour["metadata"]["slideseg_annotation_layer"].regions
    lumens = [r for r in regions if r.negative]
    assert lumens and len(tumour_data) == len(regions) - len(lumens)
    # every lumen is a hole of the tumour polygon around it, not a shape of its own
    holes = [j for hole_ids, _ in tumour["metadata"]["slideseg_shapes"].values()
             for j in hole_ids]
    assert sorted(holes) == [i for i, r in enumerate(regions) if r.negative]
    assert not any(tumour["features"]["negative"])
    for _, kwargs, _ in layers[1:]:
        assert kwargs["scale"] == image_kwargs["scale"]
