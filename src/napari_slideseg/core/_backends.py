"""Pixel backends behind :class:`napari_slideseg.core.slide.Slide`.

A backend knows how to read one file format. It exposes the level geometry, the
metadata, and one pixel primitive, :meth:`read_level`, which returns the pixels of a
window given in the level's own pixel grid. Everything else (caching, the dask pyramid,
background fill outside the image, error policy) lives in ``Slide`` so it is written once.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CorruptTileError, UnsupportedSlideError

__all__ = ["Backend", "OpenSlideBackend", "TiffFileBackend", "open_backend", "rgba_to_rgb"]

WHITE = (255, 255, 255)
# Target chunk side: native tiles are grouped to about this size, because per-task
# overhead outweighs the extra pixels read (measured in benchmarks/RESULTS.md: 512-px
# chunks of 256-px tiles read a 1920x1080 viewport faster than 256-px chunks).
MIN_CHUNK = 512
DEFAULT_CHUNK = 512
#: Decoded-tile cache shared by all OpenSlide handles of one slide.
OPENSLIDE_CACHE_BYTES = 64 * 1024 * 1024
#: TIFF resolution tags giving larger pixels than this (µm) are a print or screen dpi.
MAX_PLAUSIBLE_MPP = 50.0
MAX_CHUNK = 2048


def rgba_to_rgb(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Composite non-premultiplied RGBA over a solid background colour.

    Parameters
    ----------
    rgba : (h, w, 4) uint8 array
        Straight (not premultiplied) alpha, as openslide-python returns it.
    background : (r, g, b) tuple of int
        Colour shown where the slide has no data (alpha 0).

    Returns
    -------
    (h, w, 3) uint8 C-contiguous array
    """
    import cv2

    rgb = cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)
    alpha = rgba[..., 3]
    if int(alpha.min()) == 255:
        return rgb
    a = alpha.astype(np.uint16)[..., None]
    bg = np.asarray(background, dtype=np.uint16)
    out = (rgb.astype(np.uint16) * a + bg * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def chunk_size_for_tile(tile: int | None) -> int:
    """Chunk side for a native tile side: a whole multiple of the tile, never less than it.

    Tiles are grouped to about ``MIN_CHUNK`` (256-px tiles -> 512-px chunks, 240 -> 480,
    64 -> 512, 512 stays 512); tiles above
    ``MAX_CHUNK`` (strip-like layouts) are read in ``DEFAULT_CHUNK`` pieces, since
    OpenSlide caches the decoded tile between neighbouring reads.
    """
    if not tile or tile <= 0:
        return DEFAULT_CHUNK
    if tile > MAX_CHUNK:
        return DEFAULT_CHUNK
    return tile * max(1, round(MIN_CHUNK / tile))


class Backend:
    """Interface every backend implements (see module docstring)."""

    name: str
    vendor: str
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    tile_sizes: tuple[tuple[int, int], ...]
    properties: dict[str, str]
    mpp: tuple[float, float] | None
    objective_power: float | None
    background: tuple[int, int, int]
    associated_names: tuple[str, ...]
    #: True when read_level returns native level pixels for any window origin, so a
    #: window never needs to be assembled from chunks to match them.
    exact_windows: bool

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Pixels of the window (x, y, w, h) in level ``level``'s pixel grid, inside bounds."""
        raise NotImplementedError

    def read_level0(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """OpenSlide-style read: (x, y) in level-0 pixels, (w, h) in level pixels."""
        raise NotImplementedError

    def read_associated(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _parse_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except ValueError:
        return None
    return out if math.isfinite(out) and out > 0 else None


class OpenSlideBackend(Backend):
    """Every format OpenSlide reads (Aperio, Hamamatsu, MIRAX, Leica, Ventana, DICOM, ...)."""

    name = "openslide"

    def __init__(self, path: Path) -> None:
        import openslide

        self._path = path
        self._openslide = openslide
        try:
            self._osr = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError as exc:
            raise UnsupportedSlideError(
                f"{path}: OpenSlide recognises the file but cannot open it ({exc}). "
                "The file may be damaged or use a codec OpenSlide does not support."
            ) from exc
        # Each reading thread gets its own handle: an OpenSlide error is sticky and would
        # otherwise fail every thread's reads after one damaged tile. All handles share
        # one bounded cache of decoded tiles.
        self._tile_cache = openslide.OpenSlideCache(OPENSLIDE_CACHE_BYTES)
        self._osr.set_cache(self._tile_cache)
        self._local = threading.local()
        self._handles: list[Any] = []
        self._handles_lock = threading.Lock()
        self._meta_lock = threading.Lock()
        osr = self._osr
        self.properties = {str(k): str(v) for k, v in osr.properties.items()}
        p = self.properties
        self.vendor = p.get("openslide.vendor", "unknown")
        self.level_dimensions = tuple((int(w), int(h)) for w, h in osr.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in osr.level_downsamples)
        tiles = []
        for i in range(len(self.level_dimensions)):
            tw = _parse_float(p.get(f"openslide.level[{i}].tile-width"))
            th = _parse_float(p.get(f"openslide.level[{i}].tile-height"))
            tiles.append((int(tw) if tw else 0, int(th) if th else 0))
        self.tile_sizes = tuple(tiles)
        mx = _parse_float(p.get("openslide.mpp-x"))
        my = _parse_float(p.get("openslide.mpp-y"))
        # generic TIFFs report their resolution tags: 72 dpi is a screen, not a scan
        plausible = mx and my and max(mx, my) <= MAX_PLAUSIBLE_MPP
        self.mpp = (mx, my) if plausible else None
        self.objective_power = _parse_float(p.get("openslide.objective-power"))
        bg = p.get("openslide.background-color")
        self.background = _hex_to_rgb(bg) if bg else WHITE
        self.associated_names = tuple(sorted(osr.associated_images.keys()))
        self.exact_windows = False

    def _thread_handle(self) -> Any:
        osr = getattr(self._local, "osr", None)
        if osr is None:
            osr = self._openslide.OpenSlide(str(self._path))
            osr.set_cache(self._tile_cache)
            with self._handles_lock:
                self._handles.append(osr)
            self._local.osr = osr
        return osr

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        osr = self._thread_handle()
        try:
            if _RAW_READ is not None:
                return _RAW_READ(osr, x, y, level, w, h, self.background)
            image = osr.read_region((x, y), level, (w, h))
        except self._openslide.OpenSlideError as exc:
            # This thread's handle is now unusable, and no other thread uses it.
            self._local.osr = None
            with self._handles_lock:
                self._handles.remove(osr)
            osr.close()
            raise CorruptTileError(
                f"{self._path}: cannot decode pixels of level {level} at level-0 "
                f"({x}, {y}), size {w}x{h}: {exc}. The file is damaged in this region."
            ) from exc
        return rgba_to_rgb(np.asarray(image), self.background)

    def read_level0(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        return self._read(x, y, level, w, h)

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        return self._read(round(x * ds), round(y * ds), level, w, h)

    def read_associated(self, name: str) -> np.ndarray:
        with self._meta_lock:
            image = self._osr.associated_images[name]
            return rgba_to_rgb(np.asarray(image.convert("RGBA")), self.background)

    def close(self) -> None:
        with self._handles_lock:
            handles, self._handles = self._handles, []
        for handle in [*handles, self._osr]:
            handle.close()


def _raw_reader() -> Any:
    """A read straight into a numpy buffer, skipping openslide-python's PIL image.

    OpenSlide writes premultiplied ARGB as native-endian 32-bit words; on little-endian
    machines those are B, G, R, A bytes. Returns None where that does not hold or the
    low-level function is missing (the public ``read_region`` is used then).
    """
    import sys

    try:
        from openslide import lowlevel

        read_region = lowlevel._read_region
        pointer, c_uint32 = lowlevel.POINTER, lowlevel.c_uint32
    except (ImportError, AttributeError):
        return None
    if sys.byteorder != "little":
        return None

    def read(osr: Any, x: int, y: int, level: int, w: int, h: int,
             background: tuple[int, int, int]) -> np.ndarray:
        import cv2

        buf = np.empty((h, w), np.uint32)
        read_region(osr._osr, buf.ctypes.data_as(pointer(c_uint32)), x, y, level, w, h)
        bgra = buf.view(np.uint8).reshape(h, w, 4)
        rgb = cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGB)
        alpha = bgra[..., 3]
        if int(alpha.min()) == 255:
            return rgb
        # premultiplied colour over the background: c + bg * (1 - a)
        a = alpha.astype(np.uint16)[..., None]
        bg = np.asarray(background, dtype=np.uint16)
        out = rgb.astype(np.uint16) + (bg * (255 - a) + 127) // 255
        return np.minimum(out, 255).astype(np.uint8)

    return read


_RAW_READ = _raw_reader()


def _hex_to_rgb(value: str) -> tuple[int, int, int]:
    value = value.strip().lstrip("#")
    if not re.fullmatch(r"[0-9a-fA-F]{6}", value):
        return WHITE
    return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))


_OME_UNITS_TO_UM = {"pm": 1e-6, "nm": 1e-3, "µm": 1.0, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}


class TiffFileBackend(Backend):
    """TIFF and OME-TIFF files OpenSlide rejects, read with tifffile.

    Pyramid levels come from the series' sub-resolutions (OME SubIFDs or reduced
    pages). Only 8-bit RGB(A) or greyscale brightfield images are accepted.
    """

    name = "tifffile"

    def __init__(self, path: Path) -> None:
        import tifffile
        import zarr

        self._path = path
        try:
            self._tif = tifffile.TiffFile(str(path))
        except Exception as exc:  # tifffile raises many types for non-TIFF input
            raise UnsupportedSlideError(f"{path}: not a readable TIFF file ({exc}).") from exc
        try:
            self._init(tifffile, zarr)
        except UnsupportedSlideError:
            self._tif.close()
            raise
        except Exception as exc:
            self._tif.close()
            raise UnsupportedSlideError(f"{path}: cannot read this TIFF's layout ({exc}).") from exc

    def _init(self, tifffile: Any, zarr: Any) -> None:
        tif = self._tif
        path = self._path
        if not tif.series:
            raise UnsupportedSlideError(f"{path}: the TIFF file holds no image.")
        series = max(tif.series, key=lambda s: int(np.prod(s.shape)))
        page = series.pages[0] if series.pages else tif.pages[0]
        if page is None:
            raise UnsupportedSlideError(f"{path}: the TIFF file holds no image.")
        if page.compression not in tifffile.TIFF.DECOMPRESSORS:
            raise UnsupportedSlideError(
                f"{path}: TIFF compression {int(page.compression)} is not supported "
                "(no decoder available); convert the file with a tool that reads it."
            )
        if np.dtype(series.dtype) != np.uint8:
            raise UnsupportedSlideError(
                f"{path}: {series.dtype} pixels (axes {series.axes}); napari-slideseg reads "
                "8-bit RGB or greyscale brightfield slides. Open this image with napari's "
                "built-in reader instead."
            )
        self._axes = series.axes
        self._levels = []
        dims = []
        for index, lv in enumerate(series.levels):
            store = series.aszarr(level=index)
            arr = zarr.open_array(store, mode="r")
            self._levels.append(arr)
            shape = dict(zip(lv.axes, lv.shape, strict=True))
            dims.append((int(shape["X"]), int(shape["Y"])))
        self._layout = _axes_layout(series.axes, series.shape, path)
        self.level_dimensions = tuple(dims)
        w0, h0 = dims[0]
        self.level_downsamples = tuple((w0 / w + h0 / h) / 2 for w, h in dims)
        tiles = []
        for lv in series.levels:
            p = lv.pages[0]
            tiles.append((int(p.tilewidth or 0), int(p.tilelength or 0)))
        self.tile_sizes = tuple(tiles)
        self.properties = _tiff_properties(tif, page)
        self.vendor = "ome-tiff" if tif.is_ome else "tiff"
        self.mpp, self.objective_power = _tiff_mpp(tif, page)
        if self.mpp:
            self.properties["slideseg.mpp-x"] = repr(self.mpp[0])
            self.properties["slideseg.mpp-y"] = repr(self.mpp[1])
        self.background = WHITE
        self.associated_names = ()
        self.exact_windows = True
        self._lock = threading.Lock()

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        arr = self._levels[level]
        index = self._layout.index(x, y, w, h)
        try:
            data = np.asarray(arr[index])
        except Exception as exc:
            raise CorruptTileError(
                f"{self._path}: cannot decode pixels of level {level} at ({x}, {y}), "
                f"size {w}x{h}: {exc}. The file is damaged in this region."
            ) from exc
        return self._layout.to_rgb(data)

    def read_level0(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        return self.read_level(level, round(x / ds), round(y / ds), w, h)

    def close(self) -> None:
        self._tif.close()


class _AxesLayout:
    """Maps a TIFF series' axes to (h, w, 3) RGB windows."""

    def __init__(self, axes: str, y: int, x: int, s: int | None, channels: int,
                 lead: tuple[int, ...]) -> None:
        self.axes = axes
        self.y_axis, self.x_axis, self.s_axis = y, x, s
        self.channels = channels
        self.lead = lead

    def index(self, x: int, y: int, w: int, h: int) -> tuple[Any, ...]:
        idx: list[Any] = [0] * len(self.axes)
        for i in self.lead:
            idx[i] = 0
        idx[self.y_axis] = slice(y, y + h)
        idx[self.x_axis] = slice(x, x + w)
        if self.s_axis is not None:
            idx[self.s_axis] = slice(0, min(self.channels, 3))
        return tuple(idx)

    def to_rgb(self, data: np.ndarray) -> np.ndarray:
        if self.s_axis is None:
            if self.y_axis > self.x_axis:
                data = data.T
            return np.ascontiguousarray(np.repeat(data[..., None], 3, axis=-1))
        # Lead axes were indexed away; the remaining dimensions keep file order.
        rank = {a: i for i, a in enumerate(sorted((self.y_axis, self.x_axis, self.s_axis)))}
        data = np.moveaxis(data, [rank[self.y_axis], rank[self.x_axis], rank[self.s_axis]],
                           [0, 1, 2])
        if self.channels == 1:
            data = np.repeat(data, 3, axis=-1)
        return np.ascontiguousarray(data)


def _axes_layout(axes: str, shape: Sequence[int], path: Path) -> _AxesLayout:
    if "Y" not in axes or "X" not in axes:
        raise UnsupportedSlideError(f"{path}: image axes {axes!r} have no Y and X.")
    sample_axis = None
    for name in ("S", "C"):
        if name in axes and shape[axes.index(name)] in (1, 3, 4):
            sample_axis = axes.index(name)
            break
    lead = tuple(
        i for i, a in enumerate(axes)
        if a not in "YX" and i != sample_axis
    )
    for i in lead:
        if shape[i] != 1:
            raise UnsupportedSlideError(
                f"{path}: image axes {axes!r} with shape {tuple(shape)}: only single-plane "
                "RGB or greyscale slides are supported (no time, z or multichannel stacks)."
            )
    channels = shape[sample_axis] if sample_axis is not None else 1
    return _AxesLayout(axes, axes.index("Y"), axes.index("X"), sample_axis, int(channels), lead)


def _tiff_properties(tif: Any, page: Any) -> dict[str, str]:
    props: dict[str, str] = {}
    for tag in page.tags.values():
        if isinstance(tag.value, str) and tag.value:
            props[f"tiff.{tag.name}"] = tag.value
    return props


def _tiff_mpp(tif: Any, page: Any) -> tuple[tuple[float, float] | None, float | None]:
    objective = None
    if tif.is_ome and tif.ome_metadata:
        from defusedxml import ElementTree

        root = ElementTree.fromstring(tif.ome_metadata)
        pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
        for el in root.iter():
            if el.tag.endswith("Objective"):
                objective = _parse_float(el.get("NominalMagnification"))
                break
        if pixels is not None:
            sx = _parse_float(pixels.get("PhysicalSizeX"))
            sy = _parse_float(pixels.get("PhysicalSizeY"))
            ux = _OME_UNITS_TO_UM.get(pixels.get("PhysicalSizeXUnit", "µm"))
            uy = _OME_UNITS_TO_UM.get(pixels.get("PhysicalSizeYUnit", "µm"))
            if sx and sy and ux and uy:
                return (sx * ux, sy * uy), objective
    description = page.description or ""
    match = re.search(r"\|\s*MPP\s*=\s*([0-9.]+)", description)
    if match and _parse_float(match.group(1)):
        mpp = float(match.group(1))
        mag = re.search(r"\|\s*AppMag\s*=\s*([0-9.]+)", description)
        return (mpp, mpp), _parse_float(mag.group(1)) if mag else objective
    tags = page.tags
    unit = tags.get("ResolutionUnit")
    xres = tags.get("XResolution")
    yres = tags.get("YResolution")
    if unit is not None and xres is not None and yres is not None:
        per_unit_um = {2: 25400.0, 3: 10000.0}.get(int(unit.value))
        rx = xres.value[0] / xres.value[1] if xres.value[1] else 0
        ry = yres.value[0] / yres.value[1] if yres.value[1] else 0
        if per_unit_um and rx > 0 and ry > 0:
            mx, my = per_unit_um / rx, per_unit_um / ry
            # image editors stamp a screen or print resolution (72, 96, 300 dpi: 85-350
            # µm/px): no microscope image has pixels that large, so that means unknown
            if max(mx, my) <= MAX_PLAUSIBLE_MPP:
                return (mx, my), objective
    return None, objective


def open_backend(path: Path) -> Backend:
    """Open ``path`` with the first backend that can read it.

    OME-TIFF goes to tifffile (which reads its SubIFD pyramid and OME pixel size);
    OpenSlide is tried first for everything else it recognises; TIFF files it rejects
    go to tifffile.
    """
    import openslide

    target = path
    if path.is_dir():
        dicoms = sorted(p for p in path.iterdir() if p.suffix.lower() == ".dcm")
        if not dicoms:
            raise UnsupportedSlideError(
                f"{path}: a folder is read as a DICOM slide, but it holds no .dcm file."
            )
        target = dicoms[0]
    if _is_tiff(target) and _is_ome(target):
        # OpenSlide reads only the base page of an OME-TIFF (no SubIFD pyramid, no
        # OME physical size): tifffile sees the whole pyramid.
        try:
            return TiffFileBackend(target)
        except UnsupportedSlideError:
            pass
    fmt = openslide.OpenSlide.detect_format(str(target))
    openslide_error: UnsupportedSlideError | None = None
    if fmt is not None:
        try:
            return OpenSlideBackend(target)
        except UnsupportedSlideError as exc:
            openslide_error = exc
    if _is_tiff(target):
        try:
            return TiffFileBackend(target)
        except UnsupportedSlideError as exc:
            if openslide_error is not None:
                raise openslide_error from exc
            raise
    if openslide_error is not None:
        raise openslide_error
    raise UnsupportedSlideError(
        f"{path}: not a whole-slide image napari-slideseg can read. Supported: every format "
        "OpenSlide reads (svs, ndpi, mrxs, scn, bif, vms, vmu, svslide, tiled TIFF, DICOM) "
        "and 8-bit RGB TIFF / OME-TIFF."
    )


def _is_ome(path: Path) -> bool:
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            return bool(tif.is_ome)
    except Exception:
        return False


def _is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
