"""Reader benchmark: viewport reads and open time against same-run baselines.

For each level, the same random 1920x1080 viewports are read three ways, in rotating
order: through napari-slideseg's dask pyramid, with OpenSlide's ``read_region`` of the
same region (the baseline), and through napari-wsi's dask pyramid. Every tile cache is
off (napari-slideseg's chunk cache, OpenSlide's tile caches), so each read decodes its
tiles: the figures are cold reads of a file in the page cache. Medians over the
repetitions, and ratios to the baseline.

    python benchmarks/make_large_slide.py            # once
    python benchmarks/bench_reader.py [--slide benchmarks/data/large.svs] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import openslide

from napari_slideseg.core import _backends
from napari_slideseg.core.slide import open_slide

HERE = Path(__file__).resolve().parent
VIEW_W, VIEW_H = 1920, 1080


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def open_times(path: Path, repeats: int) -> dict[str, list[float]]:
    from napari_wsi.backends.openslide import OpenSlideStore

    out: dict[str, list[float]] = {"openslide": [], "slideseg": [], "napari-wsi": []}

    def ours() -> None:
        slide = open_slide(path)
        slide.pyramid  # noqa: B018 - building the dask pyramid is part of opening
        slide.close()

    def theirs() -> None:
        store = OpenSlideStore(path)
        store.to_layer_data_tuples()

    for _ in range(repeats):
        out["openslide"].append(_timed(lambda: openslide.OpenSlide(str(path)).close()))
        out["slideseg"].append(_timed(ours))
        out["napari-wsi"].append(_timed(theirs))
    return out


def _read_region(osr: openslide.OpenSlide, origin: tuple[int, int], level: int,
                 size: tuple[int, int]) -> np.ndarray:
    return np.asarray(osr.read_region(origin, level, size))


def _read_array(arr: Any, window: tuple[slice, slice]) -> np.ndarray:
    return np.asarray(arr[window])


def viewport_times(path: Path, level: int, repeats: int, seed: int,
                   chunk_size: int | None = None) -> dict[str, list[float]]:
    from napari_wsi.backends.openslide import OpenSlideStore

    _backends.OPENSLIDE_CACHE_BYTES = 0
    slide = open_slide(path, cache_bytes=0, chunk_size=chunk_size)
    ours = slide.pyramid[level]
    baseline = openslide.OpenSlide(str(path))
    baseline.set_cache(openslide.OpenSlideCache(0))
    store = OpenSlideStore(path)
    store._handle.set_cache(openslide.OpenSlideCache(0))
    theirs = store.to_layer_data_tuples()[0][0][level]
    lh, lw, _ = ours.shape
    ds = slide.level_downsamples[level]
    rng = np.random.default_rng(seed + level)
    results: dict[str, list[float]] = {"read_region": [], "slideseg": [], "napari-wsi": []}
    for rep in range(repeats):
        x = int(rng.integers(0, max(1, lw - VIEW_W)))
        y = int(rng.integers(0, max(1, lh - VIEW_H)))
        w, h = min(VIEW_W, lw - x), min(VIEW_H, lh - y)
        origin, size = (round(x * ds), round(y * ds)), (w, h)
        window = (slice(y, y + h), slice(x, x + w))
        methods: list[tuple[str, Callable[[], np.ndarray]]] = [
            ("read_region", partial(_read_region, baseline, origin, level, size)),
            ("slideseg", partial(_read_array, ours, window)),
            ("napari-wsi", partial(_read_array, theirs, window)),
        ]
        for name, fn in methods[rep % 3:] + methods[:rep % 3]:
            start = time.perf_counter()
            arr = fn()
            results[name].append(time.perf_counter() - start)
            if arr.shape[:2] != (h, w):
                raise RuntimeError(f"{name} returned {arr.shape} for a {w}x{h} viewport")
    slide.close()
    baseline.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=HERE / "data" / "large.svs")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="napari-slideseg chunk side (default: tiles grouped to about 512 px)")
    args = parser.parse_args()
    if not args.slide.exists():
        raise SystemExit(f"{args.slide} not found: run benchmarks/make_large_slide.py first")

    with open_slide(args.slide) as slide:
        print(f"slide: {args.slide.name} {slide.level_dimensions}, downsamples "
              f"{[round(d, 4) for d in slide.level_downsamples]}")
    ms = 1000.0

    opens = open_times(args.slide, max(args.repeats, 20))
    base = statistics.median(opens["openslide"])
    print("\n| open | median ms | ratio to OpenSlide() |\n|---|---|---|")
    for name in ("openslide", "slideseg", "napari-wsi"):
        med = statistics.median(opens[name])
        print(f"| {name} | {med * ms:.1f} | {med / base:.2f} |")

    print("\n| level | viewport | read_region ms | slideseg ms | ratio | napari-wsi ms | "
          "ratio | slideseg vs napari-wsi |\n|---|---|---|---|---|---|---|---|")
    for level in (0, 1, 2):
        res = viewport_times(args.slide, level, args.repeats, args.seed, args.chunk_size)
        rr = statistics.median(res["read_region"])
        ours = statistics.median(res["slideseg"])
        wsi = statistics.median(res["napari-wsi"])
        print(f"| {level} | {VIEW_W}x{VIEW_H} | {rr * ms:.1f} | {ours * ms:.1f} | "
              f"{ours / rr:.2f} | {wsi * ms:.1f} | {wsi / rr:.2f} | {wsi / ours:.2f}x faster |")


if __name__ == "__main__":
    main()
