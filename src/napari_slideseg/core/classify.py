"""Object classification: a random forest on measured features, and per-class summaries.

:class:`ObjectClassifier` learns classes given by hand to some rows of a
:func:`~napari_slideseg.measure` table (one row per object) from chosen feature columns,
and classifies the other rows. It is a scikit-learn ``RandomForestClassifier`` with a
fixed seed, so the same table and the same hand-given classes give the same model and
the same predictions. A fitted classifier remembers the feature columns it was trained
on, the fill values of their missing entries, and its class names; it refuses a table
that lacks one of those columns rather than guessing.

:func:`summarize_classes` counts the objects of each class, adds up their areas and
gives the area fraction and the density (objects per mm²) of each class in the tissue,
or in the area the objects cover when no tissue area is known.

Model files are written with joblib (a pickle). Loading a pickle can run any code it
holds: load model files only from sources you trust, such as your own saved models.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import SlideSegError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MODEL_FORMAT", "UNCLASSIFIED", "ClassifierError", "CrossValidation",
           "ObjectClassifier", "default_features", "summarize_classes"]

#: Marks a file written by :meth:`ObjectClassifier.save`.
MODEL_FORMAT = "napari-slideseg object classifier"
MODEL_VERSION = 1
#: Name of the row of objects without a class in :func:`summarize_classes`.
UNCLASSIFIED = "Unclassified"

#: Columns that say where an object is, or name it, rather than what it looks like: not
#: features by default (a classifier trained on positions learns the slide's layout).
_NOT_FEATURES = ("label", "index", "pixels", "orientation")
_NOT_FEATURE_PREFIXES = ("centroid_", "bbox_", "class")


class ClassifierError(SlideSegError):
    """A classifier cannot be trained, applied, saved or loaded as asked."""


def default_features(df: pd.DataFrame) -> list[str]:
    """The numeric columns of a :func:`~napari_slideseg.measure` table that describe an
    object's size, shape and intensities, in table order.

    Left out: ``label``, positions (``centroid_*``, ``bbox_*``), ``pixels`` (the area at
    the labels' resolution, which depends on the level measured), ``orientation`` (an
    angle on the slide, not a property of the object) and ``class*`` columns.
    """
    import pandas as pd

    out = []
    for column in df.columns:
        name = str(column)
        if name in _NOT_FEATURES or name.startswith(_NOT_FEATURE_PREFIXES):
            continue
        series = df[column]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            out.append(name)
    return out


def _given_classes(df: pd.DataFrame, classes: Any) -> np.ndarray:
    """The hand-given class of each row as an object array, None where there is none.

    ``classes`` is a column name of ``df``, a sequence aligned with its rows, or a
    mapping label id -> class name (matched on ``df["label"]``).
    """
    import pandas as pd

    if isinstance(classes, str):
        if classes not in df.columns:
            raise ClassifierError(f"the table has no column {classes!r} of classes.")
        values = df[classes].to_numpy(object)
    elif isinstance(classes, Mapping):
        if "label" not in df.columns:
            raise ClassifierError("classes given per label need a 'label' column.")
        values = np.array([classes.get(int(v)) for v in df["label"].to_numpy()], object)
    else:
        if isinstance(classes, pd.Series) and classes.index.equals(df.index):
            values = classes.to_numpy(object)
        else:
            values = np.asarray(list(classes), object)
        if len(values) != len(df):
            raise ClassifierError(f"{len(values)} classes given for a table of {len(df)} "
                                  "rows: give one per row (None where unknown), a column "
                                  "name, or a mapping label -> class.")
    out = np.empty(len(values), object)
    for i, v in enumerate(values):
        missing = v is None or (isinstance(v, float) and math.isnan(v)) or \
            (isinstance(v, str) and not v.strip()) or v is pd.NA
        out[i] = None if missing else str(v)
    return out


@dataclass
class CrossValidation:
    """Accuracy of a classifier in k-fold cross-validation (stratified, shuffled, seeded)."""

    mean: float
    std: float
    scores: list[float]
    folds: int
    n: int  # labelled objects used
    classes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"accuracy {100 * self.mean:.1f} ± {100 * self.std:.1f} % ({self.folds}-fold, "
                f"{self.n} objects)")


def dump_atomic(state: Any, path: Path) -> Path:
    """``joblib.dump`` to a hidden file beside ``path``, then rename it: never a half
    model file (the folder must exist)."""
    import joblib

    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        joblib.dump(state, name, compress=3)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return path


def stratified_cv(forest: Any, x: np.ndarray, y: np.ndarray, folds: int, seed: int,
                  what: str, result: type[CrossValidation] = CrossValidation
                  ) -> CrossValidation:
    """Accuracy of ``forest`` in stratified k-fold cross-validation (shuffled with
    ``seed``); ``folds`` is lowered to the size of the smallest class, which needs at
    least two of ``what`` (e.g. 'labelled objects')."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    names, counts = np.unique(y, return_counts=True)
    k = int(min(folds, counts.min()))
    if k < 2:
        small = [str(n) for n, c in zip(names, counts, strict=True) if c < 2]
        raise ClassifierError(f"cross-validation needs at least two {what} of each class; "
                              f"{', '.join(small)} {'has' if len(small) == 1 else 'have'} "
                              "one.")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    scores = cross_val_score(forest, x, y, cv=splitter, scoring="accuracy")
    return result(float(np.mean(scores)), float(np.std(scores)), [float(s) for s in scores],
                  k, int(len(y)), [str(n) for n in names])


