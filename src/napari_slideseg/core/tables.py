"""Exports of measurement tables: CSV, TSV, Parquet, GeoJSON and EcoTaxa archives.

* :func:`write_table`: a :func:`~napari_slideseg.measure` table as CSV, TSV or Parquet,
  by the file's suffix.
* :func:`write_geojson`: the objects' outlines (polygons in level-0 pixel (x, y)) with
  their measurements in each feature's ``properties["measurements"]``, as QuPath writes
  and reads them, and their class as QuPath's ``classification``.
* :func:`write_ecotaxa`: an EcoTaxa import archive: a ZIP holding one image per object
  (its bounding box plus a margin, optionally with its outline drawn) and
  ``ecotaxa_<name>.tsv``: a header row, EcoTaxa's type row (``[t]`` text, ``[f]``
  number), then one row per object with ``img_file_name``, ``img_rank``, ``object_id``
  and the measurements as ``object_*`` columns.

Every file is written to a temporary name beside its target and renamed when complete,
so a failure never leaves a half-written file. Names written into archives are made
from numbers and from a cleaned-up name (letters, digits, ``_``, ``-``), never taken as
paths from data.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .annotations import AREA_TYPES, AnnotationLayer, AnnotationSet, Region
from .errors import SlideSegError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TABLE_SUFFIXES", "write_ecotaxa", "write_geojson", "write_table"]

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
#: Colour of the outline drawn on EcoTaxa images (RGB).
CONTOUR_COLOR = (0, 255, 0)


# -- atomic files -------------------------------------------------------------------------


class _Atomic:
    """A temporary path beside ``path``, renamed over it on success, removed on failure."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        if not self.path.parent.is_dir():
            raise SlideSegError(f"{self.path}: the folder {self.path.parent} does not exist.")
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part",
                                    dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


# -- tables ----------------------------------------------------------------------------------


