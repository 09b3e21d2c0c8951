"""Annotation benchmark: importing a large ImageScope file, and building napari layers.

1. Import: ``read_annotations`` of a generated Aperio ImageScope XML file with 20,000
   regions and about 4 million vertices (about 160 MiB, like a large real export) against
   the baseline, a bare ``lxml.etree.iterparse`` of the same file into one numpy array of
   vertices per region (nothing else: no attributes, no checks). Target ratio <= 1.5.
2. Display: a napari Shapes layer of 10,000 of those polygons (the editable display), and
   the lazy Labels layer of all 20,000 (the fast display used above the Shapes limit):
   building it, then reading a 1920x1080 viewport at level 0 and the whole slide at the
   coarsest level of a 100000 x 80000 slide.

Medians over the repetitions, in rotating order; the file is in the page cache.

    python benchmarks/bench_annotations.py [--regions 20000] [--vertices 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np

from napari_slideseg import (
    AnnotationLayer,
    AnnotationSet,
    Region,
    read_annotations,
    write_annotations,
)

HERE = Path(__file__).resolve().parent


def make_file(path: Path, regions: int, vertices: int, seed: int = 3) -> Path:
    """ImageScope XML: 4 layers, blob-shaped polygons with 2-decimal coordinates."""
    rng = np.random.default_rng(seed)
    layers = [AnnotationLayer(name=f"class {i}", color=c) for i, c in
              enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)])]
    angles = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    for i in range(regions):
        cx, cy = rng.uniform(0, 100_000), rng.uniform(0, 80_000)
        r = rng.uniform(50, 400) * (1 + 0.2 * np.sin(angles * rng.integers(2, 7)))
        ring = np.round(np.column_stack([cx + r * np.cos(angles), cy + r * np.sin(angles)]), 2)
        layers[i % 4].regions.append(Region(ring, type="polygon", text=f"r{i}"))
    write_annotations(AnnotationSet(layers, mpp=0.2527), path, format="aperio", backup=False)
    return path


def lxml_baseline(path: Path) -> list[np.ndarray]:
    """A bare lxml iterparse into numpy: one (N, 2) float64 array per Region."""
    from lxml import etree

    out: list[np.ndarray] = []
    xs: list[str] = []
    ys: list[str] = []
    for _, element in etree.iterparse(str(path), events=("end",),
                                      tag=("Vertex", "Region")):
        if element.tag == "Vertex":
            xs.append(element.get("X"))
            ys.append(element.get("Y"))
        else:
            out.append(np.column_stack([np.array(xs, np.float64), np.array(ys, np.float64)]))
            xs, ys = [], []
            element.clear()
            parent = element.getparent()
            while element.getprevious() is not None:
                del parent[0]
    return out


def _timed(fn) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=20_000)
    parser.add_argument("--vertices", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--display-regions", type=int, default=10_000)
    parser.add_argument("--display-only", action="store_true",
                        help="skip the import comparison (read the file once)")
    args = parser.parse_args()

    path = HERE / "data" / f"annotations-{args.regions}x{args.vertices}.xml"
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        t, _ = _timed(lambda: make_file(path, args.regions, args.vertices))
        print(f"wrote {path.name} in {t:.1f} s")
    size = path.stat().st_size / 2**20
    ours: list[float] = []
    base: list[float] = []
    if args.display_only:
        ann = read_annotations(path)
    for rep in range(0 if args.display_only else args.repeats):
        order = [("ours", lambda: read_annotations(path)), ("lxml", lambda: lxml_baseline(path))]
        for name, fn in order[rep % 2:] + order[:rep % 2]:
            t, result = _timed(fn)
            (ours if name == "ours" else base).append(t)
            if name == "ours":
                ann = result
            else:
                arrays = result
    n_vertices = sum(len(r.vertices) for _, r in ann.regions())  # type: ignore[attr-defined]
    print(f"\nfile: {path.name}, {size:.0f} MiB, {ann.region_count} regions, "  # type: ignore[attr-defined]
          f"{n_vertices:,} vertices\n")
    if not args.display_only:
        assert n_vertices == sum(len(a) for a in arrays)  # type: ignore[attr-defined]
        assert all(np.array_equal(r.vertices, a) for (_, r), a in
                   zip(ann.regions(), arrays, strict=True))  # type: ignore[attr-defined]
        m_ours, m_base = statistics.median(ours), statistics.median(base)
        print("| import | median s | ratio to lxml iterparse |")
        print("|---|---|---|")
        print(f"| lxml iterparse into numpy (baseline) | {m_base:.2f} | 1.00 |")
        print(f"| read_annotations | {m_ours:.2f} | {m_ours / m_base:.2f} |")

    # napari picks its triangulation backend (bermuda when installed) when its settings
    # load, as they do in every viewer session
    from napari.settings import get_settings

    print(f"\nnapari triangulation backend: {get_settings().experimental.triangulation_backend}")

    scale = (0.2527, 0.2527)
    subset = AnnotationSet([AnnotationLayer(name="subset", color=(255, 0, 0), regions=[
        r for _, r in ann.regions()][:args.display_regions])], mpp=0.2527)  # type: ignore[attr-defined]
    shapes_t = [_timed(partial(build_shapes, subset, scale))[0]
                for _ in range(max(1, args.repeats // 2))]
    dims = [(100_000, 80_000), (25_000, 20_000), (6_250, 5_000), (1_562, 1_250)]
    downsamples = [1.0, 4.0, 16.0, 64.0]
    labels_t, view_t, overview_t = [], [], []
    for _ in range(args.repeats):
        t, layer = _timed(partial(build_labels, ann, dims, downsamples, scale))
        labels_t.append(t)
        view_t.append(_timed(partial(np.asarray, layer.data[0][40_000:41_080,
                                                               50_000:51_920]))[0])
        overview_t.append(_timed(partial(np.asarray, layer.data[3]))[0])
    print("\n| display | regions | median s |")
    print("|---|---|---|")
    print(f"| Shapes layer: annotation_layers_data + napari.layers.Shapes | "
          f"{args.display_regions:,} | {statistics.median(shapes_t):.2f} |")
    print(f"| Labels layer: annotation_labels_data + napari.layers.Labels | "
          f"{ann.region_count:,} | {statistics.median(labels_t):.2f} |")  # type: ignore[attr-defined]
    print(f"| Labels: a 1920x1080 viewport at level 0 | {ann.region_count:,} | "  # type: ignore[attr-defined]
          f"{statistics.median(view_t):.3f} |")
    print(f"| Labels: the whole slide at level 3 (1562x1250) | {ann.region_count:,} | "  # type: ignore[attr-defined]
          f"{statistics.median(overview_t):.3f} |")


def build_shapes(annotations: AnnotationSet, scale: tuple[float, float]) -> object:
    """One napari Shapes layer of ``annotations`` (the editable display)."""
    import napari

    from napari_slideseg._layers import annotation_layers_data

    data, kwargs, _ = annotation_layers_data(annotations, scale)[0]
    return napari.layers.Shapes(data, **kwargs)


def build_labels(annotations: AnnotationSet, dims: list[tuple[int, int]],
                 downsamples: list[float], scale: tuple[float, float]) -> object:
    """One lazy multiscale napari Labels layer of ``annotations`` (the fast display)."""
    import napari

    from napari_slideseg._layers import annotation_labels_data

    data, kwargs, _ = annotation_labels_data(annotations, dims, downsamples, scale)
    return napari.layers.Labels(data, **kwargs)


if __name__ == "__main__":
    main()
