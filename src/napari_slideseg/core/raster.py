"""Rasterising annotation regions into label windows, lazily and at any pyramid level.

A :class:`RegionIndex` holds the area regions of an annotation set (polygons,
rectangles, ellipses, with holes) and their bounding boxes; :func:`rasterize_window`
fills the regions that touch one window, so no full-resolution mask ever exists; and
:func:`label_pyramid` wraps that in one lazy dask array per pyramid level.

Pixel convention: level-0 pixel (i, j) covers [j, j + 1) x [i, i + 1) in annotation
coordinates (OpenSlide's and every annotation format's), so a pixel is inside a region
when its centre (j + 0.5, i + 0.5) is inside or on its outline, and not inside or on
the outline of one of its holes (scikit-image's ``draw.polygon`` rule, outlines within
1e-7 px included; OpenCV's ``fillPoly`` also fills pixels the outline merely touches).
Centres fall on outlines often: an edge between whole-number vertices with odd steps in
x and y passes through one. At a level with downsample ``ds``, pixel (i, j) covers
level-0 [j ds, (j + 1) ds) and is judged by its centre.

Overlaps: layers are filled in order and a later layer wins where two overlap; within a
layer, negative regions (holes, ImageScope ``NegativeROA``) are cut out of that layer's
positive regions only. Arrows, rulers, lines and points are never filled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .annotations import AREA_TYPES, AnnotationLayer, AnnotationSet, Region

__all__ = ["RegionIndex", "label_pyramid", "rasterize_window", "region_mask"]

@dataclass
class RegionIndex:
    """Area regions of an annotation set, flattened into edge arrays for window queries.

    Region ``k`` has label ``labels[k]`` (its layer's position + 1, or what ``label_for``
    gives) and fill rank ``rank[k]`` (higher ranks are drawn over lower ones), is cut out
    when ``negative[k]``, lies in the level-0 box ``bboxes[k]``
    (x0, y0, x1, y1), and owns edges ``edge_start[k]:edge_start[k + 1]`` of
    ``edges_a``/``edges_b`` (the edges of its outer ring and of its own holes;
    ``edge_hole`` marks the holes' edges).
    """

    bboxes: np.ndarray  # (M, 4) float64
    labels: np.ndarray  # (M,) int64
    negative: np.ndarray  # (M,) bool
    layer: np.ndarray  # (M,) int64: position of the region's layer
    rank: np.ndarray  # (M,) int64: fill order of the region's label
    edges_a: np.ndarray  # (E, 2) float64: edge start (x, y), level 0
    edges_b: np.ndarray  # (E, 2) float64: edge end
    edge_start: np.ndarray  # (M + 1,) int64
    edge_hole: np.ndarray | None = None  # (E,) bool: the edge bounds one of its region's holes

    @classmethod
    def from_annotations(
        cls, annotations: AnnotationSet,
        label_for: Callable[[AnnotationLayer, Region], int | None] | None = None,
        rank_of: dict[int, int] | None = None,
    ) -> RegionIndex:
        """Index every area region.

        ``label_for(layer, region)`` gives a positive region's label (None: not filled);
        default: the layer's position + 1. Negative regions carve their own layer
        whatever their label. ``rank_of`` maps label -> fill rank (default: the label,
        so later layers win).
        """
        rings: list[np.ndarray] = []
        ring_hole: list[bool] = []
        outer_of: list[int] = []  # index in ``rings`` of each region's outer ring
        counts, labels, negative, layers = [], [], [], []
        for li, layer in enumerate(annotations):
            for region in layer.regions:
                if region.type not in AREA_TYPES:
                    continue
                if region.negative:
                    value = 0
                elif label_for is None:
                    value = li + 1
                else:
                    found = label_for(layer, region)
                    if not found:
                        continue
                    value = int(found)
                outline = region.outline() if region.type == "ellipse" else region.vertices
                if len(outline) < 3:
                    continue
                outer_of.append(len(rings))
                rings.append(outline)
                ring_hole.append(False)
                n = len(outline)
                for hole in region.holes:
                    if len(hole) >= 3:
                        rings.append(hole)
                        ring_hole.append(True)
                        n += len(hole)
                counts.append(n)
                labels.append(value)
                negative.append(region.negative)
                layers.append(li)
        ranks = [(rank_of or {}).get(v, v) for v in labels]
        if not rings:
            empty = np.empty((0, 2), np.float64)
            none = np.empty(0, np.int64)
            return cls(np.empty((0, 4)), none, np.empty(0, bool), none, none, empty, empty,
                       np.zeros(1, np.int64), np.empty(0, bool))
        a = np.concatenate(rings)
        sizes = np.fromiter((len(r) for r in rings), np.int64, len(rings))
        ring_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        following = np.arange(1, len(a) + 1)
        following[ring_start + sizes - 1] = ring_start  # each ring closes on its start
        outer = np.asarray(outer_of)
        # a region's box holds all its rings: a hole poking out of its outer ring is
        # filled there (even-odd), so it must be found by window queries too
        lo_x = np.minimum.reduceat(np.minimum.reduceat(a[:, 0], ring_start), outer)
        lo_y = np.minimum.reduceat(np.minimum.reduceat(a[:, 1], ring_start), outer)
        hi_x = np.maximum.reduceat(np.maximum.reduceat(a[:, 0], ring_start), outer)
        hi_y = np.maximum.reduceat(np.maximum.reduceat(a[:, 1], ring_start), outer)
        return cls(np.column_stack([lo_x, lo_y, hi_x, hi_y]), np.asarray(labels, np.int64),
                   np.asarray(negative, bool), np.asarray(layers, np.int64),
                   np.asarray(ranks, np.int64), a, a[following],
                   np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]),
                   np.repeat(np.asarray(ring_hole, bool), sizes))

    def __len__(self) -> int:
        return len(self.labels)

    def query(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Indices of regions whose bounding box meets the level-0 box [x0, x1) x [y0, y1)."""
        b = self.bboxes
        hit = (b[:, 0] < x1) & (b[:, 2] >= x0) & (b[:, 1] < y1) & (b[:, 3] >= y0)
        return np.flatnonzero(hit)

    def edges_of(self, regions: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(a, b, region, hole) of every edge of ``regions``."""
        starts, stops = self.edge_start[regions], self.edge_start[regions + 1]
        n = stops - starts
        owner = np.repeat(regions, n)
        idx = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + np.repeat(starts, n)
        hole = (self.edge_hole[idx] if self.edge_hole is not None
                else np.zeros(len(idx), bool))
        return self.edges_a[idx], self.edges_b[idx], owner, hole

    @property
    def extent(self) -> tuple[int, int]:
        """(w, h) in level-0 pixels that holds every region (at least 1 x 1)."""
        if not len(self):
            return (1, 1)
        return (max(1, int(np.ceil(self.bboxes[:, 2].max()))),
                max(1, int(np.ceil(self.bboxes[:, 3].max()))))


#: Centres closer than this to an outline (in pixels) are on it.
ON_OUTLINE = 1e-7


def _coverage(a: np.ndarray, b: np.ndarray, owner: np.ndarray, h: int, w: int,
              hole: np.ndarray | None = None) -> np.ndarray:
    """Pixels (h, w) inside at least one region: even-odd per region, outlines closed.

    ``a``, ``b`` are edge ends in pixel-centre coordinates (pixel (i, j) is centred at
    (j, i)); ``owner`` says which region each edge bounds, ``hole`` whether it bounds one
    of that region's holes. Each region's crossings of each pixel row are paired into
    inside spans, and the spans of all regions are summed, so overlapping regions stay
    filled and a region's own holes stay open. A centre on an outer outline is inside,
    on a hole's outline outside (as if each region were tested on its own): span ends
    are closed or open by the ring they lie on, and centres on outlines the spans cannot
    see (horizontal edges on a row, vertices at a ring's top or bottom) are fixed one by
    one.
    """
    hole = np.zeros(len(a), bool) if hole is None else hole
    eps = ON_OUTLINE
    y_lo, y_hi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    start = np.clip(np.ceil(y_lo), 0, h).astype(np.int64)  # rows r with lo <= r < hi
    stop = np.clip(np.ceil(y_hi), 0, h).astype(np.int64)
    n = stop - start
    keep = n > 0
    k = np.flatnonzero(keep)
    edge = np.repeat(k, n[keep])
    rows = start[edge] + np.arange(len(edge)) - np.repeat(np.cumsum(n[keep]) - n[keep],
                                                           n[keep])
    ax, ay, bx, by = a[edge, 0], a[edge, 1], b[edge, 0], b[edge, 1]
    x = ax + (rows - ay) * (bx - ax) / (by - ay)
    order = np.lexsort((x, rows, owner[edge]))
    rows, x, own, on_hole = rows[order], x[order], owner[edge][order], hole[edge][order]
    # even-odd pairs per region row: [x_in, x_out]; an end on an outer ring includes a
    # centre exactly there, an end on a hole excludes it
    r_in, x_in, x_out, region = rows[0::2], x[0::2], x[1::2], own[0::2]
    c_in = np.where(on_hole[0::2], np.floor(x_in + eps) + 1, np.ceil(x_in - eps))
    c_out = np.where(on_hole[1::2], np.ceil(x_out - eps), np.floor(x_out + eps) + 1)
    c_in = np.clip(c_in, 0, w).astype(np.int64)
    c_out = np.clip(c_out, 0, w).astype(np.int64)
    full = c_out > c_in
    r_in, c_in, c_out, region = r_in[full], c_in[full], c_out[full], region[full]
    fix_r, fix_c, fix_v = _outline_fixes(a, b, owner, hole, h, w, r_in, c_in, c_out, region)
    out = np.zeros((h, w), bool)
    if not len(r_in) and not len(fix_r):
        return out
    # +1 where a span starts, -1 where it ends, summed along the row: only over the box
    # the spans and fixes cover, so a region touching a corner of the window costs that
    r0 = int(min(r_in.min(initial=h), fix_r.min(initial=h)))
    r1 = int(max(r_in.max(initial=-1), fix_r.max(initial=-1))) + 1
    c0 = int(min(c_in.min(initial=w), fix_c.min(initial=w)))
    c1 = int(max(c_out.max(initial=0), fix_c.max(initial=-1) + 1))
    bw = c1 - c0 + 1
    diff = np.zeros((r1 - r0) * bw, np.int32)
    np.add.at(diff, (r_in - r0) * bw + c_in - c0, 1)
    np.subtract.at(diff, (r_in - r0) * bw + c_out - c0, 1)
    counts = np.cumsum(diff.reshape(r1 - r0, bw), axis=1, dtype=np.int32)[:, :-1]
    np.add.at(counts, (fix_r - r0, fix_c - c0), fix_v)
    out[r0:r1, c0:c1] = counts > 0
    return out


def _outline_fixes(a: np.ndarray, b: np.ndarray, owner: np.ndarray, hole: np.ndarray,
                   h: int, w: int, r_in: np.ndarray, c_in: np.ndarray, c_out: np.ndarray,
                   region: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres lying on outlines whose region's spans got them wrong: (rows, cols, +1/-1).

    A centre on a region's outer ring belongs to it (+1 where its spans left it out), a
    centre on one of its holes' rings does not (-1 where its spans counted it).
    """
    eps = ON_OUTLINE
    none = (np.empty(0, np.int64),) * 2 + (np.empty(0, np.int32),)
    lo = np.minimum(a[:, 1], b[:, 1])
    hi = np.maximum(a[:, 1], b[:, 1])
    first = np.clip(np.ceil(lo - eps), 0, h).astype(np.int64)
    last = np.clip(np.floor(hi + eps), -1, h - 1).astype(np.int64)
    n = np.maximum(last - first + 1, 0)
    flat = np.abs(b[:, 1] - a[:, 1]) <= eps
    # sloped edges: the row centres they cross at a whole column
    sloped = ~flat & (n > 0)
    e = np.repeat(np.flatnonzero(sloped), n[sloped])
    rows = first[e] + np.arange(len(e)) - np.repeat(np.cumsum(n[sloped]) - n[sloped],
                                                    n[sloped])
    x = a[e, 0] + (rows - a[e, 1]) * (b[e, 0] - a[e, 0]) / (b[e, 1] - a[e, 1])
    on = np.abs(x - np.round(x)) <= eps
    pr, pc, pe = rows[on], np.round(x[on]).astype(np.int64), e[on]
    # flat edges on a row centre: every whole column between their ends
    level = flat & (np.abs(a[:, 1] - np.round(a[:, 1])) <= eps) & (n > 0)
    f = np.flatnonzero(level)
    if len(f):
        x0 = np.ceil(np.minimum(a[f, 0], b[f, 0]) - eps).astype(np.int64)
        x1 = np.floor(np.maximum(a[f, 0], b[f, 0]) + eps).astype(np.int64)
        x0, x1 = np.clip(x0, 0, w), np.clip(x1, -1, w - 1)
        m = np.maximum(x1 - x0 + 1, 0)
        li = np.repeat(np.arange(len(f)), m)
        fe = f[li]
        fc = x0[li] + np.arange(len(fe)) - np.repeat(np.cumsum(m) - m, m)
        pr = np.concatenate([pr, np.round(a[fe, 1]).astype(np.int64)])
        pc = np.concatenate([pc, fc])
        pe = np.concatenate([pe, fe])
    inside = (pc >= 0) & (pc < w) & (pr >= 0) & (pr < h)
    pr, pc, pe = pr[inside], pc[inside], pe[inside]
    if not len(pr):
        return none
    # one entry per (region, row, col, ring kind)
    key = np.column_stack([owner[pe], pr, pc, hole[pe].astype(np.int64)])
    key = np.unique(key, axis=0)
    reg, pr, pc, is_hole = key[:, 0], key[:, 1], key[:, 2], key[:, 3].astype(bool)
    # was the centre counted by its own region's spans?
    span_key = (region * (h + 1) + r_in) * (w + 2) + c_in
    order = np.argsort(span_key, kind="stable")
    span_key, span_end = span_key[order], c_out[order]
    span_start = c_in[order]
    point_key = (reg * (h + 1) + pr) * (w + 2) + pc
    at = np.searchsorted(span_key, point_key, side="right") - 1
    valid = at >= 0
    same_row = np.zeros(len(pr), bool)
    same_row[valid] = (span_key[at[valid]] - span_start[at[valid]]
                       == point_key[valid] - pc[valid])
    counted = same_row & (pc < np.where(valid, span_end[np.maximum(at, 0)], 0))
    # a centre on both rings of one region is on a hole: out
    both = np.zeros(len(pr), bool)
    if is_hole.any() and (~is_hole).any():
        holes = {(int(r), int(y), int(c)) for r, y, c in
                 zip(reg[is_hole], pr[is_hole], pc[is_hole], strict=True)}
        both = np.fromiter(((int(r), int(y), int(c)) in holes for r, y, c in
                            zip(reg, pr, pc, strict=True)), bool, len(pr)) & ~is_hole
    add = ~is_hole & ~counted & ~both
    sub = is_hole & counted
    pick = add | sub
    if not pick.any():
        return none
    return pr[pick], pc[pick], np.where(add[pick], 1, -1).astype(np.int32)


def region_mask(rings: Sequence[np.ndarray], h: int, w: int) -> np.ndarray:
    """Pixels of an (h, w) grid whose centres lie inside ``rings`` or on them (even-odd).

    ``rings`` are in pixel-centre coordinates (pixel (i, j) has its centre at (j, i));
    the first is the outer ring, the others its holes (a centre on a hole's ring is
    outside).
    """
    rings = [np.asarray(r, np.float64) for r in rings if len(r) >= 3]
    if not rings:
        return np.zeros((h, w), bool)
    a = np.concatenate(rings)
    b = np.concatenate([np.roll(r, -1, axis=0) for r in rings])
    hole = np.repeat([i > 0 for i in range(len(rings))], [len(r) for r in rings])
    return _coverage(a, b, np.zeros(len(a), np.int64), h, w, hole)


def rasterize_window(index: RegionIndex, x: float, y: float, w: int, h: int,
                     downsample: float = 1.0, dtype: Any = np.uint8) -> np.ndarray:
    """Label image (h, w) of the window whose top-left is level-0 (x, y).

    Parameters
    ----------
    index : RegionIndex
    x, y : float
        Level-0 pixel coordinates of the window's top-left corner.
    w, h : int
        Window size in pixels of the target level.
    downsample : float
        Level-0 pixels per output pixel.

    Returns
    -------
    (h, w) array of ``dtype``: 0 where no region is, else the region's label. A pixel
    belongs to a region when its centre is inside (see the module notes).
    """
    out = np.zeros((h, w), dtype)
    hits = index.query(x, y, x + w * downsample, y + h * downsample)
    if not len(hits):
        return out
    offset = np.array([x, y]) / downsample + 0.5  # pixel j's centre: level-0 x + (j + .5) ds

    def cover(group: np.ndarray) -> np.ndarray:
        a, b, owner, hole = index.edges_of(group)
        return _coverage(a / downsample - offset, b / downsample - offset, owner, h, w, hole)

    positive = hits[~index.negative[hits]]
    holes: dict[int, np.ndarray | None] = {}  # layer -> its negative regions' pixels
    groups = sorted({(int(index.rank[k]), int(index.layer[k]), int(index.labels[k]))
                     for k in positive})
    for _, li, label in groups:  # ascending rank, then layer order: later ones win
        members = positive[(index.layer[positive] == li) & (index.labels[positive] == label)]
        inside = cover(members)
        if li not in holes:
            negatives = hits[index.negative[hits] & (index.layer[hits] == li)]
            holes[li] = cover(negatives) if len(negatives) else None
        carved = holes[li]
        np.copyto(out, label, where=inside if carved is None else inside & ~carved)
    return out


def label_pyramid(index: RegionIndex, level_dimensions: Sequence[tuple[int, int]],
                  level_downsamples: Sequence[float], chunk: int = 1024,
                  dtype: Any = np.uint8) -> list[Any]:
    """One lazy dask label array (h, w) per level; chunks are rasterised when read.

    ``level_dimensions`` are (w, h) per level, as a slide gives them, so the labels line
    up with the slide's pyramid level by level.
    """
    import dask.array as da

    levels = []
    for (w, h), ds in zip(level_dimensions, level_downsamples, strict=True):
        def block(block_info: Any = None, ds: float = float(ds)) -> np.ndarray:
            (r0, r1), (c0, c1) = block_info[None]["array-location"]
            return rasterize_window(index, c0 * ds, r0 * ds, c1 - c0, r1 - r0, ds, dtype)

        chunks = (da.core.normalize_chunks(chunk, (h,))[0],
                  da.core.normalize_chunks(chunk, (w,))[0])
        levels.append(da.map_blocks(block, dtype=dtype, chunks=chunks,
                                    name=f"slideseg-labels-{id(index)}-{w}x{h}"))
    return levels
