"""Tile grids over tissue, tile reading and what annotations say about each tile.

A :class:`TileGrid` is the regular grid of square tiles the auto-annotation classifies:
tile ``(row, col)`` covers level-0 pixels ``[col * size0, (col + 1) * size0)`` in x and
the same in y, where ``size0`` is the tile side in level-0 pixels (``size`` pixels of
the level or target pixel size the tiles are read at). Only tiles over tissue are kept.
:class:`TilePredictions` holds a model's class probabilities for every tile of a grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .annotations import AnnotationSet
from .errors import SlideSegError
from .masks import AnnotationKey, class_of, rasterize
from .slide import Slide
from .tissue import TissueMask, tissue_mask

__all__ = ["TileGrid", "TilePredictions", "tile_grid", "read_tile", "tile_class_fractions",
           "REJECTED"]

#: Review status of regions that do not count as truth (see :mod:`.review`).
REJECTED = "rejected"


@dataclass
class TileGrid:
    """Square tiles of one slide, in level-0 pixels, with their grid positions.

    Attributes
    ----------
    col, row : (N,) int64
        Grid column and row of each tile; its level-0 box is
        ``[col * size0, (col + 1) * size0) x [row * size0, (row + 1) * size0)``.
    size : int
        Tile side in pixels handed to the classifier.
    size0 : float
        Tile side in level-0 pixels (``size * downsample``).
    level : int
        Pyramid level the tiles are read from (resized when ``downsample`` differs
        from the level's).
    downsample : float
        Level-0 pixels per tile pixel.
    shape : (rows, cols)
        The whole grid over the slide (tiles cut by the slide's edge are left out).
    mpp : float or None
        Micrometres per tile pixel.
    tissue : (N,) float
        Tissue fraction of each tile (1 where no tissue mask was used).
    """

    col: np.ndarray
    row: np.ndarray
    size: int
    size0: float
    level: int
    downsample: float
    shape: tuple[int, int]
    mpp: float | None = None
    tissue: np.ndarray = field(default_factory=lambda: np.empty(0))
    level_downsample: float = 0.0  # the read level's downsample (0: same as downsample)

    def __post_init__(self) -> None:
        if not self.level_downsample:
            self.level_downsample = float(self.downsample)
        self.col = np.asarray(self.col, np.int64)
        self.row = np.asarray(self.row, np.int64)
        if len(self.tissue) != len(self.col):
            self.tissue = np.ones(len(self.col))

    def __len__(self) -> int:
        return len(self.col)

    @property
    def x(self) -> np.ndarray:
        """Level-0 left edge of each tile."""
        return self.col * self.size0

    @property
    def y(self) -> np.ndarray:
        """Level-0 top edge of each tile."""
        return self.row * self.size0

    @property
    def centers(self) -> np.ndarray:
        """(N, 2) level-0 (x, y) of each tile's centre."""
        return np.column_stack([(self.col + 0.5) * self.size0, (self.row + 0.5) * self.size0])

    @property
    def read_size(self) -> int:
        """Pixels read at ``level`` for one tile (before resizing to ``size``)."""
        return int(math.ceil(self.size * self.downsample / self.level_downsample - 1e-9))

    def subset(self, keep: np.ndarray) -> TileGrid:
        """The tiles selected by a boolean mask or index array."""
        return TileGrid(self.col[keep], self.row[keep], self.size, self.size0, self.level,
                        self.downsample, self.shape, self.mpp, self.tissue[keep],
                        self.level_downsample)

    def to_image(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Per-tile values as a (rows, cols) image of the whole grid (``fill`` elsewhere)."""
        values = np.asarray(values)
        dtype = np.result_type(values.dtype, np.min_scalar_type(fill)) \
            if not (isinstance(fill, float) and math.isnan(fill)) else np.float32
        out = np.full(self.shape + values.shape[1:], fill, dtype=dtype)
        out[self.row, self.col] = values
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "size0": self.size0, "level": self.level,
                "downsample": self.downsample, "shape": list(self.shape), "mpp": self.mpp,
                "level_downsample": self.level_downsample}


def tile_grid(slide: Slide, size: int = 512, *, level: int | None = None,
              mpp: float | None = None, tissue: TissueMask | None | bool = True,
              min_tissue: float = 0.25, tissue_mpp: float = 8.0) -> TileGrid:
    """The grid of ``size``-px tiles over the slide's tissue.

    Parameters
    ----------
    slide : Slide
    size : int
        Tile side in pixels of the level (or target pixel size) read. Default 512.
    level : int, optional
        Pyramid level to read (default 0).
    mpp : float, optional
        Target micrometres per pixel instead of a level: tiles are read from the
        nearest finer level and resized.
    tissue : TissueMask, True or False/None
        Tissue mask (True: computed with :func:`~.tissue.tissue_mask`; False/None: every
        tile is kept).
    min_tissue : float
        Keep tiles whose tissue fraction is at least this (0-1).
    """
    if size < 8:
        raise SlideSegError(f"tile size must be at least 8 px, not {size}.")
    if level is not None and mpp is not None:
        raise SlideSegError("give a level or a target mpp, not both.")
    w0, h0 = slide.dimensions
    if mpp is not None:
        if not slide.mpp:
            raise SlideSegError(f"{slide.path}: the pixel size is unknown, so a target mpp "
                                "cannot be used; give a level instead.")
        if mpp < slide.mpp[0] * (1 - 1e-6):
            raise SlideSegError(f"target {mpp} µm/px is finer than the slide's "
                                f"{slide.mpp[0]:.4g} µm/px.")
        ds = mpp / slide.mpp[0]
        read_level = slide.get_best_level_for_downsample(ds + 1e-9)
        level_ds = float(slide.level_downsamples[read_level])
        if abs(ds / level_ds - 1) <= 1e-6:
            ds = level_ds
    else:
        read_level = 0 if level is None else int(level)
        if not 0 <= read_level < slide.level_count:
            raise SlideSegError(f"level {read_level} does not exist "
                                f"(the slide has {slide.level_count}).")
        ds = level_ds = float(slide.level_downsamples[read_level])
    size0 = size * ds
    cols, rows = int(w0 // size0), int(h0 // size0)
    if cols < 1 or rows < 1:
        raise SlideSegError(f"{slide.path}: the slide ({w0} x {h0} px) is smaller than one "
                            f"tile ({size0:g} level-0 px).")
    rr, cc = np.mgrid[0:rows, 0:cols]
    rr, cc = rr.ravel(), cc.ravel()
    fractions = np.ones(len(rr))
    if tissue is True:
        tissue = tissue_mask(slide, mpp=tissue_mpp)
    if isinstance(tissue, TissueMask):
        fractions = tissue.fractions(cc * size0, rr * size0, size0, size0)
        keep = fractions >= min_tissue
        rr, cc, fractions = rr[keep], cc[keep], fractions[keep]
    return TileGrid(cc, rr, int(size), float(size0), read_level, float(ds), (rows, cols),
                    slide.mpp[0] * ds if slide.mpp else None, fractions, level_ds)


def read_tile(slide: Slide, grid: TileGrid, i: int) -> np.ndarray:
    """Tile ``i`` of the grid as a (size, size, 3) uint8 RGB array."""
    x, y = int(round(grid.col[i] * grid.size0)), int(round(grid.row[i] * grid.size0))
    n = grid.read_size
    tile = slide.read_region((x, y), grid.level, (n, n))
    if n != grid.size:
        tile = cv2.resize(tile, (grid.size, grid.size), interpolation=cv2.INTER_AREA)
    return tile


def tile_class_fractions(grid: TileGrid, annotations: AnnotationSet, classes: Sequence[str],
                         *, class_from: str = "layer", samples: int = 16,
                         exclude_rejected: bool = True) -> np.ndarray:
    """(N, C) fraction of each tile covered by each class's regions.

    Each class is rasterised on its own (overlapping classes both count) at ``samples``
    x ``samples`` points per tile, through the same exact polygon fill as the masks.
    Regions whose review status is 'rejected' are left out when ``exclude_rejected``.
    """
    from .review import review_of

    out = np.zeros((len(grid), len(classes)), np.float32)
    if not len(grid):
        return out
    rows, cols = grid.shape
    ds = grid.size0 / samples
    for k, name in enumerate(classes):
        kept = []
        for layer in annotations:
            regions = [r for r in layer.regions if class_of(layer, r, class_from) == name
                       and not (exclude_rejected and review_of(r).get("status") == REJECTED)]
            if regions:
                kept.append(type(layer)(name=layer.name, color=layer.color, regions=regions,
                                        attributes=layer.attributes))
        if not kept:
            continue
        subset = AnnotationSet(kept)
        key = AnnotationKey({name: 1}, class_from=class_from)
        mask = _class_mask(subset, key, grid, ds, samples)
        out[:, k] = mask[grid.row, grid.col]
    return out


def _class_mask(annotations: AnnotationSet, key: AnnotationKey, grid: TileGrid, ds: float,
                samples: int) -> np.ndarray:
    """Per-tile coverage of one class over the whole grid, in bands of tile rows."""
    rows, cols = grid.shape
    out = np.zeros((rows, cols), np.float32)
    band = max(1, 4096 // (cols * samples))  # tile rows rasterised at a time
    for r0 in range(0, rows, band):
        r1 = min(rows, r0 + band)
        m = rasterize(annotations, key, (0.0, r0 * grid.size0, cols * samples,
                                         (r1 - r0) * samples), ds)
        m = (m > 0).reshape(r1 - r0, samples, cols, samples)
        out[r0:r1] = m.mean(axis=(1, 3))
    return out


@dataclass
class TilePredictions:
    """Class probabilities of every tile of a grid.

    Attributes
    ----------
    grid : TileGrid
    classes : list of str
        The model's classes (including its background class, e.g. 'other').
    proba : (N, C) float32
        Probability of each class for each tile (rows sum to 1 for a multi-class model).
    """

    grid: TileGrid
    classes: list[str]
    proba: np.ndarray

    def __post_init__(self) -> None:
        self.proba = np.asarray(self.proba, np.float32).reshape(len(self.grid), -1)
        if self.proba.shape[1] != len(self.classes):
            raise ValueError(f"{self.proba.shape[1]} probability columns for "
                             f"{len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.grid)

    def probability(self, cls: str) -> np.ndarray:
        """(N,) probability of one class."""
        return self.proba[:, self.classes.index(cls)]

    def heatmap(self, cls: str) -> np.ndarray:
        """(rows, cols) float32 probability of one class over the whole grid, NaN where
        no tile was classified."""
        return self.grid.to_image(self.probability(cls))

    def labels(self, threshold: float = 0.5) -> np.ndarray:
        """(N,) index of the most probable class, -1 where it is below ``threshold``."""
        best = self.proba.argmax(axis=1)
        top = self.proba[np.arange(len(best)), best]
        return np.where(top >= threshold, best, -1)
