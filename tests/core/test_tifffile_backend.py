"""TIFF / OME-TIFF files that OpenSlide rejects are read with tifffile, exactly."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_slideseg import UnsupportedSlideError, open_slide


def test_ome_pyramid(ome_tiff):
    with open_slide(ome_tiff.path) as slide:
        assert slide.backend == "tifffile"
        assert slide.vendor == "ome-tiff"
        assert slide.level_count == 3
        assert slide.level_dimensions == ((900, 700), (450, 350), (225, 175))
        assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        assert slide.mpp == pytest.approx((0.345, 0.350))  # nm converted to µm
        assert slide.associated_images == {} or len(slide.associated_images) == 0
        for level, expected in enumerate(ome_tiff.levels):
            np.testing.assert_array_equal(slide.pyramid[level].compute(), expected)
        # read_region at a level takes level-0 coordinates and snaps to the level grid
        np.testing.assert_array_equal(slide.read_region((101, 40), 1, (100, 60)),
                                      ome_tiff.levels[1][20:80, 50:150])
        corner = slide.read_region((-8, -8), 0, (16, 16))
        assert (corner[:8] == 255).all()
        np.testing.assert_array_equal(corner[8:, 8:], ome_tiff.levels[0][:8, :8])


def test_greyscale_tiff_becomes_rgb(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (300, 400), dtype=np.uint8)
    path = tmp_path / "grey.tif"
    tifffile.imwrite(path, grey, tile=(128, 128), compression="zlib",
                     resolution=(1 / 0.0005, 1 / 0.0005), resolutionunit="CENTIMETER")
    with open_slide(path) as slide:  # OpenSlide reads a tiled greyscale TIFF itself
        rgb = slide.read_region((0, 0), 0, (400, 300))
        assert slide.mpp == pytest.approx((5.0, 5.0))
    np.testing.assert_array_equal(rgb, np.repeat(grey[..., None], 3, axis=2))


def test_strip_greyscale_tiff_read_by_tifffile(tmp_path):
    grey = np.random.default_rng(2).integers(0, 256, (50, 70), dtype=np.uint8)
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, grey)  # not tiled: OpenSlide refuses it
    with open_slide(path) as slide:
        assert slide.backend == "tifffile"
        assert slide.mpp is None
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (70, 50)),
                                      np.repeat(grey[..., None], 3, axis=2))


def test_planar_rgb_is_interleaved(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, np.moveaxis(rgb, 2, 0), photometric="rgb", planarconfig="separate")
    with open_slide(path) as slide:
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (80, 64)), rgb)


def test_sixteen_bit_is_refused_clearly(tmp_path):
    path = tmp_path / "fluo.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint16), photometric="rgb")
    with pytest.raises(UnsupportedSlideError, match="uint16.*built-in reader"):
        open_slide(path)
