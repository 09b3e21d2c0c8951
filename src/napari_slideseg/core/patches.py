"""Patch and mask export: image patches and their label masks from annotated slides.

For each slide and each scale asked for (pyramid levels, target pixel sizes or target
magnifications), a grid of ``size`` x ``size`` patches is laid over the slide (or over
a rectangle of it, or over its annotated area); patches are chosen (all, annotated
only, a minimum fraction of given classes, a minimum fraction of tissue, or SlideSeg's
ratio of unannotated to annotated patches); each chosen patch's image is read from the
slide and its mask is filled from the polygons of exactly that patch (no slide-sized
mask ever exists). Neighbouring patches of a grid row are handled together: one read
and one mask fill for the run, sliced into patches. Files are written atomically and
named by slide, scale and level-0 x, y, so an interrupted export resumes where it
stopped and ends with the same manifest.

Folder layout::

    OUT/manifest.csv            one row per patch (all slides); manifest.parquet too
                                when pyarrow is installed
    OUT/key.json                the annotation key (class -> mask value)
    OUT/export.json             every parameter of the run, the slides done and failed
    OUT/<slide>/images/<slide>_L<level>_x<x>_y<y>.<jpg|png|tif>
    OUT/<slide>/masks/<slide>_L<level>_x<x>_y<y>.<png|tif>
    OUT/patches.zarr            instead of the image and mask files, with dataset='zarr'

At a target pixel size or magnification the scale part of the name says so, e.g.
``<slide>_L1_mpp0.5_x<x>_y<y>`` or ``<slide>_L1_10x_x<x>_y<y>`` (L: the level read).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .annotations import AnnotationSet, find_annotations, read_annotations
from .errors import SlideSegError
from .masks import AnnotationKey, region_index
from .raster import RegionIndex, rasterize_window
from .slide import Slide, open_slide
from .suffixes import SLIDE_SUFFIXES

__all__ = ["ExportParams", "export_patches", "patch_grid", "plan_patches", "safe_name"]

IMAGE_FORMATS = {"jpg": ".jpg", "jpeg": ".jpg", "png": ".png", "tif": ".tif", "tiff": ".tif"}
MASK_FORMATS = {"png": ".png", "tif": ".tif", "tiff": ".tif"}
MANIFEST_COLUMNS = ["slide", "level", "downsample", "mpp", "x", "y", "width", "height",
                    "image", "mask"]
#: Widest run of neighbouring patches read and filled at once, in pixels.
RUN_PIXELS = 2048


@dataclass
class ExportParams:
    """Every parameter of an export run (saved as ``export.json``)."""

    size: int = 256
    levels: list[int] | None = None
    mpp: list[float] | None = None
    magnification: list[float] | None = None
    overlap: int = 0
    image_format: str = "jpg"
    quality: int = 90
    png_compression: int = 1
    mask_format: str = "png"
    annotated_only: bool = False
    min_fraction: float = 0.0
    classes: list[str] | None = None
    min_tissue: float = 0.0
    unannotated_ratio: float | None = None
    seed: int = 0
    edge: str = "skip"
    region: str | list[float] | None = None
    dataset: str = "files"

    def check(self) -> None:
        given = [n for n in ("levels", "mpp", "magnification") if getattr(self, n)]
        if len(given) > 1:
            raise SlideSegError(f"give levels, a target mpp or a target magnification, "
                                f"not {' and '.join(given)}.")
        for name in ("mpp", "magnification"):
            for value in getattr(self, name) or []:
                if not value > 0:
                    raise SlideSegError(f"target {name} must be positive, not {value}.")
        if self.size < 1:
            raise SlideSegError(f"patch size must be at least 1 px, not {self.size}.")
        if not 0 <= self.overlap < self.size:
            raise SlideSegError(f"overlap must be in [0, size), not {self.overlap}.")
        if self.image_format.lower() not in IMAGE_FORMATS:
            raise SlideSegError(f"image format {self.image_format!r}: use jpg, png or tif.")
        if self.mask_format.lower() not in MASK_FORMATS:
            raise SlideSegError(f"mask format {self.mask_format!r}: use png or tif "
                                "(masks are never written lossy).")
        if not 0 <= self.quality <= 100:
            raise SlideSegError(f"JPEG quality must be in [0, 100], not {self.quality}.")
        if not 0 <= self.png_compression <= 9:
            raise SlideSegError(f"PNG compression must be in [0, 9], not "
                                f"{self.png_compression}.")
        if self.edge not in ("skip", "pad"):
            raise SlideSegError(f"edge must be 'skip' or 'pad', not {self.edge!r}.")
        if self.dataset not in ("files", "zarr"):
            raise SlideSegError(f"dataset must be 'files' or 'zarr', not {self.dataset!r}.")
        for name in ("min_fraction", "min_tissue"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SlideSegError(f"{name} must be in [0, 1], not {value}.")
        if self.unannotated_ratio is not None and not self.unannotated_ratio >= 0:
            raise SlideSegError(f"the unannotated:annotated ratio must be 0 or more, not "
                                f"{self.unannotated_ratio}.")
        if self.unannotated_ratio is not None and self.annotated_only:
            raise SlideSegError("annotated_only and a ratio of unannotated patches "
                                "contradict each other: give one.")
        if isinstance(self.region, str) and self.region not in ("slide", "annotated"):
            raise SlideSegError(f"region must be 'slide', 'annotated' or (x, y, w, h), not "
                                f"{self.region!r}.")
        if isinstance(self.region, list):
            if len(self.region) != 4 or not all(math.isfinite(v) for v in self.region):
                raise SlideSegError(f"a region rectangle is (x, y, w, h), not {self.region}.")
            if not (self.region[2] > 0 and self.region[3] > 0):
                raise SlideSegError(f"the region rectangle {self.region} is empty.")

    @property
    def selective(self) -> bool:
        """Whether a patch with no labelled pixel can be left out."""
        return self.annotated_only or self.min_fraction > 0


def safe_name(text: str) -> str:
    """A file-name stem safe on every OS: letters, digits, '-', '_' and '.' only."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "slide"
    return name[:120]


