"""Clusters of positive tiles and their outlines: from tile probabilities to polygons.

The steps of the auto-annotation after the classifier (:func:`find_regions`):

1. per class, the positive tiles: the class's probability is at least ``threshold``
   and the class is the tile's most probable one;
2. DBSCAN of their grid coordinates (:func:`dbscan_tiles`), ``eps`` in tiles;
3. statistics of the class probability over each cluster's tiles
   (:func:`cluster_stats`), and filters on them;
4. an outline per cluster (:func:`cluster_outline`): the convex hull of its tiles
   (Graham scan, :func:`graham_scan`), the exact union of its tiles, or a concave hull
   (an alpha shape);
5. one annotation layer per class, named after it, with one polygon region per
   outline, carrying the prediction figures and the review status ``'pending'`` as
   Aperio attributes (:func:`~napari_slideseg.core.review.set_element_attributes`).

Coordinates and orientation
---------------------------
Every coordinate is a level-0 pixel (x, y), x to the right and y down. Tile
``(row, col)`` of a :class:`~napari_slideseg.core.tiles.TileGrid` covers
``[col * size0, (col + 1) * size0) x [row * size0, (row + 1) * size0)``.

Rings are open (the first vertex is not repeated). Outer rings run with a positive
signed (shoelace) area, ``sum(x[i] * y[i + 1] - x[i + 1] * y[i]) > 0``: counter-clockwise
with respect to the x and y axes taken as numbers, which, y pointing down, is clockwise
as displayed on screen. That is the orientation of the outer rings of
:func:`~napari_slideseg.labels_to_polygons`; holes run the other way. Vertices where an
outline goes straight on (collinear points on an edge) are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cmp_to_key
from typing import TYPE_CHECKING, Any

import numpy as np

from .annotations import AnnotationLayer, AnnotationSet, Region, polygon_area
from .errors import SlideSegError

if TYPE_CHECKING:
    import pandas as pd

    from .tiles import TilePredictions

__all__ = ["CLASS_PALETTE", "OUTLINES", "ClusterStats", "cluster_outline", "cluster_stats",
           "dbscan_tiles", "find_regions", "graham_scan"]

#: Outline methods of :func:`cluster_outline`.
OUTLINES = ("convex", "tiles", "concave")

#: Layer colours (r, g, b) of predicted classes: class ``k`` of the model (its position
#: in ``TilePredictions.classes``) gets ``CLASS_PALETTE[k % 20]``, so a class keeps its
#: colour whichever classes are annotated. Matplotlib's tab10, then its light tab20
#: companions.
CLASS_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                 (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127),
                 (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
                 (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148),
                 (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229))

#: Columns of the cluster table :func:`find_regions` returns.
TABLE_COLUMNS = ("class", "cluster", "tile_count", "mean", "std", "var", "min", "max",
                 "kept", "reason", "centroid_x", "centroid_y", "area_px")


# -- clustering -------------------------------------------------------------------------


def dbscan_tiles(col: Any, row: Any, *, eps: float = 1.5, min_samples: int = 3) -> np.ndarray:
    """Cluster tiles by their grid positions with DBSCAN.

    Parameters
    ----------
    col, row : (N,) int arrays
        Grid column and row of each tile.
    eps : float
        Neighbourhood radius in tiles (Euclidean distance between grid positions,
        inclusive): 1.0 joins the 4 edge neighbours of a tile, 1.5 (the default) also
        the 4 diagonal ones, 2.0 reaches across a one-tile gap.
    min_samples : int
        Tiles within ``eps`` of a tile, the tile itself included, for it to be a core
        tile (scikit-learn's definition). 1 makes every tile part of a cluster.

    Returns
    -------
    (N,) int64
        Cluster of each tile, 0, 1, ... in the order scikit-learn finds them; -1 for
        noise (tiles neither core nor within ``eps`` of a core tile).
    """
    col = np.asarray(col)
    row = np.asarray(row)
    if col.ndim != 1 or col.shape != row.shape:
        raise ValueError(f"col and row must be 1-D arrays of one length, got shapes "
                         f"{col.shape} and {row.shape}")
    if not (eps > 0 and math.isfinite(eps)):
        raise SlideSegError(f"DBSCAN eps must be a positive number of tiles, not {eps}; "
                            "use 1.5 to join diagonal neighbours, 1.0 for edge neighbours.")
    if int(min_samples) != min_samples or min_samples < 1:
        raise SlideSegError(f"DBSCAN min_samples must be a whole number of tiles >= 1, "
                            f"not {min_samples}.")
    if not len(col):
        return np.empty(0, np.int64)
    from sklearn.cluster import DBSCAN

    xy = np.column_stack([col, row]).astype(np.float64)
    return DBSCAN(eps=float(eps), min_samples=int(min_samples)).fit_predict(xy).astype(np.int64)


@dataclass(frozen=True)
class ClusterStats:
    """Statistics of the class probability over a cluster's tiles.

    ``std`` and ``var`` are the population figures (ddof = 0: divided by ``count``), so
    a cluster of one tile has 0 for both. Every figure but ``count`` is NaN for an
    empty cluster.
    """

    count: int
    mean: float
    std: float
    var: float
    min: float
    max: float


def cluster_stats(prob: Any) -> ClusterStats:
    """Tile count, mean, population std and variance (ddof = 0), min and max of the
    probabilities of a cluster's tiles (computed in float64)."""
    p = np.asarray(prob, np.float64).ravel()
    if not len(p):
        nan = float("nan")
        return ClusterStats(0, nan, nan, nan, nan, nan)
    mean = float(p.mean())
    var = float(np.mean((p - mean) ** 2))
    return ClusterStats(len(p), mean, math.sqrt(var), var, float(p.min()), float(p.max()))


# -- convex hull ------------------------------------------------------------------------


def graham_scan(points: Any) -> np.ndarray:
    """Convex hull of points by Graham scan.

    The pivot is the point with the smallest y (the top one on screen), leftmost among
    ties; the other points are sorted by their polar angle about it (exact
    cross-product comparisons; nearer first along one ray) and scanned with a stack,
    popping every vertex where the hull would not turn counter-clockwise.

    Parameters
    ----------
    points : (N, 2) array of (x, y)

    Returns
    -------
    (M, 2) float64
        Hull vertices from the pivot on, with a positive signed (shoelace) area:
        counter-clockwise with respect to the x and y axes, clockwise as displayed
        with y down (the module's orientation). Duplicates are merged and points on the
        hull's edges (collinear) are left out. One or two distinct points are returned
        as they are (sorted by x, then y), and so are the two ends of points that all
        lie on one line (the pivot first): callers give such hulls an area themselves.
    """
    pts = np.asarray(points, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be an (N, 2) array of (x, y), got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("points must be finite (a coordinate is NaN or infinite)")
    if not len(pts):
        return np.empty((0, 2), np.float64)
    # of the points with one y, only the leftmost and the rightmost can be vertices
    pts = pts[np.lexsort((pts[:, 0], pts[:, 1]))]
    new_y = np.r_[True, pts[1:, 1] != pts[:-1, 1]]
    pts = np.unique(pts[new_y | np.r_[new_y[1:], True]], axis=0)
    if len(pts) <= 2:
        return pts
    pivot = int(np.lexsort((pts[:, 0], pts[:, 1]))[0])
    p = tuple(pts[pivot].tolist())
    rest = [tuple(q) for q in np.delete(pts, pivot, axis=0).tolist()]

    def cross(o: tuple[float, float], a: tuple[float, float],
              b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def by_angle(a: tuple[float, float], b: tuple[float, float]) -> int:
        # every point lies at an angle in [0, pi) about the pivot: the cross product
        # orders them; collinear ones nearest first
        turn = cross(p, a, b)
        if turn:
            return -1 if turn > 0 else 1
        da = (a[0] - p[0]) ** 2 + (a[1] - p[1]) ** 2
        db = (b[0] - p[0]) ** 2 + (b[1] - p[1]) ** 2
        return (da > db) - (da < db)

    rest.sort(key=cmp_to_key(by_angle))
    stack = [p]
    for q in rest:
        while len(stack) >= 2 and cross(stack[-2], stack[-1], q) <= 0:
            stack.pop()
        stack.append(q)
    return np.array(stack, np.float64)


# -- outlines ---------------------------------------------------------------------------

_CORNERS = ((0, 0), (1, 0), (1, 1), (0, 1))

Polygon = tuple[np.ndarray, list[np.ndarray]]


def cluster_outline(col: Any, row: Any, size0: float, method: str = "convex", *,
                    concavity: float = 1.0) -> list[Polygon]:
    """Level-0 outline polygons of a cluster of tiles.

    Parameters
    ----------
    col, row : (N,) int arrays
        Grid positions of the cluster's tiles.
    size0 : float
        Tile side in level-0 pixels.
    method : {'convex', 'tiles', 'concave'}
        ``'convex'``: the convex hull of the tiles' corners (:func:`graham_scan`), one
        polygon without holes (a single tile gives its square).
        ``'tiles'``: the exact union of the tile squares, traced along tile edges with
        :func:`~napari_slideseg.labels_to_polygons`: one polygon per edge-connected
        group of tiles (tiles touching only at a corner are separate polygons meeting
        at that point), with holes where the tiles ring empty tiles. Its area is the
        tile count times ``size0 ** 2``.
        ``'concave'``: a concave hull, the alpha shape of the tiles' centres and
        corners: of their Delaunay triangles (scipy), those whose circumradius is at
        most ``concavity * size0`` are kept and their union is outlined exactly (one
        polygon per piece, with holes). It lies between the union of the tiles and the
        convex hull.
    concavity : float
        ``'concave'`` only: the largest circumradius of a kept triangle, in tiles.
        Default 1.0, which fills gaps one tile wide between tiles (and half of each
        notch of a staircase edge) and leaves gaps of two tiles and wider bays open;
        larger values approach the convex hull of the tiles, reached once every
        Delaunay triangle is kept. The triangles inside the tiles have circumradius
        0.5, so values of 0.5 or less give the union of the tiles: the tiles are
        always inside.

    Returns
    -------
    list of (outer, holes)
        ``outer`` an (M, 2) float64 open ring of level-0 (x, y) with positive signed
        area, ``holes`` a list of such rings with negative signed area (see the module
        notes). Every tile centre lies inside the outline. Empty for no tiles.
    """
    col = np.asarray(col, np.int64).ravel()
    row = np.asarray(row, np.int64).ravel()
    if col.shape != row.shape:
        raise ValueError(f"col and row must have one length, not {len(col)} and {len(row)}")
    _check_outline(method)
    if not (size0 > 0 and math.isfinite(size0)):
        raise SlideSegError(f"the tile size must be a positive number of level-0 pixels, "
                            f"not {size0}.")
    if not len(col):
        return []
    size0 = float(size0)
    if method == "convex":
        corners = np.concatenate([np.column_stack([col + dx, row + dy])
                                  for dx, dy in _CORNERS]).astype(np.float64)
        return [(graham_scan(corners) * size0, [])]
    if method == "tiles":
        from .vector import labels_to_polygons

        c0, r0 = int(col.min()), int(row.min())
        grid = np.zeros((int(row.max()) - r0 + 1, int(col.max()) - c0 + 1), bool)
        grid[row - r0, col - c0] = True
        traced = labels_to_polygons(grid, downsample=size0, origin=(c0 * size0, r0 * size0))
        return [(region.vertices, list(region.holes)) for _, region in traced.regions()]
    if not (concavity > 0 and math.isfinite(concavity)):
        raise SlideSegError(f"concavity must be a positive number of tiles, not {concavity}; "
                            "1.0 is the default, larger values approach the convex hull.")
    return [(outer * (size0 / 2), [h * (size0 / 2) for h in holes])
            for outer, holes in _alpha_shape(col, row, float(concavity))]


def _check_outline(method: str) -> None:
    if method not in OUTLINES:
        raise SlideSegError(f"unknown outline {method!r}; use one of {', '.join(OUTLINES)}.")


def _alpha_shape(col: np.ndarray, row: np.ndarray,
                 concavity: float) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """The alpha shape of a cluster's tile centres and corners, in half-tile units.

    Points are on the lattice of half tiles (corners 2 col, centres 2 col + 1), so
    every signed area and orientation below is exact integer arithmetic. The union of
    the kept triangles is bounded by the edges of kept triangles whose other side is
    not kept; those edges, each directed with its triangle's inside on the left, are
    chained into rings.
    """
    from scipy.spatial import Delaunay

    tiles = np.unique(np.column_stack([col, row]), axis=0)
    points = np.unique(np.concatenate(
        [2 * tiles + (2 * dx, 2 * dy) for dx, dy in _CORNERS] + [2 * tiles + 1]), axis=0)
    simplices = Delaunay(points.astype(np.float64)).simplices.astype(np.int64)
    a, b, c = (points[simplices[:, k]] for k in range(3))
    ab, ac, bc = b - a, c - a, c - b
    area2 = ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0]
    # circumradius R = |ab| |ac| |bc| / (2 |area2|); keep R <= max(concavity, 0.5) tiles
    limit = 2.0 * max(concavity, 0.5) * (1 + 1e-9)
    sq = [np.einsum("ij,ij->i", v, v).astype(np.float64) for v in (ab, ac, bc)]
    keep = (area2 != 0) & (sq[0] * sq[1] * sq[2] <= (2.0 * limit) ** 2 * area2.astype(
        np.float64) ** 2)
    tri = simplices[keep]
    flip = area2[keep] < 0
    tri[flip] = tri[flip][:, ::-1]
    edges = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    n = len(points)
    boundary = edges[~np.isin(edges[:, 1] * n + edges[:, 0], edges[:, 0] * n + edges[:, 1])]
    rings = _chain(points, boundary)
    outers = [r for r in rings if _area2(r) > 0]
    holes = [r for r in rings if _area2(r) < 0]
    outers.sort(key=lambda r: (r[0, 1], r[0, 0]))
    holes_of: list[list[np.ndarray]] = [[] for _ in outers]
    areas = [_area2(r) for r in outers]
    for hole in holes:
        probe = (hole[0] + hole[1]) / 2.0  # an edge's midpoint lies on no other ring
        inside = [k for k, outer in enumerate(outers) if _inside(probe, outer)]
        if inside:
            holes_of[min(inside, key=lambda k: areas[k])].append(hole)
    return [(outer.astype(np.float64), [h.astype(np.float64) for h in hs])
            for outer, hs in zip(outers, holes_of, strict=True)]


def _chain(points: np.ndarray, edges: np.ndarray) -> list[np.ndarray]:
    """Chain directed boundary edges (inside on the left) into rings.

    Where several rings meet at a vertex, an edge arriving there continues along the
    first leaving edge clockwise from the way it came, which keeps every ring on its
    own side: pieces touching at a point stay separate rings. A ring that still passes
    a vertex twice (a hole touching its outer ring there) is split into simple rings.
    Collinear vertices are dropped; each ring starts at its topmost, then leftmost
    vertex.
    """
    out: dict[int, list[int]] = {}
    for k, u in enumerate(edges[:, 0].tolist()):
        out.setdefault(u, []).append(k)
    succ = np.empty(len(edges), np.int64)
    for k, (u, v) in enumerate(edges.tolist()):
        leaving = out[v]
        if len(leaving) == 1:
            succ[k] = leaving[0]
            continue
        back = math.atan2(*(points[u] - points[v])[::-1].tolist())
        best, best_turn = -1, 10.0
        for j in leaving:
            dx, dy = (points[edges[j, 1]] - points[v]).tolist()
            turn = (back - math.atan2(dy, dx)) % (2 * math.pi)
            if 0 < turn < best_turn:
                best, best_turn = j, turn
        succ[k] = best
    seen = np.zeros(len(edges), bool)
    rings = []
    for start in range(len(edges)):
        if seen[start]:
            continue
        walk, k = [], start
        while not seen[k]:
            seen[k] = True
            walk.append(int(edges[k, 0]))
            k = int(succ[k])
        for loop in _simple_loops(walk):
            xy = points[np.asarray(loop)]
            prev, nxt = np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0)
            turn = (xy[:, 0] - prev[:, 0]) * (nxt[:, 1] - xy[:, 1]) \
                - (xy[:, 1] - prev[:, 1]) * (nxt[:, 0] - xy[:, 0])
            xy = xy[turn != 0]
            if len(xy) >= 3:
                first = int(np.lexsort((xy[:, 0], xy[:, 1]))[0])
                rings.append(np.roll(xy, -first, axis=0))
    return rings


def _simple_loops(walk: list[int]) -> list[list[int]]:
    """Split a closed walk that passes a vertex more than once into simple loops.

    Keeping to its own side at every vertex, a walk passes a vertex twice only where a
    hole touches its outer ring (or another hole) at a point; cutting there gives the
    outer ring and the hole as separate rings, their orientations telling which is
    which.
    """
    loops, stack, at = [], [], {}
    for v in walk:
        i = at.get(v)
        if i is None:
            at[v] = len(stack)
            stack.append(v)
            continue
        loops.append(stack[i:])
        for w in stack[i + 1:]:
            del at[w]
        del stack[i + 1:]
    loops.append(stack)
    return loops


def _area2(ring: np.ndarray) -> float:
    """Twice the signed (shoelace) area of a ring."""
    x, y = ring[:, 0], ring[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _inside(point: np.ndarray, ring: np.ndarray) -> bool:
    """Even-odd test of a point that lies on no edge of the ring."""
    x, y = float(point[0]), float(point[1])
    a, b = ring, np.roll(ring, -1, axis=0)
    crosses = (a[:, 1] > y) != (b[:, 1] > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        at = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    return bool(np.count_nonzero(crosses & (at > x)) % 2)


# -- the pipeline step ------------------------------------------------------------------


def find_regions(predictions: TilePredictions, *, classes: str | Sequence[str] | None = None,
                 threshold: float = 0.5, eps: float = 1.5, min_samples: int = 3,
                 min_tiles: int = 1, min_mean: float = 0.0, max_std: float = math.inf,
                 max_var: float = math.inf, outline: str = "convex", concavity: float = 1.0,
                 exclude: Iterable[str] = ("other", "background"),
                 ) -> tuple[AnnotationSet, pd.DataFrame]:
    """Polygon annotations of the clusters of positive tiles, one layer per class.

    Parameters
    ----------
    predictions : TilePredictions
        Class probabilities of the tiles of a grid.
    classes : str or sequence of str, optional
        Classes to annotate. Default: every class of ``predictions`` but those in
        ``exclude``.
    threshold : float
        A tile is positive for a class when the class's probability is at least this
        and the class is the tile's most probable one (the first of tied classes).
    eps, min_samples
        DBSCAN of the positive tiles' grid positions (:func:`dbscan_tiles`): radius in
        tiles (1.5 joins diagonal neighbours, 1.0 only edge neighbours) and tiles a
        core tile needs within it, itself included. Tiles in no cluster are dropped.
    min_tiles, min_mean, max_std, max_var
        A cluster is kept when it has at least ``min_tiles`` tiles and the class
        probability over its tiles has a mean of at least ``min_mean`` and a population
        standard deviation and variance (ddof = 0) of at most ``max_std`` and
        ``max_var``.
    outline : {'convex', 'tiles', 'concave'}
        Outline of each cluster (:func:`cluster_outline`).
    concavity : float
        Largest triangle circumradius, in tiles, of the ``'concave'`` outline.
    exclude : iterable of str
        Classes left out by default (the model's background classes); ignored when
        ``classes`` is given.

    Returns
    -------
    annotations : AnnotationSet
        One :class:`~napari_slideseg.AnnotationLayer` per class, in the model's class
        order, named after the class and coloured from :data:`CLASS_PALETTE` by the
        class's position in ``predictions.classes``; a class without kept clusters has
        an empty layer. One polygon region per outline polygon of a kept cluster
        (holes in ``Region.holes``), with ``text`` the class name and the Aperio
        attributes (:func:`~napari_slideseg.core.review.element_attributes`)
        ``class``, ``probability_mean``, ``probability_std``, ``probability_var``,
        ``tile_count``, ``cluster`` (the cluster's number within its class, shared by
        the polygons of one cluster), ``outline`` and ``review_status`` = ``'pending'``.
        ``mpp`` is the grid's level-0 pixel size when known.
    table : pandas.DataFrame
        One row per cluster, kept or not: ``class``, ``cluster``, ``tile_count``,
        ``mean``, ``std``, ``var``, ``min``, ``max`` (of the class probability),
        ``kept``, ``reason`` (why a cluster was dropped, every failed filter; '' when
        kept), ``centroid_x``, ``centroid_y`` (mean of its tile centres, level-0 px)
        and ``area_px`` (area of its outline polygons, holes subtracted, in square
        level-0 px).
    """
    import pandas as pd

    from .review import set_element_attributes

    _check_outline(outline)
    grid = predictions.grid
    names = list(predictions.classes)
    if classes is None:
        skip = set(exclude)
        chosen = [c for c in names if c not in skip]
    else:
        chosen = [classes] if isinstance(classes, str) else list(classes)
        unknown = [c for c in chosen if c not in names]
        if unknown:
            raise SlideSegError(f"no class {', '.join(map(repr, unknown))} in the "
                                f"predictions; the model's classes are "
                                f"{', '.join(map(repr, names))}.")
    if not math.isfinite(threshold):
        raise SlideSegError(f"the probability threshold must be a number, not {threshold}.")
    chosen = [c for c in names if c in set(chosen)]
    proba = np.asarray(predictions.proba)
    best = proba.argmax(axis=1) if len(proba) else np.empty(0, np.int64)
    centers = grid.centers
    layers, rows = [], []
    for cls in chosen:
        k = names.index(cls)
        # compared in the probabilities' own precision: a float32 0.9 passes 0.9
        positive = np.flatnonzero((proba[:, k] >= np.asarray(threshold, proba.dtype))
                                  & (best == k))
        prob = proba[:, k].astype(np.float64)
        labels = dbscan_tiles(grid.col[positive], grid.row[positive], eps=eps,
                              min_samples=min_samples)
        layer = AnnotationLayer(name=cls, color=CLASS_PALETTE[k % len(CLASS_PALETTE)])
        for cluster in range(int(labels.max()) + 1 if len(labels) else 0):
            members = positive[labels == cluster]
            stats = cluster_stats(prob[members])
            reason = _reason(stats, min_tiles, min_mean, max_std, max_var)
            polygons = cluster_outline(grid.col[members], grid.row[members], grid.size0,
                                       outline, concavity=concavity)
            area = sum(polygon_area(outer) - sum(polygon_area(h) for h in holes)
                       for outer, holes in polygons)
            cx, cy = centers[members].mean(axis=0).tolist()
            rows.append({"class": cls, "cluster": cluster, "tile_count": stats.count,
                         "mean": stats.mean, "std": stats.std, "var": stats.var,
                         "min": stats.min, "max": stats.max, "kept": not reason,
                         "reason": reason, "centroid_x": cx, "centroid_y": cy,
                         "area_px": float(area)})
            if reason:
                continue
            for outer, holes in polygons:
                region = Region(outer, type="polygon", text=cls, holes=holes)
                set_element_attributes(region, {
                    "class": cls, "probability_mean": stats.mean,
                    "probability_std": stats.std, "probability_var": stats.var,
                    "tile_count": stats.count, "cluster": cluster, "outline": outline,
                    "review_status": "pending"})
                layer.regions.append(region)
        layers.append(layer)
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    table = table.astype({"class": object, "cluster": np.int64, "tile_count": np.int64,
                          "kept": bool, "reason": object,
                          **{c: np.float64 for c in ("mean", "std", "var", "min", "max",
                                                     "centroid_x", "centroid_y", "area_px")}})
    mpp = grid.mpp / grid.downsample if grid.mpp else None
    return AnnotationSet(layers, mpp=mpp), table


def _reason(stats: ClusterStats, min_tiles: int, min_mean: float, max_std: float,
            max_var: float) -> str:
    """Why a cluster fails the filters ('' when it passes)."""
    failed = []
    if stats.count < min_tiles:
        failed.append(f"tile_count {stats.count} < min_tiles {min_tiles}")
    if stats.mean < min_mean:
        failed.append(f"mean {stats.mean:.4g} < min_mean {min_mean:g}")
    if stats.std > max_std:
        failed.append(f"std {stats.std:.4g} > max_std {max_std:g}")
    if stats.var > max_var:
        failed.append(f"var {stats.var:.4g} > max_var {max_var:g}")
    return "; ".join(failed)
