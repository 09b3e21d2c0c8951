"""Segment editing: merge, split and cut objects of a label array.

The gestures of the labels editor, as plain functions on a 2-D integer numpy array:

* :func:`merge_labels`: every object a drawn line touches becomes one (the lowest id);
  optionally the background under the line between them is filled, so the merged
  object is connected.
* :func:`merge_selected`: the same for a list of ids.
* :func:`split_labels`: markers placed on an object split it by a marker-controlled
  watershed on its distance transform, one object per marker.
* :func:`cut_labels`: a drawn line separates an object into pieces, one id each.
* :func:`new_label_id`: a free id for drawing a new object.

Coordinates are array (row, col) indices of the label array, the frame napari gives
for a Labels layer's data: pixel (i, j) is centred at (i, j), so a point is rounded to
the nearest pixel. Lines are polylines through their vertices, drawn 4-connected (no
diagonal steps), so a line cannot slip between two pixels that touch at a corner, and a
cut line separates what lies on its two sides.

Objects: an *object* is a connected piece (8-connectivity) of pixels of one id. The
gestures act on the objects they touch; other pieces of the same id elsewhere are left
alone, and no pixel outside the touched objects (and, for a merge with ``fill_gap``,
the background under the line) changes. Each function works on a crop that grows
until it holds the touched objects whole, so its cost follows the size of those
objects, not of the array.

Results and undo: every function returns an :class:`EditResult` ``(labels, edit)``:
the edited array (a copy, or ``labels`` itself with ``in_place=True``) and a
:class:`LabelEdit` listing the changed pixels with their old and new values. That is
the change record napari's Labels layer keeps in its undo history, so a widget applies
an edit with undo by computing it on the layer's data without ``in_place`` and handing
the record to the layer::

    result = merge_labels(layer.data, line)          # layer.data is not modified
    layer.data_setitem(result.edit.indices, result.edit.new_values)  # one undo step

For a window of a large (dask, zarr) layer, edit a numpy copy of the window and shift
the record to the layer's frame: ``edit.shifted((row0, col0))``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = ["EditResult", "LabelEdit", "cut_labels", "merge_labels", "merge_selected",
           "new_label_id", "split_labels"]


@dataclass(frozen=True, eq=False)
class LabelEdit:
    """The pixels an edit changed, with their values before and after.

    Parameters
    ----------
    indices : (rows, cols)
        Two int arrays (intp) of the changed pixels, in the frame of the edited array
        (napari's fancy-index form of ``Labels.data_setitem``).
    old_values, new_values : arrays
        The values of those pixels before and after the edit (dtype of the labels).
    """

    indices: tuple[np.ndarray, np.ndarray]
    old_values: np.ndarray
    new_values: np.ndarray

    def __len__(self) -> int:
        """Number of changed pixels (an edit that changed nothing is falsy)."""
        return len(self.indices[0])

    @property
    def bbox(self) -> tuple[slice, slice] | None:
        """(row slice, col slice) around the changed pixels; None if none changed."""
        rows, cols = self.indices
        if not len(rows):
            return None
        return (slice(int(rows.min()), int(rows.max()) + 1),
                slice(int(cols.min()), int(cols.max()) + 1))

    @property
    def new_ids(self) -> np.ndarray:
        """The ids the edit wrote (sorted, unique)."""
        return np.unique(self.new_values)

    def apply(self, labels: Any) -> None:
        """Write the new values into ``labels`` (redo)."""
        labels[self.indices] = self.new_values

    def revert(self, labels: Any) -> None:
        """Write the old values back into ``labels`` (undo)."""
        labels[self.indices] = self.old_values

    def shifted(self, offset: tuple[int, int]) -> LabelEdit:
        """The same edit with indices moved by (row, col) ``offset``: from a window's
        frame to the frame of the array the window was cut from."""
        dr, dc = int(offset[0]), int(offset[1])
        rows, cols = self.indices
        return LabelEdit((rows + dr, cols + dc), self.old_values, self.new_values)

    def history_atom(self) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray, np.ndarray]:
        """``(indices, old_values, new_values)``: the undo record napari's Labels layer
        stores for ``data_setitem``."""
        return (self.indices, self.old_values, self.new_values)

    def __repr__(self) -> str:
        return f"LabelEdit({len(self)} pixels, bbox={self.bbox}, new ids={self.new_ids})"


class EditResult(NamedTuple):
    """What an editing function returns: the edited array and the change record."""

    labels: np.ndarray
    edit: LabelEdit


# -- public gestures ---------------------------------------------------------------------


def new_label_id(labels: Any) -> int:
    """A free label id: one above the largest id in ``labels`` (1 for an empty array).

    Works on anything with ``max()`` (numpy, dask); one pass over the array.
    """
    if not np.prod(np.shape(labels)):
        return 1
    return max(int(labels.max()), 0) + 1


def merge_labels(labels: np.ndarray, line: Any, *, fill_gap: bool = True, width: int = 1,
                 in_place: bool = False) -> EditResult:
    """Merge every object a drawn line touches into one, with the lowest of their ids.

    Parameters
    ----------
    labels : (h, w) integer ndarray
        0 is background.
    line : (K, 2) array of float
        Polyline vertices in array (row, col) coordinates (pixel (i, j) centred at
        (i, j)); one vertex is a single point. Parts outside the array are ignored.
    fill_gap : bool
        Also give the merged id to the background under the line between the objects,
        so the merged object is connected: every run of background line pixels
        (4-connected) that borders two of the touched objects or more. The line's ends
        beyond the first and the last object stay background.
    width : int
        Thickness of the line in pixels (a square brush).
    in_place : bool
        Edit ``labels`` itself instead of a copy.

    Returns
    -------
    EditResult
        ``(labels, edit)``; ``edit`` is empty when the line touches no object.

    Notes
    -----
    Touched objects are the connected pieces (8-connectivity) under the line; other
    pieces of the same ids elsewhere keep their ids (use :func:`merge_selected` to merge
    whole ids).
    """
    arr = _check(labels)
    stroke, inside = _stroke(arr.shape, line, width)
    return _finish(arr, _merge_plan(arr, stroke[inside], fill_gap), in_place)


def merge_selected(labels: np.ndarray, ids: Iterable[int], *,
                   in_place: bool = False) -> EditResult:
    """Give every pixel of the given ids the lowest of them.

    Parameters
    ----------
    labels : (h, w) integer ndarray
    ids : iterable of int
        Label ids to merge; 0 and ids absent from ``labels`` are ignored.
    in_place : bool
        Edit ``labels`` itself instead of a copy.

    Returns
    -------
    EditResult
        ``(labels, edit)``.

    Notes
    -----
    Whole ids merge, wherever their pixels are; finding them takes one pass over the
    array.
    """
    arr = _check(labels)
    wanted = sorted({int(i) for i in ids} - {0})
    if len(wanted) < 2:
        return _finish(arr, None, in_place)
    target = wanted[0]
    mask = np.isin(arr, np.asarray(wanted[1:], dtype=arr.dtype))
    rows, cols = np.nonzero(mask)
    if not len(rows):
        return _finish(arr, None, in_place)
    old = arr[rows, cols]
    return _finish(arr, LabelEdit((rows, cols), old, np.full_like(old, target)), in_place)


def split_labels(labels: np.ndarray, markers: Any, *, in_place: bool = False) -> EditResult:
    """Split objects by markers: a marker-controlled watershed gives each marker an object.

    Parameters
    ----------
    labels : (h, w) integer ndarray
    markers : (M, 2) array of float
        Marker points in array (row, col) coordinates (pixel (i, j) centred at (i, j)),
        placed on the objects to split. Markers on background or outside the array,
        and a second marker on the same pixel, are ignored.
    in_place : bool
        Edit ``labels`` itself instead of a copy.

    Returns
    -------
    EditResult
        ``(labels, edit)``.

    Notes
    -----
    Each object (a connected piece, 8-connectivity, of one id) holding two markers or
    more is flooded from its markers over the negative Euclidean distance transform of
    that object alone (``skimage.segmentation.watershed``, 8-connectivity), so the split
    lines follow the object's necks. The pixels of the first marker's basin keep the
    object's id; the others get fresh ids above ``labels.max()``, in marker order.
    Objects with fewer than two markers are unchanged.
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    arr = _check(labels)
    points = _points(arr.shape, markers)
    if len(points):
        points = points[arr[points[:, 0], points[:, 1]] != 0]
    if len(points) < 2:
        return _finish(arr, None, in_place)
    next_id = None
    changes: list[LabelEdit] = []
    # markers on one id are usually on one object: find the objects id by id, so markers
    # far apart on different objects do not make one large crop
    values = arr[points[:, 0], points[:, 1]]
    for value in dict.fromkeys(values.tolist()):
        group = points[values == value]
        if len(group) < 2:
            continue
        box, pieces, touched = _objects(arr, group, _box(group, arr.shape))
        at = pieces[group[:, 0] - box[0], group[:, 1] - box[2]]
        for piece, (rs, cs) in _boxes(pieces, touched):
            mine = group[at == piece]
            if len(mine) < 2:
                continue
            mask = np.pad(pieces[rs, cs] == piece, 1)
            seeds = np.zeros(mask.shape, np.int32)
            seeds[mine[:, 0] - box[0] - rs.start + 1,
                  mine[:, 1] - box[2] - cs.start + 1] = np.arange(1, len(mine) + 1)
            basins = watershed(-ndi.distance_transform_edt(mask), seeds, mask=mask,
                               connectivity=2)[1:-1, 1:-1]
            if next_id is None:
                next_id = new_label_id(arr)
            ids = np.concatenate([[value], next_id + np.arange(len(mine) - 1)])
            next_id += len(mine) - 1
            _check_fits(arr.dtype, int(ids.max()))
            inside = mask[1:-1, 1:-1] & (basins > 1)
            rows, cols = np.nonzero(inside)
            old = np.full(len(rows), value, arr.dtype)
            new = ids[basins[inside] - 1].astype(arr.dtype)
            changes.append(LabelEdit((rows + box[0] + rs.start, cols + box[2] + cs.start),
                                     old, new))
    return _finish(arr, _concat(changes, arr.dtype), in_place)


def cut_labels(labels: np.ndarray, line: Any, width: int = 1, *,
               in_place: bool = False) -> EditResult:
    """Separate objects along a drawn line; each resulting piece gets its own id.

    Parameters
    ----------
    labels : (h, w) integer ndarray
    line : (K, 2) array of float
        Polyline vertices in array (row, col) coordinates (pixel (i, j) centred at
        (i, j)).
    width : int
        Thickness of the cut in pixels (a square brush).
    in_place : bool
        Edit ``labels`` itself instead of a copy.

    Returns
    -------
    EditResult
        ``(labels, edit)``.

    Notes
    -----
    For each object (connected piece, 8-connectivity, of one id) the line touches, the
    object's pixels off the line are split into connected pieces (8-connectivity; a
    4-connected line separates them). If there are two or more, the largest keeps the
    id (the first in raster order on a tie) and the others get fresh ids above
    ``labels.max()``, in raster order; the pixels under the line then go to the
    nearest piece, so no pixel becomes background and the object's area is kept. A
    line that does not cross an object from side to side leaves it unchanged.
    """
    from scipy import ndimage as ndi

    arr = _check(labels)
    stroke, inside = _stroke(arr.shape, line, width)
    brush = stroke[inside]
    hit = brush[arr[brush[:, 0], brush[:, 1]] != 0]
    if not len(hit):
        return _finish(arr, None, in_place)
    box, pieces, touched = _objects(arr, hit, _box(brush, arr.shape))
    on_line = np.zeros(pieces.shape, bool)
    on_line[brush[:, 0] - box[0], brush[:, 1] - box[2]] = True
    sub = arr[box[0]:box[1], box[2]:box[3]]
    next_id = None
    changes: list[LabelEdit] = []
    eight = np.ones((3, 3), bool)
    for piece, (rs, cs) in _boxes(pieces, touched):
        mask = pieces[rs, cs] == piece
        parts, n = ndi.label(mask & ~on_line[rs, cs], structure=eight)
        if n < 2:
            continue
        value = sub[rs, cs][mask][0]
        sizes = np.bincount(parts.ravel(), minlength=n + 1)[1:]
        keeper = int(np.argmax(sizes)) + 1
        if next_id is None:
            next_id = new_label_id(arr)
        ids = np.empty(n + 1, np.int64)
        ids[0] = 0
        others = [p for p in range(1, n + 1) if p != keeper]
        ids[keeper] = value
        ids[others] = next_id + np.arange(n - 1)
        next_id += n - 1
        _check_fits(arr.dtype, int(ids.max()))
        # pixels under the line: to the nearest piece
        nearest = ndi.distance_transform_edt(parts == 0, return_distances=False,
                                             return_indices=True)
        filled = parts[nearest[0], nearest[1]]
        filled[~mask] = 0
        new = ids[filled]
        changed = mask & (new != value)
        rows, cols = np.nonzero(changed)
        changes.append(LabelEdit(
            (rows + box[0] + rs.start, cols + box[2] + cs.start),
            np.full(len(rows), value, arr.dtype), new[changed].astype(arr.dtype)))
    return _finish(arr, _concat(changes, arr.dtype), in_place)


# -- helpers -----------------------------------------------------------------------------


def _check(labels: Any) -> np.ndarray:
    if not isinstance(labels, np.ndarray):
        raise TypeError("labels must be a numpy array; for a dask or zarr layer, edit a "
                        "numpy copy of the window and shift the edit (LabelEdit.shifted)")
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must have an integer dtype, not {labels.dtype}")
    return labels


def _check_fits(dtype: np.dtype, value: int) -> None:
    if value > np.iinfo(dtype).max:
        raise ValueError(f"no free label id: {value} does not fit in {dtype}; convert the "
                         "labels to a wider type first, e.g. labels.astype(np.int32)")


def _finish(arr: np.ndarray, edit: LabelEdit | None, in_place: bool) -> EditResult:
    if edit is None:
        empty = np.empty(0, np.intp)
        edit = LabelEdit((empty, empty.copy()), np.empty(0, arr.dtype), np.empty(0, arr.dtype))
    out = arr if in_place else arr.copy()
    if len(edit):
        edit.apply(out)
    return EditResult(out, edit)


def _concat(changes: list[LabelEdit], dtype: np.dtype) -> LabelEdit | None:
    if not changes:
        return None
    return LabelEdit((np.concatenate([c.indices[0] for c in changes]).astype(np.intp),
                      np.concatenate([c.indices[1] for c in changes]).astype(np.intp)),
                     np.concatenate([c.old_values for c in changes]).astype(dtype),
                     np.concatenate([c.new_values for c in changes]).astype(dtype))


def _points(shape: tuple[int, ...], points: Any) -> np.ndarray:
    """(N, 2) int pixels nearest to (row, col) points, inside the array, first of
    duplicates kept, in the given order."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    rc = np.floor(pts + 0.5).astype(np.int64)
    inside = (rc[:, 0] >= 0) & (rc[:, 0] < shape[0]) & (rc[:, 1] >= 0) & (rc[:, 1] < shape[1])
    rc = rc[inside]
    _, first = np.unique(rc, axis=0, return_index=True)
    return rc[np.sort(first)]


def _path(line: Any) -> np.ndarray:
    """The 4-connected pixel path through a polyline's vertices, in drawing order."""
    from skimage.draw import line as draw_line

    pts = np.asarray(line, np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if not len(pts):
        return np.empty((0, 2), np.int64)
    rc = np.floor(pts + 0.5).astype(np.int64)
    parts = [rc[:1]]
    for (r0, c0), (r1, c1) in zip(rc[:-1], rc[1:], strict=True):
        rr, cc = draw_line(int(r0), int(c0), int(r1), int(c1))
        seg = np.column_stack([rr, cc]).astype(np.int64)
        # a diagonal step gets the pixel beside it, so the path has no corner contacts
        diag = np.flatnonzero((np.diff(seg[:, 0]) != 0) & (np.diff(seg[:, 1]) != 0))
        if len(diag):
            extra = np.column_stack([seg[diag + 1, 0], seg[diag, 1]])
            seg = np.insert(seg, diag + 1, extra, axis=0)
        parts.append(seg[1:])
    return np.concatenate(parts)


def _stroke(shape: tuple[int, ...], line: Any, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixels a line of ``width`` covers: (P, B, 2) int, the square brush around each
    of the P path pixels in drawing order, and (P, B) bool, which lie inside the array."""
    width = int(width)
    if width < 1:
        raise ValueError(f"width must be at least 1 pixel, not {width}")
    offsets = np.arange(width) - width // 2
    brush = np.stack(np.meshgrid(offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 2)
    stroke = _path(line)[:, None, :] + brush[None]
    inside = ((stroke[..., 0] >= 0) & (stroke[..., 0] < shape[0]) & (stroke[..., 1] >= 0)
              & (stroke[..., 1] < shape[1]))
    return stroke, inside


def _box(rc: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1) around pixels, one pixel wider on each side, within the array."""
    if not len(rc):
        return (0, 0, 0, 0)
    r0, c0 = rc.min(axis=0) - 1
    r1, c1 = rc.max(axis=0) + 2
    return (max(int(r0), 0), min(int(r1), shape[0]), max(int(c0), 0), min(int(c1), shape[1]))


def _objects(arr: np.ndarray, seeds: np.ndarray,
             box: tuple[int, int, int, int]) -> tuple[tuple[int, int, int, int], np.ndarray,
                                                      np.ndarray]:
    """The objects under ``seeds``: a crop holding them whole, its pieces, their numbers.

    The crop grows (doubling on the sides where a touched piece reaches its edge) until
    every touched piece lies inside with a margin, so the pieces are whole objects.
    Returns ``(box, pieces, touched)``: the crop (r0, r1, c0, c1), the crop's pieces
    (each 8-connected piece of one id numbered 1, 2, ...) and the numbers of the pieces
    under the seeds.
    """
    from skimage.measure import label as label_pieces

    h, w = arr.shape
    r0, r1, c0, c1 = box
    while True:
        pieces = label_pieces(arr[r0:r1, c0:c1], background=0, connectivity=2)
        touched = np.unique(pieces[seeds[:, 0] - r0, seeds[:, 1] - c0])
        touched = touched[touched != 0]
        hits = np.zeros(int(pieces.max()) + 1, bool)
        hits[touched] = True
        grow = [r0 > 0 and hits[pieces[0]].any(), r1 < h and hits[pieces[-1]].any(),
                c0 > 0 and hits[pieces[:, 0]].any(), c1 < w and hits[pieces[:, -1]].any()]
        if not any(grow):
            return (r0, r1, c0, c1), pieces, touched
        dr, dc = max(r1 - r0, 16), max(c1 - c0, 16)
        r0 = max(0, r0 - dr) if grow[0] else r0
        r1 = min(h, r1 + dr) if grow[1] else r1
        c0 = max(0, c0 - dc) if grow[2] else c0
        c1 = min(w, c1 + dc) if grow[3] else c1


def _boxes(pieces: np.ndarray, which: np.ndarray) -> list[tuple[int, tuple[slice, slice]]]:
    """(piece number, (row slice, col slice)) of the given pieces of a crop."""
    from scipy import ndimage as ndi

    found = ndi.find_objects(pieces, max_label=int(which.max()) if len(which) else 0)
    return [(int(p), found[p - 1]) for p in which.tolist() if found[p - 1] is not None]


def _merge_plan(arr: np.ndarray, brush: np.ndarray, fill_gap: bool) -> LabelEdit | None:
    hit = brush[arr[brush[:, 0], brush[:, 1]] != 0]
    if not len(hit):
        return None
    box, pieces, touched = _objects(arr, hit, _box(brush, arr.shape))
    r0, r1, c0, c1 = box
    sub = arr[r0:r1, c0:c1]
    members = np.isin(pieces, touched)
    target = sub[members].min()
    new = sub.copy()
    new[members] = target
    if fill_gap and len(touched) >= 2:
        new[_gaps(sub, pieces, touched, brush - (r0, c0))] = target
    changed = new != sub
    rows, cols = np.nonzero(changed)
    return LabelEdit((rows + r0, cols + c0), sub[changed], new[changed])


def _gaps(sub: np.ndarray, pieces: np.ndarray, touched: np.ndarray,
          brush: np.ndarray) -> np.ndarray:
    """Background under the line that lies between touched objects: the connected runs
    (4-connectivity) of background line pixels that border two touched objects or more
    (not the line's ends beyond the first and the last object)."""
    from scipy import ndimage as ndi

    line = np.zeros(sub.shape, bool)
    line[brush[:, 0], brush[:, 1]] = True
    runs, n = ndi.label(line & (sub == 0))
    if not n:
        return line & False
    wanted = np.zeros(int(pieces.max()) + 1, bool)
    wanted[touched] = True
    pairs = []
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        a = runs[max(dr, 0):sub.shape[0] + min(dr, 0), max(dc, 0):sub.shape[1] + min(dc, 0)]
        b = pieces[max(-dr, 0):sub.shape[0] + min(-dr, 0),
                   max(-dc, 0):sub.shape[1] + min(-dc, 0)]
        hit = (a != 0) & wanted[b]
        pairs.append(np.column_stack([a[hit], b[hit]]))
    run_piece = np.unique(np.concatenate(pairs), axis=0)
    borders = np.bincount(run_piece[:, 0], minlength=n + 1)
    return (borders >= 2)[runs] & (runs != 0)
