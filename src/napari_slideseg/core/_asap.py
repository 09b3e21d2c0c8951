"""ASAP XML (CAMELYON annotations): reader and writer.

::

    ASAP_Annotations
      Annotations / Annotation Name Type PartOfGroup Color="#rrggbb"
        Coordinates / Coordinate Order X Y
      AnnotationGroups / Group Name PartOfGroup Color / Attributes

The class of an annotation is its group (``PartOfGroup``): each group becomes a layer
(declared groups first, in file order; ``None`` collects ungrouped annotations). Real
files write decimal commas (``X="543,020264"``); both separators are read, and a file
read with commas is written with commas. Annotations are written back in their original
order, whatever layer they are in.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import numpy as np

from ._xml import RawBuilder, RawElement, format_attrs, make_parser, parse_file, write_raw
from .annotations import AnnotationLayer, AnnotationSet, Region, check_finite, parse_coordinates
from .errors import InvalidGeometryError, MalformedAnnotationError

__all__ = ["read_asap", "write_asap"]

TYPE_NAMES = {"Polygon": "polygon", "Rectangle": "rectangle", "Spline": "spline",
              "Dot": "point", "PointSet": "points", "Measurement": "ruler"}
TYPE_CODES = {v: k for k, v in TYPE_NAMES.items()}
NO_GROUP = "None"


def _hex_color(value: str | None) -> tuple[int, int, int] | None:
    value = (value or "").strip().lstrip("#")
    if len(value) != 6:
        return None
    try:
        return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))
    except ValueError:
        return None


def _to_hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def read_asap(path: Path) -> AnnotationSet:
    """Read an ASAP XML file (see :func:`napari_slideseg.read_annotations`)."""
    parser = make_parser(path)
    builder = RawBuilder()
    roots: list[RawElement] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        builder.start(tag, attrs)

    def end(tag: str) -> None:
        finished = builder.end()
        if finished is not None:
            roots.append(finished)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parse_file(path, parser)
    root = roots[0]
    if root.tag != "ASAP_Annotations":
        raise MalformedAnnotationError(f"{path}: the root element is <{root.tag}>, not "
                                       "<ASAP_Annotations>.")
    result = AnnotationSet()
    result.attributes.update(root.attrib)
    layers: dict[str, AnnotationLayer] = {}
    root_layout: list[Any] = []
    annotations: list[RawElement] = []
    comma = False
    for child in root.children:
        if child.tag == "AnnotationGroups":
            root_layout.append("\0Groups")
            for group in child.children:
                if group.tag != "Group":
                    continue
                name = group.attrib.get("Name", "")
                rest = {k: v for k, v in group.attrib.items() if k not in ("Name", "Color")}
                layers[name] = AnnotationLayer(
                    name=name, color=_hex_color(group.attrib.get("Color")) or (255, 255, 0),
                    attributes=rest, extra={"asap_group": True, "asap_children": group.children,
                                            "asap_keys": list(group.attrib)})
        elif child.tag == "Annotations":
            root_layout.append("\0Annotations")
            annotations.extend(a for a in child.children if a.tag == "Annotation")
        else:
            root_layout.append(child)
    for order, element in enumerate(annotations):
        attrs = element.attrib
        group = attrs.get("PartOfGroup", NO_GROUP)
        layer = layers.get(group)
        if layer is None:
            layer = AnnotationLayer(name=group,
                                    color=_hex_color(attrs.get("Color")) or (255, 255, 0),
                                    extra={"asap_group": False})
            layers[group] = layer
        name = attrs.get("Name", "")
        where = f"annotation {order} ({name!r})"
        coords = [c for cs in element.children if cs.tag == "Coordinates"
                  for c in cs.children if c.tag == "Coordinate"]
        try:
            coords.sort(key=lambda c: int(c.attrib.get("Order", "0")))
        except ValueError:
            raise InvalidGeometryError(f"{path}: {where}: a Coordinate Order is not an "
                                       "integer.") from None
        xs = [c.attrib.get("X", "") for c in coords]
        ys = [c.attrib.get("Y", "") for c in coords]
        has_comma = any("," in v for v in xs[:4] + ys[:4])
        comma = comma or has_comma
        x = parse_coordinates(xs, path, where, decimal_comma=True)
        y = parse_coordinates(ys, path, where, decimal_comma=True)
        vertices = np.column_stack([x, y]) if len(x) else np.empty((0, 2))
        check_finite(vertices, path, where)
        code = attrs.get("Type", "Polygon")
        rest = {k: v for k, v in attrs.items() if k not in ("Name", "Type", "PartOfGroup")}
        others = [c for c in element.children if c.tag != "Coordinates"]
        layer.regions.append(Region(
            vertices, type=TYPE_NAMES.get(code, f"asap:{code}"), text=name, attributes=rest,
            extra={"asap_order": order, "asap_keys": list(attrs), "asap_children": others}))
    result.layers = list(layers.values())
    result.extra.update(asap_layout=root_layout, asap_decimal_comma=comma)
    return result


def _numbers(values: np.ndarray, comma: bool) -> list[str]:
    from ._aperio import _fmt_numbers

    out = _fmt_numbers(values)
    return [v.replace(".", ",") for v in out] if comma else out


def write_asap(annotations: AnnotationSet, out: IO[str]) -> list[str]:
    """Write ASAP XML to a text stream; returns what could not be expressed."""
    lost: list[str] = []
    comma = bool(annotations.extra.get("asap_decimal_comma"))
    write = out.write
    write('<?xml version="1.0"?>\n')
    write(f"<ASAP_Annotations{format_attrs(annotations.attributes)}>\n")
    items: list[tuple[float, AnnotationLayer, Region]] = []
    new = 0
    for layer in annotations:
        for region in layer.regions:
            if region.negative:
                lost.append(f"layer {layer.name!r}, region {region.id or region.text}: ASAP "
                            "has no holes; a negative region is written as a plain annotation.")
            order = region.extra.get("asap_order")
            if order is None:
                new += 1
                order = 1e12 + new
            items.append((order, layer, region))
    items.sort(key=lambda t: t[0])
    layout = annotations.extra.get("asap_layout") or ["\0Annotations", "\0Groups"]
    for item in layout:
        if isinstance(item, RawElement):
            write_raw(item, write, "\t")
        elif item == "\0Annotations":
            write("\t<Annotations>\n")
            for i, (_, layer, region) in enumerate(items):
                _write_annotation(layer, region, i, write, comma, lost)
            write("\t</Annotations>\n")
        else:
            _write_groups(annotations, write)
    write("</ASAP_Annotations>\n")
    return lost


def _write_annotation(layer: AnnotationLayer, region: Region, index: int, write: Any,
                      comma: bool, lost: list[str]) -> None:
    rtype = region.type
    if rtype in TYPE_CODES:
        code = TYPE_CODES[rtype]
    elif rtype.startswith("asap:"):
        code = rtype.split(":", 1)[1]
    elif rtype in ("arrow", "line") and len(region.vertices) == 2:
        code = "Measurement"
        lost.append(f"layer {layer.name!r}, region {region.id or index}: ASAP has no "
                    f"{rtype}; written as a Measurement.")
    else:
        code = "Polygon"
        if rtype != "ellipse":
            lost.append(f"layer {layer.name!r}, region {region.id or index}: ASAP has no "
                        f"{rtype}; written as a Polygon.")
    vertices = region.vertices
    if rtype == "ellipse":
        lost.append(f"layer {layer.name!r}, region {region.id or index}: ASAP has no "
                    "ellipse; written as a 64-point polygon.")
        vertices = region.outline(64)
    if region.holes:
        lost.append(f"layer {layer.name!r}, region {region.id or index}: ASAP has no holes; "
                    f"{len(region.holes)} hole(s) dropped.")
    keys = region.extra.get("asap_keys") or ["Name", "Type", "PartOfGroup", "Color"]
    attrs: dict[str, Any] = {}
    for k in keys:
        if k == "Name":
            attrs[k] = region.text
        elif k == "Type":
            attrs[k] = code
        elif k == "PartOfGroup":
            attrs[k] = layer.name or NO_GROUP
        elif k == "Color":
            attrs[k] = region.attributes.get("Color", _to_hex(layer.color))
        elif k in region.attributes:
            attrs[k] = region.attributes[k]
    attrs.update({k: str(v) for k, v in region.attributes.items() if k not in attrs
                  and isinstance(v, str | int | float)})
    write(f"\t\t<Annotation{format_attrs(attrs)}>\n")
    xs, ys = _numbers(vertices[:, 0], comma), _numbers(vertices[:, 1], comma)
    write("\t\t\t<Coordinates>\n")
    write("".join(f'\t\t\t\t<Coordinate Order="{i}" X="{x}" Y="{y}"/>\n'
                  for i, (x, y) in enumerate(zip(xs, ys, strict=True))))
    write("\t\t\t</Coordinates>\n")
    for child in region.extra.get("asap_children") or []:
        write_raw(child, write, "\t\t\t")
    write("\t\t</Annotation>\n")


def _write_groups(annotations: AnnotationSet, write: Any) -> None:
    groups = [la for la in annotations
              if la.extra.get("asap_group", la.name not in ("", NO_GROUP))]
    if not groups:
        write("\t<AnnotationGroups/>\n")
        return
    write("\t<AnnotationGroups>\n")
    for layer in groups:
        keys = layer.extra.get("asap_keys") or ["Name", "PartOfGroup", "Color"]
        attrs: dict[str, Any] = {}
        for k in keys:
            if k == "Name":
                attrs[k] = layer.name
            elif k == "Color":
                attrs[k] = _to_hex(layer.color)
            elif k in layer.attributes:
                attrs[k] = layer.attributes[k]
            elif k == "PartOfGroup":
                attrs[k] = NO_GROUP
        attrs.update({k: str(v) for k, v in layer.attributes.items() if k not in attrs
                      and isinstance(v, str | int | float)})
        children = layer.extra.get("asap_children")
        if children is None:
            children = [RawElement("Attributes")]
        write(f"\t\t<Group{format_attrs(attrs)}>\n")
        for child in children:
            write_raw(child, write, "\t\t\t")
        write("\t\t</Group>\n")
    write("\t</AnnotationGroups>\n")
