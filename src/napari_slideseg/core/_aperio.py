"""Aperio ImageScope XML: streaming reader and lossless writer.

Structure (see the project's format notes)::

    Annotations MicronsPerPixel
      Annotation Id Name LineColor Type ReadOnly ...
        Attributes / Attribute Name Id Value       (kept verbatim)
        Regions
          RegionAttributeHeaders / AttributeHeader  (kept verbatim)
          Region Id Type Zoom Length Area ... Text NegativeROA ...
            Attributes                              (kept verbatim)
            Vertices / Vertex X Y [Z]
        Plots                                       (kept verbatim)

Every element and attribute is kept: what the model does not name is stored in
``extra`` (with the order of children) and written back as it was.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._xml import RawBuilder, RawElement, format_attrs, make_parser, parse_file, write_raw
from .annotations import (
    AnnotationLayer,
    AnnotationSet,
    Region,
    check_finite,
    parse_coordinates,
)
from .errors import InvalidGeometryError, MalformedAnnotationError

__all__ = ["read_aperio", "write_aperio", "colorref_to_rgb", "rgb_to_colorref"]

TYPE_NAMES = {"0": "polygon", "1": "rectangle", "2": "ellipse", "3": "arrow", "4": "ruler"}
TYPE_CODES = {v: k for k, v in TYPE_NAMES.items()}
# Attribute order ImageScope writes, used for regions and layers made outside a file.
REGION_KEYS = ("Id", "Type", "Zoom", "Selected", "ImageLocation", "ImageFocus", "Length",
               "Area", "LengthMicrons", "AreaMicrons", "Text", "NegativeROA",
               "InputRegionId", "Analyze", "DisplayId")
LAYER_KEYS = ("Id", "Name", "ReadOnly", "NameReadOnly", "LineColorReadOnly", "Incremental",
              "Type", "LineColor", "Visible", "Selected", "MarkupImagePath", "MacroName")
LAYER_DEFAULTS = {"ReadOnly": "0", "NameReadOnly": "0", "LineColorReadOnly": "0",
                  "Incremental": "0", "Type": "4", "Visible": "1", "Selected": "1",
                  "MarkupImagePath": "", "MacroName": ""}
HEADER_NAMES = ("Region", "Length", "Area", "Text")
REGIONS, ANNOTATION = "\0Regions", "\0Annotation"  # placeholders in child layouts


def colorref_to_rgb(value: int) -> tuple[int, int, int]:
    """A Windows COLORREF (R + 256 G + 65536 B) as (r, g, b)."""
    value = int(value)
    return (value & 0xFF, (value >> 8) & 0xFF, (value >> 16) & 0xFF)


def rgb_to_colorref(rgb: tuple[int, int, int]) -> int:
    r, g, b = rgb
    return int(r) | (int(g) << 8) | (int(b) << 16)


def _parse_color(value: str | None) -> tuple[int, int, int]:
    try:
        return colorref_to_rgb(int(float(value))) if value not in (None, "") else (0, 0, 0)
    except ValueError:
        return (0, 0, 0)


# -- reading ---------------------------------------------------------------------------


def read_aperio(path: Path) -> AnnotationSet:
    """Read an ImageScope XML file (see :func:`napari_slideseg.read_annotations`)."""
    parser = make_parser(path)
    raw = RawBuilder()
    result = AnnotationSet()
    root_seen = False
    root_layout: list[Any] = []
    layer: AnnotationLayer | None = None
    layer_layout: list[Any] = []
    regions_layout: list[Any] = []
    region: Region | None = None
    region_layout: list[Any] = []
    in_regions = in_vertices = False
    xs: list[str] = []
    ys: list[str] = []
    zs: list[str | None] = []
    raw_target: list[Any] | None = None  # the layout a finished raw element goes to

    def where() -> str:
        name = layer.name if layer is not None else "?"
        rid = region.attributes.get("Id") if region is not None else "?"
        return (f"line {parser.CurrentLineNumber}: layer {name!r}, region Id {rid}")

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal root_seen, layer, layer_layout, regions_layout, region, region_layout
        nonlocal in_regions, in_vertices, raw_target
        if in_vertices and tag == "Vertex" and not raw.stack:
            try:
                xs.append(attrs["X"])
                ys.append(attrs["Y"])
            except KeyError:
                raise InvalidGeometryError(
                    f"{path}: {where()}: a Vertex without X or Y.") from None
            zs.append(attrs.get("Z"))
            return
        if raw.stack:
            raw.start(tag, attrs)
            return
        if not root_seen:
            if tag != "Annotations":
                raise MalformedAnnotationError(
                    f"{path}: the root element is <{tag}>, not ImageScope's <Annotations>.")
            root_seen = True
            result.attributes.update(attrs)
            return
        if layer is None:
            if tag == "Annotation":
                keys = list(attrs)
                name = attrs.get("Name", "")
                color = _parse_color(attrs.get("LineColor"))
                rest = {k: v for k, v in attrs.items() if k not in ("Name", "LineColor")}
                layer = AnnotationLayer(name=name, color=color, attributes=rest,
                                        extra={"aperio_keys": keys})
                layer_layout, regions_layout = [], []
                root_layout.append(ANNOTATION)
                return
            raw_target = root_layout
        elif not in_regions:
            if tag == "Regions":
                in_regions = True
                layer_layout.append(REGIONS)
                return
            raw_target = layer_layout
        elif region is None:
            if tag == "Region":
                keys = list(attrs)
                code = attrs.get("Type", "0")
                rtype = TYPE_NAMES.get(code, f"aperio:{code}")
                rest = {k: v for k, v in attrs.items()
                        if k not in ("Type", "Text", "NegativeROA")}
                region = Region(np.empty((0, 2)), type=rtype,
                                negative=attrs.get("NegativeROA", "0").strip() == "1",
                                text=attrs.get("Text", ""), attributes=rest,
                                extra={"aperio_keys": keys})
                region_layout = []
                xs.clear(), ys.clear(), zs.clear()
                regions_layout.append(len(layer.regions))
                return
            raw_target = regions_layout
        elif not in_vertices:
            if tag == "Vertices":
                in_vertices = True
                region_layout.append("\0Vertices")
                return
            raw_target = region_layout
        else:
            raw_target = region_layout  # something other than Vertex inside Vertices
        raw.start(tag, attrs)

    def end(tag: str) -> None:
        nonlocal layer, region, in_regions, in_vertices
        if in_vertices and tag == "Vertex" and not raw.stack:
            return
        if raw.stack:
            finished = raw.end()
            if finished is not None:
                assert raw_target is not None
                raw_target.append(finished)
            return
        if in_vertices and tag == "Vertices":
            in_vertices = False
        elif region is not None and tag == "Region":
            _finish_region(region, xs, ys, zs, path, where)
            region.extra["aperio_layout"] = region_layout
            assert layer is not None
            layer.regions.append(region)
            region = None
        elif in_regions and tag == "Regions":
            in_regions = False
        elif layer is not None and tag == "Annotation":
            layer.extra["aperio_layout"] = layer_layout
            layer.extra["aperio_regions_layout"] = regions_layout
            result.layers.append(layer)
            layer = None

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = raw.data
    parse_file(path, parser)
    if not root_seen:
        raise MalformedAnnotationError(f"{path}: no <Annotations> element.")
    result.extra["aperio_layout"] = root_layout
    return result


def _finish_region(region: Region, xs: list[str], ys: list[str], zs: list[str | None],
                   path: Path, where: Callable[[], str]) -> None:
    x = parse_coordinates(xs, path, where())
    y = parse_coordinates(ys, path, where())
    vertices = np.column_stack([x, y]) if len(x) else np.empty((0, 2))
    check_finite(vertices, path, where())
    region.vertices = vertices
    if any(z is not None for z in zs):
        region.z = np.array([np.nan if z is None else z for z in zs], dtype=np.float64)
    else:
        region.extra["aperio_no_z"] = True


# -- writing ---------------------------------------------------------------------------


def _fmt_numbers(values: np.ndarray) -> list[str]:
    """Shortest exact text for each value: integers without a decimal point."""
    if not values.size:
        return []
    integral = (values == np.round(values)) & (np.abs(values) < 2**53)
    if integral.all():
        return [str(v) for v in values.astype(np.int64).tolist()]
    if not integral.any():
        return [repr(v) for v in values.tolist()]
    return [str(int(v)) if i else repr(v)
            for v, i in zip(values.tolist(), integral.tolist(), strict=True)]


def _fmt(value: float) -> str:
    return _fmt_numbers(np.array([value], np.float64))[0]


def _aperio_type(region: Region, lost: list[str], label: str) -> str:
    if region.type in TYPE_CODES:
        return TYPE_CODES[region.type]
    if region.type.startswith("aperio:"):
        return region.type.split(":", 1)[1]
    if region.type == "line" and len(region.vertices) == 2:
        lost.append(f"{label}: a two-point line is written as an ImageScope ruler (Type 4).")
        return "4"
    lost.append(f"{label}: ImageScope has no {region.type!r} region; written as a freehand "
                "region (Type 0).")
    return "0"


def write_aperio(annotations: AnnotationSet, out: IO[str]) -> list[str]:
    """Write ImageScope XML to a text stream; returns what could not be expressed."""
    lost: list[str] = []
    write = out.write
    mpp = annotations.mpp
    used_ids = {str(r.attributes.get("Id")) for _, r in annotations.regions()}
    used_layer_ids = {str(la.attributes.get("Id")) for la in annotations}
    counter: dict[str, Any] = {"region": _max_int(used_ids), "layer": _max_int(used_layer_ids)}

    root = dict(annotations.attributes)
    if "MicronsPerPixel" not in root:
        root["MicronsPerPixel"] = "0"
    write(f"<Annotations{format_attrs(root)}>\n")
    layers = list(annotations)
    layout = annotations.extra.get("aperio_layout")
    if not layout or sum(1 for item in layout if item == ANNOTATION) != len(layers):
        layout = [ANNOTATION] * len(layers) + [
            item for item in (layout or []) if isinstance(item, RawElement)]
    it = iter(layers)
    for item in layout:
        if isinstance(item, RawElement):
            write_raw(item, write, "\t")
        else:
            _write_layer(next(it), write, mpp, counter, lost)
    write("</Annotations>\n")
    return lost


def _max_int(values: set[str]) -> int:
    best = 0
    for v in values:
        try:
            best = max(best, int(v))
        except (TypeError, ValueError):
            pass
    return best


def _write_layer(layer: AnnotationLayer, write: Callable[[str], Any], mpp: float | None,
                 counter: dict[str, Any], lost: list[str]) -> None:
    keys = layer.extra.get("aperio_keys")
    attrs: dict[str, Any] = {}
    if keys is None:
        counter["layer"] += 1
        base = {"Id": layer.attributes.get("Id", str(counter["layer"])), "Name": layer.name,
                **LAYER_DEFAULTS, "LineColor": str(rgb_to_colorref(layer.color))}
        base.update({k: v for k, v in layer.attributes.items() if k in base})
        attrs = {k: base[k] for k in LAYER_KEYS}
        attrs.update({k: v for k, v in layer.attributes.items() if k not in attrs})
    else:
        for k in keys:
            if k == "Name":
                attrs[k] = layer.name
            elif k == "LineColor":
                attrs[k] = str(rgb_to_colorref(layer.color))
            elif k in layer.attributes:
                attrs[k] = layer.attributes[k]
        if "Name" not in keys and layer.name:
            attrs["Name"] = layer.name
        if "LineColor" not in keys and layer.color != (0, 0, 0):
            attrs["LineColor"] = str(rgb_to_colorref(layer.color))
        attrs.update({k: v for k, v in layer.attributes.items() if k not in attrs})
    write(f"\t<Annotation{format_attrs(attrs)}>\n")
    layout = layer.extra.get("aperio_layout")
    if layout is None:
        layout = [RawElement("Attributes"), REGIONS, RawElement("Plots")]
    for item in layout:
        if isinstance(item, RawElement):
            write_raw(item, write, "\t\t")
        else:
            _write_regions(layer, write, mpp, counter, lost)
    write("\t</Annotation>\n")


def _write_regions(layer: AnnotationLayer, write: Callable[[str], Any], mpp: float | None,
                   counter: dict[str, Any], lost: list[str]) -> None:
    write("\t\t<Regions>\n")
    layout = layer.extra.get("aperio_regions_layout")
    if layout is None:
        headers = RawElement("RegionAttributeHeaders", children=[
            RawElement("AttributeHeader", {"Id": str(-i), "Name": name, "ColumnWidth": "-1"})
            for i, name in enumerate(HEADER_NAMES, start=1)])
        layout = [headers]
    indices = [item for item in layout if not isinstance(item, RawElement)]
    if indices != list(range(len(layer.regions))):
        # regions were added, removed or reordered: keep the raw parts, then all regions
        layout = [item for item in layout if isinstance(item, RawElement)]
        layout += list(range(len(layer.regions)))
    for item in layout:
        if isinstance(item, RawElement):
            write_raw(item, write, "\t\t\t")
            continue
        region = layer.regions[item]
        _write_region(region, layer, write, mpp, counter, lost)
        for hole in region.holes:
            _write_region(Region(hole, type="polygon", negative=True, text=region.text),
                          layer, write, mpp, counter, lost)
    write("\t\t</Regions>\n")


def _write_region(region: Region, layer: AnnotationLayer, write: Callable[[str], Any],
                  mpp: float | None, counter: dict[str, Any], lost: list[str]) -> None:
    label = f"layer {layer.name!r}, region {region.id or region.text or '(new)'}"
    code = _aperio_type(region, lost, label)
    keys = region.extra.get("aperio_keys")
    attrs: dict[str, Any] = {}
    measures = _measures(region, mpp)
    nested: dict[str, Any] = {}
    if keys is None:
        counter["region"] += 1
        base: dict[str, Any] = {
            "Id": region.attributes.get("Id", str(counter["region"])), "Type": code,
            "Zoom": "1", "Selected": "0", "ImageLocation": "", "ImageFocus": "-1",
            **measures, "Text": region.text, "NegativeROA": "1" if region.negative else "0",
            "InputRegionId": "0", "Analyze": "0" if not region.is_area else "1",
            "DisplayId": str(counter["region"])}
        base.update({k: v for k, v in region.attributes.items() if k in base})
        attrs = base
        scalars, nested = _split_attributes(region.attributes)
        attrs.update({k: v for k, v in scalars.items() if k not in attrs})
    else:
        for k in keys:
            if k == "Type":
                attrs[k] = code
            elif k == "Text":
                attrs[k] = region.text
            elif k == "NegativeROA":
                attrs[k] = "1" if region.negative else "0"
            elif k in region.attributes:
                attrs[k] = region.attributes[k]
        if "Type" not in keys and code != "0":
            attrs["Type"] = code
        if "Text" not in keys and region.text:
            attrs["Text"] = region.text
        if "NegativeROA" not in keys and region.negative:
            attrs["NegativeROA"] = "1"
        attrs.update({k: v for k, v in region.attributes.items() if k not in attrs})
        if region.extra.get("remeasure"):  # reshaped in napari: its measures are stale
            attrs.update({k: v for k, v in measures.items() if k in attrs})
    write(f"\t\t\t<Region{format_attrs(attrs)}>\n")
    layout = region.extra.get("aperio_layout")
    if layout is None:
        # values ImageScope attributes cannot hold (GeoJSON measurements, metadata) go
        # into the region's Attributes element, one Attribute per leaf
        layout = [RawElement("Attributes", children=[
            RawElement("Attribute", {"Name": name, "Id": str(i), "Value": value})
            for i, (name, value) in enumerate(_flatten(nested))]), "\0Vertices"]
    if region.group is not None and region.group not in counter.setdefault("groups", set()):
        counter["groups"].add(region.group)
        lost.append(f"{label}: ImageScope has no multi-part regions; the parts of "
                    f"{region.group} are written as separate regions.")
    for item in layout:
        if isinstance(item, RawElement):
            write_raw(item, write, "\t\t\t\t")
        else:
            _write_vertices(region, write)
    write("\t\t\t</Region>\n")


def _split_attributes(attributes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    scalars = {k: v for k, v in attributes.items() if not isinstance(v, dict | list)}
    nested = {k: v for k, v in attributes.items() if isinstance(v, dict | list)}
    return scalars, nested


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [item for k, v in value.items()
                for item in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list):
        return [(prefix, json.dumps(value))]
    return [(prefix, "" if value is None else str(value))]


def _measures(region: Region, mpp: float | None) -> dict[str, str]:
    """ImageScope's Length/Area (level-0 px) and their micron versions (0 if mpp unknown)."""
    length, area = region.length(), region.area()
    return {"Length": _fmt(round(length, 6)), "Area": _fmt(round(area, 6)),
            "LengthMicrons": _fmt(round(length * mpp, 6)) if mpp else "0",
            "AreaMicrons": _fmt(round(area * mpp * mpp, 6)) if mpp else "0"}


def _write_vertices(region: Region, write: Callable[[str], Any]) -> None:
    v = region.vertices
    if not len(v):
        write("\t\t\t\t<Vertices/>\n")
        return
    xs, ys = _fmt_numbers(v[:, 0]), _fmt_numbers(v[:, 1])
    if region.z is not None and len(region.z) == len(v):
        zs = ["" if math.isnan(z) else f' Z="{_fmt(z)}"' for z in region.z.tolist()]
    elif region.extra.get("aperio_no_z"):
        zs = [""] * len(v)
    else:
        zs = [' Z="0"'] * len(v)
    lines = [f'\t\t\t\t\t<Vertex X="{x}" Y="{y}"{z}/>\n' for x, y, z in zip(xs, ys, zs,
                                                                               strict=True)]
    write("\t\t\t\t<Vertices>\n")
    write("".join(lines))
    write("\t\t\t\t</Vertices>\n")
