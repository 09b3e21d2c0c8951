"""Editing benchmark: merge and split on a labels view, labels -> polygons of a large mask.

1. Edits on a 2048 x 2048 int32 labels array of a few thousand cell-like objects (a
   seeded distance watershed of random points, touching neighbours, ragged outlines):
   ``merge_labels`` with a line across about 5 objects, and ``split_labels`` with 3
   markers in one object, each as a widget calls it (a new array, plus the undo record)
   and in place. Baselines: the same edit done on the whole array (``np.isin`` over the
   array for the merge; distance transform and watershed over the whole array, masked to
   the object, for the split). Target: merge and split each under 200 ms (median).
2. ``labels_to_polygons`` of a 4096 x 4096 mask of about 12,000 such objects, against
   one ``cv2.findContours`` of the foreground (RETR_CCOMP, CHAIN_APPROX_SIMPLE: outlines
   through pixel centres, touching objects run together, no ids), a floor for any
   contour tracer; the round trip back with ``polygons_to_labels`` is checked pixel
   for pixel and timed once.

Medians over the repetitions, ours and the baseline alternating.

    python benchmarks/bench_edit.py [--size 2048] [--objects 3000] [--repeats 20]
        [--vector-size 4096] [--vector-objects 12000] [--vector-repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from napari_slideseg import labels_to_polygons, merge_labels, polygons_to_labels, split_labels


def make_cells(size: int, objects: int, seed: int = 0, radius: float = 14.0) -> np.ndarray:
    """Cell-like labels: a distance watershed of random points within a ragged radius."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    rng = np.random.default_rng(seed)
    markers = np.zeros((size, size), np.int32)
    markers[rng.integers(0, size, objects), rng.integers(0, size, objects)] = \
        np.arange(1, objects + 1)
    dist = ndi.distance_transform_edt(markers == 0)
    ragged = ndi.gaussian_filter(rng.normal(size=(size, size)), 4) * 40
    return watershed(dist, markers, mask=dist + ragged < radius).astype(np.int32)


def merge_line(labels: np.ndarray, count: int = 5) -> tuple[np.ndarray, int]:
    """A horizontal line from the centre that crosses ``count`` objects."""
    row = labels.shape[0] // 2
    c0 = labels.shape[1] // 2
    seen: list[int] = []
    for c in range(c0, labels.shape[1]):
        v = int(labels[row, c])
        if v and v not in seen:
            seen.append(v)
            if len(seen) == count:
                return np.array([[row, c0], [row, c]], float), len(seen)
    raise RuntimeError("no line across enough objects")


