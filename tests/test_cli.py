"""The napari-slideseg command line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_slideseg.cli import main


def test_info_text(svs, capsys):
    assert main(["info", str(svs.path)]) == 0
    out = capsys.readouterr().out
    assert "aperio" in out and "2501 x 1803" in out and "0.2527" in out and "40x" in out
    assert "label, macro, thumbnail" in out


def test_info_json(svs, capsys):
    assert main(["info", "--json", str(svs.path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["level_count"] == 3
    assert info["level_dimensions"] == [[2501, 1803], [625, 450], [156, 112]]
    assert info["level_downsamples"][0] == 1.0
    assert info["mpp"] == pytest.approx([0.2527, 0.2527])
    assert info["objective_power"] == 40
    assert info["vendor"] == "aperio"
    assert info["associated_images"] == ["label", "macro", "thumbnail"]
    assert set(info) == {"level_count", "level_dimensions", "level_downsamples", "mpp",
                         "objective_power", "vendor", "associated_images"}


@pytest.mark.parametrize("make", ["missing", "garbage"])
def test_errors_are_one_line_and_nonzero(tmp_path, make):
    path = tmp_path / "bad.svs"
    if make == "garbage":
        path.write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-m", "napari_slideseg.cli", "info", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("napari-slideseg: error: ") and "bad.svs" in lines[0]
    assert "Traceback" not in proc.stderr


def test_view_without_display_fails_clearly(svs, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["view", str(svs.path)]) == 1
    assert "no display" in capsys.readouterr().err


def test_view_rejects_annotation_files_no_reader_opens(svs, tmp_path, capsys):
    missing = tmp_path / "missing.xml"
    assert main(["view", str(svs.path), str(missing)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"napari-slideseg: error: {missing}: no such annotation file.")
    unknown = tmp_path / "notes.unknownformat"
    unknown.write_text("not annotations")
    assert main(["view", str(svs.path), str(unknown)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"napari-slideseg: error: {unknown}: no installed napari reader")


def test_demo_headless_writes_what_it_says(tmp_path, capsys):
    assert main(["demo", "--headless", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("sample.svs", "sample.xml", "overview.png", "center-512px-level0.png",
                 "sample-info.json"):
        assert (tmp_path / name).is_file(), name
        assert name in out
    info = json.loads((tmp_path / "sample-info.json").read_text())
    assert info["level_count"] == 3 and info["vendor"] == "aperio"
    import cv2

    overview = cv2.imread(str(tmp_path / "overview.png"))
    assert overview.shape[1] == 1024
    # tissue is pink/purple, glass is near white: both are present
    b, g, r = (overview[..., i].astype(int) for i in range(3))
    assert ((r - g) > 40).mean() > 0.1
    assert ((r > 235) & (g > 235) & (b > 235)).mean() > 0.2


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("info", "view", "demo"):
        assert command in out


def test_convert_between_formats_and_report_losses(aperio_file, tmp_path, capsys):
    from napari_slideseg import read_annotations

    geo = tmp_path / "out.geojson"
    assert main(["convert", str(aperio_file), str(geo)]) == 0
    out = capsys.readouterr().out
    assert f"-> {geo} (geojson): 3 layers, 7 regions" in out
    assert "not expressible in geojson" in out and "ellipse" in out
    assert "layer '2': has no regions" in out
    back = read_annotations(geo)
    assert back.format == "geojson" and [la.name for la in back] == ["Tumour",
                                                                      "Stroma & <other>"]
    asap = tmp_path / "out.xml"
    assert main(["convert", str(geo), str(asap), "--to", "asap"]) == 0
    assert read_annotations(asap).format == "asap"
    # OUT exists: refused without --force, replaced (with a backup) with it
    assert main(["convert", str(geo), str(asap), "--to", "asap"]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["convert", str(geo), str(asap), "--to", "asap", "--force"]) == 0
    assert (tmp_path / "out.xml~").exists()


def test_convert_bad_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.xml"
    bad.write_text("<Annotations><Annotation></Annotations>")
    assert main(["convert", str(bad), str(tmp_path / "x.geojson")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"napari-slideseg: error: {bad}: line 1, column")
    assert "\n" not in err and not (tmp_path / "x.geojson").exists()


def test_export_writes_patches_masks_and_manifest(tmp_path, capsys):
    from napari_slideseg.core.sample import make_sample_slide

    sample = make_sample_slide(tmp_path / "sample")
    out = tmp_path / "out"
    assert main(["export", str(sample.slide), "--out", str(out), "--size", "256",
                 "--annotated-only", "--format", "png", "--workers", "2"]) == 0
    captured = capsys.readouterr()
    assert "patches checked" in captured.err  # the progress bar
    n = int(captured.out.split()[0])
    assert n > 0 and f"-> {out / 'manifest.csv'}" in captured.out
    assert len(list((out / "sample" / "images").glob("*.png"))) == n
    assert len(list((out / "sample" / "masks").glob("*.png"))) == n
    assert (out / "key.json").exists() and (out / "export.json").exists()
    assert main(["export", str(sample.slide), "--out", str(out), "--level", "9"]) == 1
    assert "level 9 does not exist" in capsys.readouterr().err


def test_export_options_match_the_function(tmp_path, capsys):
    import json

    from napari_slideseg import export_patches
    from napari_slideseg.core.sample import make_sample_slide

    sample = make_sample_slide(tmp_path / "sample")
    args = ["--size", "128", "--level", "0", "1", "--overlap", "16", "--region",
            "100,50,1500,1200", "--min-fraction", "0.2", "--classes", "Tumour",
            "--mask-format", "tif", "--format", "png", "--png-compression", "3",
            "--workers", "2"]
    assert main(["export", str(sample.slide), "--out", str(tmp_path / "cli"), *args]) == 0
    capsys.readouterr()
    rows = export_patches(sample.slide, sample.annotations, tmp_path / "api", size=128,
                          level=[0, 1], overlap=16, region=(100, 50, 1500, 1200),
                          min_fraction=0.2, classes=["Tumour"], mask_format="tif",
                          image_format="png", png_compression=3, workers=2)
    assert rows
    assert ((tmp_path / "cli" / "manifest.csv").read_text()
            == (tmp_path / "api" / "manifest.csv").read_text())
    params = json.loads((tmp_path / "cli" / "export.json").read_text())["params"]
    assert params["levels"] == [0, 1] and params["region"] == [100, 50, 1500, 1200]
    assert main(["export", str(sample.slide), "--out", str(tmp_path / "x"),
                 "--region", "1,2,3"]) == 2
    assert "X,Y,W,H" in capsys.readouterr().err


def test_tissue_writes_a_mask_and_polygons(tmp_path, capsys):
    import tifffile

    from napari_slideseg import open_slide, rasterize, read_annotations
    from napari_slideseg.core.masks import AnnotationKey
    from napari_slideseg.core.sample import make_sample_slide
    from napari_slideseg.core.threshold import detect_tissue

    sample = make_sample_slide(tmp_path / "sample")
    with open_slide(sample.slide) as slide:
        expected = detect_tissue(slide, mpp=4.0)
    assert expected.count >= 1
    assert main(["tissue", str(sample.slide), "--out", str(tmp_path / "t.tif"),
                 "--mpp", "4"]) == 0
    assert "tissue piece" in capsys.readouterr().out
    with tifffile.TiffFile(tmp_path / "t.tif") as tif:
        mask = tif.series[0].levels[0].asarray()
    np.testing.assert_array_equal(mask, (expected.labels > 0).astype(np.uint8))
    assert main(["tissue", str(sample.slide), "--out", str(tmp_path / "t.geojson"),
                 "--mpp", "4", "--tolerance", "0"]) == 0
    ann = read_annotations(tmp_path / "t.geojson")
    key = AnnotationKey({"tissue": 1})
    h, w = expected.labels.shape
    back = rasterize(ann, key, region=(0, 0, w, h), downsample=expected.downsample)
    np.testing.assert_array_equal(back, (expected.labels > 0).astype(np.uint8))
    assert main(["tissue", str(sample.slide), "--out", str(tmp_path / "t.png")]) == 2
    # the same command thresholds any stain: haematoxylin-rich objects at 1 µm/px
    assert main(["threshold", str(sample.slide), "--out", str(tmp_path / "h.tif"),
                 "--mpp", "1", "--channel", "hematoxylin", "--sigma", "1", "--close", "0",
                 "--min-area", "20", "--min-hole", "0"]) == 0
    assert "pieces" in capsys.readouterr().out


def test_review_command_sets_statuses_and_opinions(tmp_path, capsys):
    from napari_slideseg import AnnotationLayer, AnnotationSet, Region, read_annotations
    from napari_slideseg import write_annotations as write
    from napari_slideseg.core.review import review_of, set_element_attributes, slide_opinion

    regions = [Region([[0, 0], [10, 0], [10, 10]]), Region([[20, 0], [30, 0], [30, 10]])]
    for region in regions:
        set_element_attributes(region, {"review_status": "pending"})
    path = tmp_path / "p.xml"
    write(AnnotationSet([AnnotationLayer(name="t", regions=regions)]), path)
    assert main(["review", str(path), "--set", "1=accepted", "--opinion", "1=solid",
                 "2=two\nlines", "--reviewer", "dr x", "--slide-opinion", "two foci"]) == 0
    back = read_annotations(path)
    first, second = back[0].regions
    assert review_of(first) == {"status": "accepted", "reviewer": "dr x",
                                "reviewed_at": review_of(first)["reviewed_at"],
                                "opinion": "solid"}
    assert review_of(second) == {"status": "pending", "opinion": "two\nlines"}
    assert slide_opinion(back)["opinion"] == "two foci"
    assert "pending 1 · accepted 1" in capsys.readouterr().out
    assert main(["review", str(path), "--set", "1=maybe"]) == 1
    assert main(["review", str(path), "--opinion", "9=x"]) == 2
