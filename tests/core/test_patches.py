"""Patch and mask export: pixel-exact images and masks, selection, resume, references."""

from __future__ import annotations

import csv
import threading

import cv2
import numpy as np
import pytest
from skimage.draw import polygon as sk_polygon

from napari_slideseg import (
    AnnotationKey,
    AnnotationLayer,
    AnnotationSet,
    Region,
    export_patches,
    open_slide,
)


def _annotations():
    rng = np.random.default_rng(5)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 20))
    outer = np.column_stack([900.4 + 420 * np.cos(angles) * rng.uniform(0.8, 1, 20),
                             800.2 + 380 * np.sin(angles) * rng.uniform(0.8, 1, 20)])
    hole = np.array([[850.3, 750.1], [990.7, 760.4], [940.2, 880.9]])
    box = np.array([[1500.3, 200.2], [1900.7, 200.2], [1900.7, 500.6], [1500.3, 500.6]])
    ann = AnnotationSet([
        AnnotationLayer(name="tumour", color=(255, 0, 0), regions=[
            Region(outer), Region(hole, negative=True)]),
        AnnotationLayer(name="stroma", color=(0, 255, 0), regions=[
            Region(box, type="rectangle"), Region([[0, 0], [2000, 1500]], type="ruler")]),
    ])
    return ann, outer, hole, box


def _sk(ring, x0, y0, ds, n):
    m = np.zeros((n, n), bool)
    rr, cc = sk_polygon((ring[:, 1] - y0) / ds - 0.5, (ring[:, 0] - x0) / ds - 0.5, (n, n))
    m[rr, cc] = True
    return m


def _read(path, flags=cv2.IMREAD_UNCHANGED):
    image = cv2.imread(str(path), flags)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image