def split_markers(labels: np.ndarray) -> tuple[np.ndarray, int, int]:
    """3 markers spread along the largest object near the centre."""
    h, w = labels.shape
    window = labels[h // 2 - 100:h // 2 + 100, w // 2 - 100:w // 2 + 100]
    ids, counts = np.unique(window[window != 0], return_counts=True)
    target = int(ids[np.argmax(counts)])
    rows, cols = np.nonzero(labels == target)
    along = np.argsort(cols * h + rows)
    pick = along[[len(along) // 8, len(along) // 2, 7 * len(along) // 8]]
    return np.column_stack([rows[pick], cols[pick]]).astype(float), target, len(rows)


def baseline_merge(labels: np.ndarray, ids: list[int]) -> np.ndarray:
    out = labels.copy()
    out[np.isin(out, ids)] = min(ids)
    return out


def baseline_split(labels: np.ndarray, target: int, markers: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    mask = labels == target
    seeds = np.zeros(labels.shape, np.int32)
    rc = markers.astype(int)
    seeds[rc[:, 0], rc[:, 1]] = np.arange(1, len(rc) + 1)
    basins = watershed(-ndi.distance_transform_edt(mask), seeds, mask=mask)
    out = labels.copy()
    new = np.array([0, target, *range(int(labels.max()) + 1, int(labels.max()) + len(rc))])
    out[mask] = new[basins[mask]]
    return out


def baseline_contours(labels: np.ndarray) -> Any:
    import cv2

    return cv2.findContours((labels != 0).astype(np.uint8), cv2.RETR_CCOMP,
                            cv2.CHAIN_APPROX_SIMPLE)


def median_pair(ours: Callable[[], Any], base: Callable[[], Any],
                repeats: int) -> tuple[float, float]:
    t_ours, t_base = [], []
    for i in range(repeats):
        for fn, store in ((ours, t_ours), (base, t_base))[:: 1 if i % 2 == 0 else -1]:
            t = time.perf_counter()
            fn()
            store.append(time.perf_counter() - t)
    return statistics.median(t_ours), statistics.median(t_base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--objects", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--vector-size", type=int, default=4096)
    parser.add_argument("--vector-objects", type=int, default=12000)
    parser.add_argument("--vector-repeats", type=int, default=5)
    args = parser.parse_args()

    labels = make_cells(args.size, args.objects)
    n_objects = len(np.unique(labels)) - 1
    line, crossed = merge_line(labels)
    markers, target, target_px = split_markers(labels)
    merged_ids = sorted({int(v) for v in labels[int(line[0, 0]),
                                                 int(line[0, 1]):int(line[1, 1]) + 1] if v})
    # warm up imports and caches, and check the edits do what the baselines do
    merged = merge_labels(labels, line)
    assert set(np.unique(merged.labels[np.isin(labels, merged_ids)])) == {min(merged_ids)}
    split = split_labels(labels, markers)
    assert len(np.unique(split.labels[labels == target])) == 3
    baseline_split(labels, target, markers)

    rows = []
    work = labels.copy()
    for name, ours, base, bname in [
        (f"merge_labels: line across {crossed} objects", lambda: merge_labels(labels, line),
         lambda: baseline_merge(labels, merged_ids), "np.isin over the array"),
        ("merge_labels, in_place=True",
         lambda: merge_labels(work, line, in_place=True).edit.revert(work),
         lambda: baseline_merge(labels, merged_ids), "np.isin over the array"),
        (f"split_labels: 3 markers in one object ({target_px} px)",
         lambda: split_labels(labels, markers),
         lambda: baseline_split(labels, target, markers), "EDT + watershed over the array"),
        ("split_labels, in_place=True",
         lambda: split_labels(work, markers, in_place=True).edit.revert(work),
         lambda: baseline_split(labels, target, markers), "EDT + watershed over the array"),
    ]:
        m_ours, m_base = median_pair(ours, base, args.repeats)
        rows.append((name, m_ours, bname, m_base))
    np.testing.assert_array_equal(work, labels)

    print(f"\nlabels: {args.size} x {args.size} int32, {n_objects:,} objects; "
          f"{args.repeats} repetitions")
    print("\n| edit | median ms | baseline | baseline median ms | ratio | target |")
    print("|---|---|---|---|---|---|")
    for name, m_ours, bname, m_base in rows:
        print(f"| {name} | {m_ours * 1e3:.1f} | {bname} | {m_base * 1e3:.1f} | "
              f"{m_ours / m_base:.2f} | < 200 ms |")

    big = make_cells(args.vector_size, args.vector_objects, seed=1)
    n_big = len(np.unique(big)) - 1
    ann = labels_to_polygons(big)  # warm-up
    m_ours, m_base = median_pair(lambda: labels_to_polygons(big),
                                 lambda: baseline_contours(big), args.vector_repeats)
    t = time.perf_counter()
    ids = polygons_to_labels(ann, big.shape)
    t_back = time.perf_counter() - t
    lut = np.array([0] + [r.attributes["label"] for _, r in ann.regions()], np.int32)
    np.testing.assert_array_equal(lut[ids], big)
    vertices = sum(len(r.vertices) + sum(len(h) for h in r.holes) for _, r in ann.regions())
    print(f"\nmask: {args.vector_size} x {args.vector_size} int32, {n_big:,} objects -> "
          f"{ann.region_count:,} regions, {vertices:,} vertices; round trip pixel-exact; "
          f"{args.vector_repeats} repetitions")
    print("\n| conversion | median s | baseline | baseline median s | ratio |")
    print("|---|---|---|---|---|")
    print(f"| labels_to_polygons | {m_ours:.2f} | cv2.findContours of the foreground | "
          f"{m_base:.2f} | {m_ours / m_base:.1f} |")
    print(f"| polygons_to_labels (one run) | {t_back:.2f} | | | |")


if __name__ == "__main__":
    main()
