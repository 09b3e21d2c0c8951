"""Write pyramidal slides that OpenSlide reads, and make tissue-like test images.

Used for the bundled sample data, the test suite's slides and the benchmark slide.
Pyramids are written tile by tile from a callback, so a slide of any size is written
with bounded memory.

Coordinates: callbacks receive level pixel (x, y) of a tile's top-left corner.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "write_aperio_svs",
    "write_generic_tiff",
    "tissue_image",
    "region_image",
    "pyramid_dimensions",
    "array_tile_reader",
]

TileReader = Callable[[int, int, int, int, int], np.ndarray]
"""(level, x, y, w, h) -> (h, w, 3) uint8: pixels of a window of one level."""


def pyramid_dimensions(width: int, height: int,
                       downsamples: Sequence[int]) -> list[tuple[int, int]]:
    """Level sizes (w, h) for nominal integer downsamples, floored as scanners do.

    Floors make the true downsamples non-integer when the base size is not divisible.
    """
    return [(max(1, width // d), max(1, height // d)) for d in downsamples]


def array_tile_reader(levels: Sequence[np.ndarray]) -> TileReader:
    """A tile reader over in-memory level arrays (each (h, w, 3) uint8)."""

    def read(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return levels[level][y:y + h, x:x + w]

    return read


def _tiles(read: TileReader, level: int, size: tuple[int, int], tile: int,
           background: int) -> Iterator[np.ndarray]:
    w, h = size
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            data = read(level, x, y, min(tile, w - x), min(tile, h - y))
            if data.shape[:2] != (tile, tile):
                full = np.full((tile, tile, 3), background, np.uint8)
                full[:data.shape[0], :data.shape[1]] = data
                data = full
            yield np.ascontiguousarray(data, dtype=np.uint8)


def _resolution(mpp: float | None) -> dict[str, object]:
    if not mpp:
        return {}
    return {"resolution": (10000.0 / mpp, 10000.0 / mpp), "resolutionunit": "CENTIMETER"}


def _atomic_target(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.part")


def write_aperio_svs(
    path: str | os.PathLike[str],
    level_sizes: Sequence[tuple[int, int]],
    read: TileReader,
    *,
    tile: int = 256,
    mpp: float | None = 0.25,
    app_mag: float | None = 40,
    quality: int = 90,
    thumbnail: np.ndarray | None = None,
    label: np.ndarray | None = None,
    macro: np.ndarray | None = None,
    background: int = 255,
) -> Path:
    """Write an Aperio-style SVS file: JPEG-tiled levels plus associated images.

    Parameters
    ----------
    path : path-like
        Output file; written atomically (a temporary file renamed into place).
    level_sizes : sequence of (w, h)
        Level sizes, largest first.
    read : callable
        ``read(level, x, y, w, h)`` returns the (h, w, 3) uint8 pixels of a window in
        that level's pixel grid.
    tile : int
        Tile side in pixels (a multiple of 16).
    mpp, app_mag : float or None
        Written into the ImageDescription as ``MPP`` and ``AppMag``; None omits them.
    quality : int
        JPEG quality of the tiles.
    thumbnail, label, macro : (h, w, 3) uint8 or None
        Associated images, stored as stripped pages as ImageScope writes them.

    Returns
    -------
    pathlib.Path
    """
    import tifffile

    path = Path(path)
    w0, h0 = level_sizes[0]
    fields = [f"{w0}x{h0} [0,0 {w0}x{h0}] ({tile}x{tile}) JPEG/RGB Q={quality}"]
    if app_mag:
        fields.append(f"AppMag = {app_mag:g}")
    if mpp:
        fields.append(f"MPP = {mpp:.4f}")
    fields.append("Filename = " + path.stem.replace("|", "_"))
    head = "Aperio Image Library v12.0.15 \r\n"
    description = head + "|".join(fields)
    jpeg = {"compression": "jpeg", "compressionargs": {"level": quality}, "photometric": "rgb"}
    tmp = _atomic_target(path)
    try:
        with tifffile.TiffWriter(tmp, bigtiff=w0 * h0 > 2**31 // 4) as tif:
            tif.write(_tiles(read, 0, level_sizes[0], tile, background), shape=(h0, w0, 3),
                      dtype=np.uint8, tile=(tile, tile), description=description,
                      metadata=None, **_resolution(mpp), **jpeg)
            if thumbnail is None:
                thumbnail = _small_level(read, level_sizes)
            tif.write(thumbnail, photometric="rgb", metadata=None,
                      description=head + f"{w0}x{h0} -> {thumbnail.shape[1]}x"
                      f"{thumbnail.shape[0]} - |" + "|".join(fields[1:]))
            for level, (w, h) in enumerate(level_sizes[1:], start=1):
                tif.write(_tiles(read, level, (w, h), tile, background), shape=(h, w, 3),
                          dtype=np.uint8, tile=(tile, tile), metadata=None,
                          description=head + f"{w0}x{h0} -> {w}x{h} - |" + "|".join(fields[1:]),
                          **jpeg)
            for name, image, subfiletype in (("label", label, 1), ("macro", macro, 9)):
                if image is not None:
                    tif.write(image, photometric="rgb", subfiletype=subfiletype,
                              compression="lzw", metadata=None,
                              description=head + f"{name} {image.shape[1]}x{image.shape[0]}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_generic_tiff(
    path: str | os.PathLike[str],
    level_sizes: Sequence[tuple[int, int]],
    read: TileReader,
    *,
    tile: int = 256,
    mpp: float | None = 0.5,
    compression: str = "jpeg",
    quality: int = 90,
    background: int = 255,
) -> Path:
    """Write a generic tiled pyramidal TIFF (reduced levels marked as such)."""
    import tifffile

    path = Path(path)
    args: dict[str, object] = {"compression": compression, "photometric": "rgb"}
    if compression == "jpeg":
        args["compressionargs"] = {"level": quality}
    tmp = _atomic_target(path)
    try:
        with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
            for level, (w, h) in enumerate(level_sizes):
                tif.write(_tiles(read, level, (w, h), tile, background), shape=(h, w, 3),
                          dtype=np.uint8, tile=(tile, tile),
                          subfiletype=1 if level else 0, metadata=None,
                          **_resolution(mpp), **args)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _small_level(read: TileReader, level_sizes: Sequence[tuple[int, int]]) -> np.ndarray:
    import cv2

    level = len(level_sizes) - 1
    w, h = level_sizes[level]
    image = np.ascontiguousarray(read(level, 0, 0, w, h))
    scale = min(1.0, 768 / max(w, h))
    if scale < 1:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
    return image


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Smooth random field in [0, 1] of ``shape`` (h, w), features about ``cell`` px wide."""
    import cv2

    h, w = shape
    small = rng.random((max(2, h // cell + 2), max(2, w // cell + 2))).astype(np.float32)
    field = cv2.resize(small, (w + 2 * cell, h + 2 * cell), interpolation=cv2.INTER_CUBIC)
    field = field[cell:cell + h, cell:cell + w]
    lo, hi = float(field.min()), float(field.max())
    return (field - lo) / (hi - lo + 1e-6)


def tissue_image(width: int, height: int, *, seed: int = 0,
                 nucleus_radius: float = 5.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A tissue-like H&E image: pink stroma, purple nuclei, a dense 'tumour', white glass.

    Parameters
    ----------
    width, height : int
        Image size in pixels.
    seed : int
        The image is a deterministic function of its arguments.
    nucleus_radius : float
        Typical nucleus radius in pixels.

    Returns
    -------
    image : (height, width, 3) uint8
    masks : dict of str to (height, width) bool
        ``'tissue'``, ``'tumour'`` (dense, large nuclei) and ``'lumen'`` (glass-white
        holes inside the tumour): the truth the sample annotations are drawn from.
    """
    import cv2

    rng = np.random.default_rng(seed)
    h, w = height, width
    # Region fields vary slowly: compute them on a coarse grid and enlarge.
    f = 4
    ch, cw = max(2, h // f), max(2, w // f)
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    envelope = 1.0 - np.hypot((xx - cw / 2) / (cw / 2), (yy - ch / 2) / (ch / 2))
    side = min(ch, cw)
    tissue_c = (0.65 * envelope + 0.55 * _smooth_noise(rng, (ch, cw), max(4, side // 5))) > 0.55
    tumour_c = tissue_c & (_smooth_noise(rng, (ch, cw), max(4, side // 4)) > 0.62)
    lumen_c = tumour_c & (_smooth_noise(rng, (ch, cw), max(2, side // 30)) > 0.82)

    def enlarge(mask: np.ndarray) -> np.ndarray:
        return cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0

    tissue, tumour, lumen = enlarge(tissue_c), enlarge(tumour_c), enlarge(lumen_c)
    tissue_only = tissue & ~lumen

    fibres = _smooth_noise(rng, (h, w), max(3, min(h, w) // 120))
    fibres = cv2.GaussianBlur(fibres, (0, 0), sigmaX=6, sigmaY=1.5)
    base = np.array([236, 168, 200], np.float32)
    dark = np.array([205, 110, 160], np.float32)
    stroma = base + (dark - base) * np.clip(fibres, 0, 1)[..., None]
    glass = np.array([243, 242, 245], np.float32)
    image = np.where(tissue_only[..., None], stroma, glass).astype(np.float32)

    cells = max(1, min(2_000_000, int(tissue_only.sum() / (np.pi * nucleus_radius**2) * 0.08)))
    ys, xs = np.nonzero(tissue_only[::2, ::2])
    if len(ys):
        ys, xs = ys * 2, xs * 2
        pick = rng.integers(0, len(ys), size=cells)
        dense = rng.integers(0, len(ys), size=cells * 2)
        dense = dense[tumour[ys[dense], xs[dense]]]
        radii = np.concatenate([
            rng.normal(nucleus_radius, nucleus_radius * 0.2, len(pick)),
            rng.normal(nucleus_radius * 1.5, nucleus_radius * 0.3, len(dense)),
        ])
        cxs = np.concatenate([xs[pick], xs[dense]])
        cys = np.concatenate([ys[pick], ys[dense]])
        angles = rng.uniform(0, 180, len(cxs))
        shades = rng.uniform(0.0, 1.0, len(cxs))
        for x, y, r, a, s in zip(cxs.tolist(), cys.tolist(), radii.tolist(), angles.tolist(),
                                 shades.tolist(), strict=True):
            r = max(1.5, r)
            cv2.ellipse(image, (x, y), (int(r * 1.3), int(r)), a, 0, 360,
                        (95 + 40 * s, 45 + 30 * s, 140 + 30 * s), -1, lineType=cv2.LINE_AA)
    image = np.where(lumen[..., None], np.float32(246.0), image)
    grain = rng.normal(0, 3.0, (256, 256, 3)).astype(np.float32)
    image += np.tile(grain, (h // 256 + 1, w // 256 + 1, 1))[:h, :w]
    image = cv2.GaussianBlur(image, (0, 0), 0.8)
    out = np.empty((h, w, 3), np.uint8)
    np.clip(image, 0, 255, out=image)
    out[:] = image
    return out, {"tissue": tissue, "tumour": tumour, "lumen": lumen}


def downsample_levels(image: np.ndarray,
                      level_sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Area-averaged copies of ``image`` at each (w, h) of ``level_sizes`` (first = itself)."""
    import cv2

    out = [image]
    for w, h in level_sizes[1:]:
        out.append(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA))
    return out


def region_image(width: int, height: int, boxes: Sequence[tuple[int, int, int, int]], *,
                 seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pink fibrous 'stroma' with a 'tumour' of distinct colour and texture in ``boxes``.

    The tumour is purple with dense dark dots (nuclei); the stroma pink with fine
    streaks. A known answer for tile classifiers: the truth is exactly the union of the
    boxes ``(x0, y0, x1, y1)`` (level-0 pixels, end-exclusive).

    Returns
    -------
    image : (height, width, 3) uint8
    mask : (height, width) bool, the tumour
    """
    import cv2

    rng = np.random.default_rng(seed)
    h, w = height, width
    fibres = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 6, sigmaY=1.5)
    fibres = (fibres - fibres.min()) / (float(np.ptp(fibres)) + 1e-9)
    base = np.array([236, 168, 200], np.float32)
    dark = np.array([205, 110, 160], np.float32)
    image = base + (dark - base) * fibres[..., None]
    mask = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    dots = np.zeros((h, w), np.uint8)
    ys, xs = np.nonzero(mask[::3, ::3])
    if len(ys):
        pick = rng.choice(len(ys), max(1, len(ys) // 3), replace=False)
        for y, x in zip((ys[pick] * 3).tolist(), (xs[pick] * 3).tolist(), strict=True):
            cv2.circle(dots, (x, y), 2, 1, -1)
    tumour = np.where(dots[..., None] > 0, np.array([70, 40, 120], np.float32),
                      np.array([150, 90, 175], np.float32))
    image = np.where(mask[..., None], tumour, image)
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), mask
