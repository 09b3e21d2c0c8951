"""Annotation model and file formats (Aperio ImageScope XML, ASAP XML, QuPath GeoJSON).

The model is plain Python and numpy, with no napari object in it:

* :class:`AnnotationSet`: an ordered sequence of :class:`AnnotationLayer` (an Aperio
  ``Annotation``, an ASAP group, a GeoJSON classification), with the file's pixel size.
* :class:`AnnotationLayer`: ``name``, ``color`` (r, g, b), ``attributes`` and ``regions``.
* :class:`Region`: ``vertices`` (float64 (N, 2), level-0 pixel (x, y) as in the file),
  ``type``, ``negative`` (a hole or exclusion), ``text``, ``attributes`` and ``holes``.

Coordinates are level-0 pixels, origin top-left, x to the right and y down, exactly as
the files store them; vertex lists are kept as written (closed or open, duplicates
included), so that reading and writing the same format changes nothing. Whatever a
format stores that the model does not name (Aperio ``Plots``, ``RegionAttributeHeaders``,
GeoJSON feature ids) travels in ``extra`` and is written back by the same format.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from .errors import (
    AnnotationError,
    AnnotationNotFoundError,
    InvalidGeometryError,
    MalformedAnnotationError,
)
from .suffixes import ANNOTATION_SUFFIXES

__all__ = [
    "AREA_TYPES",
    "FORMATS",
    "REGION_TYPES",
    "AnnotationLayer",
    "AnnotationSet",
    "Region",
    "ANNOTATION_SUFFIXES",
    "find_annotations",
    "read_annotations",
    "sniff_format",
    "write_annotations",
]

#: Region types of the model. Aperio Type 0..4 are polygon, rectangle, ellipse, arrow,
#: ruler; ASAP adds spline, point and points; GeoJSON adds line (LineString).
REGION_TYPES = ("polygon", "rectangle", "ellipse", "spline", "arrow", "ruler", "line",
                "point", "points")
#: Types that enclose an area (and may be filled into masks). Arrows, rulers, lines and
#: points never are.
AREA_TYPES = frozenset({"polygon", "rectangle", "ellipse", "spline"})
FORMATS = ("aperio", "asap", "geojson")

DEFAULT_COLOR = (255, 255, 0)


@dataclass(eq=False)
class Region:
    """One annotated shape.

    Parameters
    ----------
    vertices : (N, 2) float64 array
        Level-0 pixel (x, y), as in the file. Rectangles have 4 vertices, ellipses 2
        (opposite corners of the bounding box), arrows and rulers 2 (tail, head).
    type : str
        One of :data:`REGION_TYPES`, or a format's own code it does not map
        (``'aperio:7'``), kept for writing back.
    negative : bool
        A hole or exclusion: subtracted from the positive regions of its layer.
    text : str
        The region's label (Aperio ``Text``, GeoJSON ``name``).
    attributes : dict
        Every other attribute the file gives the region (Aperio Region attributes such
        as ``Id``, ``Zoom``, ``Length``; GeoJSON properties), values as in the file.
    holes : list of (M, 2) float64 arrays
        Interior rings (GeoJSON holes). Aperio stores holes as separate negative regions.
    z : (N,) float64 array or None
        Per-vertex Z where the file has it (NaN where a vertex has none).
    group : str or None
        Regions the file stores as one object (the parts of a GeoJSON MultiPolygon)
        share a group; formats that can write them as one object again.
    extra : dict
        Format-specific content kept for lossless writing in the same format.
    """

    vertices: np.ndarray
    type: str = "polygon"
    negative: bool = False
    text: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    holes: list[np.ndarray] = field(default_factory=list)
    z: np.ndarray | None = None
    group: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vertices = _as_vertices(self.vertices)
        self.holes = [_as_vertices(h) for h in self.holes]

    @property
    def id(self) -> str | None:
        """The region's id in its file (Aperio ``Id``), or None."""
        value = self.attributes.get("Id")
        return None if value is None else str(value)

    @property
    def is_area(self) -> bool:
        """True when the region encloses an area (never for arrows, rulers, lines, points)."""
        return self.type in AREA_TYPES

    def outline(self, ellipse_points: int = 64) -> np.ndarray:
        """The region's boundary as a polygon (level-0 px): ellipses are sampled."""
        if self.type == "ellipse" and len(self.vertices) == 2:
            (x0, y0), (x1, y1) = self.vertices
            t = np.linspace(0.0, 2.0 * np.pi, ellipse_points, endpoint=False)
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0) / 2, abs(y1 - y0) / 2
            return np.column_stack([cx + rx * np.cos(t), cy + ry * np.sin(t)])
        return self.vertices

    def area(self) -> float:
        """Enclosed area in square level-0 pixels, holes subtracted; 0 for non-areas."""
        if not self.is_area:
            return 0.0
        if self.type == "ellipse" and len(self.vertices) == 2:
            (x0, y0), (x1, y1) = self.vertices
            outer = math.pi * abs(x1 - x0) * abs(y1 - y0) / 4.0
        else:
            outer = polygon_area(self.vertices)
        return max(0.0, outer - sum(polygon_area(h) for h in self.holes))

    def length(self) -> float:
        """Perimeter (closed shapes) or path length (lines, arrows, rulers) in level-0 px."""
        if self.type == "ellipse" and len(self.vertices) == 2:
            (x0, y0), (x1, y1) = self.vertices
            a, b = abs(x1 - x0) / 2, abs(y1 - y0) / 2
            h = ((a - b) / (a + b)) ** 2 if a + b else 0.0  # Ramanujan's approximation
            return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
        pts = self.vertices
        if len(pts) < 2:
            return 0.0
        if self.is_area and not np.array_equal(pts[0], pts[-1]):
            pts = np.vstack([pts, pts[:1]])
        return float(np.hypot(*np.diff(pts, axis=0).T).sum())

    def __repr__(self) -> str:
        return (f"Region(type={self.type!r}, {len(self.vertices)} vertices, "
                f"negative={self.negative}, text={self.text!r}, id={self.id!r})")


