"""Colour, stain and texture features of image tiles, for the built-in tile classifier.

:func:`tile_features` turns a batch of RGB tiles into one row of :data:`FEATURE_NAMES`
per tile. Every tile is first shrunk to ``feature_size`` x ``feature_size`` pixels
(128 by default, OpenCV's pixel-area interpolation), so that the features cost about
1.5 ms per 512-pixel tile on one core (a tenth of reading it from the slide), and so
that tiles of any size give comparable numbers. The features are, in this order:

- ``red_mean`` ... ``blue_std``: mean and standard deviation of each RGB channel (0-255);
- ``grey_p10``, ``grey_p50``, ``grey_p90``: percentiles of the grey level (luminance,
  0-255; linear interpolation between order statistics, as :func:`numpy.percentile`);
- ``saturation_mean``, ``saturation_std``: HSV saturation (0-255);
- ``hematoxylin_mean`` ... ``dab_std``: stain concentrations by colour deconvolution
  (Ruifrok & Johnston's H&E-DAB matrix, the values of
  :func:`~napari_slideseg.core.threshold.channel_image`);
- ``lbp_0`` ... ``lbp_9``: fraction of pixels with each rotation-invariant uniform
  local binary pattern of the grey level (8 neighbours at radius 1; codes 0-8 count
  the neighbours at least as bright as the centre, 9 is "not uniform"), as
  ``skimage.feature.local_binary_pattern(grey, 8, 1, 'uniform')``, counted on the
  pixels inside the one-pixel border (the border has no full neighbourhood);
- ``glcm_contrast``, ``glcm_homogeneity``, ``glcm_energy``, ``glcm_correlation``: grey
  level co-occurrence properties (32 grey levels, distance 1, symmetric and normalised
  co-occurrence matrices at 0 and 90 degrees, the mean of the two angles), as
  ``skimage.feature.graycomatrix`` and ``graycoprops`` give them;
- ``gradient_mean``: mean Sobel gradient magnitude of the grey level, in grey levels per
  pixel of the shrunk tile (inside the border);
- ``tissue_fraction``: fraction of pixels whose saturation exceeds
  :data:`TISSUE_SATURATION` (stained tissue is coloured, glass is grey or white).

The local binary patterns and co-occurrence matrices are computed for the whole batch
at once with NumPy rather than tile by tile with scikit-image (four to ten times
slower); the tests check that both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .errors import SlideSegError

__all__ = ["FEATURE_NAMES", "FEATURE_SIZE", "TISSUE_SATURATION", "GLCM_LEVELS",
           "tile_features", "resize_tiles"]

#: Side (pixels) tiles are shrunk to before their features are computed.
FEATURE_SIZE = 128
#: HSV saturation (0-255) above which a pixel counts as tissue in ``tissue_fraction``.
TISSUE_SATURATION = 20
#: Grey levels of the co-occurrence matrices.
GLCM_LEVELS = 32
LBP_BINS = 10

#: Names of the columns :func:`tile_features` returns, in order. A saved classifier
#: records them and refuses to load when they change.
FEATURE_NAMES: list[str] = [
    "red_mean", "green_mean", "blue_mean", "red_std", "green_std", "blue_std",
    "grey_p10", "grey_p50", "grey_p90",
    "saturation_mean", "saturation_std",
    "hematoxylin_mean", "hematoxylin_std", "eosin_mean", "eosin_std", "dab_mean", "dab_std",
    *[f"lbp_{i}" for i in range(LBP_BINS)],
    "glcm_contrast", "glcm_homogeneity", "glcm_energy", "glcm_correlation",
    "gradient_mean", "tissue_fraction",
]

_PERCENTILES = (10.0, 50.0, 90.0)
# skimage's sampling points at radius 1 are rounded to 5 decimals: the diagonal ones lie
# 0.70711 px along each axis, read by bilinear interpolation
_A = 0.70711
_W_SIDE = _A * (1.0 - _A)  # weight of each of the two side pixels next to a diagonal
_W_CORNER = _A * _A  # weight of the diagonal pixel itself
_OD_TABLE: np.ndarray | None = None
_STAIN_MATRIX: np.ndarray | None = None


def _as_batch(tiles: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray] | np.ndarray:
    if isinstance(tiles, np.ndarray):
        if tiles.ndim != 4 or tiles.shape[-1] < 3:
            raise SlideSegError(
                f"tiles must be a batch of RGB images (B, S, S, 3), not an array of shape "
                f"{tiles.shape}; for a single tile pass tile[None].")
        if tiles.dtype != np.uint8:
            raise SlideSegError(f"tiles must be uint8 RGB, not {tiles.dtype}.")
        return tiles[..., :3]
    out = []
    for i, tile in enumerate(tiles):
        tile = np.asarray(tile)
        if tile.ndim != 3 or tile.shape[-1] < 3 or tile.dtype != np.uint8:
            raise SlideSegError(f"tile {i} is not an RGB uint8 image (h, w, 3): shape "
                                f"{tile.shape}, {tile.dtype}.")
        out.append(tile[..., :3])
    return out


def resize_tiles(tiles: np.ndarray | Sequence[np.ndarray],
                 size: int | None = FEATURE_SIZE) -> np.ndarray:
    """The tiles as one (B, size, size, 3) uint8 array, resized where they differ.

    Resizing uses OpenCV's pixel-area interpolation (``cv2.INTER_AREA``). With ``size``
    None the tiles are kept as they are and must all have the same shape.
    """
    batch = _as_batch(tiles)
    if size is not None and int(size) < 3:
        raise SlideSegError(f"the tile size must be at least 3 pixels, not {size}.")
    if isinstance(batch, np.ndarray) and (size is None or batch.shape[1:3] == (size, size)):
        return np.ascontiguousarray(batch)
    if size is None:
        shapes = {t.shape for t in batch}
        if len(shapes) > 1:
            raise SlideSegError(f"tiles of different shapes {sorted(shapes)}: give a size "
                                "to resize them to.")
        if not batch:
            raise SlideSegError("no tiles and no size: the shape of the result is unknown.")
        return np.ascontiguousarray(np.stack(batch))
    size = int(size)
    out = np.empty((len(batch), size, size, 3), np.uint8)
    for i, tile in enumerate(batch):
        if tile.shape[:2] == (size, size):
            out[i] = tile
        else:
            out[i] = cv2.resize(np.ascontiguousarray(tile), (size, size),
                                interpolation=cv2.INTER_AREA)
    return out


def _stain_tables() -> tuple[np.ndarray, np.ndarray]:
    """The optical density of each 8-bit value and the (3, 3) matrix OD -> H, E, DAB."""
    global _OD_TABLE, _STAIN_MATRIX
    if _OD_TABLE is None or _STAIN_MATRIX is None:
        from skimage.color import hed_from_rgb

        from .threshold import channel_image

        grey = np.repeat(np.arange(256, dtype=np.uint8), 3).reshape(1, 256, 3)
        _OD_TABLE = np.ascontiguousarray(channel_image(grey, "od")[0], np.float32)
        # cv2.transform computes m @ pixel: the transpose of the row-vector od @ M
        _STAIN_MATRIX = np.ascontiguousarray(hed_from_rgb.T, np.float32)
    return _OD_TABLE, _STAIN_MATRIX


def _percentiles(grey: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Percentiles (linear interpolation) of each tile's uint8 values: (B, len(qs))."""
    b = grey.shape[0]
    n = grey[0].size
    offsets = (np.arange(b, dtype=np.int64) * 256)[:, None]
    counts = np.bincount((grey.reshape(b, -1) + offsets).ravel(), minlength=256 * b)
    cum = counts.reshape(b, 256).cumsum(axis=1)
    out = np.empty((b, len(qs)), np.float64)
    for j, q in enumerate(qs):
        k = q / 100.0 * (n - 1)
        lo = int(np.floor(k))
        hi = min(lo + 1, n - 1)
        v_lo = np.argmax(cum > lo, axis=1)
        v_hi = np.argmax(cum > hi, axis=1)
        out[:, j] = v_lo + (k - lo) * (v_hi - v_lo)
    return out