def patch_grid(level_size: tuple[int, int], size: int, stride: int,
               edge: str = "skip", box: tuple[int, int, int, int] | None = None
               ) -> list[tuple[int, int]]:
    """Top-left corners (x, y) of the patch grid, in pixels of the level.

    ``box`` (x0, y0, x1, y1), in pixels of the level, limits the grid to a rectangle:
    the grid starts at its corner. With ``edge='skip'`` every patch lies inside the box
    and the level; with ``'pad'`` the last row and column may cross them.
    """
    w, h = level_size
    x0, y0, x1, y1 = box if box is not None else (0, 0, w, h)
    x1, y1 = min(x1, w), min(y1, h)

    def starts(lo: int, hi: int) -> list[int]:
        if edge == "pad":
            return list(range(lo, hi, stride))
        return list(range(lo, hi - size + 1, stride)) if hi - lo >= size else []

    xs = starts(max(0, x0), x1)
    return [(x, y) for y in starts(max(0, y0), y1) for x in xs]


@dataclass(frozen=True)
class _Scale:
    """One scale of one slide: the level read, the output downsample, the grid's level size."""

    tag: str  # the name part: L0, L1_mpp0.5, L1_10x
    read_level: int
    ds: float  # level-0 pixels per output pixel
    read_ds: float
    level_size: tuple[int, int]
    mpp: float | None

    @property
    def resize(self) -> bool:
        return abs(self.ds / self.read_ds - 1) > 1e-9

    def read_size(self, size: int) -> int:
        return int(math.ceil(size * self.ds / self.read_ds)) if self.resize else size