@dataclass(eq=False)
class AnnotationLayer:
    """A named, coloured group of regions (Aperio Annotation, ASAP group, GeoJSON class).

    ``attributes`` holds the layer's other attributes as in the file (Aperio
    ``Id``, ``Type``, ``ReadOnly``...); ``extra`` holds format-specific content kept for
    lossless writing (Aperio ``Attributes``, ``RegionAttributeHeaders``, ``Plots``).
    """

    name: str = ""
    color: tuple[int, int, int] = DEFAULT_COLOR
    regions: list[Region] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.color = _as_color(self.color)

    @property
    def class_name(self) -> str:
        """The layer's class: its name, falling back to its Id."""
        return self.name or str(self.attributes.get("Id", ""))

    def __repr__(self) -> str:
        return (f"AnnotationLayer(name={self.name!r}, color={self.color}, "
                f"{len(self.regions)} regions)")


class AnnotationSet(Sequence[AnnotationLayer]):
    """An ordered sequence of annotation layers, with the file's pixel size.

    Parameters
    ----------
    layers : iterable of AnnotationLayer
    mpp : float, optional
        Micrometres per level-0 pixel the annotations were drawn at (Aperio
        ``MicronsPerPixel``); None when unknown (missing or 0).
    attributes : dict, optional
        Attributes of the file's root element, as in the file.
    """

    def __init__(self, layers: Iterable[AnnotationLayer] = (), mpp: float | None = None,
                 attributes: dict[str, Any] | None = None, format: str | None = None,
                 source: Path | None = None, extra: dict[str, Any] | None = None) -> None:
        self.layers: list[AnnotationLayer] = list(layers)
        self.attributes: dict[str, Any] = dict(attributes or {})
        self.format = format
        self.source = source
        self.extra: dict[str, Any] = dict(extra or {})
        if mpp is not None:
            self.mpp = mpp

    @property
    def mpp(self) -> float | None:
        """Micrometres per level-0 pixel (from ``MicronsPerPixel``), or None if unknown."""
        value = self.attributes.get("MicronsPerPixel")
        try:
            mpp = float(value) if value is not None else 0.0
        except ValueError:
            return None
        return mpp if mpp > 0 and math.isfinite(mpp) else None

    @mpp.setter
    def mpp(self, value: float | None) -> None:
        if value is None:
            self.attributes.pop("MicronsPerPixel", None)
        elif self.mpp is None or float(value) != self.mpp:
            self.attributes["MicronsPerPixel"] = f"{float(value):.6f}"

    @overload
    def __getitem__(self, index: int) -> AnnotationLayer: ...
    @overload
    def __getitem__(self, index: slice) -> list[AnnotationLayer]: ...
    def __getitem__(self, index: int | slice) -> AnnotationLayer | list[AnnotationLayer]:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[AnnotationLayer]:
        return iter(self.layers)

    def regions(self) -> Iterator[tuple[AnnotationLayer, Region]]:
        """Every (layer, region) pair, in file order."""
        for layer in self.layers:
            for region in layer.regions:
                yield layer, region

    @property
    def region_count(self) -> int:
        return sum(len(layer.regions) for layer in self.layers)

    def __repr__(self) -> str:
        return (f"AnnotationSet({len(self.layers)} layers, {self.region_count} regions, "
                f"mpp={self.mpp}, format={self.format!r})")


