"""Shared fixtures: slides written with tifffile, and the real files in ../shared/data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_slideseg.core import synthetic as sy

# ../shared/data beside the repository (absent in a user's fresh clone).
SHARED = Path(os.environ.get("SLIDESEG_SHARED_DATA",
                             Path(__file__).resolve().parents[2] / "shared" / "data"))

SVS_SIZE = (2501, 1803)  # (w, h); floors make the downsamples 4.0016 and 16.03
SVS_DOWNSAMPLES = (1, 4, 16)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import qtpy  # noqa: F401
        from qtpy import QtWidgets  # noqa: F401
        has_qt = True
    except Exception:
        has_qt = False
    for item in items:
        if "gui" in item.keywords and not has_qt:
            item.add_marker(pytest.mark.skip(reason="Qt is not installed"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not present at {SHARED}")
    return SHARED


class Written:
    """A generated slide and the pixel arrays it was written from."""

    def __init__(self, path: Path, levels: list[np.ndarray], label: np.ndarray | None = None,
                 macro: np.ndarray | None = None) -> None:
        self.path = path
        self.levels = levels
        self.label = label
        self.macro = macro


@pytest.fixture(scope="session")
def svs(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """Aperio SVS: 3 JPEG levels (256-px tiles), non-integer downsamples, label + macro."""
    w, h = SVS_SIZE
    image, _ = sy.tissue_image(w, h, seed=3)
    sizes = sy.pyramid_dimensions(w, h, SVS_DOWNSAMPLES)
    levels = sy.downsample_levels(image, sizes)
    rng = np.random.default_rng(0)
    label = rng.integers(0, 256, (120, 250, 3), dtype=np.uint8)
    macro = np.ascontiguousarray(levels[-1][:, ::-1])
    path = tmp_path_factory.mktemp("svs") / "synthetic slide.svs"
    sy.write_aperio_svs(path, sizes, sy.array_tile_reader(levels), tile=256, mpp=0.2527,
                        app_mag=40, label=label, macro=macro)
    return Written(path, levels, label, macro)


@pytest.fixture(scope="session")
def generic_tiff(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """Generic tiled pyramid with exact 2x levels, lossless (deflate) so pixels are known."""
    image, _ = sy.tissue_image(1024, 768, seed=5)
    sizes = sy.pyramid_dimensions(1024, 768, (1, 2, 4))
    levels = sy.downsample_levels(image, sizes)
    path = tmp_path_factory.mktemp("tiff") / "generic.tiff"
    sy.write_generic_tiff(path, sizes, sy.array_tile_reader(levels), tile=128, mpp=0.5,
                          compression="zlib")
    return Written(path, levels)


@pytest.fixture(scope="session")
def ome_tiff(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """OME-TIFF pyramid in SubIFDs with the pixel size in nanometres (OpenSlide rejects it)."""
    import tifffile

    image, _ = sy.tissue_image(900, 700, seed=9)
    levels = [image, np.ascontiguousarray(image[::2, ::2]), np.ascontiguousarray(image[::4, ::4])]
    path = tmp_path_factory.mktemp("ome") / "pyramid.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        meta = {"axes": "YXS", "PhysicalSizeX": 345.0, "PhysicalSizeXUnit": "nm",
                "PhysicalSizeY": 350.0, "PhysicalSizeYUnit": "nm"}
        tif.write(levels[0], subifds=2, tile=(128, 128), photometric="rgb",
                  compression="zlib", metadata=meta)
        for lv in levels[1:]:
            tif.write(lv, subfiletype=1, tile=(128, 128), photometric="rgb",
                      compression="zlib")
    return Written(path, levels)


@pytest.fixture(scope="session")
def corrupt_svs(svs: Written,
                tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[int, int]]:
    """A copy of ``svs`` with the JPEG data of level-0 tile (col 2, row 1) overwritten.

    Returns the path and the level-0 (x, y) of the damaged tile's corner.
    """
    import tifffile

    path = tmp_path_factory.mktemp("corrupt") / "corrupt.svs"
    shutil.copy(svs.path, path)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        across = -(-page.imagewidth // page.tilewidth)
        index = 1 * across + 2
        offset, count = page.dataoffsets[index], page.databytecounts[index]
    with open(path, "r+b") as fh:
        fh.seek(offset + 2)  # keep the SOI marker so the tile still looks like JPEG
        fh.write(b"\xff\xd9" + b"\x00" * (count - 4))
    return path, (2 * 256, 1 * 256)
