"""Tile classifiers: the built-in random forest and user models (callable, ONNX, TorchScript).

Every model here follows one protocol, :class:`TileModel`:

- ``classes``: the class names, in the order of the probability columns;
- ``input_size``: the tile side in pixels the model wants (tiles of another size are
  resized with pixel-area interpolation), or None when it takes tiles of any size;
- ``predict_proba(tiles)``: a (B, S, S, 3) uint8 RGB batch (or a list of tiles) ->
  (B, C) float32 class probabilities; the rows sum to 1 for multi-class models.

:class:`TileClassifier` needs no downloaded weights: a scikit-learn random forest on the
colour, stain and texture features of :mod:`.tilefeatures`, trained from the user's own
labelled tiles in seconds, saved to and loaded from a joblib file.

User models are a Python callable (:class:`CallableModel`), an ONNX file
(:class:`OnnxModel`, needs ``pip install napari-slideseg[onnx]``) or a TorchScript file
(:class:`TorchScriptModel`, needs ``pip install napari-slideseg[torch]``). They receive
the tiles as a float32 batch normalised as declared: ``(tile * scale - mean) / std``
per channel, channels first (B, 3, H, W) or last (B, H, W, 3). Their outputs go through
a softmax or a sigmoid as declared, or a softmax when they are not probabilities yet.
:func:`load_model` opens any of the files, taking the classes, input size and
normalisation from its arguments or from a JSON file next to the model
(``model.onnx.json`` or ``model.json``)::

    {"classes": ["tumour", "stroma", "other"], "input_size": 224,
     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

Model files of the built-in classifier are pickles (joblib): loading a pickle can run any
code it holds. Load model files only from sources you trust, such as your own.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .classify import ClassifierError, CrossValidation, dump_atomic
from .errors import SlideSegError
from .tilefeatures import FEATURE_NAMES, FEATURE_SIZE, resize_tiles, tile_features

__all__ = ["TILE_MODEL_FORMAT", "TILE_MODEL_VERSION", "MODEL_SUFFIXES", "ACTIVATIONS",
           "TileModel", "TileClassifier", "CallableModel", "OnnxModel", "TorchScriptModel",
           "load_model", "sidecar_path"]

#: Marks a file written by :meth:`TileClassifier.save`.
TILE_MODEL_FORMAT = "napari-slideseg tile classifier"
TILE_MODEL_VERSION = 1
#: File suffixes :func:`load_model` knows, by kind of model.
MODEL_SUFFIXES = {"forest": (".joblib", ".pkl", ".pickle"), "onnx": (".onnx",),
                  "torchscript": (".pt", ".pth", ".ts", ".torchscript")}
ACTIVATIONS = ("auto", "softmax", "sigmoid", "none")
_SIDECAR_KEYS = ("classes", "input_size", "mean", "std", "scale", "channels_first",
                 "activation", "batch_size")


@runtime_checkable
class TileModel(Protocol):
    """What the auto-annotation needs of a tile classifier."""

    classes: list[str]
    input_size: int | None

    def predict_proba(self, tiles: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(B, S, S, 3) uint8 RGB tiles -> (B, len(classes)) float32 probabilities."""
        ...


def _batch_length(tiles: Any) -> int:
    return int(tiles.shape[0]) if isinstance(tiles, np.ndarray) else len(tiles)


# -- the built-in classifier ------------------------------------------------------------------


class TileCrossValidation(CrossValidation):
    """Accuracy of a tile classifier in k-fold cross-validation."""

    def __str__(self) -> str:
        return (f"accuracy {100 * self.mean:.1f} ± {100 * self.std:.1f} % ({self.folds}-fold, "
                f"{self.n} tiles)")


def _labels(labels: Any, n: int) -> np.ndarray:
    """Class names as an object array, None where a tile has no class."""
    values = list(labels)
    if len(values) != n:
        raise ClassifierError(f"{len(values)} labels given for {n} tiles: give one class "
                              "name per tile (None for a tile without a class).")
    out = np.empty(n, object)
    for i, v in enumerate(values):
        missing = v is None or (isinstance(v, float) and math.isnan(v)) or \
            (isinstance(v, str) and not v.strip())
        out[i] = None if missing else str(v)
    return out


