"""Tile features and tile classifiers: known answers on synthetic tiles and tiny models."""

from __future__ import annotations

import json
import sys

import cv2
import joblib
import numpy as np
import pytest

from napari_slideseg.core.classify import ClassifierError
from napari_slideseg.core.errors import SlideSegError
from napari_slideseg.core.threshold import channel_image
from napari_slideseg.core.tilefeatures import FEATURE_NAMES, resize_tiles, tile_features
from napari_slideseg.core.tilemodels import (
    CallableModel,
    OnnxModel,
    TileClassifier,
    TileModel,
    TorchScriptModel,
    load_model,
)


def col(name: str) -> int:
    return FEATURE_NAMES.index(name)


def uniform(rgb, size=512, n=1):
    return np.broadcast_to(np.array(rgb, np.uint8), (n, size, size, 3)).copy()


# -- features --------------------------------------------------------------------------------


def test_feature_names_are_the_columns():
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == 33
    f = tile_features(uniform((10, 20, 30), 64, 2))
    assert f.shape == (2, len(FEATURE_NAMES)) and f.dtype == np.float32
    assert tile_features([]).shape == (0, len(FEATURE_NAMES))


def test_uniform_tile_known_values():
    tile = uniform((200, 100, 50))
    f = tile_features(tile)[0]
    grey = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)  # 124
    np.testing.assert_allclose(f[[col("red_mean"), col("green_mean"), col("blue_mean")]],
                               [200, 100, 50], atol=1e-4)
    np.testing.assert_allclose(f[[col("red_std"), col("green_std"), col("blue_std"),
                                  col("saturation_std"), col("hematoxylin_std"),
                                  col("eosin_std"), col("dab_std"), col("gradient_mean"),
                                  col("glcm_contrast")]], 0, atol=1e-5)
    np.testing.assert_allclose(f[[col("grey_p10"), col("grey_p50"), col("grey_p90")]], grey)
    assert f[col("saturation_mean")] == pytest.approx(round((200 - 50) / 200 * 255))
    for stain in ("hematoxylin", "eosin", "dab"):
        expected = channel_image(tile[0, :4, :4], stain)[0, 0]
        assert f[col(f"{stain}_mean")] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    lbp = f[col("lbp_0"):col("lbp_9") + 1]
    assert lbp[8] == 1 and lbp.sum() == pytest.approx(1)  # every neighbour equals the centre
    for name, value in (("glcm_homogeneity", 1), ("glcm_energy", 1), ("glcm_correlation", 1),
                        ("tissue_fraction", 1)):
        assert f[col(name)] == pytest.approx(value)
    assert tile_features(uniform((245, 244, 246)))[0, col("tissue_fraction")] == 0


