"""Whole-slide images: :func:`open_slide` and :class:`Slide`.

Coordinates follow OpenSlide: ``read_region`` takes the top-left corner in level-0
pixel (x, y) and a size (w, h) in pixels of the requested level. Array shapes are
(h, w, 3). Sizes and dimensions are (w, h).
"""

from __future__ import annotations

import os
import threading
import uuid
import warnings
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ._backends import Backend, chunk_size_for_tile, open_backend
from .cache import ChunkCache
from .errors import CorruptTileError, SlideNotFoundError, SlideSegError

if TYPE_CHECKING:
    import dask.array as da

__all__ = ["Slide", "open_slide", "DEFAULT_CACHE_BYTES"]

#: Default bound of the decoded-chunk cache of one slide.
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024

TileErrors = Literal["raise", "fill"]


def open_slide(
    path: str | os.PathLike[str],
    *,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    chunk_size: int | None = None,
    tile_errors: TileErrors = "raise",
) -> Slide:
    """Open a whole-slide image.

    Parameters
    ----------
    path : str or path-like
        A slide file (any format OpenSlide 4 reads, or an 8-bit RGB TIFF / OME-TIFF),
        or a folder holding a DICOM slide's ``.dcm`` files.
    cache_bytes : int, optional
        Bound, in bytes, of the cache of decoded chunks shared by ``read_region`` and
        the pyramid. ``0`` disables the cache.
    chunk_size : int, optional
        Side of the pyramid's chunks in pixels. Default: native tiles grouped to about
        512 px (a whole number of tiles), so chunks align with the file's tile grid.
    tile_errors : {'raise', 'fill'}
        What to do with a tile that cannot be decoded: raise :class:`CorruptTileError`,
        or warn and fill it with the background colour (the napari reader does this,
        so one bad tile does not stop a viewer).

    Returns
    -------
    Slide

    Raises
    ------
    SlideNotFoundError
        ``path`` does not exist.
    UnsupportedSlideError
        No backend can open the file.

    Notes
    -----
    Opening reads metadata only: no pixel data is decoded until a region is read.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise SlideNotFoundError(f"{p}: no such file or folder.")
    backend = open_backend(p)
    return Slide(backend, p, cache_bytes=cache_bytes, chunk_size=chunk_size,
                 tile_errors=tile_errors)


class _AssociatedImages(Mapping[str, np.ndarray]):
    """Lazy mapping of associated image names (label, macro, thumbnail...) to RGB arrays."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._names = backend.associated_names
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        if name not in self._cache:
            self._cache[name] = self._backend.read_associated(name)
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"<associated images {list(self._names)}>"


