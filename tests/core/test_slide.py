"""open_slide / Slide on slides written by the test suite (known pixels, known metadata)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tifffile

from napari_slideseg import (
    CorruptTileError,
    Slide,
    SlideNotFoundError,
    SlideSegError,
    UnsupportedSlideError,
    open_slide,
)


def native_level(path, page_index: int) -> np.ndarray:
    """Pixels of one TIFF page decoded by tifffile: an independent reference."""
    with tifffile.TiffFile(path) as tif:
        return tif.pages[page_index].asarray()


def test_svs_metadata(svs):
    with open_slide(svs.path) as slide:
        assert isinstance(slide, Slide)
        assert slide.vendor == "aperio"
        assert slide.backend == "openslide"
        assert slide.level_count == 3
        assert slide.level_dimensions == ((2501, 1803), (625, 450), (156, 112))
        w0, h0 = slide.level_dimensions[0]
        for (w, h), ds in zip(slide.level_dimensions, slide.level_downsamples, strict=True):
            assert ds == pytest.approx((w0 / w + h0 / h) / 2)
        assert not float(slide.level_downsamples[1]).is_integer()
        assert slide.mpp == pytest.approx((0.2527, 0.2527))
        assert slide.objective_power == 40
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in slide.properties.items())
        assert slide.properties["openslide.vendor"] == "aperio"
        assert set(slide.associated_images) == {"label", "macro", "thumbnail"}
        # label and macro are stored losslessly: exact pixels come back
        np.testing.assert_array_equal(slide.associated_images["label"], svs.label)
        np.testing.assert_array_equal(slide.associated_images["macro"], svs.macro)
        assert slide.associated_images["thumbnail"].dtype == np.uint8


@pytest.mark.parametrize("x, y, w, h", [(0, 0, 256, 256), (300, 700, 517, 389),
                                        (2400, 1700, 101, 103), (1, 1, 2500, 1802)])
def test_level0_read_region_equals_decoded_tiles(svs, x, y, w, h):
    reference = native_level(svs.path, 0)
    with open_slide(svs.path) as slide:
        region = slide.read_region((x, y), 0, (w, h))
    assert region.shape == (h, w, 3) and region.dtype == np.uint8
    np.testing.assert_array_equal(region, reference[y:y + h, x:x + w])


def test_read_region_fills_outside_with_background(svs):
    reference = native_level(svs.path, 0)
    w0, h0 = 2501, 1803
    with open_slide(svs.path) as slide:
        corner = slide.read_region((-10, -20), 0, (40, 50))
        far = slide.read_region((w0 - 5, h0 - 5), 0, (20, 20))
        beyond = slide.read_region((w0 + 100, 0), 2, (10, 10))
    assert (corner[:20] == 255).all() and (corner[:, :10] == 255).all()
    np.testing.assert_array_equal(corner[20:, 10:], reference[:30, :30])
    np.testing.assert_array_equal(far[:5, :5], reference[-5:, -5:])
    assert (far[5:] == 255).all() and (far[:, 5:] == 255).all()
    assert (beyond == 255).all()


@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("mapping", ["round", "floor"])
def test_pyramid_equals_read_region_at_every_level(svs, level, mapping):
    with open_slide(svs.path) as slide:
        level_array = slide.pyramid[level]
        lh, lw, _ = level_array.shape
        assert (lw, lh) == slide.level_dimensions[level]
        ds = slide.level_downsamples[level]
        to0 = (lambda v: round(v * ds)) if mapping == "round" else (lambda v: int(v * ds))
        windows = [(0, 0, lw, lh), (3, 5, lw // 2, lh // 3), (lw // 3, lh // 4, lw // 2, lh // 2),
                   (lw - 7, lh - 9, 7, 9)]
        for x, y, w, h in windows:
            via_pyramid = level_array[y:y + h, x:x + w].compute()
            direct = slide.read_region((to0(x), to0(y)), level, (w, h))
            np.testing.assert_array_equal(via_pyramid, direct)


def test_integer_downsample_levels_are_native_pixels(generic_tiff):
    with open_slide(generic_tiff.path) as slide:
        assert slide.vendor == "generic-tiff"
        assert slide.level_downsamples == (1.0, 2.0, 4.0)
        assert slide.mpp == pytest.approx((0.5, 0.5))
        for level, expected in enumerate(generic_tiff.levels):
            np.testing.assert_array_equal(slide.pyramid[level].compute(), expected)
            ds = int(slide.level_downsamples[level])
            np.testing.assert_array_equal(
                slide.read_region((37 * ds, 11 * ds), level, (60, 50)),
                expected[11:61, 37:97])


def test_opening_reads_no_pixels_and_chunks_follow_tiles(svs):
    with open_slide(svs.path) as slide:
        pyramid = slide.pyramid
        _ = (slide.level_dimensions, slide.mpp, slide.properties, list(slide.associated_images))
        assert slide.cache_info()["backend_reads"] == 0
        for arr in pyramid:
            assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
            # chunks are 2 x 2 native 256-px tiles
            assert arr.chunks[0][0] == min(512, arr.shape[0])
            assert arr.chunks[1][0] == min(512, arr.shape[1])
            # one blockwise layer per level: the graph is not one task object per chunk
            assert len(arr.dask.layers) == 1
        arr = pyramid[0][300:700, 300:700]  # touches chunks (0..1) x (0..1)
        assert slide.cache_info()["backend_reads"] == 0
        arr.compute()
        assert slide.cache_info()["backend_reads"] == 4


def test_chunk_cache_is_bounded_and_reused(svs):
    chunk_bytes = 256 * 256 * 3
    with open_slide(svs.path, cache_bytes=3 * chunk_bytes, chunk_size=256) as slide:
        assert slide.pyramid[0].chunks[0][0] == 256
        slide.pyramid[0][:1024, :1024].compute()  # 16 chunks through a 3-chunk cache
        info = slide.cache_info()
        assert info["cached_bytes"] <= 3 * chunk_bytes
        assert info["cached_chunks"] == 3
        slide.pyramid[0][1024:1280, 1024:1280].compute()  # a chunk not read before
        reads = slide.cache_info()["backend_reads"]
        slide.pyramid[0][1024:1280, 1024:1280].compute()  # now cached
        assert slide.cache_info()["backend_reads"] == reads
        assert slide.cache_info()["hits"] >= 1
    with open_slide(svs.path, cache_bytes=0, chunk_size=256) as slide:
        slide.pyramid[0][:256, :256].compute()
        slide.pyramid[0][:256, :256].compute()
        assert slide.cache_info()["backend_reads"] == 2


def test_concurrent_reads_are_safe(svs):
    rng = np.random.default_rng(1)
    windows = [(int(rng.integers(0, 2000)), int(rng.integers(0, 1400)), int(rng.integers(1, 500)),
                int(rng.integers(1, 400)), int(rng.integers(0, 3))) for _ in range(60)]
    with open_slide(svs.path, cache_bytes=0) as reference:
        expected = [reference.read_region((x, y), lv, (w, h)) for x, y, w, h, lv in windows]
    with open_slide(svs.path, cache_bytes=8 * 512 * 512 * 3) as slide:
        def work(i: int) -> np.ndarray:
            x, y, w, h, lv = windows[i]
            if i % 2:
                return slide.read_region((x, y), lv, (w, h))
            ds = slide.level_downsamples[lv]
            lx, ly = round(x / ds), round(y / ds)
            return slide.pyramid[lv][ly:ly + h, lx:lx + w].compute(scheduler="threads")

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(work, range(len(windows))))
    for i, (got, want) in enumerate(zip(results, expected, strict=True)):
        x, y, w, h, lv = windows[i]
        if i % 2 == 0:  # the pyramid stops at the level's edge; read_region pads
            want = want[:got.shape[0], :got.shape[1]]
        np.testing.assert_array_equal(got, want)


def test_context_manager_closes(svs):
    with open_slide(svs.path) as slide:
        slide.read_region((0, 0), 0, (8, 8))
    with pytest.raises(SlideSegError, match="closed"):
        slide.read_region((0, 0), 0, (8, 8))
    slide.close()  # closing twice is harmless


def test_bad_arguments(svs):
    with open_slide(svs.path) as slide:
        with pytest.raises(ValueError, match="level 3 out of range"):
            slide.read_region((0, 0), 3, (8, 8))
        with pytest.raises(ValueError, match="positive"):
            slide.read_region((0, 0), 0, (0, 8))
    with pytest.raises(ValueError, match="tile_errors"):
        open_slide(svs.path, tile_errors="ignore")  # type: ignore[arg-type]


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.svs"
    with pytest.raises(SlideNotFoundError, match="nope.svs") as info:
        open_slide(missing)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, SlideSegError)


@pytest.mark.parametrize("content", [b"", b"not a slide at all", b"II*\x00" + b"\x00" * 64])
def test_unopenable_file(tmp_path, content):
    path = tmp_path / "broken.svs"
    path.write_bytes(content)
    with pytest.raises(UnsupportedSlideError, match="broken.svs"):
        open_slide(path)


def test_folder_without_dicom(tmp_path):
    with pytest.raises(UnsupportedSlideError, match="no .dcm file"):
        open_slide(tmp_path)


def test_corrupt_tile_raises_then_slide_recovers(corrupt_svs, svs):
    path, (x, y) = corrupt_svs
    reference = native_level(svs.path, 0)
    with open_slide(path) as slide:
        with pytest.raises(CorruptTileError, match="corrupt.svs") as info:
            slide.read_region((x + 10, y + 10), 0, (50, 50))
        assert isinstance(info.value, SlideSegError)
        # the handle is replaced: the rest of the slide still reads correctly
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (256, 256)),
                                      reference[:256, :256])
        with pytest.raises(CorruptTileError):
            slide.pyramid[0][y:y + 256, x:x + 256].compute()


def test_corrupt_tile_filled_when_asked(corrupt_svs, svs):
    """Only the damaged 256-px tile is blanked, not the whole 512-px chunk holding it."""
    path, (x, y) = corrupt_svs
    reference = native_level(svs.path, 0)
    with open_slide(path, tile_errors="fill") as slide:
        with pytest.warns(RuntimeWarning, match="Shown as background"):
            block = slide.pyramid[0][:512, :1024].compute()
    assert (block[y:y + 256, x:x + 256] == 255).all()
    np.testing.assert_array_equal(block[:256], reference[:256, :1024])
    np.testing.assert_array_equal(block[256:, x + 256:], reference[256:512, x + 256:1024])
    np.testing.assert_array_equal(block[256:, :x], reference[256:512, :x])


def test_thumbnail(svs):
    with open_slide(svs.path) as slide:
        thumb = slide.get_thumbnail((300, 300))
    assert thumb.shape == (216, 300, 3)
    # an area average of level 1 (downsample 4 is the best level for 8.3): compare with
    # the natively decoded level 1; OpenSlide's sub-pixel phase at the non-integer
    # downsample leaves differences of a few grey levels at most
    import cv2

    expected = cv2.resize(native_level(svs.path, 2), (300, 216), interpolation=cv2.INTER_AREA)
    diff = np.abs(thumb.astype(int) - expected)
    assert diff.mean() < 0.5 and diff.max() <= 8


def test_best_level_for_downsample(svs):
    with open_slide(svs.path) as slide:
        assert slide.get_best_level_for_downsample(1) == 0
        assert slide.get_best_level_for_downsample(3.9) == 0
        assert slide.get_best_level_for_downsample(4.5) == 1
        assert slide.get_best_level_for_downsample(100) == 2


def test_repr_and_info(svs):
    with open_slide(svs.path) as slide:
        assert "synthetic slide.svs" in repr(slide) and "2501x1803" in repr(slide)
        info = slide.info()
    assert info["level_count"] == 3
    assert info["associated_images"] == ["label", "macro", "thumbnail"]


def test_threads_share_one_reader(svs):
    """Many threads hitting the same chunk while it is uncached all get identical pixels."""
    with open_slide(svs.path) as slide:
        barrier = threading.Barrier(6)
        out: list[np.ndarray] = []

        def read() -> None:
            barrier.wait()
            out.append(slide.read_chunk(1, 1, 0))

        threads = [threading.Thread(target=read) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(out) == 6
    for arr in out[1:]:
        np.testing.assert_array_equal(arr, out[0])
    assert not out[0].flags.writeable
