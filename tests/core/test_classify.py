"""Object classification: known answers on two separable populations, model files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from napari_slideseg import SlideSegError, measure
from napari_slideseg.core.classify import (
    UNCLASSIFIED,
    ClassifierError,
    ObjectClassifier,
    default_features,
    summarize_classes,
)

MPP = 0.5


def populations(n_side=8, seed=0):
    """Labels and an RGB image of two kinds of nuclei on a grid, and the truth.

    Kind "small": radius 5-7 px, dark purple; kind "large": radius 11-13 px, pale pink.
    Kinds alternate at random; returns (labels, rgb, {label: kind}).
    """
    rng = np.random.default_rng(seed)
    step = 40
    h = w = n_side * step
    yy, xx = np.mgrid[0:h, 0:w]
    labels = np.zeros((h, w), np.int32)
    rgb = np.full((h, w, 3), 235, np.uint8)
    truth = {}
    label = 0
    for i in range(n_side):
        for j in range(n_side):
            label += 1
            kind = "small" if rng.random() < 0.5 else "large"
            r = rng.uniform(5, 7) if kind == "small" else rng.uniform(11, 13)
            cy, cx = i * step + 20 + rng.uniform(-3, 3), j * step + 20 + rng.uniform(-3, 3)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            labels[inside] = label
            colour = (90, 40, 140) if kind == "small" else (230, 150, 190)
            noise = rng.integers(-12, 13, (int(inside.sum()), 3))
            rgb[inside] = np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)
            truth[label] = kind
    return labels, rgb, truth


@pytest.fixture(scope="module")
def table():
    labels, rgb, truth = populations()
    df = measure(labels, rgb, mpp=MPP)
    return df, truth


def _hand_given(df, truth, every=3):
    """Classes for every ``every``-th object, None for the others."""
    return [truth[int(v)] if k % every == 0 else None for k, v in enumerate(df["label"])]


def test_default_features_leave_out_positions_and_names(table):
    df, _ = table
    features = default_features(df)
    assert "area_um2" in features and "hematoxylin_mean" in features
    assert "circularity" in features and "red_std" in features
    for column in ("label", "centroid_x", "centroid_y_um", "bbox_x0", "pixels",
                   "orientation"):
        assert column not in features


def test_two_separable_populations_are_learned(table):
    df, truth = table
    given = _hand_given(df, truth)
    clf = ObjectClassifier(random_state=1)
    cv = clf.cross_validate(df, given, folds=5)
    assert cv.folds == 5 and cv.n == sum(g is not None for g in given)
    assert cv.mean > 0.95 and len(cv.scores) == 5
    assert "accuracy" in str(cv)
    assert not clf.fitted  # cross-validation leaves the classifier untrained
    clf.fit(df, given)
    assert clf.classes_ == ["large", "small"]
    predicted = clf.predict(df)
    assert list(predicted.columns) == ["class", "probability"]
    assert predicted.index.equals(df.index)
    expected = [truth[int(v)] for v in df["label"]]
    assert (predicted["class"].to_numpy() == np.asarray(expected, object)).mean() > 0.95
    assert predicted["probability"].between(0.5, 1.0).all()
    proba = clf.predict_proba(df)
    assert list(proba.columns) == ["large", "small"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    importances = clf.feature_importances()
    assert set(importances.index) == set(default_features(df))


def test_classes_as_column_mapping_or_series_agree(table):
    df, truth = table
    given = _hand_given(df, truth)
    a = ObjectClassifier().fit(df, given).predict(df)
    mapping = {int(v): g for v, g in zip(df["label"], given, strict=True) if g}
    b = ObjectClassifier().fit(df, mapping).predict(df)
    with_column = df.assign(hand=given)
    c = ObjectClassifier().fit(with_column, "hand").predict(df)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)


def test_seeded_training_is_reproducible(table):
    df, truth = table
    given = _hand_given(df, truth, every=4)
    p1 = ObjectClassifier(random_state=7).fit(df, given).predict_proba(df)
    p2 = ObjectClassifier(random_state=7).fit(df, given).predict_proba(df)
    pd.testing.assert_frame_equal(p1, p2)


def test_chosen_features_only(table):
    df, truth = table
    clf = ObjectClassifier(["area_um2"]).fit(df, _hand_given(df, truth))
    assert clf.features_ == ["area_um2"]
    # a table with only that feature column is enough
    small = df[["label", "area_um2"]]
    expected = np.asarray([truth[int(v)] for v in df["label"]], object)
    assert (clf.predict(small)["class"].to_numpy() == expected).all()


def test_save_and_load_give_the_same_predictions(table, tmp_path):
    df, truth = table
    clf = ObjectClassifier().fit(df, _hand_given(df, truth))
    path = clf.save(tmp_path / "model.joblib")
    assert path.is_file() and not list(tmp_path.glob("*.part"))
    loaded = ObjectClassifier.load(path)
    assert loaded.features_ == clf.features_ and loaded.classes_ == clf.classes_
    assert loaded.fill_ == clf.fill_
    pd.testing.assert_frame_equal(loaded.predict(df), clf.predict(df))
    pd.testing.assert_frame_equal(loaded.predict_proba(df), clf.predict_proba(df))


def test_a_table_without_the_model_features_is_refused(table, tmp_path):
    df, truth = table
    clf = ObjectClassifier().fit(df, _hand_given(df, truth))
    loaded = ObjectClassifier.load(clf.save(tmp_path / "model.joblib"))
    shape_only = df.drop(columns=[c for c in df.columns if c.startswith(("red_", "eosin_"))])
    with pytest.raises(ClassifierError, match="lacks the feature columns .*red_mean") as err:
        loaded.predict(shape_only)
    assert isinstance(err.value, SlideSegError)
    assert "same options" in str(err.value)


def test_missing_values_are_filled_with_training_medians(table):
    df, truth = table
    clf = ObjectClassifier().fit(df, _hand_given(df, truth))
    holes = df.copy()
    holes.loc[holes.index[:5], "hematoxylin_mean"] = np.nan
    assert clf.predict(holes)["class"].notna().all()
    assert math.isfinite(clf.fill_["hematoxylin_mean"])


@pytest.mark.parametrize("given, message", [
    (lambda df: ["small"] * len(df), "at least two classes; only 'small'"),
    (lambda df: [None] * len(df), "at least two classes; none"),
    (lambda df: ["small", "large"], "2 classes given for a table of 64 rows"),
    (lambda df: "nope", "no column 'nope'"),
])
def test_training_errors_say_what_is_wrong(table, given, message):
    df, _ = table
    with pytest.raises(ClassifierError, match=message):
        ObjectClassifier().fit(df, given(df))


def test_cross_validation_needs_two_objects_per_class(table):
    df, _ = table
    given = [None] * len(df)
    given[0], given[1], given[2] = "a", "b", "b"
    with pytest.raises(ClassifierError, match="two labelled objects of each class; a has"):
        ObjectClassifier().cross_validate(df, given)
    given[3] = "a"  # two of each: the folds drop to two
    assert ObjectClassifier().cross_validate(df, given, folds=5).folds == 2


def test_untrained_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(ClassifierError, match="not trained"):
        ObjectClassifier().predict(pd.DataFrame({"area_um2": [1.0]}))
    with pytest.raises(ClassifierError, match="no such model file"):
        ObjectClassifier.load(tmp_path / "none.joblib")
    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(ClassifierError, match="not a classifier saved by napari-slideseg"):
        ObjectClassifier.load(junk)
    import joblib

    other = tmp_path / "other.joblib"
    joblib.dump({"something": 1}, other)
    with pytest.raises(ClassifierError, match="not a classifier saved"):
        ObjectClassifier.load(other)


def test_summary_counts_areas_fractions_and_densities():
    df = pd.DataFrame({"label": [1, 2, 3, 4, 5],
                       "area_um2": [10.0, 20.0, 30.0, 40.0, 100.0],
                       "class": ["b", "a", "b", None, ""]})
    s = summarize_classes(df, tissue_area_um2=1000.0)
    assert s["class"].tolist() == ["a", "b", UNCLASSIFIED, "All"]
    assert s["count"].tolist() == [1, 2, 2, 5]
    assert s["area_um2"].tolist() == [20.0, 40.0, 140.0, 200.0]
    np.testing.assert_allclose(s["area_fraction"], [0.02, 0.04, 0.14, 0.2])
    # 1000 µm² = 0.001 mm²
    np.testing.assert_allclose(s["density_per_mm2"], [1000.0, 2000.0, 2000.0, 5000.0])
    # without tissue: fractions of the objects' area, densities per field
    s = summarize_classes(df, field_area_um2=2e6)
    np.testing.assert_allclose(s["area_fraction"], [0.1, 0.2, 0.7, 1.0])
    np.testing.assert_allclose(s["density_per_mm2"], [0.5, 1.0, 1.0, 2.5])
    s = summarize_classes(df.drop(columns="class"))
    assert s["class"].tolist() == [UNCLASSIFIED, "All"]
    assert s["density_per_mm2"].isna().all()
    pixels = summarize_classes(df.rename(columns={"area_um2": "area_px2"}),
                               tissue_area_um2=1000.0)
    assert "area_px2" in pixels.columns and pixels["density_per_mm2"].isna().all()