class _LevelArray:
    """Array-like view of one pyramid level, (h, w, 3) uint8, for ``dask.array.from_array``.

    Indexing with slices of rows and columns returns pixels assembled from the slide's
    cached chunks.
    """

    def __init__(self, slide: Slide, level: int) -> None:
        self._slide = slide
        self._level = level
        w, h = slide.level_dimensions[level]
        self.shape = (h, w, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        rows, cols, chans = key
        if not (isinstance(rows, slice) and isinstance(cols, slice)):
            raise TypeError("slide levels support slice indexing of rows and columns only")
        h, w, _ = self.shape
        y0, y1, ys = rows.indices(h)
        x0, x1, xs = cols.indices(w)
        out = self._slide._read_window(self._level, x0, y0, max(0, x1 - x0), max(0, y1 - y0))
        if ys != 1 or xs != 1:
            out = out[::ys, ::xs]
        return out[:, :, chans]


class Slide:
    """An open whole-slide image. Create it with :func:`open_slide`.

    Attributes
    ----------
    path : pathlib.Path
    backend : str
        ``'openslide'`` or ``'tifffile'``.
    level_count : int
    level_dimensions : tuple of (w, h)
        Size of every level in its own pixels, largest first, as OpenSlide gives it.
    level_downsamples : tuple of float
        Downsample of every level relative to level 0 (may be non-integer).
    mpp : (float, float) or None
        Micrometres per level-0 pixel in x and y; None when the file does not say.
    objective_power : float or None
    vendor : str
    properties : dict of str to str
    associated_images : mapping of str to (h, w, 3) uint8
        Read on first access.
    background_color : (r, g, b)
        Colour returned where the slide has no data.

    Notes
    -----
    A ``Slide`` is safe to read from several threads at once. It is a context manager:
    ``with open_slide(path) as slide: ...`` closes it on exit.
    """

    def __init__(
        self,
        backend: Backend,
        path: Path,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        chunk_size: int | None = None,
        tile_errors: TileErrors = "raise",
    ) -> None:
        if tile_errors not in ("raise", "fill"):
            raise ValueError(f"tile_errors must be 'raise' or 'fill', not {tile_errors!r}")
        self._backend = backend
        self.path = path
        self.tile_errors: TileErrors = tile_errors
        self._cache = ChunkCache(cache_bytes)
        self._token = uuid.uuid4().hex[:12]
        self._closed = False
        self._reads = 0
        self._reads_lock = threading.Lock()
        self._warned: set[tuple[int, int, int]] = set()
        if chunk_size is not None and chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive number of pixels, got {chunk_size}")
        self.chunk_sizes: tuple[tuple[int, int], ...] = tuple(
            (chunk_size, chunk_size) if chunk_size else
            (chunk_size_for_tile(tw), chunk_size_for_tile(th))
            for tw, th in backend.tile_sizes
        )

    # -- metadata ---------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def level_count(self) -> int:
        return len(self._backend.level_dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._backend.level_dimensions

    @property
    def dimensions(self) -> tuple[int, int]:
        """(w, h) of level 0."""
        return self._backend.level_dimensions[0]

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._backend.level_downsamples

    @property
    def mpp(self) -> tuple[float, float] | None:
        return self._backend.mpp

    @property
    def objective_power(self) -> float | None:
        return self._backend.objective_power

    @property
    def vendor(self) -> str:
        return self._backend.vendor

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._backend.properties)

    @property
    def background_color(self) -> tuple[int, int, int]:
        return self._backend.background

    @cached_property
    def associated_images(self) -> Mapping[str, np.ndarray]:
        return _AssociatedImages(self._backend)

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """Largest level whose downsample is not above ``downsample`` (level 0 at least)."""
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample * (1 + 1e-6):
                best = i
        return best

    def info(self) -> dict[str, Any]:
        """The slide's geometry and metadata as plain JSON-serialisable values."""
        return {
            "path": str(self.path),
            "backend": self.backend,
            "vendor": self.vendor,
            "level_count": self.level_count,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": list(self.level_downsamples),
            "mpp": list(self.mpp) if self.mpp else None,
            "objective_power": self.objective_power,
            "associated_images": list(self._backend.associated_names),
            "tile_sizes": [list(t) for t in self._backend.tile_sizes],
            "chunk_sizes": [list(c) for c in self.chunk_sizes],
            "background_color": list(self.background_color),
        }

    def cache_info(self) -> dict[str, int]:
        """Counters of the chunk cache and of pixel reads sent to the backend."""
        return {
            "hits": self._cache.hits,
            "misses": self._cache.misses,
            "backend_reads": self._reads,
            "cached_chunks": len(self._cache),
            "cached_bytes": self._cache.nbytes,
            "capacity_bytes": self._cache.capacity,
        }

    # -- pixels -----------------------------------------------------------------------
    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """Read a region of one level, as OpenSlide's ``read_region`` does, in RGB.

        Parameters
        ----------
        location : (x, y) int
            Top-left corner in level-0 pixels. May lie outside the slide.
        level : int
            Pyramid level, 0 = full resolution.
        size : (w, h) int
            Size of the region in pixels of ``level``.

        Returns
        -------
        (h, w, 3) uint8 array
            RGB. Areas outside the slide or without data have the background colour.

        Notes
        -----
        At level 0 (and at levels with an integer downsample) this is OpenSlide's own
        read. At other levels the corner is snapped to the level's pixel grid,
        ``round(x / downsample)``, and the pixels come from the same chunks as
        :attr:`pyramid`, so the two always agree exactly. (OpenSlide itself resamples
        by a fraction of a pixel when ``x / downsample`` is not whole.)
        """
        self._check_open()
        x, y = (int(v) for v in location)
        w, h = (int(v) for v in size)
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} out of range: the slide has {self.level_count}")
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got {(w, h)}")
        ds = self.level_downsamples[level]
        if level == 0 and not self._backend.exact_windows:
            return self._direct(x, y, 0, w, h)
        if float(ds).is_integer() and not self._backend.exact_windows:
            d = int(ds)
            return self._direct(round(x / d) * d, round(y / d) * d, level, w, h)
        return self._read_window(level, round(x / ds), round(y / ds), w, h)

    def _direct(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        try:
            with self._reads_lock:
                self._reads += 1
            return self._backend.read_level0(x, y, level, w, h)
        except CorruptTileError as exc:
            return self._on_tile_error(exc, (level, x, y), (h, w))

    def _on_tile_error(self, exc: CorruptTileError, key: tuple[int, int, int],
                       shape: tuple[int, int]) -> np.ndarray:
        if self.tile_errors == "raise":
            raise exc
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"{exc} Shown as background.", RuntimeWarning, stacklevel=3)
        out = np.empty((*shape, 3), np.uint8)
        out[:] = self.background_color
        return out

    def read_chunk(self, level: int, col: int, row: int) -> np.ndarray:
        """One chunk of the pyramid grid, from the cache or the file.

        Parameters
        ----------
        level, col, row : int
            Chunk (col, row) of level ``level``; it covers level pixels
            ``[col * cw, (col + 1) * cw) x [row * ch, (row + 1) * ch)`` clipped to the level,
            where (cw, ch) is ``chunk_sizes[level]``.

        Returns
        -------
        (h, w, 3) uint8 read-only array
        """
        key = (level, col, row)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        self._check_open()
        cw, ch = self.chunk_sizes[level]
        lw, lh = self.level_dimensions[level]
        x, y = col * cw, row * ch
        w, h = min(cw, lw - x), min(ch, lh - y)
        if w <= 0 or h <= 0:
            raise IndexError(f"chunk ({col}, {row}) lies outside level {level}")
        with self._reads_lock:
            self._reads += 1
        try:
            data = self._backend.read_level(level, x, y, w, h)
        except CorruptTileError as exc:
            data = self._read_chunk_by_tile(level, x, y, w, h, exc)
        self._cache.put(key, data)
        return data

    def _read_chunk_by_tile(self, level: int, x: int, y: int, w: int, h: int,
                            first: CorruptTileError) -> np.ndarray:
        """Re-read a damaged multi-tile chunk one native tile at a time.

        With ``tile_errors='fill'`` only the tiles that fail become background, not the
        whole chunk; with ``'raise'`` the first error is raised.
        """
        tw, th = self._backend.tile_sizes[level]
        if self.tile_errors == "raise" or not tw or not th or (tw >= w and th >= h):
            return self._on_tile_error(first, (level, x, y), (h, w))
        out = np.empty((h, w, 3), np.uint8)
        for ty in range(y, y + h, th):
            for tx in range(x, x + w, tw):
                sw, sh = min(tw, x + w - tx), min(th, y + h - ty)
                try:
                    part = self._backend.read_level(level, tx, ty, sw, sh)
                except CorruptTileError as exc:
                    part = self._on_tile_error(exc, (level, tx, ty), (sh, sw))
                out[ty - y:ty - y + sh, tx - x:tx - x + sw] = part
        return out

    def _read_window(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Pixels of window (x, y, w, h) in level coordinates, assembled from chunks."""
        out = np.empty((h, w, 3), np.uint8)
        lw, lh = self.level_dimensions[level]
        ix0, iy0 = max(x, 0), max(y, 0)
        ix1, iy1 = min(x + w, lw), min(y + h, lh)
        if ix0 >= ix1 or iy0 >= iy1:
            out[:] = self.background_color
            return out
        if ix0 > x or iy0 > y or ix1 < x + w or iy1 < y + h:
            out[:] = self.background_color
        cw, ch = self.chunk_sizes[level]
        for row in range(iy0 // ch, (iy1 - 1) // ch + 1):
            for col in range(ix0 // cw, (ix1 - 1) // cw + 1):
                chunk = self.read_chunk(level, col, row)
                cx, cy = col * cw, row * ch
                sx0, sy0 = max(ix0, cx), max(iy0, cy)
                sx1, sy1 = min(ix1, cx + chunk.shape[1]), min(iy1, cy + chunk.shape[0])
                out[sy0 - y:sy1 - y, sx0 - x:sx1 - x] = chunk[sy0 - cy:sy1 - cy, sx0 - cx:sx1 - cx]
        return out

    @cached_property
    def pyramid(self) -> list[da.Array]:
        """Lazy dask arrays of every level, (h, w, 3) uint8, largest first.

        Chunks follow the native tile grid (``chunk_sizes``). Building the arrays reads no
        pixels; computing a slice reads only the chunks it touches, through the shared
        bounded cache, from as many threads as dask uses.
        """
        import dask.array as da

        levels = []
        for level in range(self.level_count):
            cw, ch = self.chunk_sizes[level]
            levels.append(
                da.from_array(
                    _LevelArray(self, level),
                    chunks=(ch, cw, 3),
                    name=f"slideseg-{self._token}-level{level}",
                    asarray=False,
                    fancy=False,
                    lock=False,
                    inline_array=True,
                    meta=np.empty((0, 0, 0), dtype=np.uint8),
                )
            )
        return levels

    def get_thumbnail(self, max_size: tuple[int, int] = (1024, 1024)) -> np.ndarray:
        """An RGB overview no larger than ``max_size`` (w, h), from the best small level."""
        import cv2

        w0, h0 = self.dimensions
        scale = max(w0 / max_size[0], h0 / max_size[1], 1.0)
        level = self.get_best_level_for_downsample(scale)
        lw, lh = self.level_dimensions[level]
        image = self._read_window(level, 0, 0, lw, lh)
        tw, th = max(1, round(w0 / scale)), max(1, round(h0 / scale))
        if (tw, th) == (lw, lh):
            return image
        return cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)

    # -- lifetime ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise SlideSegError(f"{self.path}: the slide is closed.")

    def close(self) -> None:
        """Release the file handles and the cache. Further reads raise ``SlideSegError``."""
        if not self._closed:
            self._closed = True
            self._cache.clear()
            self._backend.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        mpp = f"{self.mpp[0]:.4g} um/px" if self.mpp else "mpp unknown"
        return (f"<Slide {self.path.name!r} {self.vendor} {w}x{h}, {self.level_count} levels, "
                f"{mpp}>")

