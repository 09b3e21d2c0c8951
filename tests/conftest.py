"""Shared fixtures: slides written with tifffile, and the real files in ../shared/data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import defusedxml.ElementTree as DET
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


# A slide with a known 'tumour' of distinct colour and texture (core.synthetic.region_image):
# 1536 x 1152 px at 0.5 µm/px, 3 levels; the tumour in 64-px tiles (col0, row0, col1,
# row1), end-exclusive: an L and a separate block.
TUMOUR_SIZE, TUMOUR_TILE = (1536, 1152), 64
TUMOUR_TILES = [(3, 3, 12, 7), (3, 7, 7, 14), (16, 9, 21, 15)]


@pytest.fixture(scope="session")
def tumour_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The slide's path; its geometry is ``tumour_slide.size / .tile / .tiles``."""
    w, h = TUMOUR_SIZE
    t = TUMOUR_TILE
    boxes = [(c0 * t, r0 * t, c1 * t, r1 * t) for c0, r0, c1, r1 in TUMOUR_TILES]
    image, _ = sy.region_image(w, h, boxes)
    sizes = sy.pyramid_dimensions(w, h, (1, 2, 4))
    levels = sy.downsample_levels(image, sizes)
    path = tmp_path_factory.mktemp("auto") / "tumour.tiff"
    sy.write_generic_tiff(path, sizes, sy.array_tile_reader(levels), tile=128, mpp=0.5,
                          compression="zlib")
    return path


@pytest.fixture(scope="session")
def tumour_geometry() -> tuple[tuple[int, int], int, list[tuple[int, int, int, int]]]:
    """(slide size (w, h), tile size, tumour boxes in tiles) of ``tumour_slide``."""
    return TUMOUR_SIZE, TUMOUR_TILE, list(TUMOUR_TILES)


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


# -- annotation files -----------------------------------------------------------------

APERIO = (
    '<Annotations MicronsPerPixel="0.252000">\r\n'
    '\t<Annotation Id="1" Name="Tumour" ReadOnly="0" NameReadOnly="0" LineColorReadOnly="0" '
    'Incremental="0" Type="4" LineColor="255" Visible="1" Selected="1" MarkupImagePath="" '
    'MacroName="" Vendor="x">\r\n'
    '\t\t<Attributes><Attribute Name="Grade" Id="0" Value="3"/></Attributes>\r\n'
    '\t\t<Regions>\r\n'
    '\t\t\t<RegionAttributeHeaders><AttributeHeader Id="9999" Name="Region" ColumnWidth="-1"/>'
    '</RegionAttributeHeaders>\r\n'
    '\t\t\t<Region Id="1" Type="0" Zoom="0.5" Selected="0" ImageLocation="" ImageFocus="-1" '
    'Length="400" Area="10000" LengthMicrons="100.8" AreaMicrons="635.04" Text="tumour a" '
    'NegativeROA="0" InputRegionId="0" Analyze="1" DisplayId="1" GeoShape="Polygon">\r\n'
    '\t\t\t\t<Attributes/>\r\n'
    '\t\t\t\t<Vertices><Vertex X="100" Y="100" Z="0"/><Vertex X="200.5" Y="100" Z="0"/>'
    '<Vertex X="200.5" Y="100" Z="0"/><Vertex X="200.5" Y="200.25" Z="0"/>'
    '<Vertex X="100" Y="200.25" Z="0"/><Vertex X="100" Y="100" Z="0"/></Vertices>\r\n'
    '\t\t\t</Region>\r\n'
    '\t\t\t<Region Id="2" Type="0" Text="" NegativeROA="1">\r\n'
    '\t\t\t\t<Vertices><Vertex X="120" Y="120"/><Vertex X="140" Y="120"/>'
    '<Vertex X="140" Y="140"/></Vertices>\r\n'
    '\t\t\t</Region>\r\n'
    '\t\t\t<Region Id="3" Type="1" Text="box"><Vertices><Vertex X="300" Y="300" Z="0"/>'
    '<Vertex X="400" Y="300" Z="0"/><Vertex X="400" Y="350" Z="0"/><Vertex X="300" Y="350" '
    'Z="0"/></Vertices></Region>\r\n'
    '\t\t\t<Region Id="4" Type="2" Text="oval"><Vertices><Vertex X="500" Y="500" Z="0"/>'
    '<Vertex X="600" Y="560" Z="0"/></Vertices></Region>\r\n'
    '\t\t\t<Region Id="5" Type="3" Text="look"><Vertices><Vertex X="10" Y="10"/>'
    '<Vertex X="50" Y="40"/></Vertices></Region>\r\n'
    '\t\t\t<Region Id="6" Type="4" Analyze="0" Area="0"><Vertices><Vertex X="0" Y="0"/>'
    '<Vertex X="30" Y="40"/></Vertices></Region>\r\n'
    '\t\t</Regions>\r\n'
    '\t\t<Plots><Plot Name="p"><Point X="1" Y="2"/></Plot></Plots>\r\n'
    '\t</Annotation>\r\n'
    '\t<Annotation Id="2" Name="" LineColor="16711680"><Regions/></Annotation>\r\n'
    '\t<Annotation Id="3" Name="Stroma &amp; &lt;other&gt;" LineColor="65280">'
    '<Regions><Region Id="7" Type="0"><Vertices><Vertex X="1.125" Y="2.0625" Z="0"/>'
    '<Vertex X="3" Y="4" Z="1"/><Vertex X="5" Y="1"/></Vertices></Region></Regions>'
    '</Annotation>\r\n'
    '</Annotations>\r\n')


@pytest.fixture
def aperio_file(tmp_path: Path) -> Path:
    path = tmp_path / "slide 1.2 annotations.xml"
    path.write_bytes(APERIO.encode())
    return path


NUMERIC = {"X", "Y", "Z"}


def _xml_equal(a: Path, b: Path) -> None:
    """Semantic XML comparison: same elements, attributes, order and text; numbers as
    numbers for vertex coordinates (decimal commas allowed)."""

    def compare(x, y, where: str) -> None:
        assert x.tag == y.tag, f"{where}: <{x.tag}> != <{y.tag}>"
        assert set(x.attrib) == set(y.attrib), f"{where}/{x.tag}: {x.attrib} != {y.attrib}"
        for key, value in x.attrib.items():
            if key in NUMERIC:
                assert float(value.replace(",", ".")) == float(y.attrib[key].replace(",", ".")), \
                    f"{where}/{x.tag}@{key}"
            else:
                assert value == y.attrib[key], f"{where}/{x.tag}@{key}: {value!r} != " \
                                               f"{y.attrib[key]!r}"
        assert (x.text or "").strip() == (y.text or "").strip(), f"{where}/{x.tag} text"
        assert len(x) == len(y), f"{where}/{x.tag}: {len(x)} children != {len(y)}"
        for i, (cx, cy) in enumerate(zip(x, y, strict=True)):
            compare(cx, cy, f"{where}/{x.tag}[{i}]")

    compare(DET.parse(a).getroot(), DET.parse(b).getroot(), "")




@pytest.fixture
def xml_equal():
    """Semantic XML comparison of two files (see :func:`_xml_equal`)."""
    return _xml_equal
