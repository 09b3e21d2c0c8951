"""Tile-level truth, per-class tile metrics and weak-label datasets for weak supervision.

Everything here lives at tile resolution (one value per tile of a
:class:`~.tiles.TileGrid`), so memory stays bounded for any slide:

- :func:`tile_truth` says which class covers each tile (or none), from annotations;
- :func:`tile_metrics` scores predicted tile classes against that truth, per class
  (Dice and IoU at tile resolution), and :func:`prediction_metrics` does both for a
  model's :class:`~.tiles.TilePredictions`;
- :func:`export_weak_labels` writes a patch-level-labelled dataset: one image per tile
  and a multi-hot class vector per tile, from the annotations or from their review;
- :func:`pseudo_mask` / :func:`save_pseudo_mask` turn tile probabilities into a label
  mask (uncertain tiles marked ``ignore``) for weakly supervised segmentation training.

Weak-label folder layout::

    OUT/labels.csv     one row per tile: file, x, y, level, size, downsample, mpp,
                       tissue, one 0/1 column per class, one frac_<class> per class
    OUT/classes.json   the classes, the grid's geometry and the run's parameters
    OUT/tiles/<slide>_x<x>_y<y>.<png|jpg>   x, y: the tile's level-0 top-left corner

Files are written atomically (a hidden ``.part`` file renamed when complete), so an
interrupted or cancelled export leaves only whole files and a rerun resumes it, ending
with the same ``labels.csv``.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .annotations import AnnotationLayer, AnnotationSet
from .errors import SlideSegError
from .masks import AnnotationKey, save_mask
from .patches import IMAGE_FORMATS, ExportParams, _encode, _read_set, _write_atomic, safe_name
from .review import review_of
from .slide import Slide, open_slide
from .tiles import REJECTED, TileGrid, TilePredictions, read_tile, tile_class_fractions, tile_grid

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BACKGROUND_CLASSES", "TRUTH_STATUSES", "METRIC_COLUMNS", "review_truth",
           "tile_truth", "tile_metrics", "prediction_metrics", "export_weak_labels",
           "pseudo_mask", "pseudo_mask_values", "save_pseudo_mask"]

#: Review statuses whose regions count as truth with ``source='review'`` (as do regions
#: with no status: the user's own); 'pending' (an unreviewed prediction) and 'rejected'
#: do not (:func:`review_truth`, also :func:`~.autoannotate.truth_annotations`).
TRUTH_STATUSES = ("accepted", "edited", "added")
#: Class names (compared without case) that mean "no class": a model's background class.
BACKGROUND_CLASSES = ("other", "background")
#: Columns of :func:`tile_metrics`'s table.
METRIC_COLUMNS = ["class", "dice", "iou", "tp", "fp", "fn", "n_true", "n_pred"]
#: The fixed columns of ``labels.csv``, before the class columns.
LABEL_COLUMNS = ["file", "x", "y", "level", "size", "downsample", "mpp", "tissue"]
SOURCES = ("annotations", "review")


def _is_background(name: str) -> bool:
    return name.strip().lower() in BACKGROUND_CLASSES


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise SlideSegError(f"{name} must be in (0, 1], not {value}.")
    return value


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise SlideSegError(f"source must be 'annotations' (every region) or 'review' "
                            f"(no pending or rejected regions), not {source!r}.")


def review_truth(annotations: AnnotationSet) -> AnnotationSet:
    """The regions that are truth after review: accepted, edited or added by the expert,
    and the user's own (no review status).

    Pending predictions and rejected regions are left out; negative regions (holes) are
    kept unless rejected, so they still cut the kept regions of their layer. Regions are
    shared, not copied.
    """
    layers = []
    for layer in annotations:
        kept = []
        for region in layer.regions:
            status = review_of(region).get("status")
            if status in (None, *TRUTH_STATUSES) or (region.negative and status != REJECTED):
                kept.append(region)
        layers.append(AnnotationLayer(name=layer.name, color=layer.color, regions=kept,
                                      attributes=layer.attributes, extra=layer.extra))
    return AnnotationSet(layers, attributes=annotations.attributes,
                         format=annotations.format, source=annotations.source)


def _fractions(grid: TileGrid, annotations: AnnotationSet, classes: Sequence[str],
               class_from: str, source: str, exclude_rejected: bool) -> np.ndarray:
    _check_source(source)
    if source == "review":
        annotations = review_truth(annotations)
    return tile_class_fractions(grid, annotations, list(classes), class_from=class_from,
                                exclude_rejected=exclude_rejected)


def tile_truth(grid: TileGrid, annotations: AnnotationSet, classes: Sequence[str], *,
               min_fraction: float = 0.5, class_from: str = "layer",
               exclude_rejected: bool = True, source: str = "annotations") -> np.ndarray:
    """The class of each tile according to the annotations.

    Parameters
    ----------
    grid : TileGrid
    annotations : AnnotationSet
    classes : sequence of str
        The classes, in index order (a region's class is given by ``class_from``, see
        :func:`~.masks.class_of`). Classes no region has simply never win.
    min_fraction : float
        A tile takes the class covering the largest fraction of it when that fraction
        is at least this (0-1]; ties go to the class listed first.
    class_from : {'layer', 'text', 'classification'}
    exclude_rejected : bool
        Leave out regions whose review status is 'rejected'.
    source : {'annotations', 'review'}
        'review' leaves out pending predictions and rejected regions
        (:func:`review_truth`).

    Returns
    -------
    (N,) int64
        Index into ``classes`` per tile, -1 where no class covers ``min_fraction``.
    """
    min_fraction = _check_fraction("min_fraction", min_fraction)
    frac = _fractions(grid, annotations, classes, class_from, source, exclude_rejected)
    if not frac.shape[1]:
        return np.full(len(grid), -1, np.int64)
    best = frac.argmax(axis=1)
    top = frac[np.arange(len(best)), best]
    return np.where(top >= min_fraction, best, -1).astype(np.int64)


def tile_metrics(predicted: np.ndarray, truth: np.ndarray,
                 classes: Sequence[str]) -> pd.DataFrame:
    """Per-class Dice and IoU of predicted tile classes against true ones.

    Parameters
    ----------
    predicted, truth : (N,) int
        Index into ``classes`` per tile, -1 for none (both index the same list).
    classes : sequence of str

    Returns
    -------
    pandas.DataFrame
        One row per class with the columns ``class, dice, iou, tp, fp, fn, n_true,
        n_pred`` (counts of tiles): Dice = 2 TP / (2 TP + FP + FN), IoU = TP / (TP + FP +
        FN). A class with no true and no predicted tile has Dice and IoU NaN (not 1.0:
        nothing was measured), so averages over iterations should skip NaN.
    """
    import pandas as pd

    predicted = np.asarray(predicted).ravel()
    truth = np.asarray(truth).ravel()
    if predicted.shape != truth.shape:
        raise SlideSegError(f"{len(predicted)} predicted tiles but {len(truth)} true ones: "
                            "both must come from the same tile grid.")
    n = len(classes)
    for name, values in (("predicted", predicted), ("truth", truth)):
        if len(values) and (values.min() < -1 or values.max() >= n):
            raise SlideSegError(f"{name} tile classes must be -1 or an index below "
                                f"{n} (the number of classes).")
    rows = []
    for k, cls in enumerate(classes):
        p, t = predicted == k, truth == k
        tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
        union = tp + fp + fn
        rows.append({"class": str(cls),
                     "dice": 2 * tp / (2 * tp + fp + fn) if union else np.nan,
                     "iou": tp / union if union else np.nan,
                     "tp": tp, "fp": fp, "fn": fn, "n_true": tp + fn, "n_pred": tp + fp})
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def prediction_metrics(predictions: TilePredictions, annotations: AnnotationSet, *,
                       threshold: float = 0.5, min_fraction: float = 0.5,
                       class_from: str = "layer", source: str = "annotations",
                       exclude_rejected: bool = True) -> pd.DataFrame:
    """:func:`tile_metrics` of a model's predictions against (corrected) annotations.

    Predicted class: :meth:`TilePredictions.labels` (argmax, -1 below ``threshold``).
    True class: :func:`tile_truth` over ``predictions.classes``; tiles that no annotated
    class covers are the model's background class ('other' or 'background', see
    :data:`BACKGROUND_CLASSES`) when it has one, else none (-1).
    """
    classes = list(predictions.classes)
    truth = tile_truth(predictions.grid, annotations, classes, min_fraction=min_fraction,
                       class_from=class_from, exclude_rejected=exclude_rejected,
                       source=source)
    background = [k for k, c in enumerate(classes) if _is_background(c)]
    if background:
        truth = np.where(truth < 0, background[0], truth)
    return tile_metrics(predictions.labels(threshold), truth, classes)


# -- weak-label dataset ---------------------------------------------------------------

def _cancelled(cancel: Any) -> bool:
    """Whether to stop: a threading.Event that is set, or a callable returning True."""
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def _default_classes(annotations: AnnotationSet, class_from: str) -> list[str]:
    key = AnnotationKey.from_annotations([annotations], class_from)
    return sorted(key.values, key=key.values.__getitem__)


def _check_classes(classes: Sequence[str]) -> list[str]:
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise SlideSegError(f"the classes {classes} repeat a name; give each class once.")
    clash = [c for c in classes if c in LABEL_COLUMNS or c.startswith("frac_")]
    if clash:
        raise SlideSegError(f"class names {clash} clash with the columns of labels.csv "
                            f"({', '.join(LABEL_COLUMNS)}, frac_*); rename those classes.")
    return classes


def _geometry(name: str, grid: TileGrid, params: ExportParams) -> dict[str, Any]:
    """What must match for a rerun to reuse the tile images already in a folder."""
    return {"slide": name, "size": grid.size, "size0": grid.size0, "level": grid.level,
            "downsample": grid.downsample, "image_format": IMAGE_FORMATS[params.image_format],
            "quality": params.quality if params.image_format in ("jpg", "jpeg") else None}


def _check_folder(out: Path, geometry: dict[str, Any]) -> None:
    path = out / "classes.json"
    if not path.exists():
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8")).get("geometry")
    except (OSError, ValueError, AttributeError) as exc:
        raise SlideSegError(f"{path}: not a weak-label dataset's classes.json ({exc}); "
                            "give a new folder.") from None
    if before != geometry:
        raise SlideSegError(f"{out} holds tiles of another export ({before}); give a new "
                            "folder (one per slide and tile geometry).")


def export_weak_labels(
    slide: str | os.PathLike[str] | Slide,
    annotations: str | os.PathLike[str] | AnnotationSet | None,
    out: str | os.PathLike[str],
    *,
    grid: TileGrid | None = None,
    size: int = 512,
    level: int | None = None,
    mpp: float | None = None,
    classes: Sequence[str] | None = None,
    min_fraction: float = 0.05,
    class_from: str = "layer",
    source: str = "annotations",
    image_format: str = "png",
    quality: int = 90,
    workers: int | None = 2,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    min_tissue: float = 0.25,
) -> pd.DataFrame:
    """Write a patch-level-labelled dataset: tile images and a multi-hot vector per tile.

    Parameters
    ----------
    slide : path or Slide
    annotations : path, AnnotationSet or None
        Any file :func:`~.annotations.read_annotations` reads, or a set; None labels
        nothing (every class column 0).
    out : path
        Output folder, one per slide and tile geometry (see the module notes). Tiles
        already there are kept and skipped, so a rerun resumes an interrupted export; a
        rerun with other labels (source, classes, min_fraction) rewrites only the CSV.
    grid : TileGrid, optional
        The tiles; default ``tile_grid(slide, size, level=level, mpp=mpp,
        min_tissue=min_tissue)`` (tiles over tissue). ``size``, ``level``, ``mpp`` and
        ``min_tissue`` are not used when a grid is given.
    classes : sequence of str, optional
        The class columns, in order; default every area class of the annotations
        (``class_from``: 'layer', 'text' or 'classification'), sorted by name.
    min_fraction : float
        A tile's label for class k is 1 when class k's regions cover at least this
        fraction of it (0-1]; the fraction itself is in ``frac_<class>``.
    source : {'annotations', 'review'}
        'annotations': every region as drawn, whatever its review status. 'review':
        regions accepted, edited or added in review and the user's own (no status);
        pending predictions and rejected regions are not truth (:func:`review_truth`).
    image_format : {'png', 'jpg'}
        PNG is lossless (pixels equal :func:`~.tiles.read_tile`); JPEG with ``quality``.
    workers : int, optional
        Threads reading and writing tiles (they share one Slide; default 2).
    progress : callable(done, total), optional
        Called as tiles are done (those already written count as done).
    cancel : threading.Event or callable, optional
        Set the event (or return True) to stop after the tiles in flight; the files
        written stay valid, and ``labels.csv`` lists the tiles written so far.

    Returns
    -------
    pandas.DataFrame
        The rows of ``labels.csv``: file (relative to ``out``), x, y (level-0 top-left
        corner), level, size, downsample, mpp, tissue, one 0/1 column per class, then
        ``frac_<class>`` per class.
    """
    import pandas as pd

    _check_source(source)
    min_fraction = _check_fraction("min_fraction", min_fraction)
    ann = _read_set(annotations)
    ann = ann if ann is not None else AnnotationSet()
    classes = _check_classes(_default_classes(ann, class_from) if classes is None
                             else classes)
    own = not isinstance(slide, Slide)
    handle = open_slide(slide) if own else slide
    try:
        if grid is None:
            grid = tile_grid(handle, size, level=level, mpp=mpp, min_tissue=min_tissue)
        params = ExportParams(size=grid.size, image_format=image_format.lower(),
                              quality=int(quality))
        params.check()
        suffix = IMAGE_FORMATS[params.image_format]
        stem = safe_name(handle.path.stem)
        out = Path(out)
        geometry = _geometry(handle.path.name, grid, params)
        _check_folder(out, geometry)
        frac = _fractions(grid, ann, classes, class_from, source,
                          exclude_rejected=source == "review")
        tiles_dir = out / "tiles"
        tiles_dir.mkdir(parents=True, exist_ok=True)
        for pattern in (".*.part", ".labels.csv.*.part", ".classes.json.*.part"):
            folder = tiles_dir if pattern == ".*.part" else out
            for stale in folder.glob(pattern):  # left by a run that was killed
                stale.unlink(missing_ok=True)
        xs = np.round(grid.x).astype(np.int64)
        ys = np.round(grid.y).astype(np.int64)
        files = [f"tiles/{stem}_x{x}_y{y}{suffix}" for x, y in zip(xs.tolist(), ys.tolist(),
                                                                    strict=True)]
        run = {"slide": str(handle.path), "geometry": geometry, "classes": classes,
               "grid": {**grid.to_dict(), "origin": [0.0, 0.0], "tiles": len(grid),
                        "slide_dimensions": list(handle.dimensions)},
               "params": {"min_fraction": min_fraction, "class_from": class_from,
                          "source": source, "image_format": params.image_format,
                          "quality": params.quality, "min_tissue": min_tissue,
                          "truth_statuses": list(TRUTH_STATUSES) if source == "review"
                          else None},
               "columns": LABEL_COLUMNS + classes + [f"frac_{c}" for c in classes]}
        _write_json(out / "classes.json", {**run, "written": 0, "complete": False})
        _write_tiles(handle, grid, out, files, params, suffix, workers, progress, cancel)
    finally:
        if own:
            handle.close()
    written = np.array([(out / f).exists() for f in files], bool)
    table = {"file": files, "x": xs, "y": ys,
             "level": np.full(len(grid), grid.level, np.int64),
             "size": np.full(len(grid), grid.size, np.int64),
             "downsample": np.full(len(grid), float(grid.downsample)),
             "mpp": np.full(len(grid), np.nan if grid.mpp is None else float(grid.mpp)),
             "tissue": np.asarray(grid.tissue, np.float64)}
    for k, cls in enumerate(classes):
        table[cls] = (frac[:, k] >= min_fraction).astype(np.int64)
    for k, cls in enumerate(classes):
        table[f"frac_{cls}"] = frac[:, k].astype(np.float64)
    df = pd.DataFrame(table, columns=run["columns"])[written].reset_index(drop=True)
    _write_atomic(out / "labels.csv", df.to_csv(index=False, lineterminator="\n").encode())
    _write_json(out / "classes.json", {**run, "written": int(written.sum()),
                                       "complete": bool(written.all())})
    return df


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    _write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode())


def _write_tiles(slide: Slide, grid: TileGrid, out: Path, files: list[str],
                 params: ExportParams, suffix: str, workers: int | None,
                 progress: Callable[[int, int], None] | None, cancel: Any) -> None:
    """Read and write every tile not yet written, in chunks of a grid row's neighbours."""
    total = len(files)
    per = max(1, 2048 // max(1, grid.size))  # about 2048 px of tiles per chunk
    chunks = [range(i, min(total, i + per)) for i in range(0, total, per)]

    def one(chunk: range) -> bool:
        if _cancelled(cancel):
            return False
        for i in chunk:
            path = out / files[i]
            if path.exists():  # resume: tiles written before stay
                continue
            image = np.ascontiguousarray(read_tile(slide, grid, i))
            _write_atomic(path, _encode(image, suffix, params))
        return True

    n = max(1, workers or os.cpu_count() or 1)
    done = 0
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="slideseg-weak") as pool:
        for chunk, _ in zip(chunks, pool.map(one, chunks), strict=True):
            done += len(chunk)
            if progress is not None:
                progress(done, total)