def test_texture_tells_stripes_from_noise():
    # same pixels, so the same colour statistics; different arrangement
    stripes = np.zeros((128, 128, 3), np.uint8)
    stripes[:] = 220
    stripes[:, (np.arange(128) // 8) % 2 == 1] = (120, 60, 140)
    rng = np.random.default_rng(1)
    noise = stripes.reshape(-1, 3)[rng.permutation(128 * 128)].reshape(128, 128, 3)
    f = tile_features(np.stack([stripes, noise]))
    colour = [col(n) for n in FEATURE_NAMES[:col("dab_std") + 1]]
    np.testing.assert_allclose(f[0, colour], f[1, colour], rtol=1e-4, atol=1e-4)
    s, n = f[0], f[1]
    assert n[col("glcm_contrast")] > 5 * s[col("glcm_contrast")]
    assert s[col("glcm_homogeneity")] > n[col("glcm_homogeneity")] + 0.3
    assert s[col("glcm_correlation")] > 0.8 > 0.2 > n[col("glcm_correlation")]
    assert n[col("gradient_mean")] > 2 * s[col("gradient_mean")]
    assert n[col("lbp_9")] > 0.2 > 0.01 > s[col("lbp_9")]  # non-uniform patterns


def test_texture_matches_scikit_image():
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

    rng = np.random.default_rng(2)
    tiles = np.stack([cv2.GaussianBlur(rng.integers(0, 256, (96, 96, 3), np.uint8), (0, 0), s)
                      for s in (0.6, 1.5, 3.0)])
    f = tile_features(tiles, feature_size=None)
    for tile, row in zip(tiles, f, strict=True):
        grey = cv2.cvtColor(tile, cv2.COLOR_RGB2GRAY)
        codes = local_binary_pattern(grey, 8, 1, "uniform")[1:-1, 1:-1].astype(int)
        hist = np.bincount(codes.ravel(), minlength=10) / codes.size
        np.testing.assert_allclose(row[col("lbp_0"):col("lbp_9") + 1], hist, atol=1e-6)
        glcm = graycomatrix(grey >> 3, [1], [0, np.pi / 2], levels=32, symmetric=True,
                            normed=True)
        for prop in ("contrast", "homogeneity", "energy", "correlation"):
            assert row[col(f"glcm_{prop}")] == pytest.approx(graycoprops(glcm, prop).mean(),
                                                             rel=1e-5)
        np.testing.assert_allclose(row[[col("grey_p10"), col("grey_p50"), col("grey_p90")]],
                                   np.percentile(grey, [10, 50, 90]), atol=1e-4)
        np.testing.assert_allclose(row[[col("red_std"), col("green_std"), col("blue_std")]],
                                   tile.reshape(-1, 3).std(axis=0), rtol=1e-4)


def test_lists_and_sizes():
    rng = np.random.default_rng(3)
    big = rng.integers(0, 256, (512, 512, 3), np.uint8)
    small = rng.integers(0, 256, (200, 200, 3), np.uint8)
    f = tile_features([big, small])
    np.testing.assert_array_equal(f[0], tile_features(big[None])[0])
    np.testing.assert_array_equal(f[1], tile_features(small[None])[0])
    shrunk = resize_tiles(big[None], 128)[0]
    np.testing.assert_array_equal(shrunk, cv2.resize(big, (128, 128),
                                                     interpolation=cv2.INTER_AREA))
    with pytest.raises(SlideSegError, match="tile\\[None\\]"):
        tile_features(big)
    with pytest.raises(SlideSegError, match="uint8"):
        tile_features(big[None].astype(np.float32))


# -- the built-in classifier ---------------------------------------------------------------


def synthetic_tiles(kind: str, n: int, rng: np.random.Generator, size: int = 192):
    """Pink smooth 'stroma' or purple 'tumour' tiles dotted with dark nuclei."""
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 6)
        noise /= noise.std() + 1e-6
        if kind == "stroma":
            base = np.array([236, 168, 200]) + rng.normal(0, 8, 3)
            img = base + 12 * noise[..., None]
        else:
            base = np.array([190, 120, 185]) + rng.normal(0, 8, 3)
            img = np.broadcast_to(base, (size, size, 3)).copy()
            ys, xs = rng.integers(0, size, (2, 60))
            for y, x in zip(ys, xs, strict=True):
                cv2.circle(img, (int(x), int(y)), int(rng.integers(3, 7)), (90, 40, 120), -1)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def training():
    rng = np.random.default_rng(4)
    tiles = np.concatenate([synthetic_tiles("stroma", 24, rng),
                            synthetic_tiles("tumour", 24, rng)])
    labels = ["stroma"] * 24 + ["tumour"] * 24
    return tiles, labels


@pytest.fixture(scope="module")
def forest(training):
    tiles, labels = training
    return TileClassifier(n_estimators=60, random_state=1).fit(tiles, labels, tile_mpp=0.5)


def test_tile_classifier_learns_colour_and_texture(forest, training):
    tiles, labels = training
    assert isinstance(forest, TileModel)
    assert forest.classes == ["stroma", "tumour"] and forest.input_size is None
    assert forest.counts == {"stroma": 24, "tumour": 24}
    assert forest.tile_size == 192 and forest.tile_mpp == 0.5
    cv = forest.cross_validate(k=5)
    assert cv.mean > 0.95 and cv.folds == 5 and cv.n == 48
    assert "tiles" in str(cv)
    rng = np.random.default_rng(5)
    new = np.concatenate([synthetic_tiles("stroma", 5, rng), synthetic_tiles("tumour", 5, rng)])
    p = forest.predict_proba(new)
    assert p.shape == (10, 2) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-6)
    assert list(forest.predict(new)) == ["stroma"] * 5 + ["tumour"] * 5
    np.testing.assert_array_equal(forest.predict_features(forest.features(new)), p)
    assert forest.predict_proba(new[:0]).shape == (0, 2)