def _lbp_histograms(grey: np.ndarray) -> np.ndarray:
    """Fractions of the 10 rotation-invariant uniform LBP codes (P=8, R=1) of each tile.

    The codes of scikit-image's ``local_binary_pattern(grey, 8, 1, 'uniform')`` at the
    pixels inside the one-pixel border. Each neighbour is compared with the centre
    through its difference from it, interpolated bilinearly at the diagonals: a
    neighbour exactly as bright as the centre sets its bit, also at the diagonals,
    where scikit-image's interpolation can round the comparison either way.
    """
    b, h, w = grey.shape
    g = grey.astype(np.int16)
    c = g[:, 1:-1, 1:-1]

    def d(dr: int, dc: int) -> np.ndarray:
        return g[:, 1 + dr:h - 1 + dr, 1 + dc:w - 1 + dc] - c

    east, north, west, south = d(0, 1), d(-1, 0), d(0, -1), d(1, 0)

    def diagonal(side_r: np.ndarray, side_c: np.ndarray, dr: int, dc: int) -> np.ndarray:
        sides = (side_r + side_c).astype(np.float32)
        return (sides * np.float32(_W_SIDE) + d(dr, dc).astype(np.float32)
                * np.float32(_W_CORNER)) >= 0

    # skimage's order: neighbour p at angle 2 pi p / 8 counter-clockwise from the right
    bits = [east >= 0, diagonal(north, east, -1, 1), north >= 0,
            diagonal(north, west, -1, -1), west >= 0, diagonal(south, west, 1, -1),
            south >= 0, diagonal(south, east, 1, 1)]
    ones = np.zeros(c.shape, np.uint8)
    changes = np.zeros(c.shape, np.uint8)
    for i, bit in enumerate(bits):
        ones += bit
        if i:
            changes += bit != bits[i - 1]  # skimage counts 7 transitions, not circularly
    codes = np.where(changes <= 2, ones, np.uint8(LBP_BINS - 1))
    offsets = (np.arange(b, dtype=np.int64) * LBP_BINS)[:, None]
    counts = np.bincount((codes.reshape(b, -1) + offsets).ravel(), minlength=LBP_BINS * b)
    return counts.reshape(b, LBP_BINS) / float(codes[0].size)


