"""Auto-annotation benchmark: the whole pipeline against just reading its tiles.

On the large benchmark slide (40000 x 30000, real H&E texture), with 512-px level-0
tiles over tissue and the built-in classifier:

* read: the same tiles (the grid over tissue, found beforehand) read with
  ``Slide.read_region`` in the same number of threads, nothing else;
* predict: ``auto_annotate`` with a trained classifier loaded from its file: tissue
  detection, grid, reading, features, random forest, DBSCAN, statistics, outlines;
* train+predict: ``auto_annotate`` trained in the same run from annotations (three
  rectangles of 6 x 6 tiles over tissue, class 'tumor'; 'other' from tissue outside),
  one read of the tiles serving both.

Each repetition opens the slide afresh (no warm tile cache); medians, rotating order.

    python benchmarks/make_large_slide.py          # once
    python benchmarks/bench_autoannotate.py [--slide PATH] [--repeats 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from napari_slideseg import open_slide
from napari_slideseg.core.annotations import AnnotationLayer, AnnotationSet, Region
from napari_slideseg.core.autoannotate import auto_annotate
from napari_slideseg.core.tiles import read_tile, tile_grid

HERE = Path(__file__).resolve().parent


def training_annotations(path: Path, size: int) -> AnnotationSet:
    """Three 6 x 6-tile rectangles where the grid has most tissue."""
    with open_slide(path) as slide:
        grid = tile_grid(slide, size)
    full = grid.to_image(grid.tissue, fill=0.0)
    rows, cols = full.shape
    picks: list[tuple[int, int]] = []
    score = np.full((rows - 5, cols - 5), -1.0)
    for r in range(rows - 5):
        for c in range(cols - 5):
            score[r, c] = full[r:r + 6, c:c + 6].mean()
    for _ in range(3):
        r, c = np.unravel_index(int(np.argmax(score)), score.shape)
        picks.append((int(r), int(c)))
        score[max(0, r - 6):r + 7, max(0, c - 6):c + 7] = -1
    regions = [Region([[c * size, r * size], [(c + 6) * size, r * size],
                       [(c + 6) * size, (r + 6) * size], [c * size, (r + 6) * size]])
               for r, c in picks]
    return AnnotationSet([AnnotationLayer(name="tumor", regions=regions)])


def read_only(path: Path, size: int, workers: int) -> tuple[float, int]:
    with open_slide(path) as slide:
        grid = tile_grid(slide, size)
    start = time.perf_counter()
    with open_slide(path) as slide, ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(lambda i: read_tile(slide, grid, i), range(len(grid))):
            pass
    return time.perf_counter() - start, len(grid)


def pipeline(path: Path, size: int, workers: int, model: object | None,
             annotations: AnnotationSet | None) -> tuple[float, dict[str, float], int]:
    start = time.perf_counter()
    with open_slide(path) as slide:
        result = auto_annotate(slide, model, annotations, size=size, workers=workers)
    seconds = time.perf_counter() - start
    kept = int(result.clusters["kept"].sum()) if len(result.clusters) else 0
    return seconds, result.timings, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=HERE / "data" / "large.svs")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not args.slide.exists():
        raise SystemExit(f"{args.slide} not found: run benchmarks/make_large_slide.py first")
    annotations = training_annotations(args.slide, args.size)
    with open_slide(args.slide) as slide:
        trained = auto_annotate(slide, None, annotations, size=args.size, workers=args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "model.joblib"
        trained.model.save(model_path)
        from napari_slideseg.core.tilemodels import load_model

        model = load_model(model_path)
        times: dict[str, list[float]] = {"read": [], "predict": [], "train+predict": []}
        details: dict[str, dict[str, float]] = {}
        n_tiles = kept = 0
        order = list(times)
        for rep in range(args.repeats):
            for name in order[rep % 3:] + order[:rep % 3]:
                if name == "read":
                    seconds, n_tiles = read_only(args.slide, args.size, args.workers)
                elif name == "predict":
                    seconds, details[name], kept = pipeline(args.slide, args.size,
                                                            args.workers, model, None)
                else:
                    seconds, details[name], _ = pipeline(args.slide, args.size,
                                                         args.workers, None, annotations)
                times[name].append(seconds)
                print(f"  rep {rep + 1} {name:>14}: {seconds:6.2f} s", flush=True)
    read = statistics.median(times["read"])
    print(f"\n{args.slide.name}: {n_tiles} tiles of {args.size} px over tissue, "
          f"{args.workers} threads, medians of {args.repeats}")
    print(f"  read tiles only      {read:6.2f} s  ({n_tiles / read:.0f} tiles/s)")
    for name in ("predict", "train+predict"):
        t = statistics.median(times[name])
        steps = ", ".join(f"{k} {v:.2f}" for k, v in details[name].items())
        print(f"  {name:<20} {t:6.2f} s  = {t / read:.2f} x read   [{steps}]")
    print(f"  clusters kept: {kept}; training tiles: {trained.training.counts()}")


if __name__ == "__main__":
    main()