def write_table(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a table as CSV (``.csv``), TSV (``.tsv``) or Parquet (``.parquet``).

    Floats are written with as many digits as they need to read back exactly (whole
    numbers without a decimal point in CSV and TSV), missing values as empty cells;
    the index is not written. Parquet needs pyarrow
    (``pip install pyarrow``, or the ``parquet`` extra of napari-slideseg), which also
    writes CSV and TSV about ten times faster when installed. The file is written
    atomically.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise SlideSegError(f"{path}: write tables as {', '.join(TABLE_SUFFIXES)} (the "
                            "suffix decides the format).")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise SlideSegError(f"{path}: writing Parquet needs pyarrow; install it with "
                                "`pip install pyarrow` (or `pip install "
                                "napari-slideseg[parquet]`), or write .csv / .tsv.") from None
    with _Atomic(path) as tmp:
        if suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            _write_delimited(df, tmp, "\t" if suffix == ".tsv" else ",")
    return path


def _write_delimited(df: pd.DataFrame, path: Path, delimiter: str) -> None:
    """CSV / TSV: with pyarrow's writer when it is installed (about 10 x faster than
    pandas' for 100k rows; both write the shortest digits that read back exactly)."""
    import csv
    import io

    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:
        df.to_csv(path, sep=delimiter, index=False, lineterminator="\n")
        return
    header = io.StringIO()
    csv.writer(header, delimiter=delimiter, lineterminator="\n").writerow(
        [str(c) for c in df.columns])
    table = pa.Table.from_pandas(df, preserve_index=False)
    with open(path, "wb") as fh:
        fh.write(header.getvalue().encode("utf-8"))
        pacsv.write_csv(table, fh, pacsv.WriteOptions(
            include_header=False, delimiter=delimiter, quoting_style="needed"))


def _measurements(df: pd.DataFrame) -> list[dict[str, float | int | None]]:
    """Each row's numeric columns (except ``label``) as plain Python numbers; NaN as None."""
    import pandas as pd

    numeric = [c for c in df.columns if c != "label" and pd.api.types.is_numeric_dtype(df[c])]
    rows: list[dict[str, float | int | None]] = [{} for _ in range(len(df))]
    for column in numeric:
        values = df[column].to_numpy()
        if values.dtype.kind == "b":
            cells: list[Any] = values.astype(int).tolist()
        elif values.dtype.kind in "iu":
            cells = values.tolist()
        else:
            cells = [v if math.isfinite(v) else None for v in values.astype(float).tolist()]
        for row, value in zip(rows, cells, strict=True):
            row[column] = value
    return rows


def write_geojson(df: pd.DataFrame, objects: Any, path: str | os.PathLike[str], *,
                  tolerance: float = 0.0, chunk: int = 4096) -> Path:
    """Write the objects' outlines with their measurements as QuPath-style GeoJSON.

    Parameters
    ----------
    df : DataFrame
        A :func:`~napari_slideseg.measure` table of ``objects`` (its ``attrs`` say
        where the labels lie on the slide).
    objects : (h, w) integer array, or AnnotationSet
        The objects that were measured. Label arrays are outlined along pixel edges
        (:func:`~napari_slideseg.labels_to_polygons`, window by window for large
        arrays); annotation regions are written as they are, negative regions as holes.
    path : path-like
        ``.geojson`` or ``.json``.
    tolerance : float
        Outline simplification in level-0 pixels (0: exact pixel outlines).
    chunk : int
        Window side, in label pixels, for outlining large label arrays.

    Returns
    -------
    Path

    Notes
    -----
    One Feature per object (a MultiPolygon for a label in several pieces), in label
    order, with ``properties``: ``objectType`` (``"detection"`` for labels,
    ``"annotation"`` for regions), ``name`` (the label), ``classification`` (the
    ``class`` column, when there is one) and ``measurements``: every numeric column but
    ``label``, NaN written as null. :func:`~napari_slideseg.read_annotations` reads the
    file back with the measurements in each region's ``attributes["measurements"]``.
    """
    from .annotations import write_annotations

    path = Path(path)
    if path.suffix.lower() not in (".geojson", ".json"):
        raise SlideSegError(f"{path}: write GeoJSON as .geojson or .json.")
    measurements = dict(zip(df["label"].astype(np.int64).tolist(), _measurements(df),
                            strict=True))
    classes = {}
    if "class" in df.columns:
        classes = {int(k): (None if v is None or (isinstance(v, float) and math.isnan(v))
                            else str(v))
                   for k, v in zip(df["label"], df["class"], strict=True)}
    if isinstance(objects, AnnotationSet):
        annotations = _annotation_features(objects, measurements)
    else:
        annotations = _label_features(objects, df, measurements, classes, tolerance, chunk)
    write_annotations(annotations, path, format="geojson", backup=False)
    return path


def _annotation_features(objects: AnnotationSet,
                         measurements: dict[int, dict[str, Any]]) -> AnnotationSet:
    layers = []
    counter = 0
    order = 0
    for layer in objects:
        regions = []
        for region in layer.regions:
            if region.type not in AREA_TYPES:
                continue
            if region.negative:
                regions.append(region)
                continue
            counter += 1
            if counter not in measurements:
                continue
            if "geojson_order" in region.extra:
                props = dict(region.attributes)
            else:
                props = {"objectType": "annotation"}
                if region.attributes:
                    props["metadata"] = {k: str(v) for k, v in region.attributes.items()}
            props["measurements"] = measurements[counter]
            order += 1
            regions.append(Region(region.vertices, type=region.type, text=region.text,
                                  attributes=props, holes=list(region.holes), z=region.z,
                                  group=region.group,
                                  extra={**region.extra, "geojson_order": order}))
        if regions:
            layers.append(AnnotationLayer(name=layer.name, color=layer.color,
                                          regions=regions, attributes=dict(layer.attributes),
                                          extra=dict(layer.extra)))
    return AnnotationSet(layers, mpp=objects.mpp)


def _label_features(labels: Any, df: pd.DataFrame, measurements: dict[int, dict[str, Any]],
                    classes: dict[int, str | None], tolerance: float,
                    chunk: int) -> AnnotationSet:
    names = {label: (classes.get(label) or "Unclassified") if classes else "objects"
             for label in measurements}
    layers: dict[str, AnnotationLayer] = {}
    for name in dict.fromkeys(names.values()):
        layer = AnnotationLayer(name=name)
        if not classes:
            layer.extra["geojson_class_source"] = "none"
        layers[name] = layer
    pieces = sorted(_outline_regions(labels, df, names, tolerance, chunk),
                    key=lambda r: (int(r.attributes["label"]), r.extra.get("piece", 0)))
    counts: dict[int, int] = {}
    for region in pieces:
        label = int(region.attributes["label"])
        counts[label] = counts.get(label, 0) + 1
    for order, region in enumerate(pieces):
        label = int(region.attributes["label"])
        props = {"objectType": "detection", "measurements": measurements[label]}
        layers[names[label]].regions.append(Region(
            region.vertices, type="polygon", text=str(label), attributes=props,
            holes=region.holes, group=f"label-{label}" if counts[label] > 1 else None,
            extra={"geojson_order": order, "geojson_has_name": True}))
    mpp = df.attrs.get("mpp")
    out = AnnotationSet([layer for layer in layers.values() if layer.regions])
    if mpp:
        out.mpp = float(mpp[0])
    return out


def _outline_regions(labels: Any, df: pd.DataFrame, names: dict[int, str],
                     tolerance: float, chunk: int) -> Iterator[Region]:
    """Pixel-edge outlines (level-0) of the table's objects, window by window."""
    from .measure import _as_labels, _read_labels, object_windows
    from .vector import labels_to_polygons

    labels = _as_labels(labels)
    h, w = (int(v) for v in labels.shape)
    ds = float(df.attrs.get("downsample", 1.0))
    ox, oy = df.attrs.get("origin", (0.0, 0.0))
    wanted = df["label"].astype(np.int64).to_numpy()
    boxes = object_windows(df, 0, (h, w))

    def trace(block: np.ndarray, r0: int, c0: int, which: np.ndarray) -> Iterator[Region]:
        ann = labels_to_polygons(block, downsample=ds, origin=(ox + c0 * ds, oy + r0 * ds),
                                 tolerance=tolerance,
                                 names={int(v): names[int(v)] for v in which.tolist()})
        for layer in ann:
            for i, region in enumerate(layer.regions):
                region.extra["piece"] = i
                yield region

    if h * w <= 4 * chunk * chunk:
        yield from trace(_read_labels(labels, 0, h, 0, w), 0, 0, wanted)
        return
    # each object is outlined in the window whose core holds its box's top-left pixel,
    # if its box fits in that window; others on their own box
    margin = min(chunk, 512)
    key_r, key_c = boxes[:, 0] // chunk, boxes[:, 2] // chunk
    fits = (boxes[:, 1] <= (key_r + 1) * chunk + margin) & \
        (boxes[:, 3] <= (key_c + 1) * chunk + margin)
    for (gr, gc) in sorted(set(zip(key_r[fits].tolist(), key_c[fits].tolist(),
                                   strict=True))):
        which = np.flatnonzero(fits & (key_r == gr) & (key_c == gc))
        r0, c0 = gr * chunk, gc * chunk
        r1, c1 = min(h, int(boxes[which, 1].max())), min(w, int(boxes[which, 3].max()))
        yield from trace(_read_labels(labels, r0, r1, c0, c1), r0, c0, wanted[which])
    for k in np.flatnonzero(~fits).tolist():
        r0, r1, c0, c1 = (int(v) for v in boxes[k])
        block = _read_labels(labels, r0, r1, c0, c1)
        block = np.where(block == wanted[k], block, 0)
        yield from trace(block, r0, c0, wanted[k:k + 1])


# -- EcoTaxa ------------------------------------------------------------------------------


def _clean_name(text: str, default: str = "objects") -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", str(text)).strip("_-")
    return name[:64] or default


def _ecotaxa_column(name: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", str(name).lower()).strip("_") or "value"


def _tsv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return re.sub(r"[\t\r\n]+", " ", str(value))


def write_ecotaxa(df: pd.DataFrame, labels: Any, image: Any, path: str | os.PathLike[str],
                  *, margin: int = 16, contour: bool = False, name: str | None = None,
                  image_format: str = "png", chunk: int = 4096) -> Path:
    """Write an EcoTaxa import archive: one image per object and a TSV of its features.

    Parameters
    ----------
    df : DataFrame
        A :func:`~napari_slideseg.measure` table (its ``attrs`` say where the label
        pixels lie on the slide).
    labels : (h, w) integer array, AnnotationSet, or None
        The measured objects, for the outlines (``contour=True``); may be None
        otherwise.
    image : Slide or (h, w, 3) uint8 array
        The pixels, as given to :func:`~napari_slideseg.measure`.
    path : path-like
        The ``.zip`` to write.
    margin : int
        Label pixels added around each object's bounding box (clipped at the image's
        edges).
    contour : bool
        Draw each object's outline (green) on its image.
    name : str, optional
        Names the TSV (``ecotaxa_<name>.tsv``) and prefixes the image files and object
        ids (``<name>_<label>``). Default: the archive's stem. Only letters, digits,
        ``_`` and ``-`` are kept.
    image_format : {'png', 'jpg'}
        PNG (lossless, default) or JPEG (quality 95).
    chunk : int
        Side, in label pixels, of the windows the image is read in.

    Returns
    -------
    Path

    Notes
    -----
    The TSV has EcoTaxa's layout: a header row, a type row (``[t]`` text, ``[f]``
    number), then one row per object: ``img_file_name`` (the image in the archive),
    ``img_rank`` (1), ``object_id`` and every table column as ``object_<column>``
    (lower case, letters, digits and ``_``); the class column is ``object_class``,
    as EcoTaxa's own ``object_annotation_category`` must name a taxon of its
    taxonomy.
    """
    import cv2

    from .measure import _extent_of, _ImageSource, object_windows

    path = Path(path)
    if path.suffix.lower() != ".zip":
        raise SlideSegError(f"{path}: an EcoTaxa archive is a .zip file.")
    fmt = image_format.lower().lstrip(".")
    if fmt not in ("png", "jpg", "jpeg"):
        raise SlideSegError(f"image_format {image_format!r}: use 'png' or 'jpg'.")
    ext = ".png" if fmt == "png" else ".jpg"
    params = [cv2.IMWRITE_PNG_COMPRESSION, 3] if ext == ".png" else \
        [cv2.IMWRITE_JPEG_QUALITY, 95]
    if contour and labels is None:
        raise SlideSegError("contour=True needs the labels (or regions) the table measured.")
    if image is None:
        raise SlideSegError("an EcoTaxa archive needs the image the objects are in.")
    prefix = _clean_name(name if name is not None else path.stem)
    ds = float(df.attrs.get("downsample", 1.0))
    origin = tuple(df.attrs.get("origin", (0.0, 0.0)))
    shape = None
    if labels is not None and not isinstance(labels, AnnotationSet):
        shape = (int(labels.shape[0]), int(labels.shape[1]))
    extent = _extent_of(image, shape, ds, origin)
    source = _ImageSource(image, extent, ds, origin)
    if extent is None:
        raise SlideSegError("cannot tell the image's extent.")
    boxes = object_windows(df, margin, extent)
    label_values = df["label"].astype(np.int64).to_numpy()
    files = [f"{prefix}_{int(v)}{ext}" for v in label_values]
    regions_of = _regions_by_label(labels) if isinstance(labels, AnnotationSet) else {}

    table = _ecotaxa_rows(df, files, prefix)
    with _Atomic(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for k, crop, lab in _crops(boxes, source, labels, chunk):
            if crop.shape[0] == 0 or crop.shape[1] == 0:
                crop = np.full((1, 1, 3), 255, np.uint8)
            elif contour:
                crop = crop.copy()
                r0, _, c0, _ = (int(v) for v in boxes[k])
                if lab is not None:
                    mask = (lab == label_values[k]).astype(np.uint8)
                    found, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
                    cv2.drawContours(crop, found, -1, CONTOUR_COLOR, 1)
                elif int(label_values[k]) in regions_of:
                    region = regions_of[int(label_values[k])]
                    for ring in (region.outline(), *region.holes):
                        pts = (ring - np.asarray(origin)) / ds - (c0, r0) - 0.5
                        cv2.polylines(crop, [np.round(pts).astype(np.int32)], True,
                                      CONTOUR_COLOR, 1)
            ok, data = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(crop),
                                                      cv2.COLOR_RGB2BGR), params)
            if not ok:
                raise SlideSegError(f"{path}: could not encode the image of object "
                                    f"{int(label_values[k])}.")
            archive.writestr(zipfile.ZipInfo(files[k], date_time=(1980, 1, 1, 0, 0, 0)),
                             data.tobytes(), compress_type=zipfile.ZIP_STORED)
        archive.writestr(f"ecotaxa_{prefix}.tsv", table, compress_type=zipfile.ZIP_DEFLATED)
    return path


def _regions_by_label(annotations: AnnotationSet) -> dict[int, Region]:
    out = {}
    counter = 0
    for layer in annotations:
        for region in layer.regions:
            if region.negative or region.type not in AREA_TYPES:
                continue
            counter += 1
            out[counter] = region
    return out


def _ecotaxa_rows(df: pd.DataFrame, files: list[str], prefix: str) -> str:
    import pandas as pd

    columns = ["img_file_name", "img_rank", "object_id"]
    types = ["[t]", "[f]", "[t]"]
    cells: list[list[str]] = [files, ["1"] * len(df),
                              [f"{prefix}_{int(v)}" for v in df["label"]]]
    used = set(columns)
    for column in df.columns:
        target = "object_" + _ecotaxa_column(column)
        while target in used:
            target += "_"
        used.add(target)
        series = df[column]
        numeric = pd.api.types.is_numeric_dtype(series)
        columns.append(target)
        types.append("[f]" if numeric else "[t]")
        if numeric and series.dtype.kind == "b":
            values = series.astype(int).tolist()
        else:
            values = series.tolist()
        cells.append([_tsv_text(v) for v in values])
    lines = ["\t".join(columns), "\t".join(types)]
    lines += ["\t".join(row) for row in zip(*cells, strict=True)]
    return "\n".join(lines) + "\n"


def _crops(boxes: np.ndarray, source: Any, labels: Any, chunk: int
           ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """(row, image crop, label crop or None) of every object, reading the image (and
    labels) once per window of objects whose boxes start in the same chunk."""
    from .measure import _read_labels

    with_labels = labels is not None and not isinstance(labels, AnnotationSet)
    if not len(boxes):
        return
    key_r, key_c = boxes[:, 0] // chunk, boxes[:, 2] // chunk
    order = np.lexsort((key_c, key_r))
    bounds = np.flatnonzero(np.r_[True, (np.diff(key_r[order]) != 0)
                                  | (np.diff(key_c[order]) != 0), True])
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        group = order[a:b]
        small = (boxes[group, 1] - boxes[group, 0] <= chunk) & \
            (boxes[group, 3] - boxes[group, 2] <= chunk)
        shared = group[small]
        if len(shared):
            r1s, c1s = int(boxes[shared, 1].max()), int(boxes[shared, 3].max())
            r0s, c0s = int(boxes[shared, 0].min()), int(boxes[shared, 2].min())
            image = source.read(r0s, r1s, c0s, c1s) if r1s > r0s and c1s > c0s else None
            lab = _read_labels(labels, r0s, r1s, c0s, c1s) if with_labels and \
                image is not None else None
            for k in shared.tolist():
                br0, br1, bc0, bc1 = (int(v) for v in boxes[k])
                if image is None or br1 <= br0 or bc1 <= bc0:
                    yield k, np.empty((0, 0, 3), np.uint8), None
                    continue
                sub = (slice(br0 - r0s, br1 - r0s), slice(bc0 - c0s, bc1 - c0s))
                yield k, image[sub], (lab[sub] if lab is not None else None)
        for k in group[~small].tolist():
            br0, br1, bc0, bc1 = (int(v) for v in boxes[k])
            image = source.read(br0, br1, bc0, bc1)
            lab = _read_labels(labels, br0, br1, bc0, bc1) if with_labels else None
            yield k, image, lab
