"""QuPath-style GeoJSON: reader and writer.

Reads a FeatureCollection, a bare JSON array of Features (real QuPath exports do both) or
a single Feature. Each classification becomes a layer (falling back to the feature's
``name`` when there is no classification, as some exporters write); polygons keep their
interior rings as ``holes``; MultiPolygon and MultiLineString parts become regions that
share a ``group`` and are written back as one feature.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import numpy as np

from .annotations import (
    AnnotationLayer,
    AnnotationSet,
    Region,
    check_finite,
    holes_by_containment,
)
from .errors import InvalidGeometryError, MalformedAnnotationError
from .review import adopt_carried_attributes, carried_attributes

__all__ = ["read_geojson", "write_geojson"]

UNCLASSIFIED = "Unclassified"
ELLIPSE_POINTS = 64


def _ring(coords: Any, path: Path, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        arr = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidGeometryError(
            f"{path}: {where}: coordinates are not numbers; fix or remove that feature.") \
            from None
    if arr.ndim == 1 and arr.size in (2, 3):
        arr = arr[None, :]
    if arr.size == 0:
        return np.empty((0, 2)), None
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise InvalidGeometryError(f"{path}: {where}: malformed coordinate array "
                                   f"(shape {arr.shape}).")
    xy = np.ascontiguousarray(arr[:, :2])
    check_finite(xy, path, where)
    return xy, (arr[:, 2].copy() if arr.shape[1] > 2 else None)


def _class_of(props: dict[str, Any]) -> tuple[str, tuple[int, int, int] | None, str]:
    cls = props.get("classification")
    if isinstance(cls, dict):
        name = cls.get("name")
        if name is None and isinstance(cls.get("names"), list):
            name = ": ".join(str(n) for n in cls["names"])
        color = cls.get("color") or cls.get("colorRGB")
        return str(name or UNCLASSIFIED), _color(color), "classification"
    if isinstance(cls, str):
        return cls, _color(props.get("color")), "classification"
    if props.get("name"):
        return str(props["name"]), _color(props.get("color")), "name"
    return UNCLASSIFIED, _color(props.get("color")), "none"


def _color(value: Any) -> tuple[int, int, int] | None:
    if isinstance(value, list | tuple) and len(value) >= 3:
        try:
            return (int(value[0]), int(value[1]), int(value[2]))
        except (TypeError, ValueError):
            return None
    if isinstance(value, int):  # packed ARGB integer (QuPath's colorRGB)
        return ((value >> 16) & 255, (value >> 8) & 255, value & 255)
    return None


def read_geojson(path: Path) -> AnnotationSet:
    """Read QuPath-style GeoJSON (see :func:`napari_slideseg.read_annotations`)."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as exc:
        raise MalformedAnnotationError(
            f"{path}: line {exc.lineno}, column {exc.colno}: malformed JSON ({exc.msg}).") \
            from None
    except UnicodeDecodeError as exc:
        raise MalformedAnnotationError(f"{path}: not UTF-8 text ({exc.reason}).") from None
    result = AnnotationSet()
    if isinstance(doc, list):
        features, result.extra["geojson_bare"] = doc, True
    elif isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        features = doc.get("features") or []
        result.extra["geojson_collection"] = {k: v for k, v in doc.items()
                                              if k not in ("type", "features")}
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        features, result.extra["geojson_single"] = [doc], True
    else:
        raise MalformedAnnotationError(
            f"{path}: JSON, but not GeoJSON features (expected a FeatureCollection, a "
            "Feature or an array of Features).")
    layers: dict[str, AnnotationLayer] = {}
    for index, feature in enumerate(features):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise MalformedAnnotationError(f"{path}: item {index} is not a GeoJSON Feature.")
        props = dict(feature.get("properties") or {})
        name, color, source = _class_of(props)
        layer = layers.get(name)
        if layer is None:
            layer = AnnotationLayer(name=name, color=color or (255, 255, 0),
                                    extra={"geojson_class_source": source})
            layers[name] = layer
        text = str(props.get("name", ""))
        attributes = {k: v for k, v in props.items() if k not in ("classification", "name")}
        extra = {"geojson_order": index,
                 "geojson_feature": {k: v for k, v in feature.items()
                                     if k not in ("type", "geometry", "properties")},
                 "geojson_classification": props.get("classification"),
                 "geojson_has_name": "name" in props}
        where = f"feature {index} ({name!r})"
        geometry = feature.get("geometry")
        regions = _regions(geometry, path, where, text, attributes, extra, index)
        for region in regions:  # review and prediction values kept in 'metadata'
            adopt_carried_attributes(region)
        layer.regions.extend(regions)
    result.layers = list(layers.values())
    return result