# -- pseudo-masks ---------------------------------------------------------------------

def pseudo_mask_values(classes: Sequence[str], *, background: int = 0,
                       ignore: int = 255) -> dict[str, int]:
    """Mask value of each class: its index + 1, ``background`` for 'other'/'background'."""
    values = {str(c): int(background) if _is_background(str(c)) else k + 1
              for k, c in enumerate(classes)}
    for name, value in (("background", background), ("ignore", ignore)):
        if not 0 <= value <= 255:
            raise SlideSegError(f"the {name} value must be in [0, 255], not {value}.")
    if background == ignore:
        raise SlideSegError(f"background and ignore must differ (both {background}).")
    used = {c: v for c, v in values.items() if not _is_background(c)}
    bad = {c: v for c, v in used.items() if v in (background, ignore) or v > 255}
    if bad:
        raise SlideSegError(f"class values {bad} collide with background ({background}) or "
                            f"ignore ({ignore}) or exceed 255; choose other background or "
                            "ignore values.")
    return values


def pseudo_mask(predictions: TilePredictions, *, threshold: float = 0.5, background: int = 0,
                ignore: int = 255, upsample: int = 1) -> np.ndarray:
    """A label mask from tile probabilities, one pixel (or ``upsample`` squared) per tile.

    Parameters
    ----------
    predictions : TilePredictions
    threshold : float
        A tile takes its most probable class when that probability is at least this;
        below it the tile is uncertain and gets ``ignore``.
    background : int
        Value of the background classes ('other', 'background') and of everything
        outside the grid's tiles (glass, non-tissue).
    ignore : int
        Value of uncertain tiles (excluded from a segmentation loss).
    upsample : int
        Mask pixels per tile side.

    Returns
    -------
    (rows * upsample, cols * upsample) uint8
        Mask pixel (r, c) covers level-0 pixels ``[c * d, (c + 1) * d)`` in x and the
        same in y, with ``d = grid.size0 / upsample``. Values: see
        :func:`pseudo_mask_values`.
    """
    if not 0.0 <= threshold <= 1.0:
        raise SlideSegError(f"threshold must be in [0, 1], not {threshold}.")
    upsample = int(upsample)
    if upsample < 1:
        raise SlideSegError(f"upsample must be 1 or more, not {upsample}.")
    values = pseudo_mask_values(predictions.classes, background=background, ignore=ignore)
    lut = np.array([values[str(c)] for c in predictions.classes] + [ignore], np.uint8)
    labels = predictions.labels(threshold)  # -1 -> the last entry: ignore
    grid = predictions.grid
    mask = np.full(grid.shape, background, np.uint8)
    mask[grid.row, grid.col] = lut[labels]
    if upsample > 1:
        mask = np.repeat(np.repeat(mask, upsample, axis=0), upsample, axis=1)
    return mask