def test_fit_features_and_labels(training):
    tiles, labels = training
    x = tile_features(tiles)
    y = list(labels)
    y[0] = None  # a tile left out
    y[1] = ""
    model = TileClassifier(n_estimators=20).fit_features(x, y, tile_size=192)
    assert model.counts == {"stroma": 22, "tumour": 24} and model.tile_size == 192
    with pytest.raises(ClassifierError, match="at least two classes"):
        TileClassifier().fit_features(x[:24], labels[:24])
    with pytest.raises(ClassifierError, match="labels given"):
        TileClassifier().fit_features(x, labels[:10])
    with pytest.raises(ClassifierError, match="features"):
        TileClassifier().fit_features(x[:, :5], labels)
    # a class with 3 tiles: 3 folds; a class with 1 tile: an error naming it
    few = ["stroma"] * 24 + ["tumour"] * 3 + [None] * 21
    assert TileClassifier(n_estimators=10).cross_validate(x, few, k=5).folds == 3
    one = ["stroma"] * 24 + ["tumour"] + [None] * 23
    with pytest.raises(ClassifierError, match="tumour has one"):
        TileClassifier(n_estimators=10).cross_validate(x, one)
    with pytest.raises(ClassifierError, match="fit"):
        TileClassifier().cross_validate()


def test_save_load_round_trip(forest, training, tmp_path):
    tiles, _ = training
    path = forest.save(tmp_path / "model.joblib")
    again = TileClassifier.load(path)
    np.testing.assert_array_equal(again.predict_proba(tiles), forest.predict_proba(tiles))
    assert again.classes == forest.classes and again.counts == forest.counts
    assert (again.tile_size, again.tile_mpp, again.created) == (192, 0.5, forest.created)
    assert again.params["n_estimators"] == 60
    same = load_model(path, classes=["stroma", "tumour"])
    np.testing.assert_array_equal(same.predict_proba(tiles[:3]), forest.predict_proba(tiles[:3]))
    with pytest.raises(SlideSegError, match="classes are"):
        load_model(path, classes=["a", "b"])


def test_load_refuses_foreign_and_tampered_files(forest, tmp_path):
    path = forest.save(tmp_path / "model.joblib")
    garbage = tmp_path / "garbage.joblib"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(ClassifierError, match="trusted sources"):
        TileClassifier.load(garbage)
    foreign = tmp_path / "foreign.joblib"
    joblib.dump({"format": "napari-slideseg object classifier", "model": None}, foreign)
    with pytest.raises(ClassifierError, match="not a tile classifier"):
        TileClassifier.load(foreign)
    state = joblib.load(path)
    state["metadata"]["feature_names"] = FEATURE_NAMES[:-1]
    joblib.dump(state, tmp_path / "old.joblib")
    with pytest.raises(ClassifierError, match="differ"):
        TileClassifier.load(tmp_path / "old.joblib")
    state = joblib.load(path)
    state["metadata"]["classes"] = ["tumour", "stroma"]
    joblib.dump(state, tmp_path / "swapped.joblib")
    with pytest.raises(ClassifierError, match="damaged"):
        TileClassifier.load(tmp_path / "swapped.joblib")
    with pytest.raises(ClassifierError, match="no such"):
        TileClassifier.load(tmp_path / "missing.joblib")


# -- user models -----------------------------------------------------------------------------


