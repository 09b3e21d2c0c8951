"""The ``napari-slideseg`` command line: a thin layer over the public API.

Every subcommand prints errors as one line (``napari-slideseg: error: ...``) and exits
with status 1; status 2 is a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .core.errors import SlideSegError

__all__ = ["main", "build_parser"]

PROG = "napari-slideseg"


def _cmd_info(args: argparse.Namespace) -> int:
    from .core.slide import open_slide

    with open_slide(args.slide) as slide:
        info = slide.info()
        if args.json:
            keys = ("level_count", "level_dimensions", "level_downsamples", "mpp",
                    "objective_power", "vendor", "associated_images")
            out = {k: info[k] for k in keys}
            if args.properties:
                out["properties"] = slide.properties
            print(json.dumps(out, indent=2))
            return 0
        w, h = slide.dimensions
        print(f"{slide.path}")
        print(f"  vendor           {slide.vendor} (read with {slide.backend})")
        print(f"  size             {w} x {h} px")
        mpp = f"{slide.mpp[0]:.5g} x {slide.mpp[1]:.5g} µm/px" if slide.mpp else "unknown"
        print(f"  pixel size       {mpp}")
        power = f"{slide.objective_power:g}x" if slide.objective_power else "unknown"
        print(f"  objective        {power}")
        print(f"  associated       {', '.join(slide.associated_images) or 'none'}")
        print("  levels           level  width x height  downsample  tile")
        for i, ((lw, lh), ds, tile) in enumerate(zip(slide.level_dimensions,
                                                      slide.level_downsamples,
                                                      info["tile_sizes"], strict=True)):
            print(f"                   {i:>5}  {lw:>6} x {lh:<6}  {ds:>10.4f}  "
                  f"{tile[0]}x{tile[1]}")
        if args.properties:
            for key, value in sorted(slide.properties.items()):
                print(f"  {key} = {value}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .core.annotations import read_annotations, write_annotations

    src, dst = Path(args.input), Path(args.output)
    if dst.exists() and not args.force:
        raise SlideSegError(f"{dst}: exists; pass --force to replace it (a backup is kept "
                            f"as {dst.name}~).")
    if dst.resolve() == src.resolve():
        raise SlideSegError(f"{dst}: is the input file; write to another file.")
    annotations = read_annotations(src)
    if args.mpp is not None:
        annotations.mpp = args.mpp
    lost = write_annotations(annotations, dst, format=args.to)
    fmt = args.to or ("geojson" if dst.suffix.lower() in (".geojson", ".json") else "aperio")
    print(f"{src} ({annotations.format}) -> {dst} ({fmt}): {len(annotations)} layers, "
          f"{annotations.region_count} regions")
    if lost:
        print(f"not expressible in {fmt} ({len(lost)}):")
        for line in lost:
            print(f"  - {line}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import time

    from ._reader import sidecar_annotations
    from .core.patches import export_patches

    annotations = args.annotations
    if annotations is None and not Path(args.slide).is_dir():
        annotations = sidecar_annotations(Path(args.slide))
    start = time.perf_counter()
    shown = [-1.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - shown[0] > 0.5:
            shown[0] = now
            width = 30
            filled = int(width * done / max(total, 1))
            print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} patches "
                  f"checked", end="", file=sys.stderr, flush=True)

    region = args.region
    if region not in (None, "slide", "annotated"):
        try:
            region = [float(v) for v in region.split(",")]
        except ValueError:
            region = None
        if region is None or len(region) != 4:
            print(f"error: --region {args.region!r}: give slide, annotated or X,Y,W,H "
                  "(level-0 pixels)", file=sys.stderr)
            return 2
    rows = export_patches(
        args.slide, annotations, args.out, size=args.size, level=args.level, mpp=args.mpp,
        magnification=args.magnification, overlap=args.overlap, region=region,
        image_format=args.format, quality=args.quality, png_compression=args.png_compression,
        mask_format=args.mask_format, dataset=args.dataset, key=args.key,
        class_from=args.class_from,
        annotated_only=args.annotated_only, min_fraction=args.min_fraction,
        classes=args.classes, min_tissue=args.min_tissue, unannotated_ratio=args.ratio,
        seed=args.seed, edge=args.edge, workers=args.workers, scheduler=args.scheduler,
        progress=progress)
    print(file=sys.stderr)
    seconds = time.perf_counter() - start
    run = json.loads((Path(args.out) / "export.json").read_text())
    slides = len(run["slides"])
    print(f"{len(rows)} patches from {slides} slide{'s' if slides != 1 else ''} in "
          f"{seconds:.1f} s ({len(rows) / max(seconds, 1e-9):.0f}/s) -> "
          f"{Path(args.out) / 'manifest.csv'}")
    for failure in run["failed"]:
        print(f"skipped {failure['slide']}: {failure['error']}")
    return 1 if run["failed"] and not run["slides"] else 0


def _cmd_tissue(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from .core.slide import open_slide
    from .core.threshold import ThresholdParams, detect_tissue, threshold_level

    out = Path(args.out)
    suffix = out.suffix.lower()
    polygons = suffix in (".xml", ".geojson", ".json")
    if not polygons and suffix not in (".tif", ".tiff", ".zarr"):
        print(f"error: --out {out}: give a .tif/.zarr (mask) or .xml/.geojson/.json "
              "(polygons)", file=sys.stderr)
        return 2
    settings = {"channel": args.channel, "method": args.method, "value": args.threshold,
                "quantile": args.quantile, "above": not args.below}
    for name, value in (("sigma_um", args.sigma), ("open_um", args.open),
                        ("close_um", args.close), ("min_area_um2", args.min_area),
                        ("min_hole_um2", args.min_hole)):
        if value is not None:
            settings[name] = value
    if args.fill_holes:
        settings["fill_holes"] = True
    if args.threshold is not None:
        settings["method"] = "manual"
    start = time.perf_counter()
    with open_slide(args.slide) as slide:
        if args.level is not None and not polygons:
            # a large level: threshold estimated small, applied chunk by chunk
            defaults = ThresholdParams(channel="saturation", sigma_um=16.0, close_um=32.0)
            params = ThresholdParams(**{**{k: getattr(defaults, k) for k in
                                           ("channel", "sigma_um", "close_um")}, **settings})
            mask, t = threshold_level(slide, args.level, params)
            ds = float(slide.level_downsamples[args.level])
            mpp = slide.mpp[0] * ds if slide.mpp else None
            _save_levels(mask, out, mpp)
            print(f"tissue mask of level {args.level} ({mask.shape[1]} x {mask.shape[0]}, "
                  f"threshold {t:.4g}) -> {out} in {time.perf_counter() - start:.1f} s")
            return 0
        result = detect_tissue(slide, mpp=args.mpp, level=args.level, **settings)
    seconds = time.perf_counter() - start
    if polygons:
        from .core.annotations import write_annotations
        from .core.vector import labels_to_polygons

        ann = labels_to_polygons(result.labels, downsample=result.downsample,
                                 tolerance=args.tolerance * result.downsample,
                                 names={i: "tissue" for i in range(1, result.count + 1)})
        ann.mpp = slide.mpp[0] if slide.mpp else None
        write_annotations(ann, out)
    else:
        import dask.array as da

        _save_levels(da.from_array((result.labels > 0).astype(np.uint8), chunks=1024), out,
                     result.mpp)
    print(f"{result.count} tissue piece{'s' if result.count != 1 else ''}, "
          f"{100 * result.fraction():.1f} % of the slide, threshold {result.threshold:.4g} "
          f"({result.labels.shape[1]} x {result.labels.shape[0]} px at "
          f"{result.downsample:.4g} x) -> {out} in {seconds:.1f} s")
    return 0


def _cmd_measure(args: argparse.Namespace) -> int:
    import time

    from .core.annotations import read_annotations
    from .core.measure import measure, open_labels
    from .core.slide import open_slide
    from .core.tables import TABLE_SUFFIXES, write_ecotaxa, write_geojson, write_table

    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix not in (*TABLE_SUFFIXES, ".geojson", ".json"):
        print(f"error: --out {out}: give a .csv, .tsv, .parquet or .geojson file",
              file=sys.stderr)
        return 2
    if args.ecotaxa and not args.ecotaxa.lower().endswith(".zip"):
        print(f"error: --ecotaxa {args.ecotaxa}: an EcoTaxa archive is a .zip file",
              file=sys.stderr)
        return 2
    if args.labels and args.classes_from:
        print("error: --classes-from applies to --annotations (regions have classes, "
              "labels do not)", file=sys.stderr)
        return 2
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if total > 1:
            width = 30
            filled = int(width * done / total)
            print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} windows",
                  end="", file=sys.stderr, flush=True)

    with open_slide(args.slide) as slide:
        if args.level is not None and not 0 <= args.level < slide.level_count:
            raise SlideSegError(f"{slide.path}: level {args.level} does not exist (the "
                                f"slide has {slide.level_count}).")
        regions = read_annotations(args.regions) if args.regions else None
        if args.labels:
            objects: Any = open_labels(args.labels)
            lh, lw = (int(v) for v in objects.shape)
            downsample = _labels_downsample(slide, (lw, lh), args.level, args.labels)
            classes = None
        else:
            objects = read_annotations(args.annotations)
            level = args.level or 0
            downsample = float(slide.level_downsamples[level])
            classes = args.classes_from or "layer"
        df = measure(objects, slide, downsample=downsample, regions=regions,
                     classes=classes, progress=progress)
        print(file=sys.stderr)
        if suffix in (".geojson", ".json"):
            write_geojson(df, objects, out)
        else:
            write_table(df, out)
        if args.ecotaxa:
            write_ecotaxa(df, objects, slide, args.ecotaxa, contour=args.contour)
    seconds = time.perf_counter() - start
    units = "µm" if df.attrs.get("mpp") else "level-0 px (pixel size unknown)"
    print(f"{len(df)} object{'s' if len(df) != 1 else ''} measured at downsample "
          f"{downsample:.4g}, lengths in {units}, in {seconds:.1f} s -> {out}")
    if args.ecotaxa:
        print(f"EcoTaxa archive -> {args.ecotaxa}")
    return 0


def _progress_printer(unit: str) -> Any:
    import time

    shown = [-1.0, ""]

    def progress(step: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - shown[0] > 0.5 or step != shown[1]:
            shown[0], shown[1] = now, step
            width = 30
            filled = int(width * done / max(total, 1))
            print(f"\r{step:>9} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                  f"{unit if step == 'tiles' else ''}   ", end="", file=sys.stderr, flush=True)

    return progress


def _user_model(args: argparse.Namespace) -> Any:
    """The --model file with the declaration given on the command line (if any)."""
    if args.model is None:
        return None
    from .core.tilemodels import load_model

    kwargs: dict[str, Any] = {}
    if args.model_classes:
        kwargs["classes"] = args.model_classes
    if args.input_size:
        kwargs["input_size"] = args.input_size
    if args.mean:
        kwargs["mean"] = tuple(args.mean)
    if args.std:
        kwargs["std"] = tuple(args.std)
    return load_model(args.model, **kwargs)


def _cmd_auto_annotate(args: argparse.Namespace) -> int:
    import math
    import time

    from .core.annotations import read_annotations, write_annotations
    from .core.autoannotate import auto_annotate, next_training, record_review, run_iteration

    if args.model is None and args.annotations is None and args.reviewed is None:
        print("error: give --annotations to train the built-in classifier, --reviewed "
              "(with --workdir) to retrain from a review, or --model", file=sys.stderr)
        return 2
    if args.reviewed is not None and args.workdir is None:
        print("error: --reviewed needs --workdir (the loop's folder)", file=sys.stderr)
        return 2
    if args.workdir is None and args.out is None:
        print("error: give --out (annotation file) or --workdir", file=sys.stderr)
        return 2
    params = dict(size=args.size, level=args.level, mpp=args.mpp, min_tissue=args.min_tissue,
                  classes=args.classes, threshold=args.threshold, eps=args.eps,
                  min_samples=args.min_samples, min_tiles=args.min_tiles,
                  min_mean=args.min_mean,
                  max_std=math.inf if args.max_std is None else args.max_std,
                  max_var=math.inf if args.max_var is None else args.max_var,
                  outline=args.outline, concavity=args.concavity, seed=args.seed,
                  workers=args.workers, progress=_progress_printer("tiles"))
    model = _user_model(args)
    start = time.perf_counter()
    if args.workdir is not None:
        if args.reviewed is not None:
            rows = record_review(args.workdir, args.reviewed)
            print(f"iteration {int(rows['iteration'].iloc[0])} reviewed:")
            for _, row in rows.iterrows():
                print(f"  {row['class']}: Dice {row['dice']:.3f}  IoU {row['iou']:.3f} "
                      f"(tiles: {int(row['n_true'])} true, {int(row['n_pred'])} predicted)")
        training = args.annotations if args.annotations is not None else \
            next_training(args.workdir)
        folder, result = run_iteration(args.workdir, args.slide, training, model=model,
                                       **params)
        out = folder / "predicted.xml"
        if args.out is not None:
            write_annotations(result.annotations, args.out)
            out = Path(args.out)
    else:
        training = read_annotations(args.annotations) if args.annotations else None
        result = auto_annotate(args.slide, model, training, **params)
        out = Path(args.out)
        write_annotations(result.annotations, out)
    print(file=sys.stderr)
    if args.save_model:
        if not hasattr(result.model, "save"):
            print("error: --save-model saves the built-in classifier; a user model is "
                  "already a file", file=sys.stderr)
            return 2
        result.model.save(args.save_model)
    if args.clusters:
        result.clusters.to_csv(args.clusters, index=False)
    if args.pseudo_mask:
        from .core.weaklabels import save_pseudo_mask

        save_pseudo_mask(result.predictions, args.pseudo_mask, threshold=args.threshold)
    seconds = time.perf_counter() - start
    kept = result.clusters[result.clusters["kept"]] if len(result.clusters) else \
        result.clusters
    if result.training is not None:
        counts = ", ".join(f"{k} {v}" for k, v in result.training.counts().items())
        print(f"trained on {int(result.training.used.sum())} tiles ({counts})")
    per_class = kept.groupby("class").size().to_dict() if len(kept) else {}
    print(f"{len(result.grid)} tiles classified, {len(kept)} of {len(result.clusters)} "
          f"clusters kept ({', '.join(f'{k} {v}' for k, v in per_class.items()) or 'none'}) "
          f"in {seconds:.1f} s -> {out}")
    return 0


def _cmd_weak_labels(args: argparse.Namespace) -> int:
    import time

    from .core.annotations import read_annotations
    from .core.weaklabels import export_weak_labels

    start = time.perf_counter()
    progress = _progress_printer("tiles")
    table = export_weak_labels(
        args.slide, read_annotations(args.annotations), args.out, size=args.size,
        level=args.level, mpp=args.mpp, classes=args.classes, min_fraction=args.min_fraction,
        source=args.source, image_format=args.format, min_tissue=args.min_tissue,
        workers=args.workers, progress=lambda d, t: progress("tiles", d, t))
    print(file=sys.stderr)
    if args.predictions:
        from .core.autoannotate import load_predictions
        from .core.weaklabels import save_pseudo_mask

        save_pseudo_mask(load_predictions(args.predictions), Path(args.out) / "pseudo_mask.png",
                         threshold=args.threshold)
    print(f"{len(table)} tiles with multi-hot labels in {time.perf_counter() - start:.1f} s "
          f"-> {Path(args.out) / 'labels.csv'}")
    return 0


def _cmd_review(args: argparse.Namespace) -> int:
    from .core.annotations import read_annotations, write_annotations
    from .core.review import (
        review_counts,
        set_review,
        set_slide_opinion,
        slide_opinion,
    )

    annotations = read_annotations(args.file)
    by_id = {}
    for layer, region in annotations.regions():
        by_id[str(region.id)] = (layer, region)
    changed = False
    for item in args.set or []:
        rid, _, status = item.partition("=")
        if rid not in by_id:
            print(f"error: --set {item!r}: no region with Id {rid!r}", file=sys.stderr)
            return 2
        opinion = None
        for o in args.opinion or []:
            oid, _, text = o.partition("=")
            if oid == rid:
                opinion = text
        set_review(by_id[rid][1], status, reviewer=args.reviewer or "", opinion=opinion)
        changed = True
    decided = {item.partition("=")[0] for item in args.set or []}
    for item in args.opinion or []:
        rid, _, text = item.partition("=")
        if rid not in by_id:
            print(f"error: --opinion {item!r}: no region with Id {rid!r}", file=sys.stderr)
            return 2
        if rid not in decided:  # an opinion alone: the status stays as it is
            from .core.review import set_element_attributes

            set_element_attributes(by_id[rid][1], {"opinion": text})
            changed = True
    if args.slide_opinion is not None:
        set_slide_opinion(annotations, args.slide_opinion, reviewer=args.reviewer or "")
        changed = True
    if changed:
        write_annotations(annotations, args.out or args.file, format="aperio")
    counts = review_counts(annotations)
    print(" · ".join(f"{k} {v}" for k, v in counts.items()) or "no reviewed regions")
    opinion = slide_opinion(annotations)
    if opinion.get("opinion"):
        print(f"slide opinion ({opinion.get('reviewer', '')}): {opinion['opinion']}")
    if args.list:
        from .core.review import review_of

        for layer, region in annotations.regions():
            r = review_of(region)
            if r:
                print(f"{region.id}\t{layer.class_name}\t{r.get('status', '')}\t"
                      f"{r.get('reviewer', '')}\t{r.get('opinion', '')}")
    return 0


def _labels_downsample(slide: Any, size: tuple[int, int], level: int | None,
                       path: str) -> float:
    """The downsample of a label image of ``size`` (w, h): its level's, or the ratio to
    level 0 when it matches no level (a mask made at some µm per pixel)."""
    lw, lh = size
    if level is not None:
        w, h = slide.level_dimensions[level]
        if abs(w - lw) > 1 or abs(h - lh) > 1:
            raise SlideSegError(f"{path}: the labels are {lw} x {lh} px, level {level} of "
                                f"the slide is {w} x {h} px; give the level they were made "
                                "at.")
        return float(slide.level_downsamples[level])
    for (w, h), ds in zip(slide.level_dimensions, slide.level_downsamples, strict=True):
        if (w, h) == (lw, lh):
            return float(ds)
    w0, h0 = slide.dimensions
    ds = w0 / lw
    if lw <= 0 or abs(h0 / ds - lh) > 1.0:
        raise SlideSegError(f"{path}: the labels ({lw} x {lh} px) match no level of the "
                            f"slide ({w0} x {h0} px at level 0) and not its shape; pass "
                            "--level.")
    return ds


def _save_levels(mask: Any, out: Path, mpp: float | None) -> None:
    """A mask and its 2 x reductions down to about 1000 px, as a pyramidal TIFF or zarr.

    A lazy mask is computed once, into a temporary zarr store beside ``out``, and the
    reductions are read from there (not recomputed from the slide for every level).
    """
    import shutil

    import dask.array as da

    from .core.masks import save_mask

    scratch = out.with_name(f".{out.name}.scratch.zarr")
    try:
        mask.rechunk(1024).to_zarr(str(scratch), overwrite=True)
        levels = [da.from_zarr(str(scratch))]
        while max(levels[-1].shape) > 1024:
            levels.append(levels[-1][::2, ::2].rechunk(1024))
        save_mask(levels, out, mpp=mpp)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or sys.platform in ("darwin", "win32"))


def _annotation_reader_for(path: str) -> bool:
    from ._reader import napari_get_annotation_reader

    return napari_get_annotation_reader(path) is not None


def _cmd_view(args: argparse.Namespace) -> int:
    from .core.annotations import read_annotations
    from .core.slide import open_slide

    # Fail fast, with the package's message, before a window opens.
    open_slide(args.slide).close()
    for path in args.annotations:
        if not Path(path).exists():
            raise SlideSegError(f"{path}: no such annotation file.")
    if args.annotations:
        from npe2 import PluginManager

        manager = PluginManager.instance()
        manager.discover()
        for path in args.annotations:
            if _annotation_reader_for(path):
                read_annotations(path)  # fail fast with the file's own error
                continue
            if not any(manager.iter_compatible_readers([path])):
                raise SlideSegError(f"{path}: no installed napari reader opens this file "
                                    "type.")
    if not _has_display():
        raise SlideSegError("no display to open napari on (DISPLAY is not set); "
                            f"use '{PROG} info' or run under xvfb-run.")
    import napari

    viewer = napari.Viewer(title=f"napari-slideseg: {Path(args.slide).name}")
    viewer.open(args.slide, plugin="napari-slideseg")
    from ._reader import sidecar_annotations

    sidecar = sidecar_annotations(Path(args.slide))
    for path in args.annotations:
        if sidecar is not None and Path(path).resolve() == sidecar.resolve():
            continue  # already opened with the slide, as its sidecar
        ours = _annotation_reader_for(path)
        viewer.open(path, plugin="napari-slideseg" if ours else None)
    viewer.window.add_plugin_dock_widget("napari-slideseg", "Slide info")
    napari.run()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import time

    from .core.sample import make_sample_slide

    out = Path(args.out) if args.out else Path.cwd() / "slideseg-demo"
    start = time.perf_counter()
    sample = make_sample_slide(out)
    print(f"sample slide        {sample.slide}  ({time.perf_counter() - start:.1f} s)")
    print(f"sample annotations  {sample.annotations}  ({sample.region_count} regions)")
    if not args.headless and _has_display():
        return _demo_gui(out)
    if not args.headless:
        print("no display found: running the headless pass (use xvfb-run or a desktop to "
              "see napari)")
    return _demo_headless(sample, out)


def _demo_gui(folder: Path) -> int:
    import napari

    from ._sample_data import sample_layers

    viewer = napari.Viewer(title="napari-slideseg sample")
    for data, kwargs, kind in sample_layers(folder):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.window.add_plugin_dock_widget("napari-slideseg", "Slide info")
    viewer.reset_view()
    napari.run()
    return 0


def _demo_headless(sample, folder: Path) -> int:  # type: ignore[no-untyped-def]
    import cv2
    import numpy as np

    from .core.slide import open_slide

    with open_slide(sample.slide) as slide:
        info = slide.info()
        w0, h0 = slide.dimensions
        overview = np.ascontiguousarray(slide.get_thumbnail((1024, 1024)))
        sx, sy = overview.shape[1] / w0, overview.shape[0] / h0
        for layer, region in sample.annotation_set.regions():
            pts = np.round(region.outline() * (sx, sy)).astype(np.int32)
            cv2.polylines(overview, [pts], True,
                          (255, 255, 255) if region.negative else layer.color, 2)
        level = slide.level_count - 1
        lw, lh = slide.level_dimensions[level]
        tile = slide.read_region((w0 // 2 - 256, h0 // 2 - 256), 0, (512, 512))
    written = []
    for name, image in (("overview.png", overview), ("center-512px-level0.png", tile)):
        path = folder / name
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        written.append((path, f"{image.shape[1]}x{image.shape[0]} RGB"))
    info_path = folder / "sample-info.json"
    info_path.write_text(json.dumps(info, indent=2))
    written.append((info_path, f"{info['level_count']} levels, smallest {lw}x{lh}"))
    print("headless pass wrote:")
    for path, what in written:
        print(f"  {path}  ({what}, {path.stat().st_size:,} bytes)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Whole-slide images in napari and on the command line.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="print a slide's levels, pixel size and metadata",
                       description="Print a slide's levels, pixel size and metadata.")
    p.add_argument("slide", help="slide file (or DICOM folder)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--properties", action="store_true", help="include every file property")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("view", help="open a slide (and annotation files) in napari",
                       description="Open a slide, and optionally annotation files, in napari.")
    p.add_argument("slide", help="slide file (or DICOM folder)")
    p.add_argument("annotations", nargs="*", help="annotation files to overlay")
    p.set_defaults(func=_cmd_view)

    p = sub.add_parser(
        "convert", help="convert annotations between Aperio XML, ASAP XML and GeoJSON",
        description="Convert an annotation file between Aperio ImageScope XML, ASAP XML and "
                    "QuPath GeoJSON. The input format is read from the file's content; the "
                    "output format from --to or OUT's suffix (.xml: Aperio, .geojson/.json: "
                    "GeoJSON). Anything the target format cannot express is listed.")
    p.add_argument("input", metavar="IN", help="annotation file to read")
    p.add_argument("output", metavar="OUT", help="annotation file to write")
    p.add_argument("--to", choices=("aperio", "asap", "geojson"),
                   help="output format (default: from OUT's suffix)")
    p.add_argument("--mpp", type=float,
                   help="micrometres per pixel to record (default: the input's)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser(
        "export", help="write image patches and label masks of an annotated slide",
        description="Write image patches and their label masks from a slide (or a folder "
                    "of slides) and its annotations, with manifest.csv (and "
                    "manifest.parquet when pyarrow is installed), key.json and "
                    "export.json in OUT. A rerun skips the patches already written.")
    p.add_argument("slide", metavar="SLIDE_OR_FOLDER",
                   help="slide file, or a folder of slides (a slide that fails is skipped)")
    p.add_argument("--annotations",
                   help="annotation file, or for a folder of slides a folder of annotation "
                        "files matched by stem (default: the files beside each slide)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=int, default=256, help="patch side in pixels (256)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--level", type=int, nargs="+", metavar="L",
                       help="pyramid level(s), e.g. --level 0 1 (default 0)")
    where.add_argument("--mpp", type=float, nargs="+", metavar="M",
                       help="target µm per pixel instead of a level, one or more (read "
                            "from the nearest finer level and resized; masks filled at "
                            "that size)")
    where.add_argument("--magnification", type=float, nargs="+", metavar="X",
                       help="target magnification(s), e.g. 20 10, from the scan's "
                            "objective power")
    p.add_argument("--overlap", type=int, default=0, help="overlap in pixels (0)")
    p.add_argument("--region", metavar="slide|annotated|X,Y,W,H",
                   help="where the grid lies: the whole slide (default), the annotated "
                        "regions' bounding boxes, or a level-0 rectangle")
    p.add_argument("--format", choices=("jpg", "png", "tif"), default="jpg",
                   help="image format (jpg)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (90)")
    p.add_argument("--png-compression", type=int, default=1, metavar="0-9",
                   help="PNG compression level for images and masks (1)")
    p.add_argument("--mask-format", choices=("png", "tif"), default="png",
                   help="mask format, always lossless (png)")
    p.add_argument("--dataset", choices=("files", "zarr"), default="files",
                   help="files: one image and one mask file per patch (default); zarr: "
                        "one chunked dataset OUT/patches.zarr for training loaders")
    p.add_argument("--key", help="annotation key (.json or .tsv) mapping classes to values")
    p.add_argument("--class-from", choices=("layer", "text", "classification"),
                   default="layer", help="where a region's class comes from (layer)")
    p.add_argument("--annotated-only", action="store_true",
                   help="keep only patches with labelled pixels")
    p.add_argument("--min-fraction", type=float, default=0.0, metavar="F",
                   help="keep only patches with at least this fraction of --classes")
    p.add_argument("--classes", nargs="+", metavar="CLASS",
                   help="classes --min-fraction counts (default: all)")
    p.add_argument("--min-tissue", type=float, default=0.0, metavar="F",
                   help="keep only patches with at least this fraction of tissue")
    p.add_argument("--ratio", type=float, metavar="R",
                   help="SlideSeg's ratio: every annotated patch plus R times as many "
                        "unannotated ones, drawn at random (--seed)")
    p.add_argument("--seed", type=int, default=0, help="random seed for --ratio (0)")
    p.add_argument("--edge", choices=("skip", "pad"), default="skip",
                   help="patches crossing the slide edge: skip (default) or pad")
    p.add_argument("--workers", type=int, help="threads (default: all CPUs)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on a dask.distributed cluster (e.g. tcp://host:8786); its "
                        "workers must see the slides and OUT at the same paths")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "tissue", aliases=["threshold"],
        help="detect tissue (or threshold any stain) and save a mask or polygons",
        description="Threshold a slide into tissue and glass (defaults suit H&E: "
                    "saturation, Otsu, 16 µm smoothing, 32 µm closing, pieces and holes "
                    "under 0.05 mm² removed) and save the mask (.tif pyramidal TIFF or "
                    ".zarr) or the outlines as polygons (.xml, .geojson, .json).")
    p.add_argument("slide", metavar="SLIDE")
    p.add_argument("--out", required=True, help="output .tif/.zarr mask or annotation file")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--mpp", type=float, default=8.0,
                       help="µm per pixel to work at (8)")
    scale.add_argument("--level", type=int,
                       help="work at this level; for a mask, a large level is thresholded "
                            "chunk by chunk with the threshold found at 8 µm/px")
    p.add_argument("--channel", default="saturation",
                   choices=("grey", "saturation", "od", "hematoxylin", "eosin", "dab",
                            "red", "green", "blue"), help="channel (saturation)")
    p.add_argument("--method", default="otsu",
                   choices=("otsu", "li", "triangle", "yen", "mean", "quantile"),
                   help="threshold method (otsu)")
    p.add_argument("--threshold", type=float, help="a manual threshold instead of a method")
    p.add_argument("--quantile", type=float, default=0.5, help="for --method quantile")
    p.add_argument("--below", action="store_true",
                   help="objects are below the threshold (e.g. the grey channel)")
    p.add_argument("--sigma", type=float, metavar="UM", help="Gaussian smoothing σ in µm")
    p.add_argument("--open", type=float, metavar="UM", help="opening radius in µm")
    p.add_argument("--close", type=float, metavar="UM", help="closing radius in µm")
    p.add_argument("--min-area", type=float, metavar="UM2",
                   help="drop pieces smaller than this (µm²)")
    p.add_argument("--min-hole", type=float, metavar="UM2",
                   help="close holes smaller than this (µm²)")
    p.add_argument("--fill-holes", action="store_true", help="close every hole")
    p.add_argument("--tolerance", type=float, default=1.0,
                   help="polygon simplification in pixels of the working scale (1)")
    p.set_defaults(func=_cmd_tissue)

    p = sub.add_parser(
        "measure", help="measure every object (labels or annotation regions) of a slide",
        description="Measure every object of a slide: position, area, perimeter, axes, "
                    "shape factors, and mean/std/min/max of the RGB channels and of "
                    "haematoxylin, eosin and DAB (colour deconvolution), in µm from the "
                    "slide's pixel size. Objects are a label image (TIFF or zarr, aligned "
                    "with a level, e.g. what the tissue command writes) or the regions of "
                    "an annotation file. Writes a table (.csv, .tsv, .parquet) or the "
                    "outlines with their measurements (.geojson, read by QuPath).")
    p.add_argument("slide", metavar="SLIDE")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--labels", metavar="FILE",
                      help="label image (.tif/.tiff or .zarr): 0 background, each other "
                           "value one object")
    what.add_argument("--annotations", metavar="FILE",
                      help="annotation file (Aperio/ASAP XML, GeoJSON): each area region "
                           "is one object")
    p.add_argument("--out", required=True, help="output .csv, .tsv, .parquet or .geojson")
    p.add_argument("--level", type=int,
                   help="the level the labels are at (default: the level of their size), "
                        "or the level regions are measured at (default 0)")
    p.add_argument("--classes-from", choices=("layer", "text", "classification"),
                   help="where a region's class comes from (layer)")
    p.add_argument("--regions", metavar="FILE",
                   help="annotation file whose region containing each object's centroid "
                        "is reported (region, region_class)")
    p.add_argument("--ecotaxa", metavar="ZIP",
                   help="also write an EcoTaxa archive: object images and a feature TSV")
    p.add_argument("--contour", action="store_true",
                   help="draw each object's outline on its EcoTaxa image")
    p.set_defaults(func=_cmd_measure)

    p = sub.add_parser(
        "auto-annotate", help="classify tiles, cluster them and write polygon annotations",
        description="Auto-annotate a slide: tiles over tissue are classified (the built-in "
                    "random forest on colour, stain and texture features, trained from "
                    "--annotations; or --model), each class's positive tiles are clustered "
                    "with DBSCAN, clusters are filtered on their probabilities and outlined, "
                    "and the outlines are written as annotations with review status "
                    "'pending'. With --workdir every round is kept (iteration_NNN folders); "
                    "--reviewed records the Dice/IoU of the last round against its review "
                    "and retrains from it.")
    p.add_argument("slide", metavar="SLIDE")
    p.add_argument("--annotations", metavar="FILE",
                   help="training annotations: tiles inside each class's polygons are that "
                        "class, tissue outside them is 'other'")
    p.add_argument("--model", metavar="FILE",
                   help="a trained model instead: .joblib (built-in), .onnx, .pt "
                        "(TorchScript); declare classes/input size/normalisation in "
                        "FILE.json or with the options below")
    p.add_argument("--model-classes", nargs="+", metavar="NAME",
                   help="a user model's output classes, in order")
    p.add_argument("--input-size", type=int, help="a user model's input size in pixels")
    p.add_argument("--mean", type=float, nargs=3, help="a user model's input mean (0-1 RGB)")
    p.add_argument("--std", type=float, nargs=3, help="a user model's input std (0-1 RGB)")
    p.add_argument("--out", metavar="FILE",
                   help="annotation file to write (.xml Aperio, .geojson)")
    p.add_argument("--workdir", metavar="DIR",
                   help="keep this round in DIR/iteration_NNN (model, prediction, metrics)")
    p.add_argument("--reviewed", metavar="FILE",
                   help="the last round's prediction after review: scored, then trained on")
    p.add_argument("--save-model", metavar="FILE", help="save the trained classifier")
    p.add_argument("--clusters", metavar="CSV", help="write every cluster's statistics")
    p.add_argument("--pseudo-mask", metavar="FILE",
                   help="write the tile-probability pseudo-mask (.png/.tif + .json)")
    p.add_argument("--size", type=int, default=512, help="tile size in pixels (512)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--level", type=int, help="read tiles at this level (0)")
    scale.add_argument("--mpp", type=float, help="read tiles at this µm/px instead")
    p.add_argument("--min-tissue", type=float, default=0.25,
                   help="classify tiles with at least this tissue fraction (0.25)")
    p.add_argument("--classes", nargs="+", metavar="NAME",
                   help="classes to annotate (default: all but 'other')")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="a tile is positive at this probability (0.5)")
    p.add_argument("--eps", type=float, default=1.5,
                   help="DBSCAN radius in tiles (1.5: diagonal neighbours join)")
    p.add_argument("--min-samples", type=int, default=3, help="DBSCAN minimum samples (3)")
    p.add_argument("--min-tiles", type=int, default=1, help="drop smaller clusters (1)")
    p.add_argument("--min-mean", type=float, default=0.0,
                   help="drop clusters whose mean probability is lower (0)")
    p.add_argument("--max-std", type=float, help="drop clusters whose probability std is higher")
    p.add_argument("--max-var", type=float,
                   help="drop clusters whose probability variance is higher")
    p.add_argument("--outline", choices=("convex", "tiles", "concave"), default="convex",
                   help="cluster outline: convex hull, union of tiles, concave hull (convex)")
    p.add_argument("--concavity", type=float, default=1.0,
                   help="concave hull: largest triangle circumradius, in tiles (1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--workers", type=int, default=2, help="reading threads (2)")
    p.set_defaults(func=_cmd_auto_annotate)

    p = sub.add_parser(
        "weak-labels", help="export tiles with multi-hot class labels (patch-level dataset)",
        description="Export a patch-level labelled dataset for weakly supervised training: "
                    "every tile over tissue as an image, and labels.csv with a 0/1 column "
                    "per class (the class covers at least --min-fraction of the tile) and "
                    "the covered fractions. --source review uses only regions an expert "
                    "accepted, edited or added (and the user's own).")
    p.add_argument("slide", metavar="SLIDE")
    p.add_argument("--annotations", metavar="FILE", required=True)
    p.add_argument("--out", metavar="DIR", required=True)
    p.add_argument("--size", type=int, default=512, help="tile size in pixels (512)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--level", type=int, help="read tiles at this level (0)")
    scale.add_argument("--mpp", type=float, help="read tiles at this µm/px instead")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="classes (default: all)")
    p.add_argument("--min-fraction", type=float, default=0.05,
                   help="a class is present in a tile from this covered fraction (0.05)")
    p.add_argument("--source", choices=("annotations", "review"), default="annotations")
    p.add_argument("--format", choices=("png", "jpg"), default="png")
    p.add_argument("--min-tissue", type=float, default=0.25)
    p.add_argument("--predictions", metavar="NPZ",
                   help="also write pseudo_mask.png from an iteration's predictions.npz")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="pseudo-mask: tiles below this probability are 255 (uncertain)")
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=_cmd_weak_labels)

    p = sub.add_parser(
        "review", help="show or set the review of predicted regions in an annotation file",
        description="Counts of regions by review status and the slide's opinion; with "
                    "--set, record an expert's decision on regions (by Id) headless.")
    p.add_argument("file", metavar="FILE", help="Aperio XML with review attributes")
    p.add_argument("--set", nargs="+", metavar="ID=STATUS",
                   help="set regions' status: pending, accepted, rejected, edited, added")
    p.add_argument("--opinion", nargs="+", metavar="ID=TEXT", help="a region's opinion")
    p.add_argument("--reviewer", help="reviewer name stored with the decisions")
    p.add_argument("--slide-opinion", metavar="TEXT", help="overall opinion of the slide")
    p.add_argument("--out", metavar="FILE", help="write here instead of in place")
    p.add_argument("--list", action="store_true", help="list every reviewed region")
    p.set_defaults(func=_cmd_review)

    p = sub.add_parser(
        "demo", help="generate the sample slide and show it (headless without a display)",
        description="Generate the sample slide with annotations, then open napari with it "
                    "and the plugin's widgets; with no display (or --headless), run a "
                    "headless pass over the sample and list what it wrote.")
    p.add_argument("--out", help="folder for the sample and outputs (default ./slideseg-demo)")
    p.add_argument("--headless", action="store_true", help="never open a window")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except SlideSegError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