class TileClassifier:
    """The built-in tile classifier: a random forest on colour, stain and texture features.

    Parameters
    ----------
    n_estimators : int
        Trees in the forest.
    class_weight : {'balanced', None}
        'balanced' weighs classes inversely to how many tiles they have, so that a class
        with few tiles is not drowned by one with many (tissue outside the annotations,
        'other', usually has the most).
    min_samples_leaf : int
        Smallest number of training tiles in a leaf.
    random_state : int
        Seed of the forest and of the cross-validation folds: the same tiles and labels
        give the same model and the same predictions.
    n_jobs : int, optional
        Threads used by the forest to train and predict (None: one; -1: all cores).
    feature_size : int
        Side (pixels) the tiles are shrunk to before their features are computed.

    Attributes
    ----------
    classes : list of str
        Class names of the fitted model, sorted: the columns of :meth:`predict_proba`.
    input_size : None
        The classifier takes tiles of any size (their features are computed at
        ``feature_size``); train and predict on tiles read at the same resolution:
        ``tile_size`` pixels of ``tile_mpp`` µm.
    feature_names : list of str
        The features of the fitted model (:data:`~.tilefeatures.FEATURE_NAMES`).
    tile_size, tile_mpp : int or float or None
        Side in pixels and pixel size in µm of the training tiles, when known.
    counts : dict of str -> int
        Training tiles of each class.
    created : str
        When the model was trained (ISO 8601, UTC).

    Notes
    -----
    Model files are pickles (joblib): :meth:`load` must only be given files from a
    trusted source, since unpickling a file can run any code it contains.
    """

    def __init__(self, *, n_estimators: int = 200, class_weight: str | None = "balanced",
                 min_samples_leaf: int = 1, random_state: int = 0, n_jobs: int | None = None,
                 feature_size: int = FEATURE_SIZE) -> None:
        if n_estimators < 1:
            raise ClassifierError(f"n_estimators must be >= 1, not {n_estimators}.")
        if int(feature_size) < 3:
            raise ClassifierError(f"feature_size must be at least 3 pixels, not "
                                  f"{feature_size}.")
        self.params = {"n_estimators": int(n_estimators), "class_weight": class_weight,
                       "min_samples_leaf": int(min_samples_leaf),
                       "random_state": int(random_state), "n_jobs": n_jobs}
        self.feature_size = int(feature_size)
        self.input_size: int | None = None
        self.classes: list[str] = []
        self.feature_names: list[str] = list(FEATURE_NAMES)
        self.tile_size: int | None = None
        self.tile_mpp: float | None = None
        self.counts: dict[str, int] = {}
        self.created = ""
        self.sklearn_version = ""
        self.model_: Any = None
        self._training: tuple[np.ndarray, np.ndarray] | None = None

    def __repr__(self) -> str:
        if not self.fitted:
            return "TileClassifier(not fitted)"
        counts = ", ".join(f"{c}: {n}" for c, n in self.counts.items())
        return f"TileClassifier(classes {self.classes}, trained on {counts})"

    @property
    def fitted(self) -> bool:
        """Whether the classifier has been trained (or loaded)."""
        return self.model_ is not None

    @property
    def metadata(self) -> dict[str, Any]:
        """What a saved model file records besides the forest."""
        import sklearn

        from .. import __version__

        return {"format": TILE_MODEL_FORMAT, "version": TILE_MODEL_VERSION,
                "classes": list(self.classes), "feature_names": list(self.feature_names),
                "feature_size": self.feature_size, "tile_size": self.tile_size,
                "tile_mpp": self.tile_mpp, "counts": dict(self.counts),
                "created": self.created, "params": dict(self.params),
                "sklearn": self.sklearn_version or sklearn.__version__,
                "napari_slideseg": __version__}

    # -- data ---------------------------------------------------------------------------
    def features(self, tiles: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """The features of ``tiles`` this classifier learns from: (B, F) float32."""
        return tile_features(tiles, feature_size=self.feature_size)

    def _as_features(self, data: Any) -> tuple[np.ndarray, int | None]:
        """Features of tiles, or features as given; and the tiles' side when known."""
        if isinstance(data, np.ndarray) and data.ndim == 2:
            return self._check_features(data), None
        if not isinstance(data, np.ndarray):
            data = list(data)
            if data and np.asarray(data[0]).ndim == 1:
                return self._check_features(np.asarray(data, np.float32)), None
        if isinstance(data, np.ndarray):
            size = int(data.shape[1]) if data.ndim == 4 and data.shape[1] == data.shape[2] \
                else None
        else:
            shapes = {np.shape(t)[:2] for t in data}
            only = next(iter(shapes)) if len(shapes) == 1 else None
            size = int(only[0]) if only is not None and only[0] == only[1] else None
        return self.features(data), size

    def _check_features(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ClassifierError(
                f"features of shape {x.shape}: the classifier uses {len(self.feature_names)} "
                "features per tile (tile_features() gives them), one row per tile.")
        return x

    def _training_set(self, data: Any, labels: Any) -> tuple[np.ndarray, np.ndarray,
                                                             int | None]:
        x, size = self._as_features(data)
        given = _labels(labels, len(x))
        rows = np.flatnonzero(given != None)  # noqa: E711  (object array)
        y = given[rows].astype(str)
        names = sorted(set(y.tolist()))
        if len(names) < 2:
            raise ClassifierError(
                "training needs tiles of at least two classes; "
                f"{'only ' + repr(names[0]) + ' is' if names else 'none is'} given "
                f"({len(rows)} labelled tile{'s' if len(rows) != 1 else ''}). Annotate "
                "another class, or keep 'other' tiles from tissue outside the annotations.")
        return x[rows], y, size

    def _forest(self) -> Any:
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(**self.params)

    # -- training -------------------------------------------------------------------------
    def fit(self, tiles_or_features: Any, labels: Any, *, tile_mpp: float | None = None,
            tile_size: int | None = None) -> TileClassifier:
        """Train on labelled tiles (or on their features).

        Parameters
        ----------
        tiles_or_features : (B, S, S, 3) uint8 array, list of tiles, or (B, F) array
            The training tiles, or their :meth:`features`.
        labels : sequence of str
            The class of each tile; None (or '') for tiles to leave out. At least two
            classes are needed.
        tile_mpp : float, optional
            Pixel size of the tiles in µm, recorded in the model file so that
            predictions can read tiles at the same resolution.
        tile_size : int, optional
            Side of the tiles in pixels (taken from the tiles when they are given).

        Returns
        -------
        TileClassifier
            ``self``, fitted.
        """
        x, y, size = self._training_set(tiles_or_features, labels)
        return self._fit(x, y, tile_mpp=tile_mpp,
                         tile_size=tile_size if tile_size is not None else size)

    def fit_features(self, x: np.ndarray, y: Any, *, tile_mpp: float | None = None,
                     tile_size: int | None = None) -> TileClassifier:
        """Train on a (B, F) feature matrix (from :meth:`features`) and its labels."""
        x, y, _ = self._training_set(self._check_features(x), y)
        return self._fit(x, y, tile_mpp=tile_mpp, tile_size=tile_size)

    def _fit(self, x: np.ndarray, y: np.ndarray, *, tile_mpp: float | None,
             tile_size: int | None) -> TileClassifier:
        import sklearn

        model = self._forest()
        model.fit(x, y)
        self.model_ = model
        self.classes = [str(c) for c in model.classes_]
        names, counts = np.unique(y, return_counts=True)
        self.counts = {str(n): int(c) for n, c in zip(names, counts, strict=True)}
        self.feature_names = list(FEATURE_NAMES)
        self.tile_size = int(tile_size) if tile_size is not None else None
        self.tile_mpp = float(tile_mpp) if tile_mpp is not None else None
        self.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.sklearn_version = sklearn.__version__
        self._training = (x, y)
        return self

    def cross_validate(self, tiles_or_features: Any = None, labels: Any = None, *,
                       k: int = 5) -> TileCrossValidation:
        """Accuracy of this classifier's settings in stratified k-fold cross-validation.

        The labelled tiles (by default those of the last :meth:`fit`) are split into
        ``k`` parts keeping the class proportions (shuffled with the seed); each part is
        classified by a forest trained on the others. ``k`` is lowered to the number of
        tiles of the smallest class when that is smaller; every class needs at least two
        tiles. Does not change the fitted model.
        """
        from .classify import stratified_cv

        if k < 2:
            raise ClassifierError(f"cross-validation needs at least 2 folds, not {k}.")
        if tiles_or_features is None:
            if self._training is None:
                raise ClassifierError("give tiles (or features) and labels to "
                                      "cross-validate, or fit() first.")
            x, y = self._training
        else:
            if labels is None:
                raise ClassifierError("give the labels of the tiles to cross-validate.")
            x, y, _ = self._training_set(tiles_or_features, labels)
        return stratified_cv(self._forest(), x, y, k, self.params["random_state"], "tiles",
                             TileCrossValidation)

    # -- prediction -----------------------------------------------------------------------
    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ClassifierError("the tile classifier is not trained: call fit() or load "
                                  "a model first.")

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (columns in :attr:`classes` order) of feature rows:
        (B, C) float32."""
        self._require_fitted()
        x = self._check_features(x)
        if not len(x):
            return np.zeros((0, len(self.classes)), np.float32)
        return self.model_.predict_proba(x).astype(np.float32)

    def predict_proba(self, tiles: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities of each tile: (B, C) float32, rows summing to 1."""
        self._require_fitted()
        if not _batch_length(tiles):
            return np.zeros((0, len(self.classes)), np.float32)
        return self.predict_features(self.features(tiles))

    def predict(self, tiles: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """The most probable class of each tile: (B,) array of str."""
        p = self.predict_proba(tiles)
        return np.asarray(self.classes, object)[p.argmax(axis=1)] if len(p) else \
            np.zeros(0, object)

    def feature_importances(self) -> dict[str, float]:
        """Mean decrease in impurity of each feature, largest first."""
        self._require_fitted()
        pairs = zip(self.feature_names, self.model_.feature_importances_, strict=True)
        return dict(sorted(((n, float(v)) for n, v in pairs), key=lambda p: -p[1]))

    # -- files ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted classifier to ``path`` (joblib, written atomically).

        The file holds the forest and :attr:`metadata`: the format tag and version, the
        classes, feature names, the training tiles' size and pixel size, the number of
        training tiles of each class, and when the model was made. Conventionally
        ``*.joblib``.
        """

        self._require_fitted()
        path = Path(path)
        if not path.parent.is_dir():
            raise ClassifierError(f"{path}: the folder {path.parent} does not exist.")
        state = {"metadata": self.metadata, "estimator": self.model_}
        return dump_atomic(state, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, n_jobs: int | None = None
             ) -> TileClassifier:
        """Read a classifier written by :meth:`save`.

        Warning: model files are pickles, and unpickling runs code stored in the file.
        Only load model files from trusted sources (your own, or a colleague's you
        trust); never one downloaded from an unknown place.

        Parameters
        ----------
        path : path
            The model file.
        n_jobs : int, optional
            Threads the forest predicts with (default: those it was saved with).

        Raises
        ------
        ClassifierError
            The file does not exist, is not a tile classifier saved by napari-slideseg,
            or was trained on other features than this version computes.
        """
        import joblib
        from sklearn.ensemble import RandomForestClassifier

        path = Path(path)
        if not path.is_file():
            raise ClassifierError(f"{path}: no such model file.")
        foreign = (f"{path}: not a tile classifier saved by napari-slideseg. Model files "
                   "must come from trusted sources: loading one (joblib) can run code.")
        try:
            with warnings.catch_warnings():
                # a model from another scikit-learn version still loads
                warnings.simplefilter("ignore")
                state = joblib.load(path)
        except Exception as exc:
            raise ClassifierError(f"{foreign} ({type(exc).__name__}: {exc})") from None
        meta = state.get("metadata") if isinstance(state, dict) else None
        if not isinstance(meta, dict) or meta.get("format") != TILE_MODEL_FORMAT:
            raise ClassifierError(foreign)
        if int(meta.get("version", 0)) > TILE_MODEL_VERSION:
            raise ClassifierError(f"{path}: saved by a newer napari-slideseg (tile model "
                                  f"format {meta.get('version')}); upgrade to load it.")
        names = [str(n) for n in meta.get("feature_names") or []]
        if names != list(FEATURE_NAMES):
            raise ClassifierError(
                f"{path}: the classifier was trained on {len(names)} tile features that "
                f"differ from the {len(FEATURE_NAMES)} this version of napari-slideseg "
                f"computes (model made with napari-slideseg {meta.get('napari_slideseg')}). "
                "Train it again from its annotations.")
        model = state.get("estimator")
        classes = [str(c) for c in meta.get("classes") or []]
        if not isinstance(model, RandomForestClassifier) or \
                [str(c) for c in getattr(model, "classes_", [])] != classes or \
                getattr(model, "n_features_in_", None) != len(names):
            raise ClassifierError(f"{path}: the model file is damaged (its forest does not "
                                  "match its classes and features); train it again.")
        params = dict(meta.get("params") or {})
        out = cls(**{k: v for k, v in params.items()
                     if k in ("n_estimators", "class_weight", "min_samples_leaf",
                              "random_state", "n_jobs")},
                  feature_size=int(meta.get("feature_size", FEATURE_SIZE)))
        if n_jobs is not None:
            out.params["n_jobs"] = n_jobs
            model.n_jobs = n_jobs
        out.model_ = model
        out.classes = classes
        out.feature_names = names
        out.tile_size = None if meta.get("tile_size") is None else int(meta["tile_size"])
        out.tile_mpp = None if meta.get("tile_mpp") is None else float(meta["tile_mpp"])
        out.counts = {str(k): int(v) for k, v in (meta.get("counts") or {}).items()}
        out.created = str(meta.get("created", ""))
        out.sklearn_version = str(meta.get("sklearn", ""))
        return out


# -- user models -----------------------------------------------------------------------------


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|


def _triple(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value, np.float32).ravel()
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3 or not np.all(np.isfinite(arr)):
        raise SlideSegError(f"{name} must be one number or three (R, G, B), not {value!r}.")
    return arr


def _to_numpy(out: Any) -> np.ndarray:
    if isinstance(out, (tuple, list)) and out and getattr(out[0], "ndim", 0) >= 2:
        out = out[0]  # models returning (logits, ...): the first output
    if hasattr(out, "detach"):  # a torch tensor
        out = out.detach().cpu().numpy()
    return np.asarray(out)


class _NetworkModel:
    """Normalisation, batching and output activation shared by the user models."""

    kind = "model"

    def __init__(self, classes: Sequence[str], input_size: int | None = None,
                 mean: Sequence[float] | float = (0.0, 0.0, 0.0),
                 std: Sequence[float] | float = (1.0, 1.0, 1.0), scale: float = 1 / 255,
                 channels_first: bool = True, activation: str = "auto",
                 batch_size: int | None = None) -> None:
        if isinstance(classes, str) or not len(classes):
            raise SlideSegError("give the class names of the model's outputs, in order, as "
                                "a list (e.g. ['tumour', 'other']).")
        self.classes = [str(c) for c in classes]
        if len(set(self.classes)) != len(self.classes):
            raise SlideSegError(f"class names must differ: {self.classes}.")
        if input_size is not None and int(input_size) < 1:
            raise SlideSegError(f"input_size must be a positive number of pixels, not "
                                f"{input_size}.")
        self.input_size = None if input_size is None else int(input_size)
        self.mean = _triple(mean, "mean")
        self.std = _triple(std, "std")
        if np.any(self.std == 0):
            raise SlideSegError(f"std must not be 0: {std!r}.")
        self.scale = float(scale)
        self.channels_first = bool(channels_first)
        if activation not in ACTIVATIONS:
            raise SlideSegError(f"activation {activation!r}: use one of "
                                f"{', '.join(ACTIVATIONS)}.")
        self.activation = activation
        if batch_size is not None and int(batch_size) < 1:
            raise SlideSegError(f"batch_size must be at least 1, not {batch_size}.")
        self.batch_size = None if batch_size is None else int(batch_size)
        self._fixed_batch: int | None = None  # a model that takes exactly this many tiles
        self._dtype: Any = np.float32

    def __repr__(self) -> str:
        size = f"{self.input_size} px" if self.input_size else "any size"
        return f"{type(self).__name__}({self._source()}, classes {self.classes}, {size})"

    def _source(self) -> str:
        return self.kind

    def _run(self, x: np.ndarray) -> Any:
        raise NotImplementedError

    def normalise(self, tiles: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 -> the model's input: normalised, channels first or last."""
        if self._dtype == np.uint8:
            x = tiles
        else:
            x = (tiles.astype(np.float32) * np.float32(self.scale) - self.mean) / self.std
            x = x.astype(self._dtype, copy=False)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.channels_first else x)

    def _activate(self, z: np.ndarray) -> np.ndarray:
        z = z.astype(np.float64)
        if self.activation == "softmax":
            return _softmax(z)
        if self.activation == "sigmoid":
            return _sigmoid(z)
        if self.activation == "none" or not len(z):
            return z
        if z.shape[1] == 1:  # one output: a probability already, or a logit
            return z if np.all((z >= 0) & (z <= 1)) else _sigmoid(z)
        if np.any(z < 0) or np.any(np.abs(z.sum(axis=1) - 1.0) > 1e-3):
            return _softmax(z)
        return z

    def predict_proba(self, tiles: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities of each tile: (B, C) float32.

        Tiles are resized to :attr:`input_size` (pixel-area interpolation) when it is
        set and they differ, normalised, given to the model in batches of at most
        ``batch_size`` (of exactly the model's batch size when its input fixes one),
        and the outputs pass through the activation.
        """
        c = len(self.classes)
        if not _batch_length(tiles):
            return np.zeros((0, c), np.float32)
        batch = resize_tiles(tiles, self.input_size)
        n = len(batch)
        step = self._fixed_batch or self.batch_size or n
        parts = []
        for start in range(0, n, step):
            chunk = batch[start:start + step]
            short = 0
            if self._fixed_batch and len(chunk) < self._fixed_batch:
                short = self._fixed_batch - len(chunk)  # pad a fixed-size batch
                chunk = np.concatenate([chunk, np.zeros((short, *chunk.shape[1:]),
                                                        chunk.dtype)])
            out = _to_numpy(self._run(self.normalise(chunk)))
            if c == 1 and out.ndim == 1:
                out = out[:, None]
            if out.ndim != 2 or out.shape[1] != c or out.shape[0] != len(chunk):
                raise SlideSegError(
                    f"{self._source()}: the model gave outputs of shape {out.shape} for "
                    f"{len(chunk)} tiles; expected ({len(chunk)}, {c}), one score per "
                    f"class of {self.classes}. Check the class names declared.")
            parts.append(out[:len(out) - short])
        z = np.concatenate(parts).astype(np.float64)
        if not np.all(np.isfinite(z)):
            raise SlideSegError(f"{self._source()}: the model gave NaN or infinite outputs.")
        return self._activate(z).astype(np.float32)


class CallableModel(_NetworkModel):
    """A Python function as a tile classifier.

    Parameters
    ----------
    fn : callable
        Takes the normalised float32 batch, (B, 3, H, W) with ``channels_first`` or
        (B, H, W, 3) without, and returns (B, C) scores (a NumPy array, a CPU torch
        tensor or anything :func:`numpy.asarray` takes).
    classes : sequence of str
        Names of the C outputs, in order.
    input_size : int, optional
        Tile side the function wants; tiles are resized to it when they differ (pixel
        area interpolation). None: tiles at their own size.
    mean, std : three floats (or one)
        Per-channel normalisation after scaling: ``(tile * scale - mean) / std``.
    scale : float
        Factor applied to the 0-255 pixel values first (1/255: values 0-1).
    channels_first : bool
        (B, 3, H, W) input (PyTorch convention) rather than (B, H, W, 3).
    activation : {'auto', 'softmax', 'sigmoid', 'none'}
        Applied to the outputs: 'softmax' for logits of exclusive classes, 'sigmoid'
        for independent (multi-label) logits, 'none' for outputs that are probabilities
        already; 'auto' applies a softmax unless every row of a batch is already
        non-negative and sums to 1 (within 1e-3).
    batch_size : int, optional
        Largest number of tiles per call (None: the whole batch given).
    """

    kind = "callable"

    def __init__(self, fn: Callable[[np.ndarray], Any], classes: Sequence[str],
                 input_size: int | None = None,
                 mean: Sequence[float] | float = (0.0, 0.0, 0.0),
                 std: Sequence[float] | float = (1.0, 1.0, 1.0), scale: float = 1 / 255,
                 channels_first: bool = True, activation: str = "auto",
                 batch_size: int | None = None) -> None:
        if not callable(fn):
            raise SlideSegError(f"{fn!r} is not callable.")
        super().__init__(classes, input_size, mean, std, scale, channels_first, activation,
                         batch_size)
        self.fn = fn

    def _source(self) -> str:
        return getattr(self.fn, "__name__", type(self.fn).__name__)

    def _run(self, x: np.ndarray) -> Any:
        return self.fn(x)


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
              "tensor(double)": np.float64, "tensor(uint8)": np.uint8}


class OnnxModel(_NetworkModel):
    """An ONNX model file as a tile classifier (onnxruntime, CPU).

    Parameters are those of :class:`CallableModel` (the function being the model's
    first input and output), and:

    path : path
        The ``.onnx`` file.
    input_size : int, optional
        Default: read from the model's input shape when it is fixed.
    channels_first : bool, optional
        Default: from the input shape ((B, 3, H, W) or (B, H, W, 3)); channels first
        when the shape does not tell.
    threads : int, optional
        Threads onnxruntime uses within an operation (None: its default, all cores).

    A model whose input fixes the batch size is run that many tiles at a time. A model
    with a uint8 input gets the tiles unnormalised (it normalises them itself).
    """

    kind = "onnx"

    def __init__(self, path: str | os.PathLike[str], classes: Sequence[str],
                 input_size: int | None = None,
                 mean: Sequence[float] | float = (0.0, 0.0, 0.0),
                 std: Sequence[float] | float = (1.0, 1.0, 1.0), scale: float = 1 / 255,
                 channels_first: bool | None = None, activation: str = "auto",
                 batch_size: int | None = None, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise SlideSegError("ONNX models need onnxruntime: pip install "
                                "napari-slideseg[onnx]") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise SlideSegError(f"{self.path}: no such model file.")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise SlideSegError(f"{self.path}: onnxruntime cannot load the model "
                                f"({type(exc).__name__}: {exc}).") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise SlideSegError(f"{self.path}: the model has {len(inputs)} inputs "
                                f"({', '.join(i.name for i in inputs)}); a tile classifier "
                                "takes one, the image batch.")
        first = inputs[0]
        shape = list(first.shape)
        if len(shape) != 4:
            raise SlideSegError(f"{self.path}: the model's input {first.name!r} has shape "
                                f"{shape}; a tile classifier takes (B, 3, H, W) or "
                                "(B, H, W, 3).")
        if channels_first is None:
            channels_first = not (shape[3] == 3 and shape[1] != 3)
        spatial = shape[2:4] if channels_first else shape[1:3]
        fixed = [d if isinstance(d, int) and d > 0 else None for d in spatial]
        if fixed[0] is not None and fixed[1] is not None:
            if fixed[0] != fixed[1]:
                raise SlideSegError(f"{self.path}: the model takes {fixed[0]} x {fixed[1]} "
                                    "inputs; tiles are square.")
            if input_size is None:
                input_size = fixed[0]
            elif int(input_size) != fixed[0]:
                raise SlideSegError(f"{self.path}: the model takes {fixed[0]}-pixel inputs, "
                                    f"not input_size {input_size}.")
        super().__init__(classes, input_size, mean, std, scale, channels_first, activation,
                         batch_size)
        if first.type not in _ORT_TYPES:
            raise SlideSegError(f"{self.path}: the model's input is {first.type}; float, "
                                "float16, double or uint8 images are supported.")
        self._dtype = _ORT_TYPES[first.type]
        self.input_name = first.name
        self.output_name = self.session.get_outputs()[0].name
        batch = shape[0]
        self._fixed_batch = batch if isinstance(batch, int) and batch > 0 else None

    def _source(self) -> str:
        return str(self.path)

    def _run(self, x: np.ndarray) -> Any:
        return self.session.run([self.output_name], {self.input_name: x})[0]


class TorchScriptModel(_NetworkModel):
    """A TorchScript file (``torch.jit.save``) as a tile classifier, run on the CPU.

    Parameters are those of :class:`CallableModel` (the function being the module),
    and ``path``, the TorchScript file. TorchScript files do not record their input
    size: give ``input_size`` (None: tiles at their own size). The module runs in
    evaluation mode without gradients; a module returning a tuple gives its first
    element.
    """

    kind = "torchscript"

    def __init__(self, path: str | os.PathLike[str], classes: Sequence[str],
                 input_size: int | None = None,
                 mean: Sequence[float] | float = (0.0, 0.0, 0.0),
                 std: Sequence[float] | float = (1.0, 1.0, 1.0), scale: float = 1 / 255,
                 channels_first: bool = True, activation: str = "auto",
                 batch_size: int | None = None) -> None:
        try:
            import torch
        except ImportError:
            raise SlideSegError("TorchScript models need PyTorch: pip install "
                                "napari-slideseg[torch]") from None
        super().__init__(classes, input_size, mean, std, scale, channels_first, activation,
                         batch_size)
        self.path = Path(path)
        if not self.path.is_file():
            raise SlideSegError(f"{self.path}: no such model file.")
        try:
            with warnings.catch_warnings():
                # PyTorch 2.10+ deprecates TorchScript in favour of torch.export; the
                # files still load, and the warning is not the user's to act on
                warnings.filterwarnings("ignore", category=DeprecationWarning,
                                        message=".*torch.jit")
                self.module = torch.jit.load(str(self.path), map_location="cpu")
        except Exception as exc:
            raise SlideSegError(f"{self.path}: not a TorchScript file torch can load "
                                f"({type(exc).__name__}: {exc}). Save the model with "
                                "torch.jit.save(torch.jit.script(model), path).") from None
        self.module.eval()
        self._torch = torch

    def _source(self) -> str:
        return str(self.path)

    def _run(self, x: np.ndarray) -> Any:
        torch = self._torch
        with torch.no_grad():
            out = self.module(torch.from_numpy(x))
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return _to_numpy(out)


# -- files -----------------------------------------------------------------------------------


def sidecar_path(path: str | os.PathLike[str]) -> Path | None:
    """The JSON file declaring a model's classes and input: ``<model file>.json`` (e.g.
    ``net.onnx.json``) or, failing that, the model's name with ``.json`` (``net.json``);
    None when neither exists."""
    path = Path(path)
    for candidate in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if candidate.is_file() and candidate != path:
            return candidate
    return None


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SlideSegError(f"{path}: not a readable JSON file ({exc}).") from None
    if not isinstance(data, Mapping):
        raise SlideSegError(f"{path}: expected a JSON object with keys "
                            f"{', '.join(_SIDECAR_KEYS)}.")
    if "classes" in data and (isinstance(data["classes"], str)
                              or not isinstance(data["classes"], list)):
        raise SlideSegError(f"{path}: 'classes' must be a list of class names.")
    return {k: data[k] for k in _SIDECAR_KEYS if k in data}


def load_model(path: str | os.PathLike[str], classes: Sequence[str] | None = None,
               input_size: int | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, **options: Any) -> TileModel:
    """Open a tile classifier file, choosing the kind by its suffix.

    Parameters
    ----------
    path : path
        ``.joblib`` / ``.pkl`` (:class:`TileClassifier`, saved by napari-slideseg),
        ``.onnx`` (:class:`OnnxModel`) or ``.pt`` / ``.pth`` / ``.ts`` / ``.torchscript``
        (:class:`TorchScriptModel`).
    classes, input_size, mean, std : optional
        The declaration of a user model. Arguments left out are read from the JSON
        file next to the model (:func:`sidecar_path`), which may also give ``scale``,
        ``channels_first``, ``activation`` and ``batch_size``. Classes are needed for
        user models, and the input size for TorchScript (ONNX models usually record
        it; ``"input_size": null`` in the JSON file passes tiles at their own size).
        For the built-in classifier, which records its classes, ``classes`` is checked
        against them and the rest does not apply.
    **options
        Other arguments of the model class (e.g. ``n_jobs`` for the built-in
        classifier, ``threads`` for ONNX).

    Raises
    ------
    SlideSegError
        Unknown suffix, missing file, or a user model without its class names or input
        size.
    """
    path = Path(path)
    if not path.is_file():
        raise SlideSegError(f"{path}: no such model file.")
    suffix = path.suffix.lower()
    if suffix in MODEL_SUFFIXES["forest"]:
        try:
            model = TileClassifier.load(path, **options)
        except TypeError as exc:
            raise SlideSegError(f"{path}: {exc}") from None
        if classes is not None and [str(c) for c in classes] != model.classes:
            raise SlideSegError(f"{path}: the classifier's classes are {model.classes}, not "
                                f"{list(classes)}.")
        return model
    kinds = {s: k for k, suffixes in MODEL_SUFFIXES.items() for s in suffixes}
    if suffix not in kinds:
        known = ", ".join(s for suffixes in MODEL_SUFFIXES.values() for s in suffixes)
        raise SlideSegError(f"{path}: unknown model file type {suffix or '(no suffix)'!r}; "
                            f"napari-slideseg opens {known}.")
    sidecar = sidecar_path(path)
    declared = _read_sidecar(sidecar) if sidecar is not None else {}
    given = {"classes": classes, "input_size": input_size, "mean": mean, "std": std}
    declared.update({k: v for k, v in given.items() if v is not None})
    example = path.with_name(path.name + ".json")
    if not declared.get("classes"):
        raise SlideSegError(
            f"{path}: the names of the model's output classes are not declared. Pass "
            f"classes=[...] (CLI: --classes), or write them in {example.name} next to the "
            'model: {"classes": ["tumour", "other"], "input_size": 224, '
            '"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}.')
    kind = kinds[suffix]
    if kind == "torchscript" and "input_size" not in declared:
        raise SlideSegError(
            f"{path}: a TorchScript file does not record the input size its model takes. "
            f"Pass input_size (CLI: --input-size), or write it in {example.name} next to "
            'the model: {"input_size": 224} ("input_size": null for tiles at their own '
            "size).")
    declared.update(options)
    cls = OnnxModel if kind == "onnx" else TorchScriptModel
    try:
        return cls(path, **declared)
    except TypeError as exc:
        raise SlideSegError(f"{path}: {exc}") from None
