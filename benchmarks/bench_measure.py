"""Measurement benchmark: ``measure`` against scikit-image's ``regionprops_table``.

100,000 cell-like objects (filled ellipses with semi-axes of 7-16 px and 0.5-1 aspect,
random orientation, one per cell of a 64-px grid with up to 14 px of jitter; seeded) in
a 20288 x 20288 int32 label array, about the nuclei of a 5 x 5 mm field at 40x, and an
H&E-like RGB image of the same size (pink, textured background; each nucleus a shade
of haematoxylin purple). Both sides measure the same labels and image, in memory:

* ``regionprops_table`` (the baseline): label, area, perimeter, centroid, bbox, major
  and minor axis, eccentricity, orientation, solidity, extent, intensity mean / min /
  max per RGB channel;
* ``measure(..., stains=False)``: the same features (plus the standard deviation per
  channel, the µm conversions and circularity, which it computes anyway);
* ``measure(...)``: everything, adding haematoxylin, eosin and DAB (colour
  deconvolution) mean / std / min / max.

Medians of ``--repeats`` runs in alternating order. Also timed: building a pandas
DataFrame of the 100k rows (from regionprops_table's dict of columns, and from
measure's columns), and writing measure's table as CSV and Parquet.

    python benchmarks/bench_measure.py [--objects 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from napari_slideseg import measure, write_table

SPACING = 64
RP_PROPERTIES = ("label", "area", "perimeter", "centroid", "bbox", "axis_major_length",
                 "axis_minor_length", "eccentricity", "orientation", "solidity", "extent",
                 "intensity_mean", "intensity_min", "intensity_max")


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels, rgb): n ellipses labelled 1..n on a square grid, and an H&E-like image."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    size = side * SPACING
    labels = np.zeros((size, size), np.int32)
    image = np.empty((size, size, 3), np.uint8)
    tile = np.clip(rng.normal((232, 182, 214), 9, (1024, 1024, 3)), 0, 255).astype(np.uint8)
    for y in range(0, size, 1024):
        for x in range(0, size, 1024):
            block = image[y:y + 1024, x:x + 1024]
            block[:] = tile[:block.shape[0], :block.shape[1]]
    gy, gx = np.divmod(np.arange(n), side)
    cx = gx * SPACING + SPACING / 2 + rng.uniform(-14, 14, n)
    cy = gy * SPACING + SPACING / 2 + rng.uniform(-14, 14, n)
    a = rng.uniform(7, 16, n)
    b = a * rng.uniform(0.5, 1.0, n)
    angle = rng.uniform(0, 180, n)
    shade = rng.uniform(0.6, 1.0, n)
    for i in range(n):
        box = ((float(cx[i]), float(cy[i])), (float(2 * a[i]), float(2 * b[i])),
               float(angle[i]))
        cv2.ellipse(labels, box, i + 1, -1)
        colour = tuple(int(c * shade[i]) for c in (120, 95, 175))
        cv2.ellipse(image, box, colour, -1)
    return labels, image


def time_regionprops(labels: np.ndarray, image: np.ndarray) -> tuple[float, dict]:
    from skimage.measure import regionprops_table

    start = time.perf_counter()
    table = regionprops_table(labels, image, properties=RP_PROPERTIES)
    return time.perf_counter() - start, table


def time_measure(labels: np.ndarray, image: np.ndarray, stains: bool) -> tuple[float, pd.DataFrame]:
    start = time.perf_counter()
    df = measure(labels, image, mpp=0.25, stains=stains)
    return time.perf_counter() - start, df


def median_time(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    labels, image = make_data(args.objects)
    made = time.perf_counter() - start
    runs: dict[str, list[float]] = {"rp": [], "same": [], "all": []}
    rp_table: dict = {}
    df = pd.DataFrame()
    for rep in range(args.repeats):
        order = ("rp", "same", "all") if rep % 2 == 0 else ("all", "same", "rp")
        for name in order:
            if name == "rp":
                seconds, rp_table = time_regionprops(labels, image)
            else:
                seconds, df = time_measure(labels, image, stains=name == "all")
            runs[name].append(seconds)
    rp, same, full = (float(np.median(runs[k])) for k in ("rp", "same", "all"))

    # the same objects, the same answers where the definitions agree
    rp_df = pd.DataFrame(rp_table)
    assert len(df) == len(rp_df) == args.objects
    assert (df["label"].to_numpy() == rp_df["label"].to_numpy()).all()
    assert (df["pixels"].to_numpy() == rp_df["area"].to_numpy()).all()
    mean_diff = float(np.abs(df["red_mean"] - rp_df["intensity_mean-0"]).max())
    centroid_diff = float(np.abs(df["centroid_x"] - 0.5 - rp_df["centroid-1"]).max())

    columns = {c: df[c].to_numpy() for c in df.columns}
    build_rp = median_time(lambda: pd.DataFrame(rp_table))
    build_ours = median_time(lambda: pd.DataFrame(columns))
    with tempfile.TemporaryDirectory() as tmp:
        csv = median_time(lambda: write_table(df, Path(tmp) / "objects.csv"), 3)
        parquet = median_time(lambda: write_table(df, Path(tmp) / "objects.parquet"), 3)

    h, w = labels.shape
    print(f"{args.objects:,} objects in a {w} x {h} int32 label array with an RGB image "
          f"(made in {made:.0f} s); medians of {args.repeats} runs\n")
    print("| step | median s | ratio to regionprops_table |")
    print("|---|---|---|")
    print(f"| skimage regionprops_table (baseline): area, perimeter, centroid, bbox, axes, "
          f"eccentricity, orientation, solidity, extent, RGB mean/min/max | {rp:.1f} | 1.00 |")
    print(f"| measure, same features (stains=False; adds RGB std, µm, circularity) | "
          f"{same:.1f} | {same / rp:.2f} |")
    print(f"| measure, all features (adds H/E/DAB mean/std/min/max) | {full:.1f} | "
          f"{full / rp:.2f} |")
    print(f"\n| table of {len(df):,} rows | median ms |")
    print("|---|---|")
    print(f"| pd.DataFrame from regionprops_table's columns ({rp_df.shape[1]}) | "
          f"{1e3 * build_rp:.1f} |")
    print(f"| pd.DataFrame from measure's columns ({df.shape[1]}) | {1e3 * build_ours:.1f} |")
    print(f"| write_table CSV | {1e3 * csv:.0f} |")
    print(f"| write_table Parquet | {1e3 * parquet:.0f} |")
    print(f"\nagreement with regionprops_table: pixel counts equal, max |red mean diff| "
          f"{mean_diff:.2g}, max |centroid diff| {centroid_diff:.2g} px")


if __name__ == "__main__":
    main()
