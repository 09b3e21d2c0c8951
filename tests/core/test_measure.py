"""Measurements: known shapes with analytic answers, whole-slide chunking, exports, CLI."""

from __future__ import annotations

import io
import json
import math
import zipfile

import numpy as np
import pandas as pd
import pytest

from napari_slideseg import (
    AnnotationLayer,
    AnnotationSet,
    Region,
    SlideSegError,
    labels_to_polygons,
    measure,
    open_slide,
    polygons_to_labels,
    read_annotations,
    write_ecotaxa,
    write_geojson,
    write_table,
)
from napari_slideseg.cli import main

# -- shapes ---------------------------------------------------------------------------------


def disc(shape, cx, cy, rx, ry=None):
    """Pixels whose centres (j, i) lie in the ellipse of semi-axes rx, ry at (cx, cy)."""
    ry = rx if ry is None else ry
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def ellipse(shape, cx, cy, a, b, theta_deg):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    t = np.radians(theta_deg)
    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def cells(shape=(700, 900), n=60, seed=1):
    """Random ellipses (some overlapping: later ones win), labelled 1..n."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        cx, cy = rng.uniform(0, shape[1]), rng.uniform(0, shape[0])
        a = rng.uniform(4, 40)
        labels[ellipse(shape, cx, cy, a, a * rng.uniform(0.4, 1), rng.uniform(0, 180))] = k
    return labels


def rgb_noise(shape, seed=2):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


# -- analytic answers ------------------------------------------------------------------------


@pytest.mark.parametrize("r", [20, 25.5, 40, 80])
@pytest.mark.parametrize("offset", [(0.0, 0.0), (0.5, 0.5), (0.31, 0.77), (0.9, 0.12)])
def test_disc_area_and_perimeter_within_one_percent(r, offset):
    size = int(2 * r + 20)
    labels = disc((size, size), size / 2 + offset[0], size / 2 + offset[1], r).astype(np.uint8)
    row = measure(labels, mpp=0.5).iloc[0]
    assert row["area_um2"] == pytest.approx(math.pi * r * r * 0.25, rel=0.01)
    assert row["perimeter_um"] == pytest.approx(2 * math.pi * r * 0.5, rel=0.01)
    assert row["equivalent_diameter_um"] == pytest.approx(2 * r * 0.5, rel=0.005)
    assert row["major_axis_um"] == pytest.approx(2 * r * 0.5, rel=0.01)
    assert row["minor_axis_um"] == pytest.approx(2 * r * 0.5, rel=0.01)
    assert row["circularity"] == pytest.approx(1.0, abs=0.02)
    assert row["eccentricity"] < 0.1
    assert 0.95 < row["solidity"] <= 1.0  # hull of the pixel squares
    box = (row["bbox_x1"] - row["bbox_x0"]) * (row["bbox_y1"] - row["bbox_y0"])
    assert row["extent"] == pytest.approx(row["pixels"] / box)
    assert row["extent"] == pytest.approx(math.pi / 4, rel=0.06)


@pytest.mark.parametrize("w,h", [(80, 30), (30, 80), (50, 50), (1, 9)])
def test_rectangle_axes(w, h):
    labels = np.zeros((120, 130), np.int32)
    labels[10:10 + h, 20:20 + w] = 7
    row = measure(labels, mpp=1.0).iloc[0]
    long, short = max(w, h), min(w, h)
    # the ellipse of equal second moments of a W x H rectangle: axes 2W/sqrt(3), 2H/sqrt(3)
    assert row["major_axis_um"] == pytest.approx(2 * long / math.sqrt(3), rel=1e-9)
    assert row["minor_axis_um"] == pytest.approx(2 * short / math.sqrt(3), rel=1e-9)
    assert row["eccentricity"] == pytest.approx(math.sqrt(1 - (short / long) ** 2), abs=1e-9)
    if w != h:
        assert row["orientation"] == pytest.approx(0.0 if w > h else 90.0, abs=1e-9)
    assert row["label"] == 7 and row["pixels"] == w * h
    assert row["extent"] == 1.0 and row["solidity"] == pytest.approx(1.0)
    assert (row["bbox_x0"], row["bbox_y0"], row["bbox_x1"], row["bbox_y1"]) == \
        (20, 10, 20 + w, 10 + h)
    assert (row["centroid_x"], row["centroid_y"]) == (20 + w / 2, 10 + h / 2)


@pytest.mark.parametrize("theta", [0.0, 30.0, -50.0, 90.0])
def test_ellipse_eccentricity_axes_and_orientation(theta):
    a, b = 60.0, 30.0
    labels = ellipse((200, 220), 110.3, 99.6, a, b, theta).astype(np.int32)
    row = measure(labels, mpp=1.0).iloc[0]
    assert row["eccentricity"] == pytest.approx(math.sqrt(1 - (b / a) ** 2), abs=0.005)
    assert row["major_axis_um"] == pytest.approx(2 * a, rel=0.01)
    assert row["minor_axis_um"] == pytest.approx(2 * b, rel=0.01)
    # angle of the major axis from +x towards +y (y down), in (-90, 90]
    expected = theta if theta > -90 else theta + 180
    assert abs((row["orientation"] - expected + 90) % 180 - 90) < 0.5
    h = ((a - b) / (a + b)) ** 2
    ramanujan = math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
    assert row["perimeter_um"] == pytest.approx(ramanujan, rel=0.01)


def test_non_square_pixels_scale_in_micrometres():
    mx, my = 0.5, 0.25
    radius = 15.0  # µm: an ellipse of 30 x 60 px on the pixel grid
    labels = disc((160, 160), 50.2, 79.7, radius / mx, radius / my).astype(np.int32)
    labels[5:25, 100:140] = 2  # 40 x 20 px = 20 x 5 µm
    df = measure(labels, mpp=(mx, my)).set_index("label")
    d = df.loc[1]
    assert d["area_um2"] == pytest.approx(math.pi * radius ** 2, rel=0.01)
    assert d["perimeter_um"] == pytest.approx(2 * math.pi * radius, rel=0.01)
    assert d["major_axis_um"] == pytest.approx(2 * radius, rel=0.01)
    assert d["minor_axis_um"] == pytest.approx(2 * radius, rel=0.01)
    assert d["eccentricity"] < 0.15 and d["circularity"] > 0.98
    assert d["centroid_x_um"] == pytest.approx(d["centroid_x"] * mx)
    assert d["centroid_y_um"] == pytest.approx(d["centroid_y"] * my)
    r = df.loc[2]
    assert r["area_um2"] == pytest.approx(100.0)
    assert r["major_axis_um"] == pytest.approx(2 * 20 / math.sqrt(3))
    assert r["minor_axis_um"] == pytest.approx(2 * 5 / math.sqrt(3))
    assert r["orientation"] == pytest.approx(0.0, abs=1e-9)
    # the same rectangle turned 90 degrees on the grid is 10 x 10 µm: no orientation
    turned = np.zeros((160, 100), np.int32)
    turned[5:45, 10:30] = 1  # 20 x 40 px = 10 x 10 µm
    t = measure(turned, mpp=(mx, my)).iloc[0]
    assert t["eccentricity"] == pytest.approx(0.0, abs=1e-6)
    assert t["perimeter_um"] == pytest.approx(40.0, rel=0.05)  # corners cut by ~1 px each


def test_downsample_and_origin_place_objects_on_level_0():
    labels = np.zeros((50, 60), np.int32)
    labels[10:20, 30:40] = 1
    row = measure(labels, mpp=0.25, downsample=4.0, origin=(1000.0, 2000.0)).iloc[0]
    assert (row["bbox_x0"], row["bbox_y0"], row["bbox_x1"], row["bbox_y1"]) == \
        (1120.0, 2040.0, 1160.0, 2080.0)
    assert (row["centroid_x"], row["centroid_y"]) == (1140.0, 2060.0)
    assert row["area_um2"] == pytest.approx(100 * 16 * 0.0625)


def test_without_pixel_size_lengths_are_level0_pixels():
    labels = np.zeros((40, 40), np.int32)
    labels[5:15, 5:25] = 1
    df = measure(labels, downsample=2.0)
    assert "area_um2" not in df and "centroid_x_um" not in df
    assert df.loc[0, "area_px2"] == 200 * 4
    assert df.loc[0, "major_axis_px"] == pytest.approx(2 * 40 / math.sqrt(3))
    assert df.attrs["mpp"] is None


def test_tiny_objects_stay_finite():
    labels = np.zeros((10, 10), np.int32)
    labels[2, 2] = 1
    labels[5, 5:7] = 2
    df = measure(labels, mpp=1.0)
    assert np.isfinite(df.select_dtypes("number").to_numpy()).all()
    assert (df["circularity"] <= 1.0 + 1e-12).all()
    assert df.loc[0, "perimeter_um"] == pytest.approx(2 * math.sqrt(math.pi))
    assert df.loc[0, "solidity"] == 1.0


def test_empty_labels_give_an_empty_table():
    df = measure(np.zeros((30, 30), np.uint16), rgb_noise((30, 30)), mpp=1.0)
    assert len(df) == 0 and "area_um2" in df and "red_mean" in df


def test_bad_inputs_are_package_errors():
    with pytest.raises(SlideSegError, match="2-D"):
        measure(np.zeros((3, 4, 5), np.int32))
    with pytest.raises(SlideSegError, match="integer"):
        measure(np.zeros((4, 4), np.float32))
    with pytest.raises(SlideSegError, match="aligned"):
        measure(np.zeros((4, 4), np.int32), rgb_noise((5, 4)))
    with pytest.raises(SlideSegError, match="uint8"):
        measure(np.zeros((4, 4), np.int32), np.zeros((4, 4, 3), np.float32))


# -- intensities and stains ---------------------------------------------------------------------


def test_intensities_match_regionprops():
    from skimage.measure import regionprops_table

    labels = cells()
    image = rgb_noise(labels.shape)
    df = measure(labels, image, mpp=1.0)
    rp = pd.DataFrame(regionprops_table(labels, image, properties=(
        "label", "area", "centroid", "bbox", "extent", "intensity_mean", "intensity_min",
        "intensity_max")))
    assert df["label"].tolist() == rp["label"].tolist()
    np.testing.assert_array_equal(df["pixels"], rp["area"])
    np.testing.assert_allclose(df["centroid_x"] - 0.5, rp["centroid-1"], atol=1e-9)
    np.testing.assert_allclose(df["centroid_y"] - 0.5, rp["centroid-0"], atol=1e-9)
    np.testing.assert_array_equal(df["bbox_x0"], rp["bbox-1"])
    np.testing.assert_array_equal(df["bbox_y1"], rp["bbox-2"])
    np.testing.assert_allclose(df["extent"], rp["extent"])
    for k, name in enumerate(("red", "green", "blue")):
        np.testing.assert_allclose(df[f"{name}_mean"], rp[f"intensity_mean-{k}"])
        np.testing.assert_array_equal(df[f"{name}_min"], rp[f"intensity_min-{k}"])
        np.testing.assert_array_equal(df[f"{name}_max"], rp[f"intensity_max-{k}"])
    first = labels == df["label"].iloc[0]
    assert df["green_std"].iloc[0] == pytest.approx(image[first][:, 1].std())


def test_stains_are_channel_image_values():
    from napari_slideseg.core.measure import _stains
    from napari_slideseg.core.threshold import channel_image

    pixels = rgb_noise((300, 1)).reshape(-1, 3)
    stains = _stains(pixels)
    for k, name in enumerate(("hematoxylin", "eosin", "dab")):
        np.testing.assert_allclose(stains[:, k], channel_image(pixels[:, None], name).ravel(),
                                   atol=1e-5)


def test_stain_separation_on_a_synthetic_he_image():
    from skimage.color import rgb_from_hed

    def stained(h, e):
        # Beer-Lambert: optical density = concentrations x stain vectors
        od = h * rgb_from_hed[0] + e * rgb_from_hed[1]
        return np.round(256 * 10.0 ** -od - 1).astype(np.uint8)

    rng = np.random.default_rng(4)
    labels = np.zeros((120, 200), np.int32)
    labels[disc(labels.shape, 50, 60, 30)] = 1  # haematoxylin only (a nucleus)
    labels[disc(labels.shape, 150, 60, 30)] = 2  # eosin only (cytoplasm)
    image = np.full((*labels.shape, 3), 245, np.uint8)
    for label, (h, e) in ((1, (0.5, 0.0)), (2, (0.0, 0.5))):
        noise = rng.integers(-3, 4, ((labels == label).sum(), 3))
        image[labels == label] = np.clip(stained(h, e).astype(int) + noise, 0, 255)
    df = measure(labels, image, mpp=0.5).set_index("label")
    assert df.loc[1, "hematoxylin_mean"] > 2 * df.loc[2, "hematoxylin_mean"]
    assert df.loc[2, "eosin_mean"] > 2 * df.loc[1, "eosin_mean"]
    assert df.loc[1, "hematoxylin_mean"] > df.loc[1, "eosin_mean"]
    assert df.loc[2, "dab_mean"] < 0.1 and df.loc[1, "dab_mean"] < 0.1
    no_stains = measure(labels, image, mpp=0.5, stains=False)
    assert "red_mean" in no_stains and "hematoxylin_mean" not in no_stains
    assert "red_mean" not in measure(labels, image, mpp=0.5, intensity=False)


def test_slide_image_is_read_at_the_labels_level(svs):
    with open_slide(svs.path) as slide:
        level = 1
        lw, lh = slide.level_dimensions[level]
        labels = np.zeros((lh, lw), np.int32)
        labels[100:180, 200:330] = 1
        labels[disc(labels.shape, 400, 300, 60)] = 2
        df = measure(labels, slide, downsample=slide.level_downsamples[level])
        pixels = np.asarray(slide.pyramid[level])
        assert df.attrs["mpp"] == pytest.approx((0.2527, 0.2527))
        assert df.loc[0, "area_um2"] == pytest.approx(
            80 * 130 * (slide.level_downsamples[level] * 0.2527) ** 2)
        for label in (1, 2):
            row = df[df["label"] == label].iloc[0]
            assert row["red_mean"] == pytest.approx(pixels[labels == label][:, 0].mean())
            assert row["blue_max"] == pixels[labels == label][:, 2].max()
        # at a downsample of no level, the next finer level is resampled
        coarse = labels[::2, ::2]
        d2 = measure(coarse, slide, downsample=2 * slide.level_downsamples[level])
        assert d2["red_mean"].to_numpy() == pytest.approx(df["red_mean"].to_numpy(), abs=3)


# -- whole-slide labels: window by window ---------------------------------------------------------


def whole_slide_labels():
    labels = cells((700, 900), n=80, seed=5)
    yy, xx = np.mgrid[0:700, 0:900]
    # an object larger than several windows, with holes
    big = disc(labels.shape, 420, 330, 260, 200) & ~disc(labels.shape, 400, 300, 30) \
        & ~disc(labels.shape, 520, 400, 12)
    labels[big & (labels == 0)] = 500
    # one label in two places far apart (one object, not connected)
    labels[20:40, 20:60] = 600
    labels[650:690, 840:880] = 600
    labels[(xx + yy) % 97 == 0] = 0  # thin diagonal cuts: saddle-free, many pieces
    return labels


@pytest.mark.parametrize("chunk", [64, 100, 257])
def test_chunked_measurement_equals_one_piece(chunk):
    import dask.array as da

    labels = whole_slide_labels()
    image = rgb_noise(labels.shape, seed=9)
    whole = measure(labels, image, mpp=(0.5, 0.4))
    assert whole["label"].is_unique
    assert set(whole["label"]) == set(np.unique(labels)) - {0}
    pieces = measure(da.from_array(labels, chunks=128), da.from_array(image, chunks=(96, 96, 3)),
                     mpp=(0.5, 0.4), chunk=chunk)
    pd.testing.assert_frame_equal(whole, pieces, rtol=1e-9, atol=1e-9)
    row = whole.set_index("label").loc[600]
    assert row["pixels"] == (labels == 600).sum()  # both pieces, measured as one object
    assert (row["bbox_x0"], row["bbox_y1"]) == (20.0, 690.0)


def test_windows_call_progress():
    seen = []
    measure(whole_slide_labels(), mpp=1.0, chunk=300, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 9) for i in range(1, 10)]


# -- polygons -----------------------------------------------------------------------------


def test_polygons_and_labels_agree():
    labels = cells((300, 400), n=25, seed=11)
    # renumber to 1..n in raster order of values, as the regions will be numbered
    values = np.unique(labels)[1:]
    lut = np.zeros(labels.max() + 1, np.int32)
    lut[values] = np.arange(1, len(values) + 1)
    labels = lut[labels]
    # keep the largest 4-connected piece of each value: one region per object
    from scipy import ndimage as ndi

    kept = np.zeros_like(labels)
    for v in range(1, len(values) + 1):
        pieces, n = ndi.label(labels == v)
        if n:
            sizes = np.bincount(pieces.ravel())[1:]
            kept[pieces == 1 + int(np.argmax(sizes))] = v
    labels = kept
    image = rgb_noise(labels.shape, seed=3)
    ann = labels_to_polygons(labels)
    assert ann.region_count == len(np.unique(labels)) - 1
    np.testing.assert_array_equal(polygons_to_labels(ann, labels.shape), labels)
    from_labels = measure(labels, image, mpp=0.5)
    from_polygons = measure(ann, image, mpp=0.5, chunk=64)
    assert set(from_polygons["class"]) == {"labels"}
    pd.testing.assert_frame_equal(from_labels, from_polygons.drop(columns="class"),
                                  rtol=1e-9, atol=1e-9)


def test_overlapping_regions_are_each_measured_whole():
    a = Region(disc_outline(100, 100, 40), type="polygon")
    b = Region(disc_outline(140, 100, 40), type="polygon")
    hole = Region(np.array([[90, 90], [110, 90], [110, 110], [90, 110]], float),
                  type="polygon", negative=True)
    point = Region(np.array([[5.0, 5.0]]), type="point")
    ann = AnnotationSet([AnnotationLayer("Tumour", regions=[a, hole, point]),
                         AnnotationLayer("Stroma", regions=[b])], mpp=0.25)
    df = measure(ann, chunk=64).set_index("label")
    assert df.index.tolist() == [1, 2]
    assert df.loc[1, "class"] == "Tumour" and df.loc[2, "class"] == "Stroma"
    disc_area = math.pi * 40 ** 2 * 0.0625
    assert df.loc[2, "area_um2"] == pytest.approx(disc_area, rel=0.01)
    assert df.loc[1, "area_um2"] == pytest.approx(disc_area - 400 * 0.0625, rel=0.01)
    # the region classes can come from another source, or a mapping
    assert measure(ann, classes="text")["class"].tolist() == ["", ""]
    assert measure(ann, classes={2: "other"})["class"].tolist() == ["Tumour", "other"]


def disc_outline(cx, cy, r, n=256):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t)])


def test_classes_and_containing_regions():
    labels = np.zeros((100, 200), np.int32)
    labels[10:20, 10:20] = 1  # centroid (15, 15): in region "tumour a"
    labels[50:60, 50:60] = 2  # centroid (55, 55): in the negative region: in none
    labels[80:90, 150:160] = 3  # in the second layer's region, drawn over the first
    labels[5:8, 190:195] = 4  # outside every region
    first = AnnotationLayer("Tumour", regions=[
        Region(np.array([[0, 0], [170, 0], [170, 100], [0, 100]], float), text="tumour a"),
        Region(np.array([[40, 40], [70, 40], [70, 70], [40, 70]], float), negative=True)])
    second = AnnotationLayer("Stroma", regions=[
        Region(np.array([[140, 70], [200, 70], [200, 100], [140, 100]], float),
               attributes={"Id": "9"})])
    regions = AnnotationSet([first, second])
    df = measure(labels, mpp=1.0, regions=regions, classes={1: "a", 2: "b", 3: "a"})
    assert df["class"].tolist()[:3] == ["a", "b", "a"] and pd.isna(df["class"][3])
    assert df["region"].tolist()[::2] == ["tumour a", "9"]
    assert df["region_class"].tolist()[::2] == ["Tumour", "Stroma"]
    assert df["region"][1::2].isna().all() and df["region_class"][1::2].isna().all()
    assert list(df.columns[:4]) == ["label", "class", "region", "region_class"]


# -- exports ------------------------------------------------------------------------------------


@pytest.fixture
def table():
    labels = cells((200, 260), n=12, seed=8)
    image = rgb_noise(labels.shape, seed=1)
    df = measure(labels, image, mpp=0.5,
                 classes={int(v): ("tumour" if v % 2 else "stroma") for v in range(1, 13)})
    return df, labels, image


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_table_round_trip(tmp_path, table, suffix):
    df = table[0]
    path = write_table(df, tmp_path / f"objects{suffix}")
    if suffix == ".parquet":
        back = pd.read_parquet(path)
    else:
        back = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    # CSV keeps values exactly; a float column of whole numbers may read back as int
    pd.testing.assert_frame_equal(back, df.reset_index(drop=True), check_exact=True,
                                  check_dtype=suffix == ".parquet")
    assert [p.name for p in tmp_path.iterdir()] == [f"objects{suffix}"]


def test_table_errors(tmp_path, table, monkeypatch):
    import sys

    with pytest.raises(SlideSegError, match="suffix"):
        write_table(table[0], tmp_path / "objects.xlsx")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(SlideSegError, match="pip install pyarrow"):
        write_table(table[0], tmp_path / "objects.parquet")
    assert not list(tmp_path.iterdir())


def test_csv_without_pyarrow_is_written_by_pandas(tmp_path, table, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow.csv", None)
    back = pd.read_csv(write_table(table[0], tmp_path / "objects.csv"))
    pd.testing.assert_frame_equal(back, table[0], check_exact=True)


def test_geojson_keeps_measurements_and_outlines(tmp_path, table):
    df, labels, _ = table
    path = write_geojson(df, labels, tmp_path / "objects.geojson")
    doc = json.loads(path.read_text())
    props = doc["features"][0]["properties"]
    assert props["objectType"] == "detection"
    assert props["classification"]["name"] in ("tumour", "stroma")
    assert props["measurements"]["area_um2"] == df.loc[0, "area_um2"]
    back = read_annotations(path)
    assert {layer.name for layer in back} == {"tumour", "stroma"}
    measured = {}
    for layer, region in back.regions():
        m = region.attributes["measurements"]
        measured[int(region.text)] = m
        row = df[df["label"] == int(region.text)].iloc[0]
        assert layer.name == row["class"]
        assert m["perimeter_um"] == row["perimeter_um"] and m["red_mean"] == row["red_mean"]
    assert sorted(measured) == df["label"].tolist()
    # the outlines are the pixels' outlines: filled back, they give the labels
    from napari_slideseg.core.masks import AnnotationKey

    key = AnnotationKey({"tumour": 1, "stroma": 2})
    refilled = polygons_to_labels(back, labels.shape, key=key)
    expected = np.where(labels == 0, 0, np.where(labels % 2 == 1, 1, 2))
    assert (refilled == expected).mean() > 0.999  # pieces of one class may overlap


def test_geojson_of_large_labels_is_written_window_by_window(tmp_path):
    labels = whole_slide_labels()
    df = measure(labels, mpp=1.0)
    small = write_geojson(df, labels, tmp_path / "a.geojson")
    windowed = write_geojson(df, labels, tmp_path / "b.geojson", chunk=64)

    def outlines(path):
        out = {}
        for _, region in read_annotations(path).regions():
            out.setdefault(int(region.text), []).append(
                (round(float(np.abs(region.vertices).sum()), 6), len(region.holes)))
        return {k: sorted(v) for k, v in out.items()}

    assert outlines(small) == outlines(windowed)


def test_geojson_of_annotation_objects(tmp_path):
    ring = np.array([[10, 10], [90, 10], [90, 60], [10, 60]], float)
    hole = np.array([[30, 20], [50, 20], [50, 40], [30, 40]], float)
    ann = AnnotationSet([AnnotationLayer("Tumour", color=(200, 0, 0), regions=[
        Region(ring, type="polygon", text="a", attributes={"Id": "4"}),
        Region(hole, type="polygon", negative=True)])], mpp=0.5)
    df = measure(ann)
    path = write_geojson(df, ann, tmp_path / "regions.geojson")
    back = read_annotations(path)
    (layer, region), = list(back.regions())
    assert layer.name == "Tumour" and region.text == "a"
    assert len(region.holes) == 1
    assert region.attributes["measurements"]["area_um2"] == pytest.approx(
        (80 * 50 - 20 * 20) * 0.25, rel=0.02)
    assert region.attributes["objectType"] == "annotation"


def test_ecotaxa_archive(tmp_path, table):
    from PIL import Image

    df, labels, image = table
    path = write_ecotaxa(df, labels, image, tmp_path / "cells.zip", margin=5, contour=True,
                         name="../run 1/x")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        tsv = [n for n in names if n.endswith(".tsv")]
        assert tsv == ["ecotaxa_run_1_x.tsv"]
        assert all("/" not in n and ".." not in n for n in names)
        text = archive.read(tsv[0]).decode()
        lines = text.splitlines()
        header, types = lines[0].split("\t"), lines[1].split("\t")
        assert header[:3] == ["img_file_name", "img_rank", "object_id"]
        assert types[:3] == ["[t]", "[f]", "[t]"]
        assert set(types) == {"[t]", "[f]"}
        assert all(h.startswith("object_") for h in header[2:])
        assert types[header.index("object_class")] == "[t]"
        assert types[header.index("object_area_um2")] == "[f]"
        rows = pd.read_csv(io.StringIO(text), sep="\t", skiprows=[1])
        assert len(rows) == len(df) and rows["img_rank"].eq(1).all()
        np.testing.assert_allclose(rows["object_area_um2"], df["area_um2"])
        assert rows["object_id"].is_unique
        h, w = labels.shape
        for (_, row), (_, obj) in zip(rows.iterrows(), df.iterrows(), strict=True):
            with Image.open(io.BytesIO(archive.read(row["img_file_name"]))) as img:
                img.load()
                x0, x1 = max(0, obj["bbox_x0"] - 5), min(w, obj["bbox_x1"] + 5)
                y0, y1 = max(0, obj["bbox_y0"] - 5), min(h, obj["bbox_y1"] + 5)
                assert img.size == (x1 - x0, y1 - y0) and img.mode == "RGB"
        # without contours the crops are the image's pixels
        plain = write_ecotaxa(df, None, image, tmp_path / "plain.zip", margin=0,
                              image_format="png")
    with zipfile.ZipFile(plain) as archive:
        import cv2

        first = df.iloc[0]
        data = np.frombuffer(archive.read(f"plain_{int(first['label'])}.png"), np.uint8)
        crop = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        x0, x1, y0, y1 = (int(first[k]) for k in ("bbox_x0", "bbox_x1", "bbox_y0", "bbox_y1"))
        np.testing.assert_array_equal(crop, image[y0:y1, x0:x1])
    with pytest.raises(SlideSegError, match="zip"):
        write_ecotaxa(df, labels, image, tmp_path / "cells.tar")


# -- command line -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from napari_slideseg.core.sample import make_sample_slide

    return make_sample_slide(tmp_path_factory.mktemp("sample"))


def test_cli_measures_the_sample_annotations(sample, tmp_path, capsys):
    out, archive = tmp_path / "regions.csv", tmp_path / "regions.zip"
    assert main(["measure", str(sample.slide), "--annotations", str(sample.annotations),
                 "--out", str(out), "--ecotaxa", str(archive), "--contour"]) == 0
    assert "4 objects measured" in capsys.readouterr().out
    df = pd.read_csv(out)
    assert df["class"].tolist() == ["Tumour", "Tumour", "Stroma", "Glass"]
    ann = sample.annotation_set
    stroma = next(r for layer, r in ann.regions() if layer.name == "Stroma")
    assert df.loc[2, "area_um2"] == pytest.approx(stroma.area() * 0.25, rel=0.01)
    glass = next(r for layer, r in ann.regions() if layer.name == "Glass")
    assert df.loc[3, "area_um2"] == pytest.approx(glass.area() * 0.25, rel=0.01)
    assert df.loc[3, "perimeter_um"] == pytest.approx(glass.length() * 0.5, rel=0.01)
    # tumour regions: the polygons minus their lumens (negative regions)
    tumour = ann[0]
    lumens = [r for r in tumour.regions if r.negative]
    total = sum(r.area() for r in tumour.regions if not r.negative) - \
        sum(r.area() for r in lumens)
    assert df.loc[0:1, "area_um2"].sum() == pytest.approx(total * 0.25, rel=0.01)
    # tumour is haematoxylin-rich, glass is not
    assert df.loc[0, "hematoxylin_mean"] > 2 * df.loc[3, "hematoxylin_mean"]
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["ecotaxa_regions.tsv"] + \
            sorted(f"regions_{i}.png" for i in range(1, 5))


def test_cli_measures_a_label_image_with_regions(sample, tmp_path, capsys):
    import tifffile

    with open_slide(sample.slide) as slide:
        lw, lh = slide.level_dimensions[1]
        ds = slide.level_downsamples[1]
    labels = cells((lh, lw), n=30, seed=2).astype(np.uint16)
    path = tmp_path / "nuclei.tif"
    tifffile.imwrite(path, labels, tile=(128, 128), compression="zlib")
    out = tmp_path / "nuclei.geojson"
    assert main(["measure", str(sample.slide), "--labels", str(path), "--out", str(out),
                 "--regions", str(sample.annotations)]) == 0
    assert "at downsample 4.00" in capsys.readouterr().out
    back = read_annotations(out)
    m = {int(r.text): r.attributes["measurements"] for _, r in back.regions()}
    expected = measure(labels, mpp=0.5, downsample=ds)
    assert sorted(m) == expected["label"].tolist()
    assert m[1]["area_um2"] == pytest.approx(expected.loc[0, "area_um2"])
    # as a table: the region columns are there
    assert main(["measure", str(sample.slide), "--labels", str(path), "--out",
                 str(tmp_path / "n.tsv"), "--regions", str(sample.annotations),
                 "--level", "1"]) == 0
    df = pd.read_csv(tmp_path / "n.tsv", sep="\t")
    assert {"region", "region_class"} <= set(df.columns)
    assert set(df["region_class"].dropna()) <= {"Tumour", "Stroma", "Glass"}


def test_cli_measure_errors(sample, tmp_path, capsys):
    import tifffile

    assert main(["measure", str(sample.slide), "--annotations", str(sample.annotations),
                 "--out", str(tmp_path / "x.xlsx")]) == 2
    assert main(["measure", str(sample.slide), "--annotations", str(tmp_path / "none.xml"),
                 "--out", str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("napari-slideseg: error: ") and "none.xml" in err[-1]
    odd = tmp_path / "odd.tif"
    tifffile.imwrite(odd, np.zeros((50, 70), np.uint8))
    assert main(["measure", str(sample.slide), "--labels", str(odd), "--out",
                 str(tmp_path / "x.csv")]) == 1
    assert "pass --level" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["measure", str(sample.slide), "--out", str(tmp_path / "x.csv")])


def test_open_labels_reads_tiff_and_zarr_lazily(tmp_path):
    import tifffile
    import zarr

    from napari_slideseg import open_labels

    labels = cells((300, 260), n=10, seed=3).astype(np.uint16)
    tifffile.imwrite(tmp_path / "l.tif", labels, tile=(64, 64), compression="zlib")
    group = zarr.open_group(str(tmp_path / "l.zarr"), mode="w")
    group.create_array("0", data=labels.astype(np.int32), chunks=(100, 100))
    for name in ("l.tif", "l.zarr"):
        lazy = open_labels(tmp_path / name)
        assert lazy.shape == labels.shape
        np.testing.assert_array_equal(np.asarray(lazy[50:120, 30:200]), labels[50:120, 30:200])
        pd.testing.assert_frame_equal(measure(lazy, mpp=1.0, chunk=128),
                                      measure(labels, mpp=1.0), rtol=1e-9, check_dtype=False)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb_noise((20, 30)))
    with pytest.raises(SlideSegError, match="one channel"):
        open_labels(tmp_path / "rgb.tif")
    with pytest.raises(SlideSegError, match="no such"):
        open_labels(tmp_path / "missing.tif")
