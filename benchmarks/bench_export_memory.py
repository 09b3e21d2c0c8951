"""Memory benchmark: peak RSS of patch and mask export on a 100000 x 100000 px slide.

Each step runs in its own process, measured with ``/usr/bin/time -v`` (or, where that
is missing, the child's own ``wait4`` resource usage); peak RSS must stay under 1 GB.
The figure is the largest process's peak: the export runs its workers as threads of
one process (with ``--scheduler`` the dask workers would not be counted).

- baseline: a Python process that opens the slide with OpenSlide and reads one 256-px
  region (the interpreter and libraries floor), and the same with ``open_slide``;
- export: ``napari-slideseg export`` of 256-px level-0 patches, JPEG images and PNG
  masks, annotated patches only, default workers, with an Aperio XML of a few hundred
  polygons spread over the whole slide (made as ``bench_export.py`` makes them);
- mask: the whole-slide label mask of the same annotations, ``mask_pyramid`` saved with
  ``save_mask`` as a pyramidal TIFF from level 0 (``--mask-level 1`` starts it at
  level 1).

Outputs go to benchmarks/data/ (the exported patches are deleted afterwards).

    python benchmarks/make_large_slide.py --width 100000 --height 100000 \\
        --out benchmarks/data/huge.svs                                     # once
    python benchmarks/bench_export_memory.py [--slide benchmarks/data/huge.svs] \\
        [--polygons 300] [--mask-level 0]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
GNU_TIME = Path("/usr/bin/time")
LIMIT_MB = 1024.0  # 1 GB; MB here are 2**20 bytes

BASELINE_OPENSLIDE = """
import sys
import numpy as np
import openslide
osr = openslide.OpenSlide(sys.argv[1])
w, h = osr.dimensions
region = np.asarray(osr.read_region((w // 2, h // 2), 0, (256, 256)))
assert region.shape == (256, 256, 4)
"""

BASELINE_SLIDESEG = """
import sys
from napari_slideseg import open_slide
with open_slide(sys.argv[1]) as slide:
    w, h = slide.dimensions
    assert slide.read_region((w // 2, h // 2), 0, (256, 256)).shape == (256, 256, 3)
"""

SAVE_MASK = """
import sys
from napari_slideseg import AnnotationKey, open_slide, read_annotations
from napari_slideseg.core.masks import mask_pyramid, save_mask
slide_path, xml, out, first = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
annotations = read_annotations(xml)
key = AnnotationKey.from_annotations([annotations])
with open_slide(slide_path) as slide:
    levels = mask_pyramid(annotations, key, list(slide.level_dimensions),
                          list(slide.level_downsamples))
    mpp = slide.mpp[0] * slide.level_downsamples[first] if slide.mpp else None
save_mask(levels[first:], out, mpp=mpp)
"""


def measure(cmd: list[str], label: str) -> dict[str, object]:
    """Run ``cmd``; its peak RSS (MB), wall time (s), exit code, stdout and stderr."""
    shown = " ".join("'<script>'" if "\n" in c else c for c in cmd)
    print(f"{label}: {shown}", file=sys.stderr, flush=True)
    if GNU_TIME.exists():
        report = HERE / "data" / f".time-{os.getpid()}.txt"
        start = time.perf_counter()
        proc = subprocess.run([str(GNU_TIME), "-v", "-o", str(report), *cmd],
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        text = report.read_text()
        report.unlink()
        rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)[1])
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:  # the child's own resource usage, from wait4
        report = HERE / "data" / f".out-{os.getpid()}"
        start = time.perf_counter()
        with open(f"{report}.1", "w+") as fout, open(f"{report}.2", "w+") as ferr:
            child = subprocess.Popen(cmd, stdout=fout, stderr=ferr, text=True)
            _, status, usage = os.wait4(child.pid, 0)
            wall = time.perf_counter() - start
            child.returncode = code = os.waitstatus_to_exitcode(status)
            fout.seek(0)
            ferr.seek(0)
            out, err = fout.read(), ferr.read()
        Path(f"{report}.1").unlink()
        Path(f"{report}.2").unlink()
        rss_kb = usage.ru_maxrss
    if code:
        print(f"{label} failed (exit {code}):\n{err[-4000:]}", file=sys.stderr)
    return {"rss_mb": rss_kb / 1024, "wall": wall, "code": code, "out": out, "err": err}


def code_version() -> str:
    """The checked-out commit, '-dirty' with uncommitted changes under src/."""
    try:
        head = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(HERE.parent), "status", "--porcelain",
                                "--", "src"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("-dirty" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=HERE / "data" / "huge.svs")
    parser.add_argument("--polygons", type=int, default=300)
    parser.add_argument("--mask-level", type=int, default=0,
                        help="first level of the saved mask pyramid (0)")
    parser.add_argument("--keep", action="store_true", help="keep the exported patches")
    args = parser.parse_args()
    if not args.slide.exists():
        raise SystemExit(f"{args.slide} not found: run benchmarks/make_large_slide.py "
                         "--width 100000 --height 100000 --out benchmarks/data/huge.svs")
    sys.path.insert(0, str(HERE))
    from bench_export import make_annotations

    from napari_slideseg import open_slide, write_annotations

    code_at_start = code_version()
    data = HERE / "data"
    stem = args.slide.stem
    xml = data / f"{stem}-annotations-{args.polygons}.xml"
    export_dir = data / f"{stem}-export"
    mask_path = data / f"{stem}-mask-L{args.mask_level}.tif"
    with open_slide(args.slide) as slide:
        dims, size_mb = slide.dimensions, args.slide.stat().st_size / 2**20
    start = time.perf_counter()
    annotations = make_annotations(args.slide, args.polygons)
    write_annotations(annotations, xml, backup=False)
    print(f"annotations: {args.polygons} polygons -> {xml.name} "
          f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    shutil.rmtree(export_dir, ignore_errors=True)

    python = sys.executable
    rows: list[tuple[str, dict[str, object], str]] = []
    base = measure([python, "-c", BASELINE_OPENSLIDE, str(args.slide)], "baseline")
    rows.append(("baseline: python + openslide, open + one 256-px read_region", base, "-"))
    lib = measure([python, "-c", BASELINE_SLIDESEG, str(args.slide)], "library floor")
    rows.append(("python + napari_slideseg, open_slide + one 256-px read_region", lib, "-"))
    try:
        export = measure([str(BIN / "napari-slideseg"), "export", str(args.slide),
                          "--annotations", str(xml), "--out", str(export_dir),
                          "--size", "256", "--level", "0", "--annotated-only",
                          "--format", "jpg"], "export")
        manifest = export_dir / "manifest.csv"
        patches = "-"
        if manifest.exists():
            with open(manifest, newline="", encoding="utf-8") as fh:
                patches = str(sum(1 for _ in csv.DictReader(fh)))
        rows.append(("`napari-slideseg export`, 256-px level-0 patches, annotated only, "
                     "JPEG + PNG masks, default workers", export, patches))
        if export["code"] == 0:
            print(export["out"].strip(), file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(export_dir, ignore_errors=True)
    mask = measure([python, "-c", SAVE_MASK, str(args.slide), str(xml), str(mask_path),
                    str(args.mask_level)], "mask")
    mask_note = "-"
    if mask["code"] == 0:
        mask_note = f"{mask_path.stat().st_size / 2**20:.0f} MiB file"
    rows.append((f"whole-slide label mask from level {args.mask_level}, `save_mask` "
                 "pyramidal TIFF", mask, mask_note))

    w, h = dims
    code_at_end = code_version()
    if code_at_end != code_at_start:
        code_at_start += f" at the start, {code_at_end} at the end"
    print(f"\ncode {code_at_start}; slide {args.slide.name}: {w} x {h} px, "
          f"{size_mb:.0f} MiB; {args.polygons} polygons; a uint8 mask of the whole level 0 "
          f"would be {w * h / 1e6:.0f} MB\n")
    print("| what | peak RSS MB | wall s | patches |")
    print("|---|---|---|---|")
    for what, r, extra in rows:
        flag = "" if r["code"] == 0 else f" (FAILED, exit {r['code']})"
        print(f"| {what}{flag} | {r['rss_mb']:.0f} | {r['wall']:.1f} | {extra} |")
    over = [what for what, r, _ in rows if r["rss_mb"] > LIMIT_MB]
    print(f"\nlimit {LIMIT_MB:.0f} MB: " + ("exceeded by " + "; ".join(over) if over else "met"))


if __name__ == "__main__":
    main()