@pytest.mark.parametrize("level", [0, 1])
def test_patches_and_masks_are_pixel_exact(svs, tmp_path, level):
    ann, outer, hole, box = _annotations()
    rows = export_patches(svs.path, ann, tmp_path, size=128, level=level, overlap=32,
                          image_format="png", workers=2)
    with open_slide(svs.path) as slide:
        ds = slide.level_downsamples[level]
        lw, lh = slide.level_dimensions[level]
        assert len(rows) == ((lw - 128) // 96 + 1) * ((lh - 128) // 96 + 1)  # every patch
        key = AnnotationKey.load(tmp_path / "key.json")
        assert key.values == {"stroma": 1, "tumour": 2}
        for row in rows[::7]:
            x, y = row["x"], row["y"]
            image = _read(tmp_path / row["image"])
            np.testing.assert_array_equal(image, slide.read_region((x, y), level, (128, 128)))
            px, py = round(x / ds), round(y / ds)  # the patch's place in the level's grid
            x0, y0 = px * ds, py * ds
            expected = np.zeros((128, 128), np.uint8)
            expected[_sk(box, x0, y0, ds, 128)] = 1
            expected[_sk(outer, x0, y0, ds, 128) & ~_sk(hole, x0, y0, ds, 128)] = 2
            mask = _read(tmp_path / row["mask"])
            np.testing.assert_array_equal(mask, expected)
            assert row["frac_tumour"] == pytest.approx((expected == 2).mean())
    with open(tmp_path / "manifest.csv", newline="") as fh:
        manifest = list(csv.DictReader(fh))
    assert len(manifest) == len(rows)
    assert list(manifest[0])[:10] == ["slide", "level", "downsample", "mpp", "x", "y",
                                      "width", "height", "image", "mask"]


def test_selection_annotated_only_and_min_fraction(svs, tmp_path):
    ann = _annotations()[0]
    every = export_patches(svs.path, ann, tmp_path / "all", size=256, workers=2)
    annotated = export_patches(svs.path, ann, tmp_path / "ann", size=256, workers=2,
                               annotated_only=True)
    half = export_patches(svs.path, ann, tmp_path / "half", size=256, workers=2,
                          min_fraction=0.5, classes=["tumour"])
    frac = {(r["x"], r["y"]): r for r in every}
    assert {(r["x"], r["y"]) for r in annotated} == {
        k for k, r in frac.items() if r["frac_tumour"] + r["frac_stroma"] > 0}
    assert {(r["x"], r["y"]) for r in half} == {
        k for k, r in frac.items() if r["frac_tumour"] >= 0.5}
    assert 0 < len(half) < len(annotated) < len(every)


def test_interrupted_export_resumes_to_the_same_manifest(svs, tmp_path):
    ann = _annotations()[0]
    export_patches(svs.path, ann, tmp_path / "whole", size=128, workers=2)
    stop = threading.Event()

    def progress(done, total):
        if done >= total // 3:
            stop.set()

    partial = export_patches(svs.path, ann, tmp_path / "resumed", size=128, workers=2,
                             progress=progress, cancel=stop)
    full = (tmp_path / "whole" / "manifest.csv").read_text()
    assert 0 < len(partial) < full.count("\n") - 1
    written = sorted(p.name for p in (tmp_path / "resumed").rglob("*.jpg"))
    again = export_patches(svs.path, ann, tmp_path / "resumed", size=128, workers=2)
    assert (tmp_path / "resumed" / "manifest.csv").read_text() == full
    assert len(again) == full.count("\n") - 1
    assert not [p for p in (tmp_path / "resumed").rglob(".*")]  # no temporary files
    # the patches written before the stop were kept, not rewritten
    assert set(written) <= {p.name for p in (tmp_path / "resumed").rglob("*.jpg")}


def test_bad_parameters(svs, tmp_path):
    from napari_slideseg import SlideSegError

    with pytest.raises(SlideSegError, match="overlap"):
        export_patches(svs.path, None, tmp_path, size=64, overlap=64)
    with pytest.raises(SlideSegError, match="level 7 does not exist"):
        export_patches(svs.path, None, tmp_path, level=7)
    with pytest.raises(SlideSegError, match="image format"):
        export_patches(svs.path, None, tmp_path, image_format="gif")


@pytest.mark.shared
def test_reference_patches_are_reproduced(shared_data, tmp_path):
    ref = shared_data / "patches" / "pathopatcher_CMU-1-Small-Region" / "patches"
    rows = export_patches(shared_data / "slides" / "CMU-1-Small-Region.svs", None, tmp_path,
                          size=256, image_format="png", workers=2)
    by_xy = {(r["x"], r["y"]): r for r in rows}
    refs = sorted(ref.glob("*.png"))
    assert len(refs) == 5
    for path in refs:
        row, col = (int(v) for v in path.stem.rsplit("_", 2)[1:])
        expected = _read(path, cv2.IMREAD_COLOR)
        got = _read(tmp_path / by_xy[(col * 256, row * 256)]["image"])
        np.testing.assert_array_equal(got, expected, err_msg=path.name)


def test_folder_batch_skips_a_bad_slide_and_goes_on(svs, tmp_path):
    import json
    import shutil

    from napari_slideseg import write_annotations

    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(svs.path, folder / "a.svs")
    shutil.copy(svs.path, folder / "c d.svs")  # a space: the file names stay safe
    (folder / "b.svs").write_bytes(b"not a slide")
    ann = _annotations()[0]
    write_annotations(ann, folder / "a.xml")
    other = AnnotationSet([AnnotationLayer(name="necrosis", regions=[
        Region([[100.2, 100.2], [400.7, 100.2], [400.7, 300.6]])])])
    write_annotations(other, folder / "c d.geojson")
    with pytest.warns(RuntimeWarning, match="b.svs"):
        rows = export_patches(folder, None, tmp_path / "out", size=256, workers=2,
                              annotated_only=True)
    key = AnnotationKey.load(tmp_path / "out" / "key.json")
    assert key.values == {"necrosis": 1, "stroma": 2, "tumour": 3}  # from both files
    assert {r["slide"] for r in rows} == {"a.svs", "c d.svs"}
    assert all(" " not in r["image"] for r in rows)
    run = json.loads((tmp_path / "out" / "export.json").read_text())
    assert [f["slide"].endswith("b.svs") for f in run["failed"]] == [True]
    assert len(run["slides"]) == 2
    with open(tmp_path / "out" / "manifest.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)
    c_rows = [r for r in rows if r["slide"] == "c d.svs"]
    assert c_rows and all(r["frac_necrosis"] > 0 for r in c_rows)


def test_target_mpp_reads_a_finer_level_and_resizes(svs, tmp_path):
    ann = _annotations()[0]
    with open_slide(svs.path) as slide:
        mpp0 = slide.mpp[0]
        rows = export_patches(slide, ann, tmp_path, size=128, mpp=2 * mpp0, workers=2,
                              image_format="png")
        w0, h0 = slide.dimensions
        assert len(rows) == (int(w0 / 2) // 128) * (int(h0 / 2) // 128)
        key = AnnotationKey.load(tmp_path / "key.json")
        for row in rows[::5]:
            assert row["level"] == 0 and row["downsample"] == pytest.approx(2.0)
            assert row["mpp"] == pytest.approx(2 * mpp0)
            x, y = row["x"], row["y"]
            expected = cv2.resize(slide.read_region((x, y), 0, (256, 256)), (128, 128),
                                  interpolation=cv2.INTER_AREA)
            np.testing.assert_array_equal(_read(tmp_path / row["image"]), expected)
            from napari_slideseg import rasterize

            np.testing.assert_array_equal(_read(tmp_path / row["mask"]),
                                          rasterize(ann, key, (x, y, 128, 128), 2.0))
    from napari_slideseg import SlideSegError

    with pytest.raises(SlideSegError, match="finer than"):
        export_patches(svs.path, ann, tmp_path / "x", mpp=mpp0 / 2)


def _manifest(path):
    with open(path / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_several_levels_in_one_run(svs, tmp_path):
    ann = _annotations()[0]
    rows = export_patches(svs.path, ann, tmp_path, size=128, level=[0, 1], workers=2,
                          image_format="png", annotated_only=True)
    alone = {lv: export_patches(svs.path, ann, tmp_path / f"L{lv}", size=128, level=lv,
                                workers=2, annotated_only=True) for lv in (0, 1)}
    for lv in (0, 1):
        got = [(r["x"], r["y"]) for r in rows if r["level"] == lv]
        assert got == [(r["x"], r["y"]) for r in alone[lv]] and got
    with open_slide(svs.path) as slide:
        for row in rows[::9]:
            np.testing.assert_array_equal(
                _read(tmp_path / row["image"]),
                slide.read_region((row["x"], row["y"]), row["level"], (128, 128)))
    assert len({r["image"] for r in rows}) == len(rows)  # no name is used twice


def test_target_magnification_is_relative_to_the_objective(svs, tmp_path):
    ann = _annotations()[0]
    with open_slide(svs.path) as slide:
        assert slide.objective_power == 40
        by_mag = export_patches(slide, ann, tmp_path / "mag", size=128, magnification=20,
                                workers=2, image_format="png")
        by_mpp = export_patches(slide, ann, tmp_path / "mpp", size=128,
                                mpp=2 * slide.mpp[0], workers=2, image_format="png")
    assert [(r["x"], r["y"]) for r in by_mag] == [(r["x"], r["y"]) for r in by_mpp]
    for a, b in zip(by_mag[::7], by_mpp[::7], strict=True):
        assert "_20x_" in a["image"]
        np.testing.assert_array_equal(_read(tmp_path / "mag" / a["image"]),
                                      _read(tmp_path / "mpp" / b["image"]))
        np.testing.assert_array_equal(_read(tmp_path / "mag" / a["mask"]),
                                      _read(tmp_path / "mpp" / b["mask"]))
    from napari_slideseg import SlideSegError

    with pytest.raises(SlideSegError, match="above the scan"):
        export_patches(svs.path, ann, tmp_path / "x", magnification=80)
    with pytest.raises(SlideSegError, match="not levels and mpp"):
        export_patches(svs.path, ann, tmp_path / "x", level=0, mpp=1.0)


def test_region_rectangle_and_annotated_area(svs, tmp_path):
    ann, outer, hole, box = _annotations()
    rect = (300.0, 250.0, 700.0, 500.0)
    rows = export_patches(svs.path, ann, tmp_path / "rect", size=128, region=rect, workers=2)
    assert {(r["x"], r["y"]) for r in rows} == {
        (300 + i * 128, 250 + j * 128) for i in range(700 // 128) for j in range(500 // 128)}
    padded = export_patches(svs.path, ann, tmp_path / "pad", size=128, region=rect,
                            edge="pad", workers=2)
    assert len(padded) == (-(-700 // 128)) * (-(-500 // 128))
    area = export_patches(svs.path, ann, tmp_path / "area", size=128, region="annotated",
                          workers=2)
    annotated = export_patches(svs.path, ann, tmp_path / "ann", size=128,
                               annotated_only=True, workers=2)
    boxes = [(*r.min(axis=0), *r.max(axis=0)) for r in (outer, box)]

    def meets(r):
        return any(r["x"] < x1 and r["x"] + 128 > x0 and r["y"] < y1 and r["y"] + 128 > y0
                   for x0, y0, x1, y1 in boxes)

    assert all(meets(r) for r in area)
    assert {(r["x"], r["y"]) for r in annotated} < {(r["x"], r["y"]) for r in area}
    assert any(r["frac_tumour"] + r["frac_stroma"] == 0 for r in area)
    from napari_slideseg import SlideSegError

    with pytest.raises(SlideSegError, match="outside the slide"):
        export_patches(svs.path, ann, tmp_path / "x", region=(9000, 9000, 10, 10))


def test_unannotated_ratio_keeps_every_annotated_patch(svs, tmp_path):
    ann = _annotations()[0]
    every = export_patches(svs.path, ann, tmp_path / "all", size=128, workers=2)
    labelled = {(r["x"], r["y"]) for r in every if r["frac_tumour"] + r["frac_stroma"] > 0}
    a = export_patches(svs.path, ann, tmp_path / "a", size=128, unannotated_ratio=0.5,
                       seed=3, workers=2)
    b = export_patches(svs.path, ann, tmp_path / "b", size=128, unannotated_ratio=0.5,
                       seed=3, workers=2)
    got = {(r["x"], r["y"]) for r in a}
    assert labelled <= got
    assert len(got - labelled) == round(0.5 * len(labelled))
    assert a == b  # seeded: the same draw
    c = export_patches(svs.path, ann, tmp_path / "c", size=128, unannotated_ratio=0.5,
                       seed=4, workers=2)
    assert {(r["x"], r["y"]) for r in c} != got


def test_min_tissue_leaves_out_glass(tmp_path):
    from napari_slideseg.core import synthetic as sy
    from napari_slideseg.core.tissue import tissue_mask

    w, h = 1536, 1024
    image, _ = sy.tissue_image(w, h, seed=1)
    rng = np.random.default_rng(2)
    image[:, :768] = np.clip(240 + rng.normal(0, 2, (h, 768, 3)), 0, 255).astype(np.uint8)
    image[:, 768:] = np.where(image[:, 768:].mean(axis=2, keepdims=True) > 200,
                              np.uint8([200, 120, 170]), image[:, 768:])  # all tissue
    sizes = sy.pyramid_dimensions(w, h, (1, 4))
    path = tmp_path / "half.svs"
    sy.write_aperio_svs(path, sizes, sy.array_tile_reader(sy.downsample_levels(image, sizes)),
                        mpp=2.0)  # 3 x 2 mm: tissue areas above detect_tissue's minimum
    with open_slide(path) as slide:
        mask = tissue_mask(slide)
        frac = mask.fractions(np.array([0, 768, 640]), np.array([0, 0, 0]), 256, 256)
    assert frac[0] == 0 and frac[1] == 1 and 0.4 < frac[2] < 0.6
    rows = export_patches(path, None, tmp_path / "out", size=256, min_tissue=0.9, workers=2)
    assert {(r["x"], r["y"]) for r in rows} == {(x, y) for x in (768, 1024, 1280)
                                                for y in (0, 256, 512, 768)}


def test_parquet_and_tiff_masks(svs, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    ann = _annotations()[0]
    rows = export_patches(svs.path, ann, tmp_path / "t", size=128, mask_format="tif",
                          annotated_only=True, workers=2)
    png = export_patches(svs.path, ann, tmp_path / "p", size=128, annotated_only=True,
                         workers=2)
    for a, b in zip(rows, png, strict=True):
        assert a["mask"].endswith(".tif")
        np.testing.assert_array_equal(_read(tmp_path / "t" / a["mask"]),
                                      _read(tmp_path / "p" / b["mask"]))
    table = pq.read_table(tmp_path / "t" / "manifest.parquet").to_pylist()
    assert table == rows
    assert [dict(r) for r in _manifest(tmp_path / "t")][0]["image"] == rows[0]["image"]


def test_plan_patches_matches_the_export(svs, tmp_path):
    from napari_slideseg import plan_patches

    ann = _annotations()[0]
    for kwargs in ({"annotated_only": True}, {"min_fraction": 0.3, "classes": ["tumour"]},
                   {"level": [0, 1], "overlap": 16}):
        plan = plan_patches(svs.path, ann, size=128, **kwargs)
        rows = export_patches(svs.path, ann, tmp_path / str(len(plan)), size=128, workers=2,
                              **kwargs)
        assert [(int(p[0]), int(p[1]), int(p[4])) for p in plan] == [
            (r["x"], r["y"], r["level"]) for r in rows]


def test_scheduler_runs_on_a_dask_cluster(svs, tmp_path):
    distributed = pytest.importorskip("distributed")
    ann = _annotations()[0]
    local = export_patches(svs.path, ann, tmp_path / "threads", size=128, level=[0, 1],
                           annotated_only=True, workers=2)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        seen = []
        rows = export_patches(svs.path, ann, tmp_path / "cluster", size=128, level=[0, 1],
                              annotated_only=True, scheduler=cluster.scheduler_address,
                              progress=lambda done, total: seen.append((done, total)))
    assert rows == local
    assert seen[-1][0] == seen[-1][1]
    assert ((tmp_path / "cluster" / "manifest.csv").read_text()
            == (tmp_path / "threads" / "manifest.csv").read_text())
    for row in rows[::11]:
        assert (tmp_path / "cluster" / row["image"]).read_bytes() == (
            tmp_path / "threads" / row["image"]).read_bytes()


def test_killed_export_resumes_to_the_same_manifest(svs, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from napari_slideseg import write_annotations

    write_annotations(_annotations()[0], tmp_path / "a.xml")
    command = [sys.executable, "-m", "napari_slideseg.cli", "export", str(svs.path),
               "--annotations", str(tmp_path / "a.xml"), "--size", "64", "--format", "png",
               "--workers", "2"]
    subprocess.run(command + ["--out", str(tmp_path / "whole")], check=True,
                   capture_output=True)
    proc = subprocess.Popen(command + ["--out", str(tmp_path / "killed")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    images = tmp_path / "killed" / "synthetic_slide" / "images"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if images.is_dir() and sum(1 for _ in images.iterdir()) > 100:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the export finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "manifest.csv").exists()
    subprocess.run(command + ["--out", str(tmp_path / "killed")], check=True,
                   capture_output=True)
    assert ((tmp_path / "killed" / "manifest.csv").read_text()
            == (tmp_path / "whole" / "manifest.csv").read_text())
    assert not list((tmp_path / "killed").rglob("*.part"))
    for row in _manifest(tmp_path / "whole")[::50]:
        for col in ("image", "mask"):
            assert (tmp_path / "killed" / row[col]).read_bytes() == (
                tmp_path / "whole" / row[col]).read_bytes()


def test_zarr_dataset_holds_the_same_patches(svs, tmp_path):
    zarr = pytest.importorskip("zarr")
    ann = _annotations()[0]
    files = export_patches(svs.path, ann, tmp_path / "files", size=128, level=[0, 1],
                           image_format="png", annotated_only=True, workers=2)
    stop = threading.Event()
    partial = export_patches(svs.path, ann, tmp_path / "z", size=128, level=[0, 1],
                             annotated_only=True, dataset="zarr", workers=2, cancel=stop,
                             progress=lambda done, total: stop.set() if done > 10 else None)
    assert len(partial) < len(files)
    rows = export_patches(svs.path, ann, tmp_path / "z", size=128, level=[0, 1],
                          annotated_only=True, dataset="zarr", workers=2)
    assert len(rows) == len(files)
    group = zarr.open_group(tmp_path / "z" / "patches.zarr", mode="r")
    assert group["images"].shape == (len(files), 128, 128, 3)
    for i, (row, ref) in enumerate(zip(rows, files, strict=True)):
        assert (row["x"], row["y"], row["level"]) == (ref["x"], ref["y"], ref["level"])
        assert row["image"] == f"patches.zarr/images/{i}"
        if i % 5 == 0:
            np.testing.assert_array_equal(group["images"][i],
                                          _read(tmp_path / "files" / ref["image"]))
            np.testing.assert_array_equal(group["masks"][i],
                                          _read(tmp_path / "files" / ref["mask"]))
    table = group["manifest"]
    np.testing.assert_array_equal(table["x"][:], [r["x"] for r in files])
    np.testing.assert_allclose(table["frac_tumour"][:], [r["frac_tumour"] for r in files])
    assert not list((tmp_path / "z").rglob("*.jpg"))
    from napari_slideseg import SlideSegError

    with pytest.raises(SlideSegError, match="another export"):
        export_patches(svs.path, ann, tmp_path / "z", size=64, dataset="zarr")


@pytest.mark.shared
def test_real_imagescope_nuclei_export_pixel_exact(shared_data, tmp_path):
    """MoNuSeg: a real 1000 x 1000 H&E tile and its ImageScope file of 575 nuclei."""
    from napari_slideseg import read_annotations

    folder = shared_data / "patches" / "monuseg"
    image_path = folder / "TCGA-2Z-A9J9-01A-01-TS1.tif"
    ann = read_annotations(folder / "TCGA-2Z-A9J9-01A-01-TS1.xml")
    with open_slide(image_path) as slide:
        assert slide.mpp is None  # the TIFF's 72 dpi is not a pixel size
        rows = export_patches(slide, ann, tmp_path, size=200, overlap=50,
                              image_format="png", workers=2)
        assert len(rows) == len(range(0, 1000 - 200 + 1, 150)) ** 2
        regions = [r.vertices for r in ann[0].regions]
        for row in rows[::4]:
            x, y = row["x"], row["y"]
            np.testing.assert_array_equal(_read(tmp_path / row["image"]),
                                          slide.read_region((x, y), 0, (200, 200)))
            expected = np.zeros((200, 200), np.uint8)
            for ring in regions:  # each nucleus filled on its own (they may overlap)
                expected[_sk(ring, x, y, 1.0, 200)] = 1
            np.testing.assert_array_equal(_read(tmp_path / row["mask"]), expected)
    assert sum(r[next(k for k in r if k.startswith("frac_"))] > 0 for r in rows) == len(rows)