def _regions(geometry: Any, path: Path, where: str, text: str, attributes: dict[str, Any],
             extra: dict[str, Any], index: int) -> list[Region]:
    if geometry is None:
        return [Region(np.empty((0, 2)), text=text, attributes=attributes,
                       extra={**extra, "geojson_null": True})]
    gtype = geometry.get("type")
    coords = geometry.get("coordinates")
    gextra = {k: v for k, v in geometry.items() if k not in ("type", "coordinates")}
    extra = {**extra, "geojson_geometry": gextra}

    def region(vertices: np.ndarray, z: np.ndarray | None, rtype: str,
               holes: list[np.ndarray] | None = None, group: str | None = None) -> Region:
        return Region(vertices, type=rtype, text=text, attributes=dict(attributes),
                      holes=holes or [], z=z, group=group, extra=dict(extra))

    if coords is None:
        raise InvalidGeometryError(f"{path}: {where}: a {gtype} without coordinates.")
    if gtype == "Polygon":
        rings = [_ring(r, path, where) for r in coords]
        if not rings:
            return [region(np.empty((0, 2)), None, "polygon")]
        return [region(rings[0][0], rings[0][1], "polygon", [r for r, _ in rings[1:]])]
    if gtype == "MultiPolygon":
        out = []
        for poly in coords:
            rings = [_ring(r, path, where) for r in poly]
            out.append(region(rings[0][0], rings[0][1], "polygon", [r for r, _ in rings[1:]],
                              group=f"feature-{index}"))
        return out
    if gtype == "LineString":
        xy, z = _ring(coords, path, where)
        return [region(xy, z, "line")]
    if gtype == "MultiLineString":
        return [region(*_ring(c, path, where), "line", group=f"feature-{index}")
                for c in coords]
    if gtype == "Point":
        xy, z = _ring([coords], path, where)
        return [region(xy, z, "point")]
    if gtype == "MultiPoint":
        xy, z = _ring(coords, path, where)
        return [region(xy, z, "points")]
    raise MalformedAnnotationError(f"{path}: {where}: unsupported geometry type {gtype!r}.")


# -- writing ---------------------------------------------------------------------------


def _closed(ring: np.ndarray) -> list[list[float]]:
    pts = ring.tolist()
    if pts and pts[0] != pts[-1]:
        pts.append(pts[0])
    return pts


def _coords(xy: np.ndarray, z: np.ndarray | None, close: bool = False) -> list[list[float]]:
    if z is not None and len(z) == len(xy) and not np.isnan(z).any():
        pts = np.column_stack([xy, z]).tolist()
    else:
        pts = xy.tolist()
    if close and pts and pts[0][:2] != pts[-1][:2]:
        pts.append(pts[0])
    return pts


def _geometry(region: Region, lost: list[str], label: str) -> dict[str, Any] | None:
    if region.extra.get("geojson_null"):
        return None
    rtype = region.type
    if rtype in ("polygon", "spline", "rectangle") or rtype.startswith("aperio:"):
        if rtype == "spline":
            lost.append(f"{label}: a spline is written as the polygon through its points.")
        rings = [_coords(region.vertices, region.z, close=True)]
        rings += [_closed(h) for h in region.holes]
        return {"type": "Polygon", "coordinates": rings}
    if rtype == "ellipse":
        lost.append(f"{label}: an ellipse is written as a {ELLIPSE_POINTS}-point polygon.")
        rings = [_closed(region.outline(ELLIPSE_POINTS))] + [_closed(h) for h in region.holes]
        return {"type": "Polygon", "coordinates": rings}
    if rtype in ("line", "arrow", "ruler"):
        if rtype != "line":
            lost.append(f"{label}: GeoJSON has no {rtype}; written as a LineString.")
        return {"type": "LineString", "coordinates": _coords(region.vertices, region.z)}
    if rtype == "point":
        coords = _coords(region.vertices, region.z)
        return {"type": "Point", "coordinates": coords[0] if coords else []}
    if rtype == "points":
        return {"type": "MultiPoint", "coordinates": _coords(region.vertices, region.z)}
    lost.append(f"{label}: unknown region type {rtype!r}, written as a Polygon.")
    return {"type": "Polygon", "coordinates": [_coords(region.vertices, None, close=True)]}


