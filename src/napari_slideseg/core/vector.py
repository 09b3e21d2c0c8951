"""Conversions between label arrays and polygons: labels -> regions and back.

:func:`labels_to_polygons` traces the outline of every object of a label array along
pixel edges (the "crack" between pixels, not the chain of boundary pixel centres), with
holes, and returns an :class:`~napari_slideseg.AnnotationSet` in level-0 pixel (x, y).
:func:`polygons_to_labels` fills regions back into a label array with the package's
rasteriser (:mod:`.raster`), so that at tolerance 0 the two are exact inverses: every
pixel's centre lies inside the polygons traced around it, and no other pixel's does.

Coordinates: a label array of shape (h, w) with ``origin`` (x0, y0) and ``downsample`` d
has pixel (i, j) covering level-0 [x0 + j d, x0 + (j + 1) d) x [y0 + i d, y0 + (i + 1) d);
polygon vertices therefore lie on level-0 points x0 + k d, y0 + l d.

Connectivity: a polygon is one 4-connected piece of one label value. Pixels of one value
that touch only at a corner are separate polygons meeting at that corner point, and a
background pocket that touches the outside at a single corner is a hole meeting the
outer ring at that point, so that every ring is simple, as valid (OGC) polygons require.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .annotations import AREA_TYPES, AnnotationLayer, AnnotationSet, Region

__all__ = ["labels_to_polygons", "polygons_to_labels"]

#: Name of the single layer :func:`labels_to_polygons` returns without ``names``.
LABELS_LAYER = "labels"


# -- labels -> polygons -----------------------------------------------------------------


def labels_to_polygons(labels: Any, *, downsample: float = 1.0,
                       origin: tuple[float, float] = (0.0, 0.0), tolerance: float = 0.0,
                       min_area: float = 0.0,
                       names: Mapping[int, str] | None = None) -> AnnotationSet:
    """Outline every object of a label array as polygons with holes.

    Parameters
    ----------
    labels : (h, w) array of int or bool
        0 is background; every other value is an object class or id. Bool arrays are
        one object value (True).
    downsample : float
        Level-0 pixels per array pixel (the downsample of the level the array is at).
    origin : (x, y)
        Level-0 pixel coordinates of the array's top-left corner (the corner of pixel
        (0, 0), not its centre).
    tolerance : float
        Douglas-Peucker simplification tolerance in level-0 pixels; 0 keeps the exact
        pixel outlines (only vertices where the outline turns). Rings are simplified one
        by one (kept vertices are a subset of the exact ones), so at large tolerances a
        ring may cross a neighbour's. Rings that simplify to fewer than 3 vertices are
        dropped (a hole) or drop their region (an outer ring).
    min_area : float
        Objects whose area (outer ring minus holes, i.e. pixel count times
        ``downsample ** 2``) is below this, in square level-0 pixels, are left out.
    names : mapping of int -> str, optional
        Label value -> layer name. Values mapping to the same name share a layer (a
        class); layers come in the order of first appearance in ``names``; values
        ``names`` does not hold are left out. Default: one layer named ``"labels"``.

    Returns
    -------
    AnnotationSet
        One region (type ``'polygon'``) per 4-connected piece of a label value, in
        ascending label value and then raster order of the piece's first pixel.
        ``vertices`` is a float64 (N, 2) array of level-0 (x, y): an open ring (the first
        vertex is not repeated), clockwise on screen (x right, y down); ``holes`` are the
        interior rings, anticlockwise. Each region carries its label value as ``text``
        (``str(value)``) and ``attributes["label"]`` (int); the pieces of a value with
        several pieces share ``group`` ``"label-<value>"``, so GeoJSON writes them as one
        MultiPolygon feature.

    Notes
    -----
    Outlines follow pixel edges, so filling them with the pixel-centre rule of
    :func:`~napari_slideseg.rasterize` (or :func:`polygons_to_labels`) at the same
    ``downsample`` and ``origin`` gives back exactly the pixels of each value when
    ``tolerance`` is 0. Holes contain whatever is not the object: background or other
    label values. The whole array is traced in one vectorised pass (no loop over
    objects or pixels in Python); cost grows with the number of boundary pixel edges,
    plus building one :class:`~napari_slideseg.Region` per piece.
    """
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"labels must be a 2-D array, got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.view(np.uint8)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"labels must be an integer or bool array, not {arr.dtype}")
    if downsample <= 0:
        raise ValueError(f"downsample must be positive, not {downsample}")
    return _assemble(_trace(arr), float(downsample), (float(origin[0]), float(origin[1])),
                     float(tolerance), float(min_area), names)


class _Rings:
    """Traced rings of a label array.

    ``xy[start[k]:start[k + 1]]`` are the turning vertices of ring k in array corner
    coordinates (int64 (x, y)); ``area2[k]`` is twice its signed area (> 0: an outer
    ring, clockwise on screen; < 0: a hole); ``value[k]`` its label value; ``piece[k]``
    the outer ring of the 4-connected piece it bounds (an outer ring is its own piece).
    Rings come in raster order of their first pixel edge, so outer rings come in raster
    order of their piece's first pixel.
    """

    def __init__(self, xy: np.ndarray, start: np.ndarray, area2: np.ndarray,
                 value: np.ndarray, piece: np.ndarray) -> None:
        self.xy = xy
        self.start = start
        self.area2 = area2
        self.value = value
        self.piece = piece


# Successor rules per side of a pixel (0 top, walked left to right; 1 right, walked
# down; 2 bottom, walked right to left; 3 left, walked up), the object always on the
# right: (pixel offset, side) of the left turn and of the straight edge, in units of
# (row step, 1), and the side the right turn continues on (the same pixel).
_RULES = (((-1, 1), 3, (0, 1), 0, 1),
          ((1, 1), 0, (1, 0), 1, 2),
          ((1, -1), 1, (0, -1), 2, 3),
          ((-1, -1), 2, (-1, 0), 3, 0))


def _trace(arr: np.ndarray) -> _Rings | None:
    """Trace the pixel-edge outlines of every 4-connected piece of every label value.

    Every boundary pixel edge is a directed edge with its object on the right (on
    screen), so outer rings run clockwise and holes anticlockwise. Each edge's successor
    is the next edge of the same value at its end point; the successor map is a
    permutation of the edges and its cycles are the rings. Where two pixels of one value
    meet only at a corner (a saddle), the ring first turns right, staying on its own
    pixel, so no ring joins two 4-connected pieces. A ring that then passes the same
    saddle twice has both of its pixels in one piece: the saddle joins an outer ring to
    a hole touching it there, and the two passes swap successors, splitting the ring in
    two, so that every ring is simple.
    """
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import connected_components, depth_first_order

    h, w = arr.shape
    wp = w + 2
    padded = np.zeros((h + 2, wp), arr.dtype)
    padded[1:-1, 1:-1] = arr
    flat = padded.ravel()
    inner = padded[1:-1, 1:-1]
    nonzero = inner != 0
    # boundary pixel edges, side by side; pixels as padded flat indices, ascending
    side_px = []
    for dr, dc in ((-1, 0), (0, 1), (1, 0), (0, -1)):
        mask = np.zeros(padded.shape, bool)
        mask[1:-1, 1:-1] = nonzero & (inner != padded[1 + dr:h + 1 + dr, 1 + dc:w + 1 + dc])
        side_px.append(np.flatnonzero(mask))
    del mask, nonzero
    counts = [len(s) for s in side_px]
    n_edges = int(sum(counts))
    if n_edges == 0:
        return None
    offsets = np.concatenate([[0], np.cumsum(counts)])

    def edge_of(side: int, px: np.ndarray) -> np.ndarray:
        return offsets[side] + np.searchsorted(side_px[side], px)

    succ = np.empty(n_edges, np.int64)
    saddle_in = []  # edges that enter a saddle of their own value
    for side, ((lr, lc), s_left, (sr, sc), s_straight, s_right) in enumerate(_RULES):
        px = side_px[side]
        v = flat[px]
        d_left, d_straight = lr * wp + lc, sr * wp + sc
        at_left = flat[px + d_left] == v
        at_straight = flat[px + d_straight] == v
        left = at_left & at_straight  # a concave corner
        straight = at_straight & ~at_left
        right = ~at_straight  # a convex corner, or a saddle when ``at_left``
        out = succ[offsets[side]:offsets[side + 1]]
        out[left] = edge_of(s_left, px[left] + d_left)
        out[straight] = edge_of(s_straight, px[straight] + d_straight)
        out[right] = edge_of(s_right, px[right])
        saddle_in.append(offsets[side] + np.flatnonzero(at_left & ~at_straight))
    saddles = np.concatenate(saddle_in)

    ids = np.arange(n_edges, dtype=np.int64)

    def rings_of(successor: np.ndarray) -> tuple[int, np.ndarray]:
        graph = csr_array((np.ones(n_edges, np.int8), successor, np.arange(n_edges + 1)),
                          shape=(n_edges, n_edges))
        return connected_components(graph, directed=True, connection="strong")

    n_rings, ring_of = rings_of(succ)
    if len(saddles):
        # pair the two edges entering each saddle (same end corner) and swap their
        # successors where both lie on one ring
        side = np.searchsorted(offsets, saddles, side="right") - 1
        px = np.concatenate(side_px)[saddles]
        row, col = np.divmod(px, wp)
        corner = (row + (side >= 1) * (side <= 2)) * (wp + 1) + col + (side <= 1)
        pair = np.lexsort((flat[px], corner))  # a corner can be a saddle of two values
        first, second = saddles[pair[0::2]], saddles[pair[1::2]]
        same = ring_of[first] == ring_of[second]
        if same.any():
            a, b = first[same], second[same]
            succ[a], succ[b] = succ[b], succ[a].copy()
            n_rings, ring_of = rings_of(succ)

    # walk all rings as one chain: each ring from its smallest edge, ring after ring
    heads = np.empty(n_rings, np.int64)
    heads[ring_of[::-1]] = ids[::-1]
    heads.sort()
    pred = np.empty(n_edges, np.int64)
    pred[succ] = ids
    tails = pred[heads]
    chain = succ
    chain[tails[:-1]] = heads[1:]
    chain[tails[-1]] = tails[-1]
    graph = csr_array((np.ones(n_edges, np.int8), chain, np.arange(n_edges + 1)),
                      shape=(n_edges, n_edges))
    order = depth_first_order(graph, int(heads[0]), directed=True,
                              return_predecessors=False)
    del graph, chain, pred, succ, ring_of
    if len(order) != n_edges:  # every edge lies on exactly one ring
        raise RuntimeError("pixel-edge tracing lost edges; please report this label array")
    is_head = np.zeros(n_edges, bool)
    is_head[heads] = True
    ring_start = np.flatnonzero(is_head[order])
    del is_head

    # start corner and direction of every edge, in ring order
    side = np.searchsorted(offsets, order, side="right") - 1
    px = np.concatenate(side_px)[order]
    del order
    row, col = np.divmod(px, wp)
    x = col + ((side == 1) | (side == 2))
    y = row + (side >= 2)
    prev_side = np.roll(side, 1)
    prev_side[ring_start] = side[np.append(ring_start[1:], n_edges) - 1]
    keep = np.flatnonzero(side != prev_side)  # corners where the ring turns
    dx = np.array([1, 0, -1, 0])[side]
    dy = np.array([0, 1, 0, -1])[side]
    area2 = np.add.reduceat(x * (y + dy) - (x + dx) * y, ring_start)
    xy = np.column_stack([x[keep], y[keep]]) - 1  # padded -> array corner coordinates
    start = np.searchsorted(keep, np.append(ring_start, n_edges))
    head_px = px[ring_start]
    value = flat[head_px]
    return _Rings(xy, start, area2, value, _pieces(padded, head_px, value, area2, xy, start))


def _pieces(padded: np.ndarray, head_px: np.ndarray, value: np.ndarray, area2: np.ndarray,
            xy: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The outer ring of the piece each ring bounds (holes to their outer ring).

    A value with one outer ring owns all of its holes; where a value has several pieces
    and holes, its pieces are labelled (4-connectivity) within its bounding box and
    each hole goes to the outer ring around the pixel its first edge runs along.
    """
    from scipy import ndimage as ndi

    n = len(value)
    piece = np.arange(n)
    outer = area2 > 0
    values, which = np.unique(value, return_inverse=True)
    n_outer = np.bincount(which, weights=outer, minlength=len(values))
    n_hole = np.bincount(which, weights=~outer, minlength=len(values))
    if not n_hole.any():
        return piece
    owner = np.full(len(values), -1)
    owner[which[outer]] = np.flatnonzero(outer)
    single = n_outer == 1
    holes = np.flatnonzero(~outer & single[which])
    piece[holes] = owner[which[holes]]
    wp = padded.shape[1]
    for k in np.flatnonzero(~single & (n_hole > 0)).tolist():
        rings = np.flatnonzero(which == k)
        corners = np.concatenate([xy[start[r]:start[r + 1]] for r in rings])
        (c0, r0), (c1, r1) = corners.min(axis=0) + 1, corners.max(axis=0) + 1
        crop = padded[r0:r1, c0:c1] == values[k]
        labelled, _ = ndi.label(crop)
        row, col = np.divmod(head_px[rings], wp)
        of_ring = labelled[row - r0, col - c0]
        outer_of = np.zeros(labelled.max() + 1, np.int64)
        outer_of[of_ring[outer[rings]]] = rings[outer[rings]]
        piece[rings] = outer_of[of_ring]
    return piece