def _glcm_properties(grey: np.ndarray) -> np.ndarray:
    """Contrast, homogeneity, energy and correlation of each tile's grey level
    co-occurrence (32 levels, distance 1, symmetric, normalised; mean of 0 and 90
    degrees): (B, 4), as ``skimage.feature.graycoprops`` gives them."""
    b = grey.shape[0]
    levels = GLCM_LEVELS
    q = (grey >> 3).astype(np.int32)  # 256 / 32 levels
    base = (np.arange(b, dtype=np.int32) * levels * levels)[:, None, None]
    glcm = np.empty((b, 2, levels, levels), np.float64)
    for k, (first, second) in enumerate(((q[:, :, :-1], q[:, :, 1:]),
                                         (q[:, :-1, :], q[:, 1:, :]))):
        idx = (base + first * levels + second).ravel()
        counts = np.bincount(idx, minlength=b * levels * levels).reshape(b, levels, levels)
        glcm[:, k] = counts + counts.transpose(0, 2, 1)
    glcm /= np.maximum(glcm.sum(axis=(2, 3), keepdims=True), 1)
    i = np.arange(levels, dtype=np.float64)[:, None]
    j = np.arange(levels, dtype=np.float64)[None, :]
    contrast = (glcm * (i - j) ** 2).sum(axis=(2, 3))
    homogeneity = (glcm / (1.0 + (i - j) ** 2)).sum(axis=(2, 3))
    energy = np.sqrt((glcm**2).sum(axis=(2, 3)))
    mu_i = (glcm * i).sum(axis=(2, 3))
    mu_j = (glcm * j).sum(axis=(2, 3))
    di = i[None, None] - mu_i[..., None, None]
    dj = j[None, None] - mu_j[..., None, None]
    std_i = np.sqrt((glcm * di**2).sum(axis=(2, 3)))
    std_j = np.sqrt((glcm * dj**2).sum(axis=(2, 3)))
    cov = (glcm * di * dj).sum(axis=(2, 3))
    flat = (std_i < 1e-15) | (std_j < 1e-15)
    correlation = np.where(flat, 1.0, cov / np.where(flat, 1.0, std_i * std_j))
    return np.stack([contrast, homogeneity, energy, correlation], axis=2).mean(axis=1)