def red_vs_blue(x):
    """Logits 10 * mean red and 10 * mean blue of a (B, 3, H, W) batch."""
    return 10 * np.stack([x[:, 0].mean(axis=(1, 2)), x[:, 2].mean(axis=(1, 2))], axis=1)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_callable_model_softmax_and_classes():
    model = CallableModel(red_vs_blue, ["red", "blue"])
    assert isinstance(model, TileModel)
    tiles = np.concatenate([uniform((255, 0, 0), 32), uniform((0, 0, 255), 32),
                            uniform((51, 0, 102), 32)])
    p = model.predict_proba(tiles)
    np.testing.assert_allclose(p, softmax(np.array([[10, 0], [0, 10], [2, 4]])), atol=1e-6)
    assert p.dtype == np.float32 and p.argmax(axis=1).tolist() == [0, 1, 1]
    # channels last and a normalisation: (tile / 255 - 0.5) / 0.25
    seen = []

    def last(x):
        seen.append(x.shape)
        return red_vs_blue(x.transpose(0, 3, 1, 2))

    model = CallableModel(last, ["red", "blue"], mean=0.5, std=(0.25, 1, 0.25),
                          channels_first=False, batch_size=2)
    p = model.predict_proba(tiles)
    np.testing.assert_allclose(p, softmax(np.array([[20, -20], [-20, 20], [-12, -4]])),
                               atol=1e-6)
    assert seen == [(2, 32, 32, 3), (1, 32, 32, 3)]


def test_callable_model_activations_and_errors():
    probs = np.array([[0.2, 0.8], [0.6, 0.4]], np.float32)
    tiles = uniform((0, 0, 0), 8, 2)
    auto = CallableModel(lambda x: probs, ["a", "b"])
    np.testing.assert_allclose(auto.predict_proba(tiles), probs)  # already probabilities
    sig = CallableModel(lambda x: np.array([[0.0, 2.0], [-2.0, 0.0]]), ["a", "b"],
                        activation="sigmoid").predict_proba(tiles)
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-np.array([[0.0, 2.0], [-2.0, 0.0]]))),
                               atol=1e-6)
    none = CallableModel(lambda x: np.array([[3.0, 5.0]] * len(x)), ["a", "b"],
                         activation="none")
    np.testing.assert_array_equal(none.predict_proba(tiles), [[3, 5], [3, 5]])
    with pytest.raises(SlideSegError, match="shape"):
        CallableModel(lambda x: np.zeros((len(x), 3)), ["a", "b"]).predict_proba(tiles)
    with pytest.raises(SlideSegError, match="activation"):
        CallableModel(red_vs_blue, ["a", "b"], activation="relu")
    with pytest.raises(SlideSegError, match="std"):
        CallableModel(red_vs_blue, ["a", "b"], std=0)
    assert CallableModel(red_vs_blue, ["a", "b"]).predict_proba(tiles[:0]).shape == (0, 2)