def _layer(name: str) -> AnnotationLayer:
    return AnnotationLayer(name=name)


def _assemble(rings: _Rings | None, ds: float, origin: tuple[float, float], tolerance: float,
              min_area: float, names: Mapping[int, str] | None) -> AnnotationSet:
    import cv2

    layers: dict[str, AnnotationLayer] = {}
    layer_of: dict[int, AnnotationLayer] = {}
    if names is None:
        layers[LABELS_LAYER] = _layer(LABELS_LAYER)
    else:
        for value, name in names.items():
            layer_of[int(value)] = layers.setdefault(name, _layer(name))
    if rings is None:
        return AnnotationSet(layers.values())
    # pieces by label value, then raster order; each piece's outer ring, then its holes
    outer = np.flatnonzero(rings.area2 > 0)
    area = np.bincount(rings.piece, weights=rings.area2, minlength=len(rings.area2)) / 2
    outer = outer[area[outer] * ds * ds >= min_area]
    if names is not None:
        outer = outer[np.isin(rings.value[outer], np.fromiter(layer_of, np.int64))]
    outer = outer[np.argsort(rings.value[outer], kind="stable")]
    holes_of: dict[int, list[int]] = {}
    for k in np.flatnonzero(rings.area2 < 0).tolist():
        holes_of.setdefault(int(rings.piece[k]), []).append(k)
    values, count = np.unique(rings.value[outer], return_counts=True)
    multi = set(values[count > 1].tolist())
    epsilon = tolerance / ds
    x0, y0 = origin

    def vertices(k: int) -> np.ndarray | None:
        ring = rings.xy[rings.start[k]:rings.start[k + 1]]
        if epsilon > 0:
            ring = cv2.approxPolyDP(ring.astype(np.int32).reshape(-1, 1, 2), epsilon,
                                    True).reshape(-1, 2)
            if len(ring) < 3:
                return None
        out = ring.astype(np.float64) * ds
        out[:, 0] += x0
        out[:, 1] += y0
        return out

    for k, value in zip(outer.tolist(), rings.value[outer].tolist(), strict=True):
        ring = vertices(k)
        if ring is None:
            continue
        holes = [h for h in map(vertices, holes_of.get(k, ())) if h is not None]
        layer = layers[LABELS_LAYER] if names is None else layer_of[value]
        layer.regions.append(Region(
            ring, type="polygon", text=str(value), attributes={"label": value},
            holes=holes, group=f"label-{value}" if value in multi else None))
    return AnnotationSet(layers.values())