def tile_features(tiles: np.ndarray | Sequence[np.ndarray], *,
                  feature_size: int | None = FEATURE_SIZE) -> np.ndarray:
    """Colour, stain and texture features of each tile: (B, F) float32.

    Parameters
    ----------
    tiles : (B, S, S, 3) uint8 array, or a sequence of (h, w, 3) uint8 arrays
        RGB tiles (an alpha channel is ignored).
    feature_size : int or None
        Side the tiles are shrunk to (pixel-area interpolation) before the features are
        computed; None computes them at the tiles' own size (all tiles must then have
        the same shape). Texture features depend on it: compare features computed with
        the same value.

    Returns
    -------
    (B, len(FEATURE_NAMES)) float32
        One row per tile, columns in :data:`FEATURE_NAMES` order.
    """
    if not isinstance(tiles, np.ndarray) and len(tiles) == 0:
        return np.empty((0, len(FEATURE_NAMES)), np.float32)
    small = resize_tiles(tiles, feature_size)
    b, h, w = small.shape[:3]
    out = np.empty((b, len(FEATURE_NAMES)), np.float32)
    if b == 0:
        return out
    if h < 3 or w < 3:
        raise SlideSegError(f"tiles of {h} x {w} pixels are too small for texture features.")
    stacked = small.reshape(b * h, w, 3)  # one image: colour conversions in one call
    # cv2.meanStdDev per tile: NumPy reductions across the (pixels, 3) axis are slow
    for i in range(b):
        mean, std = cv2.meanStdDev(small[i])
        out[i, 0:3] = mean.ravel()
        out[i, 3:6] = std.ravel()

    grey_img = cv2.cvtColor(stacked, cv2.COLOR_RGB2GRAY)
    grey = grey_img.reshape(b, h, w)
    out[:, 6:9] = _percentiles(grey, _PERCENTILES)

    sat = cv2.cvtColor(stacked, cv2.COLOR_RGB2HSV)[..., 1].reshape(b, -1)
    sat_f = sat.astype(np.float32)
    out[:, 9] = sat_f.mean(axis=1)
    out[:, 10] = sat_f.std(axis=1)

    table, matrix = _stain_tables()
    od = cv2.LUT(stacked, table)  # float32 optical density of each channel
    stains = np.maximum(cv2.transform(od, matrix), 0).reshape(b, h, w, 3)
    for i in range(b):
        mean, std = cv2.meanStdDev(stains[i])
        out[i, 11:17:2] = mean.ravel()
        out[i, 12:17:2] = std.ravel()

    out[:, 17:27] = _lbp_histograms(grey)
    out[:, 27:31] = _glcm_properties(grey)

    # Sobel over the stacked tiles: rows next to a tile's edge see the neighbouring
    # tile, so only each tile's inside (1-pixel border left out) is averaged
    gx = cv2.Sobel(grey_img, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(grey_img, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    magnitude = cv2.magnitude(gx, gy).reshape(b, h, w)
    out[:, 31] = magnitude[:, 1:-1, 1:-1].mean(axis=(1, 2))
    out[:, 32] = (sat > TISSUE_SATURATION).mean(axis=1)
    return out
