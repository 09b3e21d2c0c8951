"""Auto-annotation: classify tiles over tissue, cluster the positive ones, outline them.

The pipeline (:func:`auto_annotate`): tissue mask -> grid of tiles over tissue
(:func:`~.tiles.tile_grid`) -> a tile classifier (the built-in
:class:`~.tilemodels.TileClassifier` trained from the user's annotations, or a user
model) -> per-tile class probabilities (:class:`~.tiles.TilePredictions`, shown as a
heatmap) -> DBSCAN of each class's positive tiles, per-cluster probability statistics
and filters, an outline per cluster (:func:`~.clusters.find_regions`) -> polygon
annotations with review status 'pending', for an expert to review
(:mod:`~.review`).

Iterations (:func:`run_iteration`, :func:`record_review`) keep every round in its own
folder of a work directory (training annotations, model, prediction, reviewed
annotations) and the per-class Dice and IoU of each prediction against its reviewed
version in ``metrics.csv``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .annotations import AnnotationSet, read_annotations, write_annotations
from .errors import Cancelled, SlideSegError
from .masks import class_of
from .slide import Slide, open_slide
from .tiles import TileGrid, TilePredictions, read_tile, tile_class_fractions, tile_grid

__all__ = ["auto_annotate", "AutoAnnotation", "train_tile_classifier", "TrainingSet",
           "predict_tiles", "tile_features_of", "truth_annotations", "run_iteration",
           "record_review", "read_metrics", "iteration_dirs", "next_training",
           "merge_annotations", "load_predictions", "OTHER"]

#: Name of the class of tissue outside every annotated class.
OTHER = "other"

Progress = Callable[[int, int], None]


# -- reading tiles in threads -----------------------------------------------------------


def _tile_pass(slide: Slide, grid: TileGrid, fn: Callable[[np.ndarray], np.ndarray], *,
               batch: int = 8, workers: int | None = 2, progress: Progress | None = None,
               cancel: threading.Event | None = None, what: str = "tiles") -> np.ndarray:
    """``fn`` on batches of tiles read in ``workers`` threads; rows in grid order."""
    n = len(grid)
    if n == 0:
        return np.empty((0, 0), np.float32)
    starts = list(range(0, n, batch))

    def one(start: int) -> np.ndarray | None:
        if cancel is not None and cancel.is_set():
            return None
        idx = range(start, min(n, start + batch))
        tiles = np.stack([read_tile(slide, grid, i) for i in idx])
        return np.asarray(fn(tiles), np.float32)

    out: list[np.ndarray] = []
    done = 0
    threads = max(1, int(workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="slideseg-tiles") as pool:
        for start, rows in zip(starts, pool.map(one, starts), strict=True):
            if rows is None or (cancel is not None and cancel.is_set()):
                raise Cancelled(f"cancelled after {done} of {n} {what}")
            out.append(rows.reshape(min(batch, n - start), -1))
            done += len(out[-1])
            if progress is not None:
                progress(done, n)
    return np.concatenate(out)


def tile_features_of(slide: Slide, grid: TileGrid, model: Any = None,
                     **kwargs: Any) -> np.ndarray:
    """(N, F) built-in tile features of every tile of ``grid`` (``model.features`` when
    a built-in classifier is given, else :func:`~.tilefeatures.tile_features`)."""
    from .tilefeatures import tile_features

    fn = model.features if model is not None else tile_features
    return _tile_pass(slide, grid, fn, what="tiles", **kwargs)


def _uses_features(model: Any) -> bool:
    return hasattr(model, "predict_features") and hasattr(model, "features")


def predict_tiles(slide: Slide, grid: TileGrid, model: Any, *, features: np.ndarray | None = None,
                  batch: int = 8, workers: int | None = 2, progress: Progress | None = None,
                  cancel: threading.Event | None = None) -> TilePredictions:
    """Class probabilities of every tile of ``grid`` from ``model``.

    Parameters
    ----------
    model
        The built-in :class:`~.tilemodels.TileClassifier`, or any model with ``classes``
        and ``predict_proba(tiles)`` (:mod:`~.tilemodels`: Python callable, ONNX,
        TorchScript).
    features : (N, F) array, optional
        The built-in features of the grid's tiles, when already computed (the slide is
        then not read again).
    """
    if _uses_features(model):
        if features is None:
            features = tile_features_of(slide, grid, model, batch=batch, workers=workers,
                                        progress=progress, cancel=cancel)
        proba = model.predict_features(features) if len(grid) else \
            np.empty((0, len(model.classes)))
    else:
        proba = _tile_pass(slide, grid, model.predict_proba, batch=batch, workers=workers,
                           progress=progress, cancel=cancel)
        if not len(grid):
            proba = np.empty((0, len(model.classes)))
    return TilePredictions(grid, list(model.classes), proba)


# -- training ----------------------------------------------------------------------------


def truth_annotations(annotations: AnnotationSet) -> AnnotationSet:
    """The regions that count as truth: the user's own (no review status) and those an
    expert accepted, edited or added; rejected and still-pending predictions are left
    out (:func:`~.weaklabels.review_truth`)."""
    from .weaklabels import review_truth

    return review_truth(annotations)


@dataclass
class TrainingSet:
    """Which tiles of a grid train the classifier, and as what.

    ``labels[i]`` is the class of tile ``i`` or '' when the tile is not used (partly
    annotated, or an 'other' tile left out to balance the classes).
    """

    labels: np.ndarray
    classes: list[str]
    fractions: np.ndarray  # (N, C) coverage by each annotated class
    #: 'other' tiles left out because they look like an annotated class (see
    #: :func:`train_tile_classifier`, ``clean_other``)
    cleaned: int = 0

    @property
    def used(self) -> np.ndarray:
        return self.labels != ""

    def counts(self) -> dict[str, int]:
        names, counts = np.unique(self.labels[self.used], return_counts=True)
        return {str(k): int(v) for k, v in zip(names, counts, strict=True)}


def training_set(grid: TileGrid, annotations: AnnotationSet, *,
                 classes: Sequence[str] | None = None, other: str = OTHER,
                 min_fraction: float = 0.5, class_from: str = "layer",
                 max_other: float | None = 5.0, seed: int = 0) -> TrainingSet:
    """Label the tiles of ``grid`` from annotations: a tile inside a class's polygons (at
    least ``min_fraction`` of it covered, the most-covered class wins) is that class;
    tissue tiles touched by no annotation are ``other`` (when the annotations have no
    ``other`` class of their own), at most ``max_other`` times the annotated tiles
    (a seeded random choice; None keeps them all)."""
    truth = truth_annotations(annotations)
    names = list(classes) if classes else sorted(
        {class_of(layer, r, class_from) for layer, r in truth.regions()
         if r.is_area and not r.negative})
    names = [c for c in names if c]
    if not names:
        raise SlideSegError("no annotated regions to train from: draw or load at least one "
                            "class's polygons (areas, not lines or points).")
    fractions = tile_class_fractions(grid, truth, names, class_from=class_from)
    labels = np.full(len(grid), "", dtype=object)
    best = fractions.argmax(axis=1) if len(grid) else np.empty(0, int)
    top = fractions[np.arange(len(grid)), best] if len(grid) else np.empty(0)
    inside = top >= min_fraction
    labels[inside] = np.asarray(names, dtype=object)[best[inside]]
    if other not in names:
        outside = np.flatnonzero(fractions.sum(axis=1) == 0)
        n_pos = int(inside.sum())
        if max_other is not None and len(outside) > max(1, int(max_other * n_pos)):
            rng = np.random.default_rng(seed)
            outside = np.sort(rng.choice(outside, max(1, int(max_other * n_pos)),
                                         replace=False))
        labels[outside] = other
    labels = labels.astype(str)
    return TrainingSet(labels, names, fractions)


def train_tile_classifier(slide: Slide, annotations: AnnotationSet, grid: TileGrid | None = None,
                          *, size: int = 512, level: int | None = None,
                          mpp: float | None = None, min_tissue: float = 0.25,
                          classes: Sequence[str] | None = None, other: str = OTHER,
                          min_fraction: float = 0.5, class_from: str = "layer",
                          max_other: float | None = 5.0, clean_other: bool = True,
                          seed: int = 0, features: np.ndarray | None = None,
                          workers: int | None = 2,
                          progress: Progress | None = None,
                          cancel: threading.Event | None = None) -> tuple[Any, TrainingSet]:
    """Train the built-in tile classifier from a slide's annotations.

    Tiles inside each class's polygons are that class, tissue tiles outside all of them
    are ``other`` (see :func:`training_set`); the classifier is a random forest on
    colour, stain and texture features of each tile
    (:class:`~.tilemodels.TileClassifier`). Only the labelled tiles are read, unless
    ``features`` of the whole grid are given.

    'other' tiles are unlabelled tissue, so some of them are of an annotated class the
    user did not outline. With ``clean_other`` (the default), 'other' tiles that a first
    forest's out-of-bag votes (100 trees, each tile judged by the trees that did not
    train on it) give less than 0.5 'other' are left out, and the classifier is trained
    on the rest.

    Returns
    -------
    (TileClassifier, TrainingSet)
    """
    from .tilemodels import TileClassifier

    if grid is None:
        grid = tile_grid(slide, size, level=level, mpp=mpp, min_tissue=min_tissue)
    tset = training_set(grid, annotations, classes=classes, other=other,
                        min_fraction=min_fraction, class_from=class_from,
                        max_other=max_other, seed=seed)
    used = np.flatnonzero(tset.used)
    counts = tset.counts()
    if len(counts) < 2:
        raise SlideSegError(
            f"training needs tiles of at least two classes, got {counts or 'none'}: tiles "
            f"count for a class when at least {min_fraction:.0%} of a {grid.size}-px tile "
            "lies inside its polygons; draw larger regions or use smaller tiles.")
    model = TileClassifier(random_state=seed, n_jobs=-1)
    if features is None:
        X = tile_features_of(slide, grid.subset(used), model, workers=workers,
                             progress=progress, cancel=cancel)
    else:
        X = features[used]
    y = tset.labels[used]
    if clean_other and other not in tset.classes:
        doubtful = _doubtful_other(model, X, y, other, seed)
        if doubtful.any():
            tset.labels[used[doubtful]] = ""
            tset.cleaned = int(doubtful.sum())
            X, y = X[~doubtful], y[~doubtful]
    model.fit_features(X, y, tile_mpp=grid.mpp, tile_size=grid.size)
    return model, tset


def _doubtful_other(model: Any, X: np.ndarray, y: np.ndarray, other: str,
                    seed: int) -> np.ndarray:
    """'other' rows that a forest's out-of-bag votes (each row judged only by the trees
    that did not see it) give less than 0.5 'other'."""
    names = np.unique(y)
    if other not in names or len(names) < 2:
        return np.zeros(len(y), bool)
    forest = model._forest()
    forest.set_params(n_estimators=min(100, forest.n_estimators), oob_score=True)
    with warnings.catch_warnings():  # a row no tree left out counts as undecided
        warnings.filterwarnings("ignore", "Some inputs do not have OOB scores")
        forest.fit(X, y)
    votes = np.nan_to_num(forest.oob_decision_function_, nan=1.0 / len(names))
    return (y == other) & (votes[:, list(forest.classes_).index(other)] < 0.5)


# -- the pipeline ------------------------------------------------------------------------


@dataclass
class AutoAnnotation:
    """What :func:`auto_annotate` found.

    Attributes
    ----------
    annotations : AnnotationSet
        One layer per class, a polygon per kept cluster, review status 'pending'.
    clusters : DataFrame
        One row per cluster (kept or not) with its statistics and why it was dropped.
    predictions : TilePredictions
        Per-tile class probabilities (``predictions.heatmap(cls)`` for a heatmap).
    model
        The model used (the classifier trained in this run, when one was trained).
    training : TrainingSet or None
    timings : dict
        Seconds spent in each step.
    """

    annotations: AnnotationSet
    clusters: pd.DataFrame
    predictions: TilePredictions
    model: Any
    training: TrainingSet | None = None
    timings: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> TileGrid:
        return self.predictions.grid


def _load_model(model: Any) -> Any:
    if isinstance(model, str | os.PathLike):
        from .tilemodels import load_model

        return load_model(model)
    return model


def auto_annotate(slide: Slide | str | os.PathLike[str], model: Any = None,
                  annotations: AnnotationSet | str | os.PathLike[str] | None = None, *,
                  size: int = 512, level: int | None = None, mpp: float | None = None,
                  min_tissue: float = 0.25, classes: Sequence[str] | None = None,
                  threshold: float = 0.5, eps: float = 1.5, min_samples: int = 3,
                  min_tiles: int = 1, min_mean: float = 0.0, max_std: float = math.inf,
                  max_var: float = math.inf, outline: str = "convex",
                  concavity: float = 1.0, min_fraction: float = 0.5,
                  max_other: float | None = 5.0, seed: int = 0, workers: int | None = 2,
                  progress: Callable[[str, int, int], None] | None = None,
                  cancel: threading.Event | None = None) -> AutoAnnotation:
    """Annotate a slide automatically: tiles over tissue, a classifier, clusters, outlines.

    Parameters
    ----------
    slide : Slide or path
    model : TileClassifier, user model, path or None
        The tile classifier. None: train the built-in one from ``annotations`` (tiles
        inside each class's polygons; 'other' = tissue outside them). A path is loaded
        with :func:`~.tilemodels.load_model` (.joblib built-in, .onnx, TorchScript).
    annotations : AnnotationSet or path, optional
        Training annotations (needed when ``model`` is None).
    size : int
        Tile side in pixels (default 512) at ``level`` (default 0) or at ``mpp`` µm/px.
    min_tissue : float
        Tiles with less tissue than this fraction are not classified.
    classes : list of str, optional
        Classes to annotate (default: every class of the model but 'other').
    threshold : float
        A tile is positive for a class when that class is its most probable one and its
        probability is at least this.
    eps, min_samples : float, int
        DBSCAN on the positive tiles' grid positions: neighbourhood radius in tiles (1.5
        joins diagonal neighbours) and the minimum tiles of a core point.
    min_tiles, min_mean, max_std, max_var
        A cluster is kept when it has at least ``min_tiles`` tiles and the mean,
        standard deviation and variance of its tiles' probability pass.
    outline : {'convex', 'tiles', 'concave'}
        Convex hull (Graham scan), exact union of the tiles, or a concave hull
        (``concavity`` in tiles).
    progress : callable(step, done, total), optional
        Called with step 'tissue', 'training', 'tiles' or 'clusters'.
    cancel : threading.Event, optional
        Set it to stop; :class:`~.errors.Cancelled` is raised.
    """
    from .clusters import find_regions

    own = not isinstance(slide, Slide)
    slide_obj = open_slide(slide) if own else slide
    try:
        timings: dict[str, float] = {}

        def step(name: str) -> Progress | None:
            if progress is None:
                return None
            return lambda done, total: progress(name, done, total)

        t0 = time.perf_counter()
        if progress is not None:
            progress("tissue", 0, 1)
        grid = tile_grid(slide_obj, size, level=level, mpp=mpp, min_tissue=min_tissue)
        timings["tissue_and_grid"] = time.perf_counter() - t0
        if progress is not None:
            progress("tissue", 1, 1)
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        tset = None
        features = None
        model = _load_model(model)
        if model is None:
            if annotations is None:
                raise SlideSegError("give a model or annotations to train the built-in "
                                    "classifier from.")
            ann = annotations if isinstance(annotations, AnnotationSet) else \
                read_annotations(annotations)
            from .tilemodels import TileClassifier

            t = time.perf_counter()
            features = tile_features_of(slide_obj, grid,
                                        TileClassifier(random_state=seed, n_jobs=-1),
                                        workers=workers, progress=step("tiles"),
                                        cancel=cancel)
            timings["read_and_features"] = time.perf_counter() - t
            t = time.perf_counter()
            model, tset = train_tile_classifier(
                slide_obj, ann, grid, min_fraction=min_fraction, max_other=max_other,
                seed=seed, features=features)
            timings["training"] = time.perf_counter() - t
        t = time.perf_counter()
        predictions = predict_tiles(slide_obj, grid, model, features=features,
                                    workers=workers, progress=step("tiles"), cancel=cancel)
        timings["prediction"] = time.perf_counter() - t
        t = time.perf_counter()
        wanted = list(classes) if classes else None
        regions, clusters = find_regions(
            predictions, classes=wanted, threshold=threshold, eps=eps,
            min_samples=min_samples, min_tiles=min_tiles, min_mean=min_mean,
            max_std=max_std, max_var=max_var, outline=outline, concavity=concavity)
        if slide_obj.mpp:
            regions.mpp = slide_obj.mpp[0]
        timings["clusters"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        if progress is not None:
            progress("clusters", 1, 1)
        params = {"size": size, "level": level, "mpp": mpp, "min_tissue": min_tissue,
                  "classes": wanted, "threshold": threshold, "eps": eps,
                  "min_samples": min_samples, "min_tiles": min_tiles, "min_mean": min_mean,
                  "max_std": None if math.isinf(max_std) else max_std,
                  "max_var": None if math.isinf(max_var) else max_var, "outline": outline,
                  "concavity": concavity, "min_fraction": min_fraction,
                  "max_other": max_other, "seed": seed}
        return AutoAnnotation(regions, clusters, predictions, model, tset, timings, params)
    finally:
        if own:
            slide_obj.close()


# -- iterations ----------------------------------------------------------------------------

ITERATION = "iteration_{:03d}"
METRICS = "metrics.csv"


def iteration_dirs(workdir: str | os.PathLike[str]) -> list[Path]:
    """The iteration folders of a work directory, in order."""
    root = Path(workdir)
    found = []
    for p in root.glob("iteration_*"):
        tail = p.name.split("_", 1)[1]
        if p.is_dir() and tail.isdigit():
            found.append((int(tail), p))
    return [p for _, p in sorted(found)]


def _save_predictions(path: Path, predictions: TilePredictions) -> None:
    g = predictions.grid
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, col=g.col, row=g.row, tissue=g.tissue, proba=predictions.proba,
                            classes=np.asarray(predictions.classes),
                            geometry=json.dumps(g.to_dict()))
    os.replace(tmp, path)


def load_predictions(path: str | os.PathLike[str]) -> TilePredictions:
    """Tile predictions saved by :func:`run_iteration` (``predictions.npz``)."""
    with np.load(path, allow_pickle=False) as z:
        geo = json.loads(str(z["geometry"]))
        grid = TileGrid(z["col"], z["row"], int(geo["size"]), float(geo["size0"]),
                        int(geo["level"]), float(geo["downsample"]), tuple(geo["shape"]),
                        geo["mpp"], z["tissue"], float(geo["level_downsample"]))
        return TilePredictions(grid, [str(c) for c in z["classes"]], z["proba"])


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def run_iteration(workdir: str | os.PathLike[str], slide: Slide | str | os.PathLike[str],
                  annotations: AnnotationSet | str | os.PathLike[str], *,
                  model: Any = None, **params: Any) -> tuple[Path, AutoAnnotation]:
    """One round of the loop: train on ``annotations`` (corrected ones from the last
    review, or the user's first annotations), predict, and keep it all in the next
    ``iteration_NNN`` folder of ``workdir``.

    The folder gets ``training.xml`` (the annotations trained on), ``model.joblib`` (the
    built-in classifier; a given user model is referenced in ``params.json``),
    ``predicted.xml`` (regions with review status 'pending'), ``clusters.csv``,
    ``predictions.npz`` (tile grid and probabilities) and ``params.json``. Review
    ``predicted.xml`` (in napari or ImageScope), then :func:`record_review`.

    Returns
    -------
    (folder, AutoAnnotation)
    """
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    existing = iteration_dirs(root)
    number = int(existing[-1].name.split("_")[1]) + 1 if existing else 1
    ann = annotations if isinstance(annotations, AnnotationSet) else \
        read_annotations(annotations)
    result = auto_annotate(slide, model, truth_annotations(ann), **params)
    folder = root / ITERATION.format(number)
    tmp = root / (folder.name + ".part")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write_annotations(ann, tmp / "training.xml", format="aperio")
    write_annotations(result.annotations, tmp / "predicted.xml", format="aperio")
    result.clusters.to_csv(tmp / "clusters.csv", index=False)
    _save_predictions(tmp / "predictions.npz", result.predictions)
    info: dict[str, Any] = {"iteration": number, "params": result.params,
                            "timings": result.timings,
                            "slide": str(getattr(slide, "path", slide))}
    if hasattr(result.model, "save"):
        result.model.save(tmp / "model.joblib")
        info["model"] = "model.joblib"
    else:
        info["model"] = str(model) if isinstance(model, str | os.PathLike) else \
            type(model).__name__
    if result.training is not None:
        info["training_tiles"] = result.training.counts()
    _write_json(tmp / "params.json", info)
    os.replace(tmp, folder)
    return folder, result


def record_review(workdir: str | os.PathLike[str],
                  reviewed: AnnotationSet | str | os.PathLike[str], *,
                  iteration: int | None = None, min_fraction: float = 0.5) -> pd.DataFrame:
    """Score an iteration's prediction against its reviewed version, and keep both.

    The reviewed annotations are saved as ``reviewed.xml`` in the iteration's folder
    (default: the latest), and one row per class is appended to ``metrics.csv``: Dice
    and IoU at tile resolution of the predicted regions against the truth (regions the
    expert accepted, edited or added, and the user's own), with counts of regions by
    review status. A tile belongs to a class when at least ``min_fraction`` of it lies
    in that class's regions.

    Returns
    -------
    The rows added.
    """
    from .review import review_counts
    from .weaklabels import tile_metrics, tile_truth

    root = Path(workdir)
    dirs = iteration_dirs(root)
    if not dirs:
        raise SlideSegError(f"{root}: no iteration to review; run one first.")
    if iteration is None:
        folder = dirs[-1]
    else:
        folder = root / ITERATION.format(int(iteration))
        if not folder.is_dir():
            raise SlideSegError(f"{folder}: no such iteration.")
    number = int(folder.name.split("_")[1])
    reviewed_set = reviewed if isinstance(reviewed, AnnotationSet) else \
        read_annotations(reviewed)
    predictions = load_predictions(folder / "predictions.npz")
    predicted = read_annotations(folder / "predicted.xml")
    classes = [c for c in predictions.classes if c != OTHER]
    for layer in truth_annotations(reviewed_set):
        if layer.class_name and layer.class_name not in classes and layer.regions:
            classes.append(layer.class_name)
    grid = predictions.grid
    pred = tile_truth(grid, predicted, classes, min_fraction=min_fraction,
                      exclude_rejected=False)
    truth = tile_truth(grid, truth_annotations(reviewed_set), classes,
                       min_fraction=min_fraction)
    rows = tile_metrics(pred, truth, classes)
    counts = review_counts(reviewed_set)
    rows.insert(0, "iteration", number)
    for status in ("pending", "accepted", "rejected", "edited", "added"):
        rows[f"n_{status}"] = int(counts.get(status, 0))
    rows["reviewed_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_annotations(reviewed_set, folder / "reviewed.xml", format="aperio")
    path = root / METRICS
    old = read_metrics(root)
    if len(old):
        old = old[old["iteration"] != number]  # a second review of a round replaces it
    table = pd.concat([old, rows], ignore_index=True) if len(old) else rows
    tmp = path.with_name(path.name + ".part")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return rows


def read_metrics(workdir: str | os.PathLike[str]) -> pd.DataFrame:
    """``metrics.csv`` of a work directory (empty when no review was recorded yet)."""
    path = Path(workdir) / METRICS
    if not path.exists():
        return pd.DataFrame()
    return pd.read_csv(path)


def merge_annotations(*sets: AnnotationSet) -> AnnotationSet:
    """One set holding every layer of ``sets`` (classes come from layer names, so layers
    of the same class simply add their regions)."""
    layers = [layer for s in sets for layer in s]
    attributes = dict(sets[0].attributes) if sets else {}
    return AnnotationSet(layers, attributes=attributes)


def next_training(workdir: str | os.PathLike[str]) -> AnnotationSet:
    """What the next round trains on: the latest round's training annotations plus the
    truth of its review (``reviewed.xml``: regions accepted, edited or added)."""
    dirs = iteration_dirs(workdir)
    if not dirs:
        raise SlideSegError(f"{workdir}: no iteration yet; start with --annotations.")
    last = dirs[-1]
    if not (last / "reviewed.xml").exists():
        raise SlideSegError(f"{last}: not reviewed yet; review predicted.xml and pass it "
                            "with --reviewed (or record_review).")
    return merge_annotations(read_annotations(last / "training.xml"),
                             truth_annotations(read_annotations(last / "reviewed.xml")))
