"""Patch and mask export: image patches and their label masks from annotated slides.

One slide at a time: a grid of ``size`` x ``size`` patches at a level (or a target pixel
size) is laid over the slide; patches are chosen (all, or annotated only, or with a
minimum fraction of given classes); each chosen patch's image is read from the slide
and its mask is filled from the polygons of exactly that patch (no slide-sized mask ever
exists). Files are written atomically and named by slide, level and level-0 x, y, so an
interrupted export resumes where it stopped and ends with the same manifest.

Folder layout::

    OUT/manifest.csv            one row per patch (all slides)
    OUT/key.json                the annotation key (class -> mask value)
    OUT/export.json             every parameter of the run, the slides done and failed
    OUT/<slide>/images/<slide>_L<level>_x<x>_y<y>.<jpg|png|tif>
    OUT/<slide>/masks/<slide>_L<level>_x<x>_y<y>.png
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .annotations import AnnotationSet, find_annotations, read_annotations
from .errors import SlideSegError
from .masks import AnnotationKey, region_index
from .raster import rasterize_window
from .slide import Slide, open_slide
from .suffixes import SLIDE_SUFFIXES

__all__ = ["ExportParams", "export_patches", "patch_grid", "safe_name"]

IMAGE_FORMATS = {"jpg": ".jpg", "jpeg": ".jpg", "png": ".png", "tif": ".tif", "tiff": ".tif"}
MANIFEST_COLUMNS = ["slide", "level", "downsample", "mpp", "x", "y", "width", "height",
                    "image", "mask"]


@dataclass
class ExportParams:
    """Every parameter of an export run (saved as ``export.json``)."""

    size: int = 256
    level: int = 0
    overlap: int = 0
    image_format: str = "jpg"
    quality: int = 90
    png_compression: int = 1
    annotated_only: bool = False
    min_fraction: float = 0.0
    classes: list[str] | None = None
    edge: str = "skip"
    mpp: float | None = None

    def check(self) -> None:
        if self.mpp is not None and not self.mpp > 0:
            raise SlideSegError(f"target mpp must be positive, not {self.mpp}.")
        if self.size < 1:
            raise SlideSegError(f"patch size must be at least 1 px, not {self.size}.")
        if not 0 <= self.overlap < self.size:
            raise SlideSegError(f"overlap must be in [0, size), not {self.overlap}.")
        if self.image_format.lower() not in IMAGE_FORMATS:
            raise SlideSegError(f"image format {self.image_format!r}: use jpg, png or tif.")
        if self.edge not in ("skip", "pad"):
            raise SlideSegError(f"edge must be 'skip' or 'pad', not {self.edge!r}.")
        if not 0.0 <= self.min_fraction <= 1.0:
            raise SlideSegError(f"min_fraction must be in [0, 1], not {self.min_fraction}.")


def safe_name(text: str) -> str:
    """A file-name stem safe on every OS: letters, digits, '-', '_' and '.' only."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "slide"
    return name[:120]


