"""Tissue detection benchmark: the whole pipeline against just reading the level it uses.

On the large benchmark slide, ``detect_tissue`` at about 8 µm/px (read the nearest finer
level, resize, saturation, 16 µm smoothing, Otsu, 32 µm closing, small holes and pieces
removed, connected components) against reading the same level and resizing it the same
way. Each repetition opens the slide afresh (no warm chunk cache); medians, alternating
order.

    python benchmarks/make_large_slide.py          # once
    python benchmarks/bench_threshold.py [--slide PATH] [--mpp 8] [--repeats 7]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from napari_slideseg import open_slide
from napari_slideseg.core.threshold import detect_tissue

HERE = Path(__file__).resolve().parent


def read_only(path: Path, mpp: float) -> float:
    start = time.perf_counter()
    with open_slide(path) as slide:
        ds = mpp / slide.mpp[0]
        level = slide.get_best_level_for_downsample(ds + 1e-9)
        image = slide.pyramid[level].compute()
        w0, h0 = slide.dimensions
        cv2.resize(image, (round(w0 / ds), round(h0 / ds)), interpolation=cv2.INTER_AREA)
    return time.perf_counter() - start


def pipeline(path: Path, mpp: float) -> tuple[float, int, float]:
    start = time.perf_counter()
    with open_slide(path) as slide:
        result = detect_tissue(slide, mpp=mpp)
    return time.perf_counter() - start, result.count, result.fraction()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=HERE / "data" / "large.svs")
    parser.add_argument("--mpp", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if not args.slide.exists():
        raise SystemExit(f"{args.slide} not found: run benchmarks/make_large_slide.py first")
    reads, runs = [], []
    count, fraction = 0, 0.0
    for rep in range(args.repeats):
        for name in (("read", "detect") if rep % 2 == 0 else ("detect", "read")):
            if name == "read":
                reads.append(read_only(args.slide, args.mpp))
            else:
                seconds, count, fraction = pipeline(args.slide, args.mpp)
                runs.append(seconds)
    read, run = float(np.median(reads)), float(np.median(runs))
    print(f"slide {args.slide.name}, {args.mpp} µm/px, medians of {args.repeats}\n")
    print("| step | median s | ratio to reading |")
    print("|---|---|---|")
    print(f"| read the level + resize (baseline) | {read:.3f} | 1.00 |")
    print(f"| detect_tissue (read + threshold + clean + label) | {run:.3f} | "
          f"{run / read:.2f} |")
    print(f"\n{count} tissue pieces, {100 * fraction:.1f} % of the slide")


if __name__ == "__main__":
    main()