def test_input_resizing_512_to_64():
    rng = np.random.default_rng(6)
    tile = rng.integers(0, 256, (1, 512, 512, 3), np.uint8)
    seen = []

    def fn(x):
        seen.append(x)
        return np.zeros((len(x), 2))

    CallableModel(fn, ["a", "b"], input_size=64).predict_proba(tile)
    assert seen[0].shape == (1, 3, 64, 64)
    expected = cv2.resize(tile[0], (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(seen[0][0], expected.transpose(2, 0, 1) / 255, atol=1e-6)


# -- ONNX ---------------------------------------------------------------------------------

WEIGHTS = np.array([[4.0, -1.0, 0.5], [-2.0, 3.0, 1.0], [1.0, 1.0, -3.0]], np.float32)


def onnx_model(path, shape, axes):
    """Mean over the image axes, then a fixed (3, 3) matrix, then a softmax."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["means"], axes=axes, keepdims=0),
         helper.make_node("MatMul", ["means", "W"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["proba"], axis=1)],
        "tile_net",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("proba", TensorProto.FLOAT, [shape[0], 3])],
        [numpy_helper.from_array(WEIGHTS, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def expected_proba(tiles, mean=0.0, std=1.0):
    means = (tiles.reshape(len(tiles), -1, 3).astype(np.float64) / 255 - mean) / std
    return softmax(means.mean(axis=1) @ WEIGHTS.astype(np.float64))


def test_onnx_model_known_probabilities(tmp_path):
    pytest.importorskip("onnxruntime")
    path = onnx_model(tmp_path / "net.onnx", ["N", 3, 64, 64], [2, 3])
    model = OnnxModel(path, ["a", "b", "c"])
    assert isinstance(model, TileModel)
    assert model.input_size == 64 and model.channels_first
    tiles = np.concatenate([uniform((255, 0, 0), 64), uniform((20, 200, 90), 64),
                            uniform((0, 0, 255), 64)])
    p = model.predict_proba(tiles)
    np.testing.assert_allclose(p, expected_proba(tiles), atol=1e-5)
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-6)
    # a 512-pixel tile is shrunk to the model's 64 pixels first
    rng = np.random.default_rng(7)
    big = rng.integers(0, 256, (2, 512, 512, 3), np.uint8)
    small = resize_tiles(big, 64)
    np.testing.assert_allclose(model.predict_proba(big), expected_proba(small), atol=1e-5)
    with pytest.raises(SlideSegError, match="64-pixel"):
        OnnxModel(path, ["a", "b", "c"], input_size=128)


def test_onnx_fixed_batch_and_channels_last(tmp_path):
    pytest.importorskip("onnxruntime")
    path = onnx_model(tmp_path / "one.onnx", [1, 32, 32, 3], [1, 2])
    model = OnnxModel(path, ["a", "b", "c"], mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert not model.channels_first and model.input_size == 32
    rng = np.random.default_rng(8)
    tiles = rng.integers(0, 256, (3, 32, 32, 3), np.uint8)  # one tile per call
    np.testing.assert_allclose(model.predict_proba(tiles),
                               expected_proba(tiles, 0.5, 0.5), atol=1e-5)


def test_load_model_with_sidecar_json(tmp_path):
    pytest.importorskip("onnxruntime")
    path = onnx_model(tmp_path / "net.onnx", ["N", 3, 64, 64], [2, 3])
    with pytest.raises(SlideSegError, match="classes"):
        load_model(path)
    (tmp_path / "net.onnx.json").write_text(json.dumps(
        {"classes": ["tumour", "stroma", "other"], "mean": [0.5, 0.5, 0.5],
         "std": [0.25, 0.25, 0.25], "description": "ignored"}))
    model = load_model(path)
    assert isinstance(model, OnnxModel) and model.classes == ["tumour", "stroma", "other"]
    tiles = uniform((30, 140, 250), 64, 1)
    np.testing.assert_allclose(model.predict_proba(tiles), expected_proba(tiles, 0.5, 0.25),
                               atol=1e-5)
    # arguments win over the sidecar
    plain = load_model(path, mean=(0, 0, 0), std=(1, 1, 1), classes=["x", "y", "z"])
    assert plain.classes == ["x", "y", "z"]
    np.testing.assert_allclose(plain.predict_proba(tiles), expected_proba(tiles), atol=1e-5)
    with pytest.raises(SlideSegError, match="unknown model file type"):
        (tmp_path / "net.h5").write_bytes(b"")
        load_model(tmp_path / "net.h5")


def test_missing_optional_packages(tmp_path, monkeypatch):
    (tmp_path / "net.onnx").write_bytes(b"")
    (tmp_path / "net.pt").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(SlideSegError, match=r"napari-slideseg\[onnx\]"):
        OnnxModel(tmp_path / "net.onnx", ["a", "b"])
    with pytest.raises(SlideSegError, match=r"napari-slideseg\[torch\]"):
        TorchScriptModel(tmp_path / "net.pt", ["a", "b"])


# -- TorchScript ----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_model(tmp_path):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.from_numpy(WEIGHTS.copy()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3)) @ self.w  # logits: softmax applied by 'auto'

    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(Net()), str(path))
    with pytest.raises(SlideSegError, match="input size"):
        load_model(path, classes=["a", "b", "c"])
    (tmp_path / "net.pt.json").write_text(json.dumps({"classes": ["a", "b", "c"],
                                                      "input_size": 32}))
    model = load_model(path)
    assert isinstance(model, TorchScriptModel) and isinstance(model, TileModel)
    assert model.input_size == 32
    rng = np.random.default_rng(9)
    big = rng.integers(0, 256, (3, 128, 128, 3), np.uint8)
    np.testing.assert_allclose(model.predict_proba(big),
                               expected_proba(resize_tiles(big, 32)), atol=1e-5)
    garbage = tmp_path / "bad.pt"
    garbage.write_bytes(b"nope")
    with pytest.raises(SlideSegError, match="TorchScript"):
        TorchScriptModel(garbage, ["a"])