def patch_grid(level_size: tuple[int, int], size: int, stride: int,
               edge: str = "skip") -> list[tuple[int, int]]:
    """Top-left corners (x, y) of the patch grid, in pixels of the level."""
    w, h = level_size

    def starts(n: int) -> list[int]:
        if edge == "pad":
            return list(range(0, n, stride))
        return list(range(0, n - size + 1, stride)) if n >= size else []

    return [(x, y) for y in starts(h) for x in starts(w)]


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a hidden file beside ``path``, then rename it: never a half file."""
    # one writer per patch: a per-thread name is unique without mkstemp's cost
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.part")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _encode(image: np.ndarray, suffix: str, params: ExportParams) -> bytes:
    import cv2

    if suffix == ".jpg":
        flags = [cv2.IMWRITE_JPEG_QUALITY, int(params.quality)]
    elif suffix == ".png":
        flags = [cv2.IMWRITE_PNG_COMPRESSION, int(params.png_compression)]
    else:
        flags = []
    data = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(suffix, data, flags)
    if not ok:
        raise SlideSegError(f"could not encode a {suffix} image.")
    return buf.tobytes()


def export_patches(
    slide: str | os.PathLike[str] | Slide,
    annotations: str | os.PathLike[str] | AnnotationSet | None,
    out: str | os.PathLike[str],
    *,
    size: int = 256,
    level: int = 0,
    mpp: float | None = None,
    overlap: int = 0,
    image_format: str = "jpg",
    quality: int = 90,
    png_compression: int = 1,
    key: AnnotationKey | str | os.PathLike[str] | None = None,
    class_from: str = "layer",
    annotated_only: bool = False,
    min_fraction: float = 0.0,
    classes: list[str] | None = None,
    edge: str = "skip",
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[dict[str, Any]]:
    """Write image patches and label masks of one slide; returns the manifest rows.

    Parameters
    ----------
    slide : path or Slide
        A slide, or a folder of slides (every slide file in it, by name; a slide that
        fails is reported in ``export.json`` and skipped, and the batch goes on).
    annotations : path, AnnotationSet or None
        Annotation file (any format :func:`read_annotations` reads) or set; None writes
        images only. For a folder of slides: a folder of annotation files matched by
        stem, or None for the files beside each slide. The key is made from all of them.
    out : path
        Output folder (see the module notes for its layout). Existing patches are kept
        and skipped, so a rerun resumes an interrupted export.
    size, level, overlap : int
        Patch side and overlap in pixels of ``level``; the stride is ``size - overlap``.
    mpp : float, optional
        Target micrometres per pixel instead of a level: patches are read from the
        nearest finer level and resized (area averaging) to that pixel size; masks are
        filled at the target pixel size directly (never resampled).
    image_format : {'jpg', 'png', 'tif'}
        Masks are always PNG (lossless, 8- or 16-bit).
    key : AnnotationKey or path, optional
        Class -> mask value; default: made from the annotations (``class_from``), or
        read from ``OUT/key.json`` when a previous run left one.
    annotated_only : bool
        Keep only patches with at least one labelled pixel.
    min_fraction : float
        Keep only patches whose pixels of ``classes`` (default: every class) make at
        least this fraction of the patch.
    edge : {'skip', 'pad'}
        Patches that would cross the slide's edge: left out, or kept and padded with the
        slide's background colour (mask 0).
    workers : int, optional
        Threads reading and writing patches (default: the number of CPUs).
    progress : callable(done, total), optional
    cancel : threading.Event, optional
        Set it to stop after the patches in flight; what was written stays valid.

    Returns
    -------
    list of dict
        One row per patch, with the columns of ``manifest.csv`` (slide, level,
        downsample, mpp, x, y, width, height, image, mask, then one ``frac_<class>``
        column per class).
    """
    params = ExportParams(size, level, overlap, image_format.lower(), quality,
                          png_compression, annotated_only, min_fraction, classes, edge, mpp)
    params.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    batch = not isinstance(slide, Slide) and Path(slide).is_dir()
    jobs = _batch_jobs(Path(slide), annotations) if batch else [(slide, annotations)]
    sets: list[AnnotationSet | None] = []
    for _, source in jobs:
        if isinstance(source, AnnotationSet) or source is None:
            sets.append(source)
        else:
            sets.append(read_annotations(source))
    key_obj = _resolve_key(key, [a for a in sets if a is not None], class_from, out)
    rows: list[dict[str, Any]] = []
    done_slides: list[str] = []
    failed: list[dict[str, str]] = []
    for (source, _), ann in zip(jobs, sets, strict=True):
        if cancel is not None and cancel.is_set():
            break
        try:
            own = not isinstance(source, Slide)
            handle = open_slide(source) if own else source
            try:
                rows += _export_one(handle, ann, key_obj, out, params, workers, progress,
                                    cancel)
                done_slides.append(str(handle.path))
            finally:
                if own:
                    handle.close()
        except SlideSegError as exc:
            if not batch:
                raise
            failed.append({"slide": str(source), "error": str(exc)})
            warnings.warn(f"skipped: {exc}", RuntimeWarning, stacklevel=2)
    _write_run_files(out, rows, key_obj, params, done_slides, failed)
    return rows


def _batch_jobs(folder: Path, annotations: Any) -> list[tuple[Any, Any]]:
    """(slide, annotation file or None) for every slide file in ``folder``, by name."""
    if annotations is not None and not Path(annotations).is_dir():
        raise SlideSegError(f"{annotations}: for a folder of slides, give a folder of "
                            "annotation files (matched by stem), or none to use the files "
                            "beside each slide.")
    slides = sorted(p for p in folder.iterdir()
                    if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES)
    if not slides:
        raise SlideSegError(f"{folder}: no slide files ({', '.join(SLIDE_SUFFIXES)}).")
    return [(p, find_annotations(p, annotations)) for p in slides]


def _resolve_key(key: Any, sets: list[AnnotationSet], class_from: str,
                 out: Path) -> AnnotationKey:
    if isinstance(key, AnnotationKey):
        return key
    if key is not None:
        return AnnotationKey.load(key)
    if (out / "key.json").exists():
        return AnnotationKey.load(out / "key.json")
    return AnnotationKey.from_annotations(sets, class_from)


def _export_one(slide: Slide, ann: AnnotationSet | None, key: AnnotationKey, out: Path,
                params: ExportParams, workers: int | None,
                progress: Callable[[int, int], None] | None,
                cancel: threading.Event | None) -> list[dict[str, Any]]:
    if params.mpp is not None:
        if not slide.mpp:
            raise SlideSegError(f"{slide.path}: the pixel size is unknown, so a target mpp "
                                "cannot be used; give a level instead.")
        ds = params.mpp / slide.mpp[0]  # level-0 pixels per output pixel
        read_level = slide.get_best_level_for_downsample(ds)
        if ds < 1:
            raise SlideSegError(f"{slide.path}: target {params.mpp} µm/px is finer than the "
                                f"slide's {slide.mpp[0]:.4g} µm/px.")
        w0, h0 = slide.dimensions
        level_size = (int(w0 / ds), int(h0 / ds))
    else:
        if not 0 <= params.level < slide.level_count:
            raise SlideSegError(f"{slide.path}: level {params.level} does not exist "
                                f"(the slide has {slide.level_count}).")
        read_level = params.level
        ds = float(slide.level_downsamples[params.level])
        level_size = slide.level_dimensions[params.level]
    read_ds = float(slide.level_downsamples[read_level])
    resize = abs(ds / read_ds - 1) > 1e-9
    read_size = int(np.ceil(params.size * ds / read_ds)) if resize else params.size
    stem = safe_name(slide.path.stem)
    image_dir, mask_dir = out / stem / "images", out / stem / "masks"
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    index = region_index(ann if ann is not None else AnnotationSet(), key)
    wanted = [key.values[c] for c in (params.classes or key.values) if c in key.values]
    stride = params.size - params.overlap
    grid = patch_grid(level_size, params.size, stride, params.edge)
    suffix = IMAGE_FORMATS[params.image_format]
    mpp = slide.mpp[0] * ds if slide.mpp else None
    names = sorted(key.values, key=key.values.__getitem__)

    def mask_of(px: int, py: int) -> np.ndarray:
        # level pixel (px + j) covers level-0 [(px + j) ds, (px + j + 1) ds)
        return rasterize_window(index, px * ds, py * ds, params.size, params.size, ds,
                                key.dtype)

    def keep(mask: np.ndarray) -> bool:
        if params.annotated_only and not mask.any():
            return False
        if params.min_fraction > 0:
            return float(np.isin(mask, wanted).mean()) >= params.min_fraction
        return True

    # choosing: patches whose window meets no region bounding box are empty: no fill
    candidates = []
    for px, py in grid:
        if (params.annotated_only or params.min_fraction > 0) and not len(
                index.query(px * ds, py * ds, (px + params.size) * ds,
                            (py + params.size) * ds)):
            continue
        candidates.append((px, py))

    def work(position: tuple[int, int]) -> dict[str, Any] | None:
        if cancel is not None and cancel.is_set():
            return None
        px, py = position
        mask = mask_of(px, py)
        if not keep(mask):
            return None
        x0, y0 = round(px * ds), round(py * ds)
        name = f"{stem}_L{read_level}_x{x0}_y{y0}"
        image_path, mask_path = image_dir / (name + suffix), mask_dir / (name + ".png")
        if not (image_path.exists() and mask_path.exists()):  # resume: done patches stay
            image = slide.read_region((x0, y0), read_level, (read_size, read_size))
            if resize:
                import cv2

                image = cv2.resize(image, (params.size, params.size),
                                   interpolation=cv2.INTER_AREA)
            _write_atomic(mask_path, _encode(mask, ".png", params))
            _write_atomic(image_path, _encode(image, suffix, params))
        counts = np.bincount(mask.ravel(), minlength=max(key.values.values(), default=0) + 1)
        row: dict[str, Any] = {
            "slide": slide.path.name, "level": read_level, "downsample": ds, "mpp": mpp,
            "x": x0, "y": y0, "width": params.size, "height": params.size,
            "image": image_path.relative_to(out).as_posix(),
            "mask": mask_path.relative_to(out).as_posix()}
        for n in names:
            row[f"frac_{n}"] = float(counts[key.values[n]]) / mask.size
        return row

    rows: list[dict[str, Any]] = []
    done = 0
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for row in pool.map(work, candidates):
            done += 1
            if row is not None:
                rows.append(row)
            if progress is not None:
                progress(done, len(candidates))
    return rows


def _write_run_files(out: Path, rows: list[dict[str, Any]], key: AnnotationKey,
                     params: ExportParams, slides: list[str],
                     failed: list[dict[str, str]]) -> None:
    key.save(out / "key.json")
    columns = MANIFEST_COLUMNS + [f"frac_{n}" for n in
                                  sorted(key.values, key=key.values.__getitem__)]
    fd, tmp = tempfile.mkstemp(prefix=".manifest.csv.", dir=out)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / "manifest.csv")
    run = {"params": asdict(params), "slides": slides, "failed": failed,
           "patches": len(rows)}
    _write_atomic(out / "export.json", (json.dumps(run, indent=2) + "\n").encode())