def _scales(slide: Slide, params: ExportParams) -> list[_Scale]:
    w0, h0 = slide.dimensions
    mpp0 = slide.mpp[0] if slide.mpp else None
    scales = []
    targets: list[tuple[str, float]] = []
    if params.mpp:
        if mpp0 is None:
            raise SlideSegError(f"{slide.path}: the pixel size is unknown, so a target mpp "
                                "cannot be used; give a level instead.")
        for m in params.mpp:
            if m < mpp0 * (1 - 1e-6):
                raise SlideSegError(f"{slide.path}: target {m} µm/px is finer than the "
                                    f"slide's {mpp0:.4g} µm/px.")
            targets.append((f"mpp{m:g}", m / mpp0))
    elif params.magnification:
        power = slide.objective_power
        if not power:
            raise SlideSegError(f"{slide.path}: the scan's objective power is unknown, so a "
                                "target magnification cannot be used; give a level or mpp.")
        for mag in params.magnification:
            if mag > power * (1 + 1e-6):
                raise SlideSegError(f"{slide.path}: target {mag:g}x is above the scan's "
                                    f"{power:g}x.")
            targets.append((f"{mag:g}x", power / mag))
    else:
        for level in params.levels or [0]:
            if not 0 <= level < slide.level_count:
                raise SlideSegError(f"{slide.path}: level {level} does not exist "
                                    f"(the slide has {slide.level_count}).")
            ds = float(slide.level_downsamples[level])
            scales.append(_Scale(f"L{level}", level, ds, ds, slide.level_dimensions[level],
                                 mpp0 * ds if mpp0 else None))
        return scales
    for name, ds in targets:
        ds = max(ds, 1.0)
        level = slide.get_best_level_for_downsample(ds + 1e-9)
        read_ds = float(slide.level_downsamples[level])
        if abs(ds / read_ds - 1) <= 1e-6:  # a level at that scale: read it as it is
            ds = read_ds
        scales.append(_Scale(f"L{level}_{name}", level, ds, read_ds,
                             (int(w0 / ds), int(h0 / ds)), mpp0 * ds if mpp0 else None))
    return scales


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a hidden file beside ``path``, then rename it: never a half file."""
    # one writer per patch: a per-thread name is unique without mkstemp's cost
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
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
    elif suffix == ".png" and image.ndim == 2:
        # label masks: long runs of one value. Run-length coding without row filters
        # is 6 x faster than the default adaptive filtering and as small (lossless).
        flags = [cv2.IMWRITE_PNG_COMPRESSION, int(params.png_compression),
                 cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
        if hasattr(cv2, "IMWRITE_PNG_FILTER"):
            flags += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
    elif suffix == ".png":
        flags = [cv2.IMWRITE_PNG_COMPRESSION, int(params.png_compression)]
    else:
        flags = []
    data = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(suffix, data, flags)
    if not ok:
        raise SlideSegError(f"could not encode a {suffix} image.")
    return buf.tobytes()


# -- planning -------------------------------------------------------------------------

@dataclass
class _SlidePlan:
    """What to export from one slide: the patches of each scale, in grid-row runs."""

    path: str
    name: str
    stem: str
    scale: _Scale
    runs: list[np.ndarray] = field(default_factory=list)  # each (n, 2) level px, one row
    final: bool = False  # the patches are chosen already: no filter in the workers

    @property
    def count(self) -> int:
        return sum(len(r) for r in self.runs)


def _region_box(params: ExportParams, scale: _Scale, slide: Slide
                ) -> tuple[int, int, int, int] | None:
    if not isinstance(params.region, list):
        return None
    x, y, w, h = params.region
    w0, h0 = slide.dimensions
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(w0), x + w), min(float(h0), y + h)
    if x1 <= x0 or y1 <= y0:
        raise SlideSegError(f"{slide.path}: the region {params.region} lies outside the "
                            f"slide ({w0} x {h0}).")
    d = scale.ds
    return (int(math.floor(x0 / d)), int(math.floor(y0 / d)),
            int(math.ceil(x1 / d)), int(math.ceil(y1 / d)))


def _touching(index: RegionIndex, xs: np.ndarray, ys: np.ndarray, size: int,
              ds: float) -> np.ndarray:
    """Which patches (level px corners) meet the bounding box of at least one region."""
    hit = np.zeros(len(xs), bool)
    if not len(index) or not len(xs):
        return hit
    ux, uy = np.unique(xs), np.unique(ys)
    grid = np.zeros((len(uy), len(ux)), bool)
    for bx0, by0, bx1, by1 in index.bboxes / ds:
        # patch [p, p + size) meets [b0, b1] when p < b1 + eps and p + size > b0
        c0, c1 = np.searchsorted(ux, bx0 - size, "right"), np.searchsorted(ux, bx1, "right")
        r0, r1 = np.searchsorted(uy, by0 - size, "right"), np.searchsorted(uy, by1, "right")
        grid[r0:r1, c0:c1] = True
    return grid[np.searchsorted(uy, ys), np.searchsorted(ux, xs)]


def _runs(positions: np.ndarray, stride: int, longest: int) -> list[np.ndarray]:
    """Split row-major sorted positions into runs of neighbours in one grid row."""
    if not len(positions):
        return []
    new_row = np.diff(positions[:, 1]) != 0
    gap = np.diff(positions[:, 0]) != stride
    cuts = np.flatnonzero(new_row | gap) + 1
    runs = []
    for run in np.split(positions, cuts):
        runs += [run[i:i + longest] for i in range(0, len(run), longest)]
    return runs


def _plan_slide(slide: Slide, index: RegionIndex, key: AnnotationKey,
                params: ExportParams, tissue: Any) -> list[_SlidePlan]:
    plans = []
    stride = params.size - params.overlap
    stem = safe_name(slide.path.stem)
    for scale in _scales(slide, params):
        grid = patch_grid(scale.level_size, params.size, stride, params.edge,
                          _region_box(params, scale, slide))
        pos = np.asarray(grid, np.int64).reshape(-1, 2)
        ds = scale.ds
        if params.selective or params.region == "annotated":
            pos = pos[_touching(index, pos[:, 0], pos[:, 1], params.size, ds)]
        if params.min_tissue > 0 and len(pos):
            if tissue is None:
                from .tissue import tissue_mask

                tissue = tissue_mask(slide)
            frac = tissue.fractions(pos[:, 0] * ds, pos[:, 1] * ds, params.size * ds,
                                    params.size * ds)
            pos = pos[frac >= params.min_tissue]
        final = False
        if params.unannotated_ratio is not None:
            pos = _ratio_sample(pos, index, key, params, scale)
            final = True
        longest = max(1, (RUN_PIXELS - params.size) // stride + 1)
        plans.append(_SlidePlan(str(slide.path), slide.path.name, stem, scale,
                                _runs(pos, stride, longest), final))
    return plans


def _ratio_sample(pos: np.ndarray, index: RegionIndex, key: AnnotationKey,
                  params: ExportParams, scale: _Scale) -> np.ndarray:
    """Every annotated patch and ``ratio`` times as many unannotated ones (seeded)."""
    ds, size = scale.ds, params.size
    wanted = _wanted_values(key, params)
    touching = _touching(index, pos[:, 0], pos[:, 1], size, ds)
    annotated = np.zeros(len(pos), bool)
    for i in np.flatnonzero(touching):
        mask = rasterize_window(index, pos[i, 0] * ds, pos[i, 1] * ds, size, size, ds,
                                key.dtype)
        annotated[i] = _keep(mask, params, wanted, selective=True)
    n_more = int(round(params.unannotated_ratio * annotated.sum()))
    others = np.flatnonzero(~annotated)
    rng = np.random.default_rng(params.seed)
    chosen = rng.choice(others, size=min(n_more, len(others)), replace=False)
    keep = annotated.copy()
    keep[chosen] = True
    return pos[keep]


def _wanted_values(key: AnnotationKey, params: ExportParams) -> np.ndarray:
    names = params.classes or list(key.values)
    missing = [c for c in names if c not in key.values]
    if missing:
        raise SlideSegError(f"classes not in the key: {', '.join(missing)} "
                            f"(the key has {', '.join(key.values) or 'none'}).")
    return np.asarray([key.values[c] for c in names], np.int64)


def _keep(mask: np.ndarray, params: ExportParams, wanted: np.ndarray,
          selective: bool | None = None) -> bool:
    if params.min_fraction > 0:
        return float(np.isin(mask, wanted).mean()) >= params.min_fraction
    if params.annotated_only or selective:
        return bool(mask.any())
    return True


def _exact(plan: _SlidePlan, index: RegionIndex, key: AnnotationKey,
           params: ExportParams) -> _SlidePlan:
    """The plan with only the patches the filters keep (masks filled, then dropped)."""
    if plan.final or not params.selective:
        return _SlidePlan(plan.path, plan.name, plan.stem, plan.scale, plan.runs, True)
    wanted = _wanted_values(key, params)
    ds, s = plan.scale.ds, params.size
    kept = []
    for run in plan.runs:
        bx, by = int(run[0, 0]), int(run[0, 1])
        masks = rasterize_window(index, bx * ds, by * ds, int(run[-1, 0]) - bx + s, s, ds,
                                 key.dtype)
        kept += [(px, py) for px, py in run.tolist()
                 if _keep(masks[:, px - bx:px - bx + s], params, wanted)]
    pos = np.asarray(kept, np.int64).reshape(-1, 2)
    longest = max(len(r) for r in plan.runs) if plan.runs else 1
    return _SlidePlan(plan.path, plan.name, plan.stem, plan.scale,
                      _runs(pos, s - params.overlap, longest), True)


# -- doing ----------------------------------------------------------------------------

@dataclass
class _Job:
    """What a worker needs for the runs of one slide plan (small: sent to workers)."""

    plan_path: str
    name: str
    stem: str
    scale: _Scale
    final: bool
    key: AnnotationKey
    params: ExportParams
    out: str
    zarr: bool = False  # write into OUT/patches.zarr: runs carry each patch's row index


class _Handles:
    """Open slides shared by the export's threads, the ``capacity`` latest kept open.

    A :class:`Slide` gives each thread its own OpenSlide handle over one tile cache, so
    threads share a Slide. Runs are handed out in slide order, so the slides in flight
    are the last few opened: ``capacity`` must exceed the number of threads.
    """

    def __init__(self, capacity: int) -> None:
        self._open: dict[str, Slide] = {}
        self._capacity = capacity
        self._lock = threading.Lock()

    def __call__(self, path: str) -> Slide:
        with self._lock:
            handle = self._open.get(path)
            if handle is None:
                handle = self._open[path] = open_slide(path)
                while len(self._open) > self._capacity:
                    self._open.pop(next(iter(self._open))).close()
            return handle

    def close(self) -> None:
        with self._lock:
            while self._open:
                self._open.popitem()[1].close()


ZARR_NAME = "patches.zarr"
_ZARR_OPEN: dict[str, tuple[Any, Any]] = {}
_ZARR_LOCK = threading.Lock()


def _zarr_arrays(out: Path) -> tuple[Any, Any]:
    """(images, masks) of ``OUT/patches.zarr``, opened once per process."""
    import zarr

    path = str(out / ZARR_NAME)
    with _ZARR_LOCK:
        if path not in _ZARR_OPEN:
            group = zarr.open_group(path, mode="r+")
            _ZARR_OPEN[path] = (group["images"], group["masks"])
        return _ZARR_OPEN[path]


def _zarr_written(out: Path, at: int) -> bool:
    """Whether patch ``at``'s image chunk is stored (chunks are written atomically)."""
    return (out / ZARR_NAME / "images" / "c" / str(at) / "0" / "0" / "0").exists()


