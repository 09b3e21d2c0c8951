"""The real slides in ../shared/data (skipped when that folder is absent)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_slideseg import UnsupportedSlideError, open_slide

pytestmark = pytest.mark.shared

# name -> (vendor, level-0 (w, h), mpp x (None: unknown), level count, associated images)
READABLE = {
    "CMU-1-Small-Region.svs": ("aperio", (2220, 2967), 0.499, 1, {"label", "macro", "thumbnail"}),
    "boxes.tiff": ("generic-tiff", (300, 250), None, 4, set()),  # 72 dpi is no pixel size
    "packer-example.tif": ("generic-tiff", (1472, 690), 0.98719728520746564, 3, set()),
    "dicom-boxes": ("dicom", (16, 16), 0.499, 1, {"thumbnail"}),
    "dicom-boxes/boxes_0.dcm": ("dicom", (16, 16), 0.499, 1, {"thumbnail"}),
    "OS-1-detail.ome.tif": ("ome-tiff", (1101, 1101), 0.2271, 1, set()),
    "OS-2-ndpi.ome.tif": ("ome-tiff", (2202, 2202), 0.2271, 1, set()),
}


@pytest.mark.parametrize("name", sorted(READABLE))
def test_real_slide_opens_with_known_metadata(shared_data, name):
    vendor, dims, mpp, levels, associated = READABLE[name]
    with open_slide(shared_data / "slides" / name) as slide:
        assert slide.vendor == vendor
        assert slide.dimensions == dims
        assert slide.level_count == levels
        if mpp is None:
            assert slide.mpp is None
        else:
            assert slide.mpp[0] == pytest.approx(mpp, rel=1e-3)
        assert set(slide.associated_images) == associated
        for level in range(slide.level_count):
            arr = slide.pyramid[level]
            h, w, _ = arr.shape
            ds = slide.level_downsamples[level]
            x, y, ww, hh = w // 5, h // 7, max(1, w // 2), max(1, h // 2)
            np.testing.assert_array_equal(
                arr[y:y + hh, x:x + ww].compute(),
                slide.read_region((round(x * ds), round(y * ds)), level, (ww, hh)))


@pytest.mark.parametrize("name", ["dicom-pathml/small_dicom.dcm", "invalid/unopenable.tiff"])
def test_real_unreadable_files_raise_package_error(shared_data, name):
    with pytest.raises(UnsupportedSlideError) as info:
        open_slide(shared_data / "slides" / name)
    assert name.split("/")[-1] in str(info.value)


def test_cmu_patches_equal_reference_pixel_for_pixel(shared_data):
    """PathoPatcher's 256-px patches of CMU-1-Small-Region: name _row_col, x=col*256."""
    import cv2

    folder = shared_data / "patches" / "pathopatcher_CMU-1-Small-Region" / "patches"
    files = sorted(folder.glob("*.png"))
    assert len(files) == 5
    with open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs") as slide:
        for f in files:
            row, col = (int(v) for v in f.stem.split("_")[-2:])
            expected = cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            np.testing.assert_array_equal(
                slide.read_region((col * 256, row * 256), 0, (256, 256)), expected)
            np.testing.assert_array_equal(
                slide.pyramid[0][row * 256:(row + 1) * 256, col * 256:(col + 1) * 256].compute(),
                expected)


def test_pathopatcher_metadata_agrees(shared_data):
    meta = json.loads((shared_data / "patches" / "pathopatcher_CMU-1-Small-Region" /
                       "patch_metadata.json").read_text())
    assert meta  # the reference run exists
    with open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs") as slide:
        assert slide.objective_power == 20
        assert slide.mpp == pytest.approx((0.499, 0.499))