# -- polygons -> labels -----------------------------------------------------------------


def polygons_to_labels(annotations: AnnotationSet, shape: tuple[int, int], *,
                       downsample: float = 1.0, origin: tuple[float, float] = (0.0, 0.0),
                       key: Any = None) -> np.ndarray:
    """Fill annotation regions into a label array.

    Parameters
    ----------
    annotations : AnnotationSet
        Vertices in level-0 pixel (x, y).
    shape : (h, w)
        Shape of the output array.
    downsample : float
        Level-0 pixels per output pixel.
    origin : (x, y)
        Level-0 pixel coordinates of the output's top-left corner.
    key : AnnotationKey, optional
        Class -> value: each pixel gets the value of its region's class, with the key's
        overlap priority (exactly :func:`~napari_slideseg.rasterize`). Default: every
        positive area region gets its own id, 1, 2, ... in file order (layer after
        layer); where regions overlap the later one wins.

    Returns
    -------
    (h, w) array
        int32 of region ids without ``key`` (0: background); with ``key``, the dtype of
        :func:`~napari_slideseg.rasterize` (uint8, or uint16 above 255).

    Notes
    -----
    A pixel belongs to a region when its centre lies inside or on the region's outer
    ring and neither inside nor on its holes and the negative regions of its layer (the rule of
    :mod:`~napari_slideseg.core.raster`). Arrows, rulers, lines and points are never
    filled and take no id. Without a key, each region is filled within its own
    bounding box, so cost grows with the regions' areas, not with their number times the
    array size.
    """
    h, w = int(shape[0]), int(shape[1])
    x0, y0 = float(origin[0]), float(origin[1])
    if key is not None:
        from .masks import rasterize

        return rasterize(annotations, key, (x0, y0, w, h), downsample)
    from .raster import region_mask

    out = np.zeros((h, w), np.int32)
    counter = 0
    ds = float(downsample)

    def rings_in(region: Region, c0: int, r0: int) -> list[np.ndarray]:
        # the rasteriser's own arithmetic: pixel (i, j) of the window is centred at (j, i)
        offset = np.array([x0 + c0 * ds, y0 + r0 * ds]) / ds + 0.5
        outline = region.outline() if region.type == "ellipse" else region.vertices
        return [ring / ds - offset for ring in (outline, *region.holes) if len(ring) >= 3]

    for layer in annotations:
        negatives = [r for r in layer.regions if r.negative and r.type in AREA_TYPES]
        for region in layer.regions:
            if region.negative or region.type not in AREA_TYPES:
                continue
            counter += 1
            window = _window(region, x0, y0, ds, h, w)
            if window is None:
                continue
            r0, r1, c0, c1 = window
            inside = region_mask(rings_in(region, c0, r0), r1 - r0, c1 - c0)
            for negative in negatives:
                box = _window(negative, x0, y0, ds, h, w)
                if box is not None and box[0] < r1 and box[1] > r0 and box[2] < c1 \
                        and box[3] > c0:
                    inside &= ~region_mask(rings_in(negative, c0, r0), r1 - r0, c1 - c0)
            out[r0:r1, c0:c1][inside] = counter
    return out


def _window(region: Region, x0: float, y0: float, ds: float, h: int,
            w: int) -> tuple[int, int, int, int] | None:
    """(r0, r1, c0, c1): the output pixels whose centres the region's box can hold."""
    outline = region.outline() if region.type == "ellipse" else region.vertices
    if len(outline) < 3:
        return None
    # holes too: under the even-odd rule a hole reaching out of its outer ring fills
    every = np.concatenate([outline, *(r for r in region.holes if len(r) >= 3)])
    (xa, ya), (xb, yb) = every.min(axis=0), every.max(axis=0)
    c0 = max(0, int(np.floor((xa - x0) / ds - 0.5)))
    r0 = max(0, int(np.floor((ya - y0) / ds - 0.5)))
    c1 = min(w, int(np.ceil((xb - x0) / ds - 0.5)) + 1)
    r1 = min(h, int(np.ceil((yb - y0) / ds - 0.5)) + 1)
    return (r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None