def _properties(region: Region, layer: AnnotationLayer) -> dict[str, Any]:
    from_geojson = "geojson_order" in region.extra
    if from_geojson:
        props = dict(region.attributes)
    else:
        props = {"objectType": "annotation"}
        meta = {k: str(v) for k, v in region.attributes.items()}
        if region.negative:
            meta["negative"] = "1"
        if meta:
            props["metadata"] = meta
    carried = carried_attributes(region)
    if carried:  # review status, reviewer, opinion, probabilities: QuPath-style metadata
        props["metadata"] = {**(props.get("metadata") or {}), **carried}
    if region.text or region.extra.get("geojson_has_name"):
        props["name"] = region.text
    source = layer.extra.get("geojson_class_source", "classification")
    original = region.extra.get("geojson_classification")
    if source == "classification":
        if isinstance(original, dict) and original.get("name") == layer.name \
                and tuple(original.get("color", ())[:3]) == layer.color:
            props["classification"] = original
        elif isinstance(original, str) and original == layer.name:
            props["classification"] = original
        else:
            props["classification"] = {"name": layer.class_name, "color": list(layer.color)}
    elif source == "name" and not props.get("name"):
        props["name"] = layer.name
    return props


def write_geojson(annotations: AnnotationSet, out: IO[str]) -> list[str]:
    """Write GeoJSON to a text stream; returns what could not be expressed."""
    lost: list[str] = []
    items: list[tuple[float, dict[str, Any]]] = []
    counter = 0
    for layer in annotations:
        regions = list(layer.regions)
        if not regions:
            lost.append(f"layer {layer.class_name!r}: has no regions, and GeoJSON has no "
                        "empty classes; not written.")
            continue
        negatives = [r for r in regions if r.negative and r.is_area]
        positives = [r for r in regions if not (r.negative and r.is_area)]
        hole_map: dict[int, list[np.ndarray]] = {}
        if negatives:
            areas = [r for r in positives if r.is_area]
            assigned, orphans = holes_by_containment([r.outline() for r in areas],
                                                     [r.outline() for r in negatives])
            for region, hole_ids in zip(areas, assigned, strict=True):
                hole_map[id(region)] = [negatives[j].outline() for j in hole_ids]
            for j in orphans:
                positives.append(negatives[j])
                lost.append(f"layer {layer.name!r}: negative region "
                            f"{negatives[j].id or ''} lies in no positive region; written "
                            "as a polygon marked negative in its metadata.")
        i = 0
        while i < len(positives):
            region = positives[i]
            group = [region]
            while region.group is not None and i + len(group) < len(positives) \
                    and positives[i + len(group)].group == region.group:
                group.append(positives[i + len(group)])
            i += len(group)
            label = f"layer {layer.name!r}, region {region.id or region.text or counter}"
            geoms = []
            for part in group:
                extra_holes = hole_map.get(id(part), [])
                if extra_holes:
                    part = Region(part.vertices, type=part.type, holes=part.holes + extra_holes,
                                  z=part.z, extra=part.extra)
                geoms.append(_geometry(part, lost, label))
            geometry = geoms[0]
            if len(geoms) > 1 and all(g and g["type"] == "Polygon" for g in geoms):
                geometry = {"type": "MultiPolygon",
                            "coordinates": [g["coordinates"] for g in geoms if g]}
            elif len(geoms) > 1 and all(g and g["type"] == "LineString" for g in geoms):
                geometry = {"type": "MultiLineString",
                            "coordinates": [g["coordinates"] for g in geoms if g]}
            elif len(geoms) > 1:
                lost.append(f"{label}: parts of mixed types are written as separate features.")
            if geometry is not None:
                geometry.update(region.extra.get("geojson_geometry") or {})
            feature: dict[str, Any] = {"type": "Feature"}
            feature.update(region.extra.get("geojson_feature") or {})
            feature["geometry"] = geometry
            feature["properties"] = _properties(region, layer)
            order = region.extra.get("geojson_order", 1e12 + counter)
            items.append((order, feature))
            if len(geoms) > 1 and geometry is geoms[0]:
                for g in geoms[1:]:
                    extra_feature = dict(feature, geometry=g)
                    items.append((order + 1e-6, extra_feature))
            counter += 1
    features = [f for _, f in sorted(items, key=lambda t: t[0])]
    if annotations.extra.get("geojson_bare"):
        doc: Any = features
    elif annotations.extra.get("geojson_single") and len(features) == 1:
        doc = features[0]
    else:
        doc = {"type": "FeatureCollection", "features": features}
        doc.update(annotations.extra.get("geojson_collection") or {})
    json.dump(doc, out, indent=2, allow_nan=False)
    out.write("\n")
    return lost
