"""Export benchmark: patch + mask export against a minimal hand-written loop.

On the large benchmark slide with a few hundred annotated polygons (with holes), export
256-px level-0 patches, JPEG q90 images and PNG masks, annotated patches only, with
``export_patches`` and with the baseline: a minimal loop over the same patches with the
same number of threads (OpenSlide ``read_region`` -> RGB, ``cv2.fillPoly`` of the
polygons touching the patch, ``cv2.imwrite`` of the JPEG and the PNG). Pairs per second
and the ratio; the time export_patches spends choosing patches is reported apart.

    python benchmarks/make_large_slide.py          # once
    python benchmarks/bench_export.py [--workers 2] [--polygons 300] [--format jpg|png]
        [--repeats 3]

A second baseline writes the masks with the PNG flags export_patches uses (run-length
coding, no row filters), so the comparison does not rest on that choice alone. The
order of the three rotates between repetitions; the peak RSS is that of a child process
running the export alone.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import openslide

from napari_slideseg import AnnotationLayer, AnnotationSet, Region, export_patches, open_slide

HERE = Path(__file__).resolve().parent


def make_annotations(slide_path: Path, n: int, seed: int = 5) -> AnnotationSet:
    """Blob-shaped polygons on tissue (two classes), every third one with a hole."""
    rng = np.random.default_rng(seed)
    with open_slide(slide_path) as slide:
        thumb = slide.pyramid[-1].compute()
        ds = slide.level_downsamples[-1]
    tissue = np.argwhere(thumb.mean(axis=2) < 200)
    layers = [AnnotationLayer(name="tumour", color=(255, 0, 0)),
              AnnotationLayer(name="stroma", color=(0, 255, 0))]
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    for i in range(n):
        row, col = tissue[rng.integers(len(tissue))]
        cx, cy = (col + 0.5) * ds, (row + 0.5) * ds
        r = rng.uniform(150, 600) * (1 + 0.25 * np.sin(angles * rng.integers(2, 6)))
        ring = np.column_stack([cx + r * np.cos(angles), cy + r * np.sin(angles)])
        holes = [np.column_stack([cx + 0.3 * r * np.cos(angles), cy + 0.3 * r * np.sin(angles)])
                 ] if i % 3 == 0 else []
        layers[i % 2].regions.append(Region(ring, holes=holes))
    return AnnotationSet(layers, mpp=0.25)


#: PNG flags export_patches uses for masks (run-length coding, no row filters)
RLE_FLAGS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY,
             cv2.IMWRITE_PNG_STRATEGY_RLE, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]


def baseline(slide_path: Path, annotations: AnnotationSet, positions: list[tuple[int, int]],
             out: Path, size: int, workers: int, image_suffix: str,
             mask_flags: list[int] | None = None) -> float:
    """The hand-written loop: read_region, fillPoly, two cv2.imwrite; seconds.

    ``mask_flags``: cv2 PNG flags of the masks (default: compression 1, as a minimal
    loop writes them).
    """
    mask_flags = mask_flags or [cv2.IMWRITE_PNG_COMPRESSION, 1]
    polys = []
    for value, layer in ((2, annotations[0]), (1, annotations[1])):
        for region in layer.regions:
            v = region.vertices
            polys.append((value, v, region.holes, (*v.min(axis=0), *v.max(axis=0))))
    local = __import__("threading").local()
    out.mkdir(parents=True, exist_ok=True)

    def work(pos: tuple[int, int]) -> None:
        osr = getattr(local, "osr", None)
        if osr is None:
            osr = local.osr = openslide.OpenSlide(str(slide_path))
        x, y = pos
        rgba = np.asarray(osr.read_region((x, y), 0, (size, size)))
        image = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR)
        mask = np.zeros((size, size), np.uint8)
        for value, v, holes, (x0, y0, x1, y1) in polys:
            if x1 < x or y1 < y or x0 > x + size or y0 > y + size:
                continue
            cv2.fillPoly(mask, [np.round(v - (x, y)).astype(np.int32)], value)
            for h in holes:
                cv2.fillPoly(mask, [np.round(h - (x, y)).astype(np.int32)], 0)
        name = f"{x}_{y}"
        cv2.imwrite(str(out / f"{name}{image_suffix}"), image,
                    [cv2.IMWRITE_JPEG_QUALITY, 90] if image_suffix == ".jpg" else [])
        cv2.imwrite(str(out / f"{name}.png"), mask, mask_flags)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, positions))
    return time.perf_counter() - start


def export_child(args: argparse.Namespace) -> None:
    """Run export_patches alone (in a child process, so its peak RSS is its own)."""
    export_patches(args.slide, args.child / "annotations.xml", args.child / "out",
                   size=args.size,
                   image_format=args.format, quality=90, annotated_only=True,
                   workers=args.workers)


def peak_rss_mb(args: argparse.Namespace, annotations: AnnotationSet, out: Path) -> float:
    """Peak RSS of a child process running the same export (annotations from a file)."""
    import resource
    import subprocess
    import sys

    from napari_slideseg import write_annotations

    out.mkdir(parents=True)
    write_annotations(annotations, out / "annotations.xml")
    subprocess.run([sys.executable, __file__, "--slide", str(args.slide), "--workers",
                    str(args.workers), "--polygons", str(args.polygons), "--size",
                    str(args.size), "--format", args.format, "--child", str(out)],
                   check=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=HERE / "data" / "large.svs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--polygons", type=int, default=300)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.slide.exists():
        raise SystemExit(f"{args.slide} not found: run benchmarks/make_large_slide.py first")
    if args.child:
        export_child(args)
        return
    annotations = make_annotations(args.slide, args.polygons)
    suffix = ".jpg" if args.format == "jpg" else ".png"
    times: dict[str, list[float]] = {"ours": [], "loop": [], "loop+rle": []}
    choose_t: list[float] = []
    tmp = Path(tempfile.mkdtemp(prefix="slideseg-bench-", dir=HERE / "data"))
    try:
        start = time.perf_counter()
        rows = export_patches(args.slide, annotations, tmp / "plan", size=args.size,
                              annotated_only=True, workers=args.workers)
        positions = [(int(r["x"]), int(r["y"])) for r in rows]  # the same patches for all
        shutil.rmtree(tmp / "plan")
        order = list(times)
        for rep in range(args.repeats):
            for name in order[rep % 3:] + order[:rep % 3]:  # each goes first once in three
                out = tmp / name
                if name == "ours":
                    marks: dict[str, float] = {}

                    def progress(done: int, total: int, marks: dict[str, float] = marks
                                 ) -> None:
                        marks.setdefault("first", time.perf_counter())

                    start = time.perf_counter()
                    got = export_patches(args.slide, annotations, out, size=args.size,
                                         image_format=args.format, quality=90,
                                         annotated_only=True, workers=args.workers,
                                         progress=progress)
                    times[name].append(time.perf_counter() - start)
                    choose_t.append(marks["first"] - start)
                    assert len(got) == len(rows)
                else:
                    times[name].append(baseline(
                        args.slide, annotations, positions, out, args.size, args.workers,
                        suffix, RLE_FLAGS if name == "loop+rle" else None))
                shutil.rmtree(out)
        rss = peak_rss_mb(args, annotations, tmp / "child")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(rows)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"slide {args.slide.name}, {args.polygons} polygons, {n} annotated {args.size}-px "
          f"level-0 patches, {args.format} images + PNG masks, {args.workers} threads, "
          f"medians of {args.repeats}\n")
    print("| export | median s | pairs/s | ratio to the loop | ratio to the loop with RLE "
          "masks |")
    print("|---|---|---|---|---|")
    labels = {"loop": "hand-written loop (baseline)",
              "loop+rle": "the loop, masks with export_patches' PNG flags",
              "ours": "export_patches"}
    for k in ("loop", "loop+rle", "ours"):
        print(f"| {labels[k]} | {med[k]:.2f} | {n / med[k]:.0f} | {med['loop'] / med[k]:.2f} "
              f"| {med['loop+rle'] / med[k]:.2f} |")
    print("\nall runs (s): " + "; ".join(
        f"{k} " + ", ".join(f"{t:.2f}" for t in v) for k, v in times.items()))
    print(f"export_patches: choosing the patches (up to the first progress report) "
          f"{float(np.median(choose_t)):.2f} s; peak RSS of the export alone "
          f"(child process) {rss:.0f} MB")


if __name__ == "__main__":
    main()