# -- geometry helpers ------------------------------------------------------------------


def polygon_area(vertices: np.ndarray) -> float:
    """Shoelace area of a ring (open or closed) in square units of its coordinates."""
    if len(vertices) < 3:
        return 0.0
    x, y = vertices[:, 0], vertices[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _as_vertices(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return np.empty((0, 2), np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"vertices must be an (N, 2) array of (x, y), got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _as_color(value: Any) -> tuple[int, int, int]:
    r, g, b = (int(round(float(c))) for c in tuple(value)[:3])
    return (min(max(r, 0), 255), min(max(g, 0), 255), min(max(b, 0), 255))


def check_finite(vertices: np.ndarray, path: Path | str, where: str) -> None:
    """Raise :class:`InvalidGeometryError` naming the region if a coordinate is not finite."""
    if vertices.size and not np.isfinite(vertices).all():
        bad = int(np.flatnonzero(~np.isfinite(vertices).all(axis=1))[0])
        raise InvalidGeometryError(
            f"{path}: {where}: vertex {bad} has a non-finite coordinate "
            f"({vertices[bad, 0]}, {vertices[bad, 1]}); fix or remove that region.")


def parse_coordinates(values: Sequence[str], path: Path | str, where: str,
                      decimal_comma: bool = False) -> np.ndarray:
    """Strings to float64, with an error naming the region for anything non-numeric."""
    try:
        if decimal_comma:
            values = [v.replace(",", ".") for v in values]
        return np.array(values, dtype=np.float64)
    except (ValueError, TypeError):
        for i, v in enumerate(values):
            try:
                float(v.replace(",", ".") if decimal_comma else v)
            except (ValueError, TypeError, AttributeError):
                raise InvalidGeometryError(
                    f"{path}: {where}: vertex {i} has a coordinate that is not a number "
                    f"({v!r}); fix or remove that region.") from None
        raise


# -- reading and writing ---------------------------------------------------------------


def sniff_format(path: Path | str) -> str:
    """The annotation format of a file, from its content: 'aperio', 'asap' or 'geojson'.

    Raises :class:`MalformedAnnotationError` when the content is none of them.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(4096)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:1] in (b"{", b"["):
        return "geojson"
    if text[:1] == b"<":
        lowered = text.lower()
        # skip the declaration, comments and doctype: the root element decides
        i = 0
        while True:
            j = lowered.find(b"<", i)
            if j < 0:
                break
            if lowered[j:j + 2] in (b"<?", b"<!"):
                i = j + 2
                continue
            match = re.match(rb"[a-z_][\w.:-]*", lowered[j + 1:j + 64])
            tag = match.group(0) if match else b""
            if tag == b"annotations":
                return "aperio"
            if tag == b"asap_annotations":
                return "asap"
            break
        raise MalformedAnnotationError(
            f"{path}: XML, but neither Aperio ImageScope (<Annotations>) nor ASAP "
            "(<ASAP_Annotations>) annotations.")
    raise MalformedAnnotationError(
        f"{path}: not an annotation file this package reads (Aperio ImageScope XML, "
        "ASAP XML or QuPath GeoJSON).")


def _format_from_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".xml":
        return "aperio"
    if suffix in (".geojson", ".json"):
        return "geojson"
    raise AnnotationError(
        f"{path}: cannot tell the format from the suffix {suffix!r}; pass "
        f"format='aperio', 'asap' or 'geojson'.")


def read_annotations(path: Path | str, format: str | None = None) -> AnnotationSet:
    """Read an Aperio ImageScope XML, ASAP XML or QuPath GeoJSON annotation file.

    Parameters
    ----------
    path : path-like
    format : {'aperio', 'asap', 'geojson'}, optional
        Default: sniffed from the file's content (not its suffix).

    Returns
    -------
    AnnotationSet
        Layers in file order; vertices in level-0 pixel (x, y) as in the file.

    Raises
    ------
    AnnotationNotFoundError, MalformedAnnotationError, UnsafeAnnotationError,
    InvalidGeometryError
        All subclasses of :class:`~napari_slideseg.SlideSegError`; nothing half-read is
        returned.
    """
    path = Path(path)
    if not path.exists():
        raise AnnotationNotFoundError(f"{path}: no such annotation file.")
    if path.is_dir():
        raise AnnotationError(f"{path}: is a folder, not an annotation file.")
    fmt = format or sniff_format(path)
    if fmt == "aperio":
        from ._aperio import read_aperio

        result = read_aperio(path)
    elif fmt == "asap":
        from ._asap import read_asap

        result = read_asap(path)
    elif fmt == "geojson":
        from ._geojson import read_geojson

        result = read_geojson(path)
    else:
        raise AnnotationError(f"unknown annotation format {fmt!r}; use one of {FORMATS}.")
    result.format, result.source = fmt, path
    return result


def write_annotations(annotations: AnnotationSet | Iterable[AnnotationLayer], path: Path | str,
                      format: str | None = None, *, backup: bool = True) -> list[str]:
    """Write annotations as Aperio ImageScope XML, ASAP XML or QuPath GeoJSON.

    The file is written to a temporary file beside ``path`` and renamed over it, so a
    failure leaves no half-written file; a file that is replaced is kept as ``path~``
    when ``backup`` is true.

    Parameters
    ----------
    annotations : AnnotationSet or iterable of AnnotationLayer
    path : path-like
    format : {'aperio', 'asap', 'geojson'}, optional
        Default from the suffix: ``.xml`` -> aperio, ``.geojson``/``.json`` -> geojson.

    Returns
    -------
    list of str
        What the target format could not express (empty when nothing was lost).
    """
    path = Path(path)
    fmt = format or _format_from_suffix(path)
    if fmt not in FORMATS:
        raise AnnotationError(f"unknown annotation format {fmt!r}; use one of {FORMATS}.")
    if not isinstance(annotations, AnnotationSet):
        annotations = AnnotationSet(annotations)
    for layer, region in annotations.regions():
        check_finite(region.vertices, path, f"layer {layer.name!r}, region {region.id}")
    if fmt == "aperio":
        from ._aperio import write_aperio as writer
    elif fmt == "asap":
        from ._asap import write_asap as writer
    else:
        from ._geojson import write_geojson as writer
    if not path.parent.is_dir():
        raise AnnotationError(f"{path}: the folder {path.parent} does not exist.")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            lost = writer(annotations, fh)
        if backup and path.exists():
            shutil.copy2(path, path.with_name(path.name + "~"))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return lost


def holes_by_containment(positives: Sequence[np.ndarray],
                         negatives: Sequence[np.ndarray]) -> tuple[list[list[int]], list[int]]:
    """Assign each negative ring to the smallest positive ring containing its first vertex.

    Returns, per positive, the indices of its holes, and the negatives no positive holds.
    """
    import cv2

    order = sorted(range(len(positives)), key=lambda i: polygon_area(positives[i]))
    assigned: list[list[int]] = [[] for _ in positives]
    orphans = []
    contours = [np.asarray(p, np.float32).reshape(-1, 1, 2) for p in positives]
    for j, neg in enumerate(negatives):
        if not len(neg):
            orphans.append(j)
            continue
        x, y = float(neg[:, 0].mean()), float(neg[:, 1].mean())
        for i in order:
            if len(positives[i]) >= 3 and cv2.pointPolygonTest(contours[i], (x, y), False) >= 0:
                assigned[i].append(j)
                break
        else:
            orphans.append(j)
    return assigned, orphans


def find_annotations(slide_path: Path | str, folder: Path | str | None = None) -> Path | None:
    """The annotation file of a slide: same stem, in ``folder`` (default: beside it).

    ``slide.svs`` -> ``slide.xml``, ``slide.geojson`` or ``slide.json`` (the first that is
    an annotation file); for names with several dots (``case.ome.tif``) the part before
    the first dot is tried too.
    """
    slide_path = Path(slide_path)
    where = Path(folder) if folder is not None else slide_path.parent
    stems = dict.fromkeys([slide_path.stem, slide_path.name.split(".")[0]])
    for stem in stems:
        for suffix in ANNOTATION_SUFFIXES:
            candidate = where / (stem + suffix)
            if candidate.is_file():
                try:
                    sniff_format(candidate)
                except (AnnotationError, OSError):
                    continue
                return candidate
    return None