def save_pseudo_mask(predictions: TilePredictions, path: str | os.PathLike[str], *,
                     threshold: float = 0.5, upsample: int = 1, probabilities: bool = True,
                     background: int = 0, ignore: int = 255) -> Path:
    """Write :func:`pseudo_mask` as PNG or pyramidal TIFF, with a JSON sidecar.

    Files (each written atomically), for ``path`` = ``NAME.png`` or ``NAME.tif``:

    - ``NAME.png|tif``: the mask (TIFF: tiled, zlib, with reduced levels, pixel size set
      when the slide's is known);
    - ``NAME.json``: ``values`` (class -> mask value), ``classes`` (probability channel
      order), ``background``, ``ignore``, ``threshold``, ``upsample``, ``downsample``
      (level-0 pixels per mask pixel: ``size0 / upsample``), ``origin`` (level-0 x, y of
      the mask's top-left corner), ``shape``, ``mpp`` and the grid;
    - ``NAME.proba.npy`` when ``probabilities``: (rows, cols, C) float16 class
      probabilities at tile resolution (one pixel per tile whatever ``upsample``), NaN
      outside the grid's tiles.

    Returns
    -------
    pathlib.Path
        The mask's path.
    """
    import cv2

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".tif", ".tiff"):
        raise SlideSegError(f"{path}: save a pseudo-mask as .png, .tif or .tiff.")
    mask = pseudo_mask(predictions, threshold=threshold, background=background,
                       ignore=ignore, upsample=upsample)
    grid = predictions.grid
    d = grid.size0 / int(upsample)
    mpp = grid.mpp * grid.size / int(upsample) if grid.mpp else None
    proba_path = path.with_suffix(".proba.npy")
    if probabilities:
        buf = io.BytesIO()
        np.save(buf, grid.to_image(predictions.proba).astype(np.float16))
        _write_atomic(proba_path, buf.getvalue())
    if suffix == ".png":
        ok, data = cv2.imencode(".png", mask)
        if not ok:
            raise SlideSegError(f"{path}: could not encode the mask as PNG.")
        _write_atomic(path, data.tobytes())
    else:
        levels = [mask]
        while max(levels[-1].shape) > 256:  # reduced levels: every other label, no mixing
            levels.append(np.ascontiguousarray(levels[-1][::2, ::2]))
        save_mask(levels, path, mpp=mpp)
    doc = {"mask": path.name,
           "values": pseudo_mask_values(predictions.classes, background=background,
                                        ignore=ignore),
           "classes": list(predictions.classes), "background": int(background),
           "ignore": int(ignore), "threshold": float(threshold), "upsample": int(upsample),
           "downsample": d, "origin": [0.0, 0.0], "shape": list(mask.shape), "mpp": mpp,
           "tile_size0": grid.size0, "grid": grid.to_dict(),
           "probabilities": proba_path.name if probabilities else None}
    _write_json(path.with_suffix(".json"), doc)
    return path