class ObjectClassifier:
    """A random forest that classifies the objects of a measurement table.

    Parameters
    ----------
    features : sequence of str, optional
        Feature columns to learn from. Default: :func:`default_features` of the table
        given to :meth:`fit`.
    n_estimators : int
        Trees in the forest.
    min_samples_leaf : int
        Smallest number of training objects in a leaf.
    class_weight : {'balanced', None}
        'balanced' weighs classes inversely to how many objects were labelled, so that a
        class given a few examples is not drowned by one given many.
    random_state : int
        Seed of the forest and of the cross-validation folds: the same data give the
        same model and predictions.
    n_jobs : int, optional
        Threads used by the forest (None: one).

    Attributes
    ----------
    features_ : list of str
        The feature columns of the fitted model, in order.
    classes_ : list of str
        Class names of the fitted model, sorted.
    fill_ : dict of str -> float
        Median of each feature over the training objects, put in place of missing
        (NaN) values before training and prediction.

    Notes
    -----
    Model files are pickles (joblib): :meth:`load` must only be given files from a
    trusted source, since unpickling a file can run any code it contains.
    """

    def __init__(self, features: Sequence[str] | None = None, *, n_estimators: int = 200,
                 min_samples_leaf: int = 1, class_weight: str | None = "balanced",
                 random_state: int = 0, n_jobs: int | None = None) -> None:
        if n_estimators < 1:
            raise ClassifierError(f"n_estimators must be >= 1, not {n_estimators}.")
        self.features = list(features) if features is not None else None
        self.params = {"n_estimators": int(n_estimators),
                       "min_samples_leaf": int(min_samples_leaf),
                       "class_weight": class_weight, "random_state": int(random_state),
                       "n_jobs": n_jobs}
        self.features_: list[str] = []
        self.classes_: list[str] = []
        self.fill_: dict[str, float] = {}
        self.model_: Any = None
        self.sklearn_version = ""  # of a loaded model: the version that trained it

    def __repr__(self) -> str:
        state = (f"fitted on {len(self.features_)} features, classes {self.classes_}"
                 if self.fitted else "not fitted")
        return f"ObjectClassifier({state})"

    @property
    def fitted(self) -> bool:
        """Whether the classifier has been trained (or loaded)."""
        return self.model_ is not None

    # -- data ---------------------------------------------------------------------------
    def _forest(self) -> Any:
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(**self.params)

    def _check_columns(self, df: pd.DataFrame, features: Sequence[str]) -> None:
        import pandas as pd

        missing = [f for f in features if f not in df.columns]
        if missing:
            raise ClassifierError(
                f"the table lacks the feature column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)}, which the classifier uses ({len(features)} "
                "features). Measure with the same options as the training table (e.g. "
                "with intensities and stains), or train a new classifier on this table.")
        bad = [f for f in features if not pd.api.types.is_numeric_dtype(df[f])]
        if bad:
            raise ClassifierError(f"feature column{'s' if len(bad) > 1 else ''} "
                                  f"{', '.join(bad)} {'are' if len(bad) > 1 else 'is'} not "
                                  "numeric.")

    def _matrix(self, df: pd.DataFrame, features: Sequence[str],
                fill: Mapping[str, float]) -> np.ndarray:
        # a copy: pandas may hand out read-only views of its columns
        x = np.array(df[list(features)].to_numpy(np.float64, na_value=np.nan), copy=True)
        x[~np.isfinite(x)] = np.nan
        for j, name in enumerate(features):
            column = x[:, j]
            column[np.isnan(column)] = fill.get(name, 0.0)
        return x

    def _training(self, df: pd.DataFrame, classes: Any
                  ) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, float]]:
        features = self.features if self.features is not None else default_features(df)
        if not features:
            raise ClassifierError("the table has no numeric feature column to learn from.")
        self._check_columns(df, features)
        given = _given_classes(df, classes)
        rows = np.flatnonzero(given != None)  # noqa: E711  (object array)
        y = given[rows].astype(str)
        names = sorted(set(y.tolist()))
        if len(names) < 2:
            raise ClassifierError(
                f"training needs objects of at least two classes; "
                f"{'only ' + repr(names[0]) + ' is' if names else 'none is'} given "
                f"({len(rows)} labelled object{'s' if len(rows) != 1 else ''}).")
        train = df.iloc[rows]
        fill = {}
        for name in features:
            values = train[name].to_numpy(np.float64, na_value=np.nan)
            values = values[np.isfinite(values)]
            fill[name] = float(np.median(values)) if values.size else 0.0
        return list(features), self._matrix(train, features, fill), y, fill

    # -- training -------------------------------------------------------------------------
    def fit(self, df: pd.DataFrame, classes: Any) -> ObjectClassifier:
        """Train on the rows of ``df`` that have a class.

        Parameters
        ----------
        df : DataFrame
            A measurement table, one row per object.
        classes : str, sequence or mapping
            The hand-given classes: the name of a column of ``df``, one value per row
            (None, NaN or '' for objects without a class), or a mapping label id ->
            class name. At least two classes are needed.

        Returns
        -------
        ObjectClassifier
            ``self``, fitted.
        """
        features, x, y, fill = self._training(df, classes)
        model = self._forest()
        model.fit(x, y)
        self.features_, self.fill_, self.model_ = features, fill, model
        self.classes_ = [str(c) for c in model.classes_]
        return self

    def cross_validate(self, df: pd.DataFrame, classes: Any, folds: int = 5) -> CrossValidation:
        """Accuracy of this classifier's settings in stratified k-fold cross-validation.

        The labelled rows are split into ``folds`` parts keeping the class proportions
        (shuffled with the seed); each part is classified by a forest trained on the
        others. ``folds`` is lowered to the size of the smallest class when that is
        smaller (each class needs at least two objects). Does not change the fitted
        model.
        """
        if folds < 2:
            raise ClassifierError(f"cross-validation needs at least 2 folds, not {folds}.")
        _, x, y, _ = self._training(df, classes)
        # missing values were filled with medians of all labelled rows, not of each
        # fold's training part: measurements rarely miss values, so scores barely move
        return stratified_cv(self._forest(), x, y, folds, self.params["random_state"],
                             "labelled objects")

    # -- prediction -----------------------------------------------------------------------
    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ClassifierError("the classifier is not trained: call fit() or load a "
                                  "model first.")

    def predict_proba(self, df: pd.DataFrame) -> pd.DataFrame:
        """Probability of each class (columns, in :attr:`classes_` order) for every row
        of ``df`` (same index)."""
        import pandas as pd

        self._require_fitted()
        self._check_columns(df, self.features_)
        if not len(df):
            return pd.DataFrame(np.zeros((0, len(self.classes_))), columns=self.classes_,
                                index=df.index)
        p = self.model_.predict_proba(self._matrix(df, self.features_, self.fill_))
        return pd.DataFrame(p, columns=self.classes_, index=df.index)

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        """The class of every row of ``df`` and its probability.

        Returns
        -------
        DataFrame
            Same index as ``df``; columns ``class`` (str) and ``probability`` (the
            forest's vote for that class, 0-1).
        """
        import pandas as pd

        p = self.predict_proba(df)
        values = p.to_numpy()
        best = values.argmax(axis=1) if len(values) else np.zeros(0, int)
        names = np.asarray(self.classes_, object)[best] if len(values) else \
            np.zeros(0, object)
        prob = values[np.arange(len(values)), best] if len(values) else np.zeros(0)
        return pd.DataFrame({"class": names, "probability": prob}, index=df.index)

    def feature_importances(self) -> pd.Series:
        """Mean decrease in impurity of each feature, largest first."""
        import pandas as pd

        self._require_fitted()
        return pd.Series(self.model_.feature_importances_, index=self.features_,
                         name="importance").sort_values(ascending=False)

    # -- files ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted classifier to ``path`` (joblib, written atomically).

        The file holds the forest, its feature columns, fill values and class names, and
        the scikit-learn version it was made with. Conventionally ``*.joblib``.
        """
        import sklearn

        self._require_fitted()
        path = Path(path)
        if not path.parent.is_dir():
            raise ClassifierError(f"{path}: the folder {path.parent} does not exist.")
        state = {"format": MODEL_FORMAT, "version": MODEL_VERSION,
                 "features": list(self.features_), "classes": list(self.classes_),
                 "fill": dict(self.fill_), "params": dict(self.params),
                 "sklearn": sklearn.__version__, "model": self.model_}
        return dump_atomic(state, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ObjectClassifier:
        """Read a classifier written by :meth:`save`.

        Warning: model files are pickles, and unpickling runs code stored in the file.
        Only load model files from trusted sources (your own, or a colleague's you
        trust); never one downloaded from an unknown place.

        Raises
        ------
        ClassifierError
            The file does not exist or is not a napari-slideseg classifier.
        """
        import warnings

        import joblib

        path = Path(path)
        if not path.is_file():
            raise ClassifierError(f"{path}: no such model file.")
        try:
            with warnings.catch_warnings():
                # a model from another scikit-learn version still loads; say so below
                warnings.simplefilter("ignore")
                state = joblib.load(path)
        except Exception as exc:
            raise ClassifierError(f"{path}: not a classifier saved by napari-slideseg "
                                  f"({type(exc).__name__}: {exc}).") from None
        if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
            raise ClassifierError(f"{path}: not a classifier saved by napari-slideseg.")
        if int(state.get("version", 0)) > MODEL_VERSION:
            raise ClassifierError(f"{path}: saved by a newer napari-slideseg (model format "
                                  f"{state.get('version')}); upgrade to load it.")
        params = dict(state.get("params") or {})
        out = cls(state["features"], **{k: v for k, v in params.items()
                                        if k in ("n_estimators", "min_samples_leaf",
                                                 "class_weight", "random_state", "n_jobs")})
        out.features_ = [str(f) for f in state["features"]]
        out.classes_ = [str(c) for c in state["classes"]]
        out.fill_ = {str(k): float(v) for k, v in state["fill"].items()}
        out.model_ = state["model"]
        out.sklearn_version = str(state.get("sklearn", ""))
        return out


# -- summaries -------------------------------------------------------------------------------


def summarize_classes(df: pd.DataFrame, *, tissue_area_um2: float | None = None,
                      field_area_um2: float | None = None,
                      class_column: str = "class") -> pd.DataFrame:
    """Count, area, area fraction and density of the objects of each class.

    Parameters
    ----------
    df : DataFrame
        A measurement table with ``area_um2`` (or ``area_px2`` without a pixel size) and,
        optionally, a class column.
    tissue_area_um2 : float, optional
        Area of the tissue (or any reference region) the objects lie in, µm² (in the
        area column's units for a table in pixels). Gives the fraction of the tissue
        each class covers and the densities.
    field_area_um2 : float, optional
        Area of the field measured (e.g. the whole labelled image), µm²: the density
        reference when no tissue area is given.
    class_column : str
        The column holding each object's class; rows without one are
        :data:`UNCLASSIFIED`.

    Returns
    -------
    DataFrame
        One row per class (sorted by name, unclassified last) and a last ``All`` row.
        Columns: ``class``, ``count``, ``area_um2`` (sum; ``area_px2`` without a pixel
        size), ``area_fraction`` (of the tissue area when given, else of the area of all
        objects), ``density_per_mm2`` (count per mm² of the tissue, else of the field;
        NaN when neither is known or areas are in pixels).
    """
    import pandas as pd

    area_col = "area_um2" if "area_um2" in df.columns else \
        ("area_px2" if "area_px2" in df.columns else None)
    if area_col is None:
        raise ClassifierError("the table has no area column (area_um2 or area_px2).")
    area = df[area_col].to_numpy(np.float64, na_value=np.nan)
    if class_column in df.columns:
        given = _given_classes(df, class_column)
        names = np.array([UNCLASSIFIED if v is None else v for v in given], object)
    else:
        names = np.full(len(df), UNCLASSIFIED, object)
    order = sorted(set(names.tolist()), key=lambda n: (n == UNCLASSIFIED, n))
    in_um = area_col == "area_um2"
    total = float(np.nansum(area))
    reference = tissue_area_um2 if tissue_area_um2 is not None else total
    density_ref = tissue_area_um2 if tissue_area_um2 is not None else field_area_um2
    rows = []
    for name in [*order, "All"]:
        mask = np.ones(len(df), bool) if name == "All" else names == name
        count = int(mask.sum())
        a = float(np.nansum(area[mask]))
        rows.append({
            "class": name, "count": count, area_col: a,
            "area_fraction": a / reference if reference and reference > 0 else math.nan,
            "density_per_mm2": count / (density_ref / 1e6)
            if in_um and density_ref and density_ref > 0 else math.nan})
    return pd.DataFrame(rows, columns=["class", "count", area_col, "area_fraction",
                                       "density_per_mm2"])