def _zarr_create(out: Path, n: int, size: int, key: AnnotationKey,
                 params: ExportParams) -> None:
    """Make (or, for a rerun with the same patches, keep) ``OUT/patches.zarr``."""
    import zarr

    path = out / ZARR_NAME
    shape_i, shape_m = (n, size, size, 3), (n, size, size)
    if path.exists():
        group = zarr.open_group(path, mode="r+")
        if (group["images"].shape == shape_i and group["masks"].shape == shape_m
                and group.attrs.get("params") == asdict(params)):
            return
        raise SlideSegError(f"{path} holds another export's patches; give a new folder.")
    group = zarr.open_group(path, mode="w")
    group.attrs["params"] = asdict(params)
    group.attrs["key"] = {"values": key.values}
    group.create_array("images", shape=shape_i, chunks=(1, size, size, 3), dtype="uint8",
                       fill_value=0)
    group.create_array("masks", shape=shape_m, chunks=(1, size, size), dtype=key.dtype,
                       fill_value=0)
    _ZARR_OPEN.pop(str(path), None)


def _zarr_manifest(out: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """The manifest's columns as arrays in ``patches.zarr/manifest`` (slides by number)."""
    import zarr

    group = zarr.open_group(out / ZARR_NAME, mode="r+")
    table = group.require_group("manifest")
    slides = sorted({r["slide"] for r in rows})
    table.attrs["slides"] = slides
    number = {name: i for i, name in enumerate(slides)}
    for c in columns:
        if c in ("image", "mask"):
            continue
        if c == "slide":
            values = np.asarray([number[r["slide"]] for r in rows], np.int32)
        elif c == "mpp":
            values = np.asarray([np.nan if r[c] is None else r[c] for r in rows], np.float64)
        else:
            values = np.asarray([r[c] for r in rows],
                                np.float64 if c.startswith("frac_") or c == "downsample"
                                else np.int64)
        table.create_array(c, shape=values.shape, dtype=values.dtype,
                           chunks=(max(1, min(len(values), 65536)),), overwrite=True)
        if len(values):
            table[c][:] = values


def _do_run(job: _Job, index: RegionIndex, run: np.ndarray,
            slide: Slide | Callable[[str], Slide]) -> list[dict[str, Any]]:
    """Export one run of neighbouring patches; the manifest rows of those kept."""
    import cv2

    params, scale, size = job.params, job.scale, job.params.size
    ds = scale.ds
    out = Path(job.out)
    image_dir, mask_dir = out / job.stem / "images", out / job.stem / "masks"
    suffix = IMAGE_FORMATS[params.image_format]
    mask_suffix = MASK_FORMATS[params.mask_format]
    bx, by = int(run[0, 0]), int(run[0, 1])
    width = int(run[-1, 0]) - bx + size
    masks = rasterize_window(index, bx * ds, by * ds, width, size, ds, job.key.dtype)
    wanted = _wanted_values(job.key, params)
    todo: list[tuple[int, int, np.ndarray, Path, Path]] = []
    rows: list[dict[str, Any]] = []
    n_values = max(job.key.values.values(), default=0) + 1
    names = sorted(job.key.values, key=job.key.values.__getitem__)
    for px, py, *at in run.tolist():
        mask = masks[:, px - bx:px - bx + size]
        if not job.final and not _keep(mask, params, wanted):
            continue
        x0, y0 = round(px * ds), round(py * ds)
        if job.zarr:
            image_path = out / ZARR_NAME / "images" / str(at[0])
            mask_path = out / ZARR_NAME / "masks" / str(at[0])
            done = _zarr_written(out, at[0])
        else:
            name = f"{job.stem}_{scale.tag}_x{x0}_y{y0}"
            image_path = image_dir / (name + suffix)
            mask_path = mask_dir / (name + mask_suffix)
            done = image_path.exists() and mask_path.exists()
        if not done:  # resume: done patches stay
            todo.append((px, x0, mask, image_path, mask_path))
        counts = np.bincount(mask.ravel(), minlength=n_values)
        row: dict[str, Any] = {
            "slide": job.name, "level": scale.read_level, "downsample": ds, "mpp": scale.mpp,
            "x": x0, "y": y0, "width": size, "height": size,
            "image": image_path.relative_to(out).as_posix(),
            "mask": mask_path.relative_to(out).as_posix()}
        for n in names:
            row[f"frac_{n}"] = float(counts[job.key.values[n]]) / mask.size
        rows.append(row)
    if not todo:
        return rows
    if not isinstance(slide, Slide):
        slide = slide(job.plan_path)
    y0 = round(by * ds)
    if scale.resize:
        read = scale.read_size(size)
        pieces = []
        for _, x0, *_ in todo:
            image = slide.read_region((x0, y0), scale.read_level, (read, read))
            pieces.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
    else:
        pieces = [None] * len(todo)
        # one read per stretch of neighbouring patches to write
        start = 0
        while start < len(todo):
            stop = start + 1
            while stop < len(todo) and todo[stop][0] - todo[stop - 1][0] <= size:
                stop += 1
            first, last = todo[start][0], todo[stop - 1][0]
            strip = slide.read_region((todo[start][1], y0), scale.read_level,
                                      (last - first + size, size))
            for i in range(start, stop):
                off = todo[i][0] - first
                pieces[i] = strip[:, off:off + size]
            start = stop
    if job.zarr:
        images, masks_array = _zarr_arrays(out)
        for (_, _, mask, image_path, _), image in zip(todo, pieces, strict=True):
            at = int(image_path.name)
            masks_array[at] = mask  # the mask first: a patch is done when its image is
            images[at] = image
        return rows
    for (_, _, mask, image_path, mask_path), image in zip(todo, pieces, strict=True):
        _write_atomic(mask_path, _encode(np.ascontiguousarray(mask), mask_suffix, params))
        _write_atomic(image_path, _encode(np.ascontiguousarray(image), suffix, params))
    return rows


def _do_runs(job: _Job, index: RegionIndex, runs: list[np.ndarray]
             ) -> list[list[dict[str, Any]]]:
    """A task for a dask.distributed worker: several runs of one slide plan."""
    with open_slide(job.plan_path) as slide:
        return [_do_run(job, index, run, slide) for run in runs]


def export_patches(
    slide: str | os.PathLike[str] | Slide,
    annotations: str | os.PathLike[str] | AnnotationSet | None,
    out: str | os.PathLike[str],
    *,
    size: int = 256,
    level: int | Sequence[int] | None = None,
    mpp: float | Sequence[float] | None = None,
    magnification: float | Sequence[float] | None = None,
    overlap: int = 0,
    region: str | Sequence[float] | None = None,
    image_format: str = "jpg",
    quality: int = 90,
    png_compression: int = 1,
    mask_format: str = "png",
    dataset: str = "files",
    key: AnnotationKey | str | os.PathLike[str] | None = None,
    class_from: str = "layer",
    annotated_only: bool = False,
    min_fraction: float = 0.0,
    classes: list[str] | None = None,
    min_tissue: float = 0.0,
    unannotated_ratio: float | None = None,
    seed: int = 0,
    edge: str = "skip",
    workers: int | None = None,
    scheduler: Any = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[dict[str, Any]]:
    """Write image patches and label masks of a slide or a folder of slides.

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
    size, overlap : int
        Patch side and overlap in output pixels; the stride is ``size - overlap``.
    level : int or list of int, optional
        Pyramid level(s) to export (default 0). Give one of level, mpp, magnification.
    mpp : float or list of float, optional
        Target micrometres per pixel: patches are read from the nearest finer level and
        resized (area averaging) to that pixel size when no level has it; masks are
        filled at the target pixel size directly (never resampled).
    magnification : float or list of float, optional
        Target magnification (e.g. 20, 10), relative to the scan's objective power.
    region : 'slide', 'annotated' or (x, y, w, h), optional
        Where the grid lies: the whole slide (default), the patches that meet an
        annotated region's bounding box, or a level-0 rectangle (the grid starts at its
        corner; the current napari view or a drawn rectangle in the widget).
    image_format : {'jpg', 'png', 'tif'}
        With ``quality`` (JPEG, 0-100) and ``png_compression`` (0-9).
    mask_format : {'png', 'tif'}
        Masks are lossless, 8-bit (16-bit with more than 255 classes).
    dataset : {'files', 'zarr'}
        'zarr' writes one chunked dataset, ``OUT/patches.zarr``, instead of image and
        mask files: ``images`` (N, size, size, 3) uint8 and ``masks`` (N, size, size),
        one patch per chunk (lossless), and the manifest's columns in ``manifest/``;
        row ``i`` of manifest.csv is patch ``i`` (its image column reads
        ``patches.zarr/images/<i>``). The patches are chosen before any is written.
    key : AnnotationKey or path, optional
        Class -> mask value; default: made from the annotations (``class_from``:
        'layer', 'text' or 'classification'), or read from ``OUT/key.json`` when a
        previous run left one.
    annotated_only : bool
        Keep only patches with at least one labelled pixel.
    min_fraction : float
        Keep only patches whose pixels of ``classes`` (default: every class) make at
        least this fraction of the patch.
    min_tissue : float
        Keep only patches whose tissue fraction (saturation threshold on the slide's
        overview, see :mod:`napari_slideseg.core.tissue`) is at least this.
    unannotated_ratio : float, optional
        SlideSeg's ratio: every annotated patch (any labelled pixel, or min_fraction of
        ``classes``) plus this many times as many unannotated ones, drawn at random with
        ``seed`` from the rest of the grid (after the tissue filter).
    edge : {'skip', 'pad'}
        Patches that would cross the slide's (or the region's) edge: left out, or kept
        and padded with the slide's background colour (mask 0).
    workers : int, optional
        Threads reading and writing patches, each with its own slide handle (default:
        the number of CPUs).
    scheduler : str or distributed.Client, optional
        A dask.distributed scheduler address (or client): the patches are exported by
        its workers, which must see the slides and ``out`` at the same paths.
    progress : callable(done, total), optional
        Called as patches are done (of every slide and scale of the run).
    cancel : threading.Event, optional
        Set it to stop after the patches in flight; what was written stays valid.

    Returns
    -------
    list of dict
        One row per patch, with the columns of ``manifest.csv`` (slide, level,
        downsample, mpp, x, y, width, height, image, mask, then one ``frac_<class>``
        column per class).
    """
    params = _params(size, level, mpp, magnification, overlap, region, image_format,
                     quality, png_compression, mask_format, annotated_only, min_fraction,
                     classes, min_tissue, unannotated_ratio, seed, edge, dataset)
    out = Path(out)
    batch = not isinstance(slide, Slide) and Path(slide).is_dir()
    jobs = _batch_jobs(Path(slide), annotations) if batch else [(slide, annotations)]
    sets = [_read_set(source) for _, source in jobs]
    key_obj = _resolve_key(key, [a for a in sets if a is not None], class_from, out)
    _wanted_values(key_obj, params)  # unknown classes: fail before anything is written
    out.mkdir(parents=True, exist_ok=True)
    plans: list[tuple[_SlidePlan, RegionIndex, Slide | None]] = []
    done_slides: list[str] = []
    failed: list[dict[str, str]] = []
    for (source, _), ann in zip(jobs, sets, strict=True):
        try:
            own = not isinstance(source, Slide)
            handle = open_slide(source) if own else source
            try:
                index = region_index(ann if ann is not None else AnnotationSet(), key_obj)
                for plan in _plan_slide(handle, index, key_obj, params, None):
                    plans.append((plan, index, None if own else handle))
                done_slides.append(str(handle.path))
            finally:
                if own:
                    handle.close()
        except SlideSegError as exc:
            if not batch:
                raise
            failed.append({"slide": str(source), "error": str(exc)})
            warnings.warn(f"skipped: {exc}", RuntimeWarning, stacklevel=2)
    if params.dataset == "zarr":
        plans = [(_exact(plan, index, key_obj, params), index, handle)
                 for plan, index, handle in plans]
        at = 0
        for plan, _, _ in plans:  # each patch's row in the dataset, in manifest order
            numbered = []
            for run in plan.runs:
                numbered.append(np.column_stack([run, np.arange(at, at + len(run))]))
                at += len(run)
            plan.runs = numbered
        _zarr_create(out, at, params.size, key_obj, params)
    for plan, _, _ in plans if params.dataset == "files" else []:
        for sub in ("images", "masks"):
            folder = out / plan.stem / sub
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(".*.part"):  # left by a run that was killed
                stale.unlink(missing_ok=True)
    work = [(_Job(plan.path, plan.name, plan.stem, plan.scale, plan.final, key_obj, params,
                  str(out), params.dataset == "zarr"), index, run, handle)
            for plan, index, handle in plans for run in plan.runs]
    total = sum(len(run) for _, _, run, _ in work)
    if scheduler is not None:
        results = _run_distributed(scheduler, work, total, progress, cancel)
    else:
        results = _run_threads(work, total, workers, progress, cancel)
    rows = [row for part in results for row in part]
    _write_run_files(out, rows, key_obj, params, done_slides, failed)
    return rows


def _params(size: int, level: Any, mpp: Any, magnification: Any, overlap: int,
            region: Any, image_format: str, quality: int, png_compression: int,
            mask_format: str, annotated_only: bool, min_fraction: float,
            classes: list[str] | None, min_tissue: float, unannotated_ratio: float | None,
            seed: int, edge: str, dataset: str = "files") -> ExportParams:
    def many(value: Any, kind: type) -> list | None:
        if value is None:
            return None
        values = [value] if np.isscalar(value) else list(value)
        return [kind(v) for v in values] or None

    if region is not None and not isinstance(region, str):
        region = [float(v) for v in region]
    params = ExportParams(int(size), many(level, int), many(mpp, float),
                          many(magnification, float), int(overlap), image_format.lower(),
                          int(quality), int(png_compression), mask_format.lower(),
                          bool(annotated_only), float(min_fraction),
                          list(classes) if classes else None, float(min_tissue),
                          None if unannotated_ratio is None else float(unannotated_ratio),
                          int(seed), edge, region, dataset)
    params.check()
    return params


def _read_set(source: Any) -> AnnotationSet | None:
    if isinstance(source, AnnotationSet) or source is None:
        return source
    return read_annotations(source)


def plan_patches(
    slide: str | os.PathLike[str] | Slide,
    annotations: str | os.PathLike[str] | AnnotationSet | None = None,
    *,
    size: int = 256,
    level: int | Sequence[int] | None = None,
    mpp: float | Sequence[float] | None = None,
    magnification: float | Sequence[float] | None = None,
    overlap: int = 0,
    region: str | Sequence[float] | None = None,
    key: AnnotationKey | str | os.PathLike[str] | None = None,
    class_from: str = "layer",
    annotated_only: bool = False,
    min_fraction: float = 0.0,
    classes: list[str] | None = None,
    min_tissue: float = 0.0,
    unannotated_ratio: float | None = None,
    seed: int = 0,
    edge: str = "skip",
) -> np.ndarray:
    """The patches :func:`export_patches` would write for one slide, without writing.

    Returns
    -------
    (N, 5) float64 array
        Level-0 ``x, y, width, height`` of each patch and the level it is read from,
        for every scale asked for (the same selection as the export, masks included).
    """
    params = _params(size, level, mpp, magnification, overlap, region, "jpg", 90, 1,
                     "png", annotated_only, min_fraction, classes, min_tissue,
                     unannotated_ratio, seed, edge)
    ann = _read_set(annotations)
    if isinstance(key, AnnotationKey):
        key_obj = key
    elif key is not None:
        key_obj = AnnotationKey.load(key)
    else:
        key_obj = AnnotationKey.from_annotations([ann] if ann is not None else [], class_from)
    _wanted_values(key_obj, params)
    own = not isinstance(slide, Slide)
    handle = open_slide(slide) if own else slide
    try:
        index = region_index(ann if ann is not None else AnnotationSet(), key_obj)
        rows = []
        for plan in _plan_slide(handle, index, key_obj, params, None):
            ds, s = plan.scale.ds, params.size
            for run in _exact(plan, index, key_obj, params).runs:
                rows += [(round(px * ds), round(py * ds), s * ds, s * ds,
                          plan.scale.read_level) for px, py in run.tolist()]
    finally:
        if own:
            handle.close()
    return np.asarray(rows, np.float64).reshape(-1, 5)


def _run_threads(work: list[tuple[_Job, RegionIndex, np.ndarray, Slide | None]], total: int,
                 workers: int | None, progress: Callable[[int, int], None] | None,
                 cancel: threading.Event | None) -> list[list[dict[str, Any]]]:
    n = max(1, workers or os.cpu_count() or 1)
    handles = _Handles(n + 1)

    def one(item: tuple[_Job, RegionIndex, np.ndarray, Slide | None]
            ) -> list[dict[str, Any]] | None:
        if cancel is not None and cancel.is_set():
            return None
        job, index, run, handle = item
        return _do_run(job, index, run, handle if handle is not None else handles)

    results: list[list[dict[str, Any]]] = []
    done = 0
    try:
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="slideseg-export") as pool:
            for item, rows in zip(work, pool.map(one, work), strict=True):
                done += len(item[2])
                if rows is not None:
                    results.append(rows)
                if progress is not None:
                    progress(done, total)
    finally:
        handles.close()
    return results


def _chunks(work: list[Any], patches: int) -> Iterator[list[Any]]:
    """Consecutive runs of one slide plan, about ``patches`` patches per chunk."""
    chunk: list[Any] = []
    count = 0
    for item in work:
        if chunk and (item[0] is not chunk[0][0] or count >= patches):
            yield chunk
            chunk, count = [], 0
        chunk.append(item)
        count += len(item[2])
    if chunk:
        yield chunk


def _run_distributed(scheduler: Any, work: list[tuple[_Job, RegionIndex, np.ndarray, Any]],
                     total: int, progress: Callable[[int, int], None] | None,
                     cancel: threading.Event | None) -> list[list[dict[str, Any]]]:
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise SlideSegError("a scheduler needs dask.distributed: pip install distributed"
                            ) from exc
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        indexes: dict[int, Any] = {}
        futures = {}
        for n, chunk in enumerate(_chunks(work, 128)):
            job, index = chunk[0][0], chunk[0][1]
            if id(index) not in indexes:  # each slide's regions go to the workers once
                indexes[id(index)] = client.scatter(index, broadcast=True)
            future = client.submit(_do_runs, job, indexes[id(index)],
                                   [item[2] for item in chunk], pure=False)
            futures[future] = (n, sum(len(item[2]) for item in chunk))
        parts: dict[int, list[list[dict[str, Any]]]] = {}
        done = 0
        pending = as_completed(list(futures))
        for future in pending:
            if cancel is not None and cancel.is_set():
                for other in futures:
                    other.cancel()
                break
            n, count = futures[future]
            parts[n] = future.result()
            done += count
            if progress is not None:
                progress(done, total)
        return [rows for n in sorted(parts) for rows in parts[n]]
    finally:
        if client is not scheduler:
            client.close()


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
    _write_parquet(out, rows, columns)
    if params.dataset == "zarr":
        _zarr_manifest(out, rows, columns)
    run = {"params": asdict(params), "slides": slides, "failed": failed,
           "patches": len(rows)}
    _write_atomic(out / "export.json", (json.dumps(run, indent=2) + "\n").encode())


def _write_parquet(out: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """``manifest.parquet`` beside the CSV when pyarrow is installed."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return
    types = {"slide": pa.string(), "level": pa.int32(), "downsample": pa.float64(),
             "mpp": pa.float64(), "x": pa.int64(), "y": pa.int64(), "width": pa.int32(),
             "height": pa.int32(), "image": pa.string(), "mask": pa.string()}
    schema = pa.schema([(c, types.get(c, pa.float64())) for c in columns])
    table = pa.table({c: [row[c] for row in rows] for c in columns}, schema=schema)
    fd, tmp = tempfile.mkstemp(prefix=".manifest.parquet.", dir=out)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out / "manifest.parquet")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
