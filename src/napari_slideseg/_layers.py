"""The only place that turns core objects into napari layer data and back.

napari's world frame here is (row, col) in micrometres: every layer keeps its data in
level-0 pixels and carries ``scale = (mpp_y, mpp_x)``, so slide, shapes and labels
overlay exactly. A slide with unknown mpp is shown in pixels (scale 1).

Annotation formats (and OpenSlide) put pixel (i, j)'s top-left corner at (x, y) =
(j, i), while napari centres an image pixel on its index. The slide layer is therefore
translated by half a level-0 pixel, so that world = level-0 (x, y) × mpp holds for image
and shapes alike, and a vertex on a pixel edge is drawn on that edge.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .core.annotations import AnnotationLayer, AnnotationSet, Region, holes_by_containment
from .core.slide import Slide

__all__ = [
    "slide_scale",
    "slide_units",
    "slide_layer_data",
    "associated_image_layer_data",
    "annotation_layers_data",
    "annotation_labels_data",
    "shapes_to_annotations",
    "grid_window",
    "patch_grid_data",
    "mask_labels_data",
    "threshold_labels_data",
    "outline_layers_data",
    "level0_to_world",
    "world_to_level0",
    "labels_frame",
    "shapes_objects",
    "marker_points_data",
    "class_colors",
    "class_label_colormap",
    "class_labels_data",
    "REVIEW_COLUMNS",
    "REVIEW_DEFAULTS",
    "has_review_columns",
    "same_shape",
]

LayerDataTuple = tuple[Any, dict[str, Any], str]


def slide_scale(slide: Slide) -> tuple[float, float]:
    """(row, col) world units per level-0 pixel: (mpp_y, mpp_x), or (1, 1) if unknown."""
    if slide.mpp is None:
        return (1.0, 1.0)
    return (float(slide.mpp[1]), float(slide.mpp[0]))


def slide_units(slide: Slide) -> tuple[str, str]:
    return ("µm", "µm") if slide.mpp is not None else ("pixel", "pixel")


def slide_layer_data(slide: Slide, name: str | None = None) -> LayerDataTuple:
    """One multiscale RGB image layer for the whole pyramid of ``slide``."""
    pyramid = slide.pyramid
    kwargs: dict[str, Any] = {
        "name": name or slide.path.name,
        "rgb": True,
        "multiscale": len(pyramid) > 1,
        "contrast_limits": (0, 255),
        "scale": slide_scale(slide),
        "translate": tuple(0.5 * s for s in slide_scale(slide)),
        "units": slide_units(slide),
        "axis_labels": ("y", "x"),
        "metadata": {
            "slideseg_slide": slide,
            "path": str(slide.path),
            "vendor": slide.vendor,
            "mpp": slide.mpp,
            "objective_power": slide.objective_power,
            "level_dimensions": slide.level_dimensions,
            "level_downsamples": slide.level_downsamples,
            "properties": slide.properties,
        },
    }
    data = pyramid if len(pyramid) > 1 else pyramid[0]
    return (data, kwargs, "image")


def associated_image_layer_data(slide: Slide, name: str) -> LayerDataTuple:
    """An associated image (label, macro, thumbnail...) as a plain RGB layer in pixels."""
    image = slide.associated_images[name]
    return (image, {"name": f"{slide.path.name} [{name}]", "rgb": True,
                    "contrast_limits": (0, 255)}, "image")



# -- annotations <-> Shapes layers -----------------------------------------------------
#
# Shapes hold (row, col) level-0 pixels and carry the slide's scale, so they overlay the
# slide exactly. A polygon with holes is one napari polygon that walks its outer ring,
# then each hole and back (napari fills such a polygon with the holes left open). The
# layer's metadata keeps the annotation layer it came from, so that saving writes every
# untouched region back verbatim and an edited one keeps its id and attributes.

META_LAYER = "slideseg_annotation_layer"
META_SET = "slideseg_annotation_set"
META_SHAPES = "slideseg_shapes"  # region index -> (holes' region indices, shown data)
#: Regions moved into a layer from another one (a class change in the review dock): a
#: list; the shape whose ``region`` feature is (the layer's own region count) + j is
#: moved region j, saved with its id and attributes and the shape's geometry.
META_MOVED = "slideseg_moved_regions"
SHAPE_TYPES = {"polygon": "polygon", "spline": "polygon", "rectangle": "rectangle",
               "ellipse": "ellipse", "arrow": "line", "ruler": "line", "line": "path"}
FEATURE_COLUMNS = ("region", "id", "text", "type", "negative", "class", "area_um2",
                   "length_um")
#: Feature columns of a region's review and prediction figures (its ``<Attributes>``,
#: see :mod:`napari_slideseg.core.review`), added to layers where a region has one.
REVIEW_COLUMNS = ("review_status", "reviewer", "reviewed_at", "opinion", "probability_mean",
                  "probability_std", "tile_count")
#: Their values for a shape drawn in napari (a region the reviewer adds), and what a
#: region without the attribute shows: "" / NaN / -1.
REVIEW_DEFAULTS: dict[str, Any] = {"review_status": "added", "reviewer": "", "reviewed_at": "",
                                   "opinion": "", "probability_mean": np.nan,
                                   "probability_std": np.nan, "tile_count": -1}
_REVIEW_FLOATS = ("probability_mean", "probability_std")
#: Layer metadata key of the slide's opinion ({'opinion', 'reviewer', 'reviewed_at'}),
#: written to the first annotation layer's Attributes on saving.
META_SLIDE_OPINION = "slideseg_slide_opinion"


def _open_ring(vertices: np.ndarray) -> np.ndarray:
    if len(vertices) > 1 and np.array_equal(vertices[0], vertices[-1]):
        return vertices[:-1]
    return vertices


def _bridged(outer: np.ndarray, holes: list[np.ndarray]) -> np.ndarray:
    """(x, y) ring walk: outer ring, then each hole ring and back to the outer start."""
    ring = _open_ring(outer)
    rings = [_open_ring(h) for h in holes]
    rings = [h for h in rings if len(h) >= 3]
    if not rings:
        return ring
    parts = [ring, ring[:1]]
    for h in rings:
        parts += [h, h[:1], ring[:1]]
    return np.vstack(parts)


def _unbridge(xy: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Split a ring walk made by :func:`_bridged` back into (outer, holes)."""
    start = xy[0]
    closes = np.flatnonzero((xy[1:] == start).all(axis=1))
    if not len(closes):
        return xy, []
    outer_end = int(closes[0]) + 1
    outer, rest, holes = xy[:outer_end], xy[outer_end + 1:], []
    while len(rest) >= 4:
        h0 = rest[0]
        back = np.flatnonzero((rest[1:] == h0).all(axis=1))
        if not len(back):
            return xy, []
        end = int(back[0]) + 1
        holes.append(rest[:end])
        rest = rest[end + 2:]  # skip the hole's closing vertex and the bridge back
    return outer, holes


def _shape_of(region: Region, holes: list[np.ndarray]) -> tuple[np.ndarray, str] | None:
    """napari (row, col) data and shape type for a region, or None if Shapes cannot show it."""
    kind = SHAPE_TYPES.get(region.type, "polygon" if region.is_area else None)
    v = region.vertices
    if kind is None or len(v) < 2 or (kind == "polygon" and len(v) < 3):
        return None
    if kind == "ellipse" and len(v) == 2:
        (x0, y0), (x1, y1) = v
        return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], np.float64), "ellipse"
    if kind == "rectangle" and len(v) != 4:
        kind = "polygon"
    if kind == "line" and len(v) != 2:
        kind = "path"
    if kind == "polygon":
        return _bridged(v, holes)[:, ::-1].copy(), kind
    return v[:, ::-1].copy(), kind


def annotation_layers_data(annotations: AnnotationSet, scale: tuple[float, float],
                           units: tuple[str, str] = ("µm", "µm"),
                           mpp: float | None = None,
                           within: tuple[float, float, float, float] | None = None,
                           review: bool | None = None) -> list[LayerDataTuple]:
    """One Shapes layer per annotation layer, in the slide's world frame.

    Parameters
    ----------
    annotations : AnnotationSet
        Vertices in level-0 pixel (x, y).
    scale : (sy, sx)
        World units per level-0 pixel of the slide they belong to (:func:`slide_scale`).
    units : (str, str)
        The slide layer's units.
    mpp : float, optional
        Micrometres per pixel for the µm² / µm features (default: the annotations').
    within : (x0, y0, x1, y1), optional
        Only regions whose bounding box meets this level-0 box (with their holes);
        saving such a layer keeps every region it does not show as it was.
    review : bool, optional
        Whether layers get the :data:`REVIEW_COLUMNS` features (review status, reviewer,
        time, opinion, probability mean/std, tile count). Default: the layers with a
        region that has one of those attributes; a shape drawn in such a layer gets
        status 'added'.

    Notes
    -----
    Negative regions that lie inside a positive region of their layer become holes of
    that polygon; others are drawn as their own shapes with a white edge. Regions Shapes
    cannot draw (points) are kept in the layer's metadata and saved with it.
    """
    mpp = mpp if mpp is not None else annotations.mpp
    out = []
    for layer in annotations:
        out.append(_layer_data(layer, annotations, scale, units, mpp, within, review))
    return out


def _meets(region: Region, box: tuple[float, float, float, float] | None) -> bool:
    if box is None:
        return True
    v = region.vertices
    if not len(v):
        return False
    (x0, y0), (x1, y1) = v.min(axis=0), v.max(axis=0)
    return bool(x0 < box[2] and x1 >= box[0] and y0 < box[3] and y1 >= box[1])


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def _int(value: Any) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return -1
    return int(number) if np.isfinite(number) and number >= 0 else -1


def _review_row(attrs: dict[str, str]) -> dict[str, Any]:
    """Feature values of a region's review and prediction attributes."""
    row: dict[str, Any] = {}
    for name in REVIEW_COLUMNS:
        value = attrs.get(name)
        if name in _REVIEW_FLOATS:
            row[name] = _float(value)
        elif name == "tile_count":
            row[name] = _int(value)
        else:
            row[name] = "" if value is None else value
    return row


def has_review_columns(features: Any) -> bool:
    """Whether a Shapes layer's features (DataFrame or dict) hold the review columns."""
    return features is not None and "review_status" in features


def _layer_data(layer: AnnotationLayer, annotations: AnnotationSet, scale: tuple[float, float],
                units: tuple[str, str], mpp: float | None,
                within: tuple[float, float, float, float] | None = None,
                review: bool | None = None) -> LayerDataTuple:
    from .core.review import element_attributes

    regions = layer.regions
    if review is None:
        review = any(name in attrs for attrs in map(element_attributes, regions)
                     for name in REVIEW_COLUMNS)
    negatives = [i for i, r in enumerate(regions) if r.negative and r.is_area]
    positives = [i for i, r in enumerate(regions) if r.is_area and not r.negative]
    holes_of: dict[int, list[int]] = {i: [] for i in range(len(regions))}
    shown_alone = set(range(len(regions))) - set(negatives)
    if negatives and positives:
        assigned, orphans = holes_by_containment(
            [regions[i].outline() for i in positives], [regions[j].outline() for j in negatives])
        for i, hole_ids in zip(positives, assigned, strict=True):
            holes_of[i] = [negatives[j] for j in hole_ids]
        shown_alone |= {negatives[j] for j in orphans}
    else:
        shown_alone |= set(negatives)
    data, types, edges, faces = [], [], [], []
    features: dict[str, list[Any]] = {c: [] for c in FEATURE_COLUMNS}
    if review:
        features.update({c: [] for c in REVIEW_COLUMNS})
    shapes_meta: dict[int, tuple[list[int], np.ndarray]] = {}
    rgba = np.array([*layer.color, 255], float) / 255
    area_scale = (mpp or 1.0) ** 2
    for i in sorted(shown_alone):
        region = regions[i]
        if not _meets(region, within):
            continue
        hole_rings = [h for h in region.holes] + [regions[j].outline() for j in holes_of[i]]
        shape = _shape_of(region, hole_rings)
        if shape is None:
            continue
        shape_data, shape_type = shape
        data.append(shape_data)
        types.append(shape_type)
        shapes_meta[i] = (holes_of[i], shape_data.copy())
        edges.append(np.array([1, 1, 1, 1.0]) if region.negative else rgba)
        faces.append(np.array([1, 1, 1, 0.25]) if region.negative
                     else np.array([*rgba[:3], 0.2 if region.is_area else 0.0]))
        area = region.area() - sum(regions[j].area() for j in holes_of[i])
        features["region"].append(i)
        features["id"].append(region.id or "")
        features["text"].append(region.text)
        features["type"].append(region.type)
        features["negative"].append(region.negative)
        features["class"].append(layer.class_name)
        features["area_um2"].append(area * area_scale if mpp else np.nan)
        features["length_um"].append(region.length() * mpp if mpp else np.nan)
        if review:
            for name, value in _review_row(element_attributes(region)).items():
                features[name].append(value)
    dtypes = {"region": int, "negative": bool, "area_um2": float, "length_um": float,
              "probability_mean": float, "probability_std": float, "tile_count": int}
    columns = {c: np.array(v, dtype=dtypes.get(c, object)) for c, v in features.items()}
    defaults = {"region": -1, "id": "", "text": "", "type": "", "negative": False,
                "class": layer.class_name, "area_um2": np.nan, "length_um": np.nan}
    if review:
        defaults.update(REVIEW_DEFAULTS)
    kwargs = {
        "name": _display_name(layer),
        "shape_type": types, "edge_color": edges if edges else rgba,
        "face_color": faces if faces else np.array([*rgba[:3], 0.2]),
        "edge_width": 2, "scale": scale, "units": units, "features": columns,
        "feature_defaults": defaults,
        "metadata": {META_LAYER: layer, META_SET: annotations, META_SHAPES: shapes_meta},
    }
    if not data:
        kwargs.pop("shape_type")
    return (data, kwargs, "shapes")


NEW_TYPES = {"polygon": "polygon", "rectangle": "rectangle", "ellipse": "ellipse",
             "path": "line", "line": "line"}


def _region_from_shape(data: np.ndarray, shape_type: str) -> tuple[Region, list[np.ndarray]]:
    """A new region (and its holes) from napari (row, col) level-0 data."""
    xy = np.asarray(data, np.float64)[:, -2:][:, ::-1]
    if shape_type == "ellipse":
        # napari stores an ellipse as its 4 bounding-box corners (possibly rotated)
        x0, y0 = xy.min(axis=0)
        x1, y1 = xy.max(axis=0)
        return Region([[x0, y0], [x1, y1]], type="ellipse"), []
    if shape_type == "polygon":
        outer, holes = _unbridge(xy)
        return Region(outer, type="polygon"), holes
    if shape_type == "line":
        return Region(xy, type="ruler" if len(xy) == 2 else "line"), []
    return Region(xy, type=NEW_TYPES.get(shape_type, "polygon")), []


def shapes_to_annotations(layers: list[tuple[Any, dict[str, Any]]],
                          mpp: float | None = None) -> AnnotationSet:
    """Shapes layer data (``(data, attributes)`` pairs, as npe2 writers get) to annotations.

    Regions imported from a file and left untouched are returned as they were; moved or
    reshaped ones keep their id, text and attributes, with Length/Area (and the micron
    versions) recomputed; shapes drawn in napari become new regions (fresh ids are
    given by the writer).

    Review: the :data:`REVIEW_COLUMNS` features a layer has are written into each
    region's ``<Attributes>`` (a region whose values did not change is returned as it
    was). A reshaped region whose status is 'pending' or 'accepted' becomes 'edited'
    (the reviewer changed it), timed now. A layer's ``slideseg_slide_opinion`` metadata
    ({'opinion', 'reviewer', 'reviewed_at'}) becomes the slide's opinion (see
    :func:`napari_slideseg.core.review.set_slide_opinion`).
    """
    from .core.review import set_slide_opinion

    base: AnnotationSet | None = None
    opinion: dict[str, Any] | None = None
    out_layers: list[AnnotationLayer] = []
    for data, attrs in layers:
        meta = attrs.get("metadata") or {}
        source: AnnotationLayer | None = meta.get(META_LAYER)
        if base is None and meta.get(META_SET) is not None:
            base = meta[META_SET]
        if opinion is None and meta.get(META_SLIDE_OPINION) is not None:
            opinion = meta[META_SLIDE_OPINION]
        shapes_meta: dict[int, tuple[list[int], np.ndarray]] = meta.get(META_SHAPES) or {}
        features = attrs.get("features")
        feats = features if features is not None else {}
        n = len(data)
        # level-0 px = data + translate / scale (0 for layers this module made)
        scale = np.asarray(_get(attrs, "scale", (1.0, 1.0)), float)[-2:]
        offset = np.asarray(_get(attrs, "translate", (0.0, 0.0)), float)[-2:] / scale
        if np.any(offset):
            data = [np.asarray(d, np.float64)[:, -2:] + offset for d in data]
        region_col = list(feats["region"]) if "region" in feats else [-1] * n
        text_col = list(feats["text"]) if "text" in feats else [""] * n
        review_cols = {c: list(feats[c]) for c in REVIEW_COLUMNS if c in feats}
        moved: list[Region] = list(meta.get(META_MOVED) or [])
        own = len(source.regions) if source is not None else 0
        types = attrs.get("shape_type") or ["polygon"] * n
        if isinstance(types, str):
            types = [types] * n
        if source is not None:
            shown_name = attrs.get("name", "")
            layer = AnnotationLayer(
                name=source.name if _same_name(shown_name, _display_name(source))
                else shown_name,
                color=source.color, attributes=dict(source.attributes),
                extra=dict(source.extra))
        else:  # drawn in napari: the colour of its first shape's edge
            color = tuple(int(round(c * 255)) for c in np.asarray(
                attrs.get("edge_color", [[1, 1, 0, 1]]), float).reshape(-1, 4)[0][:3]) \
                if n else (255, 255, 0)
            layer = AnnotationLayer(name=attrs.get("name", ""), color=color)
        kept: list[tuple[float, Region]] = []
        for k in range(n):
            idx = int(region_col[k]) if region_col[k] is not None and \
                not (isinstance(region_col[k], float) and np.isnan(region_col[k])) else -1
            shape = np.asarray(data[k], np.float64)
            if source is not None and idx in shapes_meta and 0 <= idx < len(source.regions):
                hole_ids, original = shapes_meta[idx]
                region = source.regions[idx]
                text = str(text_col[k]) if text_col[k] is not None else region.text
                row = {c: v[k] for c, v in review_cols.items()}
                if same_shape(original, shape):
                    if text != region.text:
                        region = _copy(region, text=text)
                    region = _with_review(region, row)
                    kept.append((idx, region))
                    kept.extend((j, source.regions[j]) for j in hole_ids)
                    continue
                new, holes = _region_from_shape(shape, types[k])
                # a reshaped spline stays a spline, a moved arrow an arrow
                if (new.type == "polygon"
                        and region.type not in ("ellipse", "rectangle", "arrow", "ruler")) \
                        or (region.type in ("arrow", "ruler") and new.type in ("ruler", "line")):
                    new.type = region.type
                edited = _copy(region, vertices=new.vertices, text=text, type=new.type,
                               remeasure=True)
                edited.holes = [] if hole_ids else holes
                if str(row.get("review_status", "")).strip().lower() in ("pending", "accepted"):
                    from .core.review import review_time

                    row.update(review_status="edited", reviewed_at=review_time())
                edited = _with_review(edited, row, copy=False)
                kept.append((idx, edited))
                for pos, j in enumerate(hole_ids):
                    if pos < len(holes):
                        kept.append((j, _copy(source.regions[j], vertices=holes[pos],
                                              remeasure=True)))
                for extra_hole in holes[len(hole_ids):] if hole_ids else []:
                    kept.append((idx + 0.5, Region(extra_hole, negative=True, text=text)))
                continue
            if own <= idx < own + len(moved):  # moved here from another layer
                region = moved[idx - own]
                new, holes = _region_from_shape(shape, types[k])
                if new.type == "polygon" and region.type not in ("ellipse", "rectangle"):
                    new.type = region.type
                text = str(text_col[k]) if text_col[k] is not None else region.text
                arrived = _copy(region, vertices=new.vertices, text=text, type=new.type,
                                remeasure=True)
                arrived.holes = holes
                arrived.extra["moved"] = True
                kept.append((idx, _with_review(arrived, {c: v[k] for c, v in
                                                         review_cols.items()}, copy=False)))
                continue
            new, holes = _region_from_shape(shape, types[k])
            new.text = str(text_col[k]) if text_col[k] is not None else ""
            new.holes = holes
            new = _with_review(new, {c: v[k] for c, v in review_cols.items()}, copy=False)
            kept.append((1e12 + k, new))
        if source is not None:
            # regions the layer never showed (points, or outside the box it was made
            # for) are kept as they were; shown regions missing now were deleted
            holes_shown = {j for h, _ in shapes_meta.values() for j in h}
            kept.extend((i, r) for i, r in enumerate(source.regions)
                        if i not in shapes_meta and i not in holes_shown)
        kept.sort(key=lambda t: t[0])
        layer.regions = [r for _, r in kept]
        _fresh_ids(layer.regions)
        out_layers.append(layer)
    result = AnnotationSet(out_layers, attributes=dict(base.attributes) if base else None,
                           extra=dict(base.extra) if base else None)
    if mpp is not None:
        result.mpp = mpp
    if opinion is not None:
        set_slide_opinion(result, opinion.get("opinion"), opinion.get("reviewer", ""),
                          opinion.get("reviewed_at") or None)
    return result


def _fresh_ids(regions: list[Region]) -> None:
    """Give regions moved from another layer whose Id one of the layer's own regions has
    the next free Id (ids stay unique in the layer)."""
    if not any(r.extra.get("moved") for r in regions):
        return
    taken = [r.id for r in regions if not r.extra.get("moved")]
    numbers = [int(i) for i in taken if i is not None and i.lstrip("-").isdigit()]
    next_id = max(numbers, default=0) + 1
    seen = set(taken)
    for region in regions:
        if not region.extra.pop("moved", False) or region.id is None:
            continue
        if region.id in seen:
            region.attributes["Id"] = str(next_id)
            next_id += 1
        seen.add(region.id)


def _review_changes(region: Region, row: dict[str, Any]) -> dict[str, Any]:
    """The attribute changes that give ``region`` the review feature values of ``row``
    (name -> text, or None to remove); values equal to the stored ones are left out, so
    an untouched region keeps its attributes byte for byte."""
    from .core.review import element_attributes

    attrs = element_attributes(region)
    changes: dict[str, Any] = {}
    for name, value in row.items():
        stored = attrs.get(name)
        if name in _REVIEW_FLOATS:
            number, old = _float(value), _float(stored)
            if number == old or (np.isnan(number) and np.isnan(old)):
                continue
            changes[name] = None if np.isnan(number) else float(number)
        elif name == "tile_count":
            count = _int(value)
            if count == _int(stored):
                continue
            changes[name] = None if count < 0 else count
        else:
            text = "" if value is None or (isinstance(value, float) and np.isnan(value)) \
                else str(value)
            if text == (stored or ""):
                continue
            changes[name] = text or None
    return {k: v for k, v in changes.items() if v is not None or k in attrs}


def _with_review(region: Region, row: dict[str, Any], copy: bool = True) -> Region:
    """``region`` with the review features of ``row`` in its Attributes: unchanged when
    they are there already, else changed in a copy (with ``copy``) or in place."""
    from .core.review import set_element_attributes

    changes = _review_changes(region, row) if row else {}
    if not changes:
        return region
    if copy:
        region = _copy(region)
    set_element_attributes(region, changes)
    return region


def same_shape(original: np.ndarray, shape: Any) -> bool:
    """Whether a shape's vertices are still those it was shown with.

    napari (0.5 and later) keeps Shapes data as float32: vertices are compared at that
    precision, so that a region nobody touched is not taken for a reshaped one.
    """
    shape = np.asarray(shape)
    return original.shape == shape.shape and np.array_equal(
        np.asarray(original, np.float32), np.asarray(shape, np.float32))


def _copy(region: Region, *, vertices: np.ndarray | None = None, text: str | None = None,
          type: str | None = None, remeasure: bool = False) -> Region:
    """A copy of an imported region with new geometry or text; ids and attributes kept."""
    new = Region(region.vertices if vertices is None else vertices,
                 type=region.type if type is None else type, negative=region.negative,
                 text=region.text if text is None else text,
                 attributes=dict(region.attributes), holes=list(region.holes),
                 z=None if vertices is not None else region.z, group=region.group,
                 extra=dict(region.extra))
    if vertices is not None:
        new.extra.pop("aperio_no_z", None)
    if remeasure:
        new.extra["remeasure"] = True
    return new


def _get(attrs: dict[str, Any], key: str, default: Any) -> Any:
    value = attrs.get(key)
    return default if value is None else value


def _same_name(shown: str, display: str) -> bool:
    """Whether a layer still has the name it was made with: napari adds " [1]" to a new
    layer's name when another layer has it (a predicted 'tumour' beside the user's own
    'tumour' layer), which does not rename the class."""
    if shown == display:
        return True
    head, sep, tail = shown.rpartition(" [")
    return bool(sep) and head == display and tail.endswith("]") and tail[:-1].isdigit()


def _display_name(layer: AnnotationLayer) -> str:
    return layer.name or layer.class_name or "annotations"


# -- fast display: annotations as a lazy label pyramid --------------------------------


def annotation_labels_data(annotations: AnnotationSet,
                           level_dimensions: list[tuple[int, int]] | None,
                           level_downsamples: list[float] | None,
                           scale: tuple[float, float],
                           units: tuple[str, str] = ("µm", "µm"),
                           name: str = "annotations") -> LayerDataTuple:
    """Every area region as one multiscale Labels layer, rasterised chunk by chunk on view.

    Label k + 1 is annotation layer k, in its colour; later layers win where layers
    overlap; holes are cut out. Nothing is rasterised until napari reads a chunk, so
    this shows hundreds of thousands of regions where Shapes layers would take minutes.
    Pass the slide's ``level_dimensions`` / ``level_downsamples`` to line up with its
    pyramid; None sizes the pyramid to the regions.
    """
    from napari.utils.colormaps import DirectLabelColormap

    from .core.raster import RegionIndex, label_pyramid

    index = RegionIndex.from_annotations(annotations)
    if level_dimensions is None or level_downsamples is None:
        w, h = index.extent
        level_dimensions, level_downsamples, ds = [], [], 1
        while True:
            level_dimensions.append((max(1, w // ds), max(1, h // ds)))
            level_downsamples.append(float(ds))
            if max(w, h) // ds <= 2048:
                break
            ds *= 4
    dtype = np.uint8 if len(annotations) < 255 else np.uint16
    pyramid = label_pyramid(index, level_dimensions, level_downsamples, dtype=dtype)
    colors: dict[Any, Any] = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0)}
    for k, layer in enumerate(annotations):
        colors[k + 1] = (*(c / 255 for c in layer.color), 1.0)
    kwargs = {
        "name": name, "scale": scale, "units": units,
        "translate": tuple(0.5 * s for s in scale),
        "multiscale": len(pyramid) > 1, "opacity": 0.5,
        "colormap": DirectLabelColormap(color_dict=colors),
        "metadata": {META_SET: annotations, "slideseg_label_names": {
            k + 1: layer.class_name for k, layer in enumerate(annotations)}},
    }
    return (pyramid if len(pyramid) > 1 else pyramid[0], kwargs, "labels")


# -- export previews: the patch grid and the whole-slide label mask --------------------

#: Patch grid colours: label 1 is inside a patch, label 2 on a patch's edge.
GRID_COLORS = {1: (1.0, 0.85, 0.0, 0.12), 2: (1.0, 0.85, 0.0, 1.0)}


def _pixel_span(a: np.ndarray, b: np.ndarray, ds: float) -> tuple[np.ndarray, np.ndarray]:
    """Level pixels [p0, p1) whose centres lie in level-0 [a, b); at least one pixel."""
    p0 = np.ceil(a / ds - 0.5).astype(np.int64)
    p1 = np.maximum(np.ceil(b / ds - 0.5).astype(np.int64), p0 + 1)
    return p0, p1


def _box_count(boxes: tuple[np.ndarray, ...], h: int, w: int) -> np.ndarray:
    """How many of the (r0, r1, c0, c1) boxes cover each pixel of an (h, w) window."""
    r0, r1, c0, c1 = (np.clip(v, 0, n) for v, n in zip(boxes, (h, h, w, w), strict=True))
    keep = (r1 > r0) & (c1 > c0)
    r0, r1, c0, c1 = r0[keep], r1[keep], c0[keep], c1[keep]
    # a summed-area table of +1/-1 box corners (np.bincount is many times np.add.at)
    corners = np.concatenate([r0 * (w + 1) + c0, r0 * (w + 1) + c1, r1 * (w + 1) + c0,
                              r1 * (w + 1) + c1])
    signs = np.repeat(np.array([1, -1, -1, 1], np.float32), len(r0))
    diff = np.bincount(corners, signs, (h + 1) * (w + 1)).astype(np.int32)
    diff = diff.reshape(h + 1, w + 1)[:h, :w]
    return diff.cumsum(axis=0, dtype=np.int32).cumsum(axis=1, dtype=np.int32)


def grid_window(patches: np.ndarray, x: int, y: int, w: int, h: int,
                downsample: float | tuple[float, float] = 1.0) -> np.ndarray:
    """The patch grid drawn into one window of a pyramid level.

    Parameters
    ----------
    patches : (N, 4) or (N, 5) array
        Level-0 pixel ``x, y, width, height`` of each patch (as
        :func:`napari_slideseg.plan_patches` gives them; a fifth column is ignored).
    x, y, w, h : int
        The window: top-left corner and size, in pixels of the level.
    downsample : float or (float, float)
        Level-0 pixels per pixel of the level (along x, y when a pair).

    Returns
    -------
    (h, w) uint8 array
        0 outside every patch, 1 inside one, 2 on a patch's edge: a line two pixels of
        the level wide, centred on the edge (the pixels just inside and just outside
        it), so that neighbouring patches share one line. A pixel is inside a patch
        when its centre is, the rule of the masks.
    """
    patches = np.asarray(patches, np.float64)[:, :4]
    dx, dy = (downsample, downsample) if np.isscalar(downsample) else downsample
    c0, c1 = _pixel_span(patches[:, 0], patches[:, 0] + patches[:, 2], float(dx))
    r0, r1 = _pixel_span(patches[:, 1], patches[:, 1] + patches[:, 3], float(dy))
    near = (c0 - 1 < x + w) & (c1 + 1 > x) & (r0 - 1 < y + h) & (r1 + 1 > y)
    c0, c1, r0, r1 = c0[near] - x, c1[near] - x, r0[near] - y, r1[near] - y
    out = np.zeros((h, w), np.uint8)
    if not len(c0):
        return out
    out[_box_count((r0, r1, c0, c1), h, w) > 0] = 1
    edge = _box_count((r0 - 1, r1 + 1, c0 - 1, c1 + 1), h, w) > \
        _box_count((r0 + 1, r1 - 1, c0 + 1, c1 - 1), h, w)
    out[edge] = 2
    return out


def patch_grid_data(patches: np.ndarray, slide: Slide, name: str = "patch grid",
                    chunk: int = 1024) -> LayerDataTuple:
    """A planned patch grid as a lazy multiscale Labels layer over ``slide``'s layer.

    ``patches`` holds level-0 pixel ``x, y, width, height`` (and the level read) per
    patch, as :func:`napari_slideseg.plan_patches` returns them. The layer has its own
    pyramid, halving from the slide's level-0 size, drawn chunk by chunk when napari
    shows it: the cost does not grow with the number of patches the way a Shapes
    layer's does (seconds per thousand rectangles), and since napari shows a level at
    one to two of its pixels per screen pixel, the two-pixel edges stay one to two
    screen pixels wide at every zoom out to the whole slide. Scale and translate are
    the slide layer's, so level 0 lines up pixel for pixel.
    """
    import dask.array as da
    from napari.utils.colormaps import DirectLabelColormap

    patches = np.asarray(patches, np.float64)
    w0, h0 = slide.dimensions
    levels = []
    factor = 1
    while True:
        w, h = max(1, w0 // factor), max(1, h0 // factor)

        # napari places level k with the downsample w0 / w, h0 / h: draw it with the same
        def block(block_info: Any = None, ds: tuple[float, float] = (w0 / w, h0 / h)
                  ) -> np.ndarray:
            (r0, r1), (c0, c1) = block_info[None]["array-location"]
            return grid_window(patches, c0, r0, c1 - c0, r1 - r0, ds)

        chunks = (da.core.normalize_chunks(chunk, (h,))[0],
                  da.core.normalize_chunks(chunk, (w,))[0])
        levels.append(da.map_blocks(block, dtype=np.uint8, chunks=chunks,
                                    name=f"slideseg-grid-{id(patches)}-{w}x{h}"))
        if max(w, h) <= 1024:
            break
        factor *= 2
    scale = slide_scale(slide)
    colors: dict[Any, Any] = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), **GRID_COLORS}
    kwargs = {
        "name": name, "scale": scale, "units": slide_units(slide),
        "translate": tuple(0.5 * s for s in scale), "multiscale": len(levels) > 1,
        "colormap": DirectLabelColormap(color_dict=colors), "opacity": 1.0,
        "metadata": {"slideseg_patches": patches, "slideseg_slide_path": str(slide.path)},
    }
    return (levels if len(levels) > 1 else levels[0], kwargs, "labels")


def mask_labels_data(annotations: AnnotationSet, key: Any, slide: Slide,
                     name: str = "mask") -> LayerDataTuple:
    """The whole-slide label mask of an export as a lazy multiscale Labels layer.

    Pixel values are the ``key``'s (an :class:`~napari_slideseg.AnnotationKey`) and
    each class is drawn in its colour; level k lines up with level k of ``slide``
    (see :func:`napari_slideseg.core.masks.mask_pyramid`).
    """
    from napari.utils.colormaps import DirectLabelColormap

    from .core.masks import mask_pyramid

    pyramid = mask_pyramid(annotations, key, list(slide.level_dimensions),
                           [float(d) for d in slide.level_downsamples])
    colors: dict[Any, Any] = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0)}
    names = {}
    for cls, value in key.values.items():
        rgb = key.colors.get(cls)
        colors[value] = (*(c / 255 for c in rgb), 1.0) if rgb else (1.0, 1.0, 0.0, 1.0)
        names[value] = cls
    scale = slide_scale(slide)
    kwargs = {
        "name": name, "scale": scale, "units": slide_units(slide),
        "translate": tuple(0.5 * s for s in scale), "multiscale": len(pyramid) > 1,
        "opacity": 0.5, "colormap": DirectLabelColormap(color_dict=colors),
        "metadata": {"slideseg_label_names": names, "slideseg_key": key},
    }
    return (pyramid if len(pyramid) > 1 else pyramid[0], kwargs, "labels")


# -- thresholding results: labels on the image they came from, outlines as shapes -------
#
# A result is computed from an image layer (a slide layer, or any image layer) at some
# downsample, over a box of it. Its frame is given by the source layer's scale and
# translate: napari centres the source's level-0 pixel (i, j) on world translate +
# (i, j) * scale, so level-0 pixel-corner coordinates (x, y), the frame of the core
# (pixel (i, j) covers [j, j + 1) x [i, i + 1)), sit at world translate + ((y, x) - 1/2)
# * scale. For a slide layer (translate = scale / 2) that is world = level-0 (x, y) * mpp.


def threshold_labels_data(labels: Any, downsample: float, origin: tuple[float, float],
                          scale: tuple[float, float], translate: tuple[float, float],
                          units: tuple[str, str] = ("µm", "µm"), name: str = "threshold",
                          metadata: dict[str, Any] | None = None) -> LayerDataTuple:
    """A Labels layer of a result computed at ``downsample`` over part of an image layer.

    Parameters
    ----------
    labels : (h, w) array, or a list of them (multiscale, largest first)
        Label (i, j) covers the source's level-0 pixels x in [x0 + j d, x0 + (j + 1) d),
        y in [y0 + i d, y0 + (i + 1) d). Smaller levels of a list are placed the way
        napari places any multiscale level (by the ratio of the shapes).
    downsample : float
        ``d``: source level-0 pixels per label pixel (of the first array of a list).
    origin : (x, y)
        ``(x0, y0)``: source level-0 pixel-corner coordinates of label (0, 0)'s corner.
    scale, translate : (row, col)
        The source image layer's scale and translate (level-0 data). For a slide layer:
        :func:`slide_scale` and half of it.
    units : (str, str)
        The source layer's units.
    name, metadata
        Layer name and metadata.

    Returns
    -------
    LayerDataTuple
        Scale ``d * scale``; translate puts label (i, j)'s centre on the world position
        of the level-0 point (x0 + (j + 1/2) d, y0 + (i + 1/2) d), where those pixels
        are at every downsample and for any crop.
    """
    d = float(downsample)
    sy, sx = (float(v) for v in scale)
    ty, tx = (float(v) for v in translate)
    x0, y0 = (float(v) for v in origin)
    multiscale = isinstance(labels, list | tuple) and len(labels) > 1
    kwargs = {
        "name": name, "scale": (d * sy, d * sx), "units": tuple(units),
        "translate": (ty + (y0 + (d - 1) / 2) * sy, tx + (x0 + (d - 1) / 2) * sx),
        "multiscale": multiscale, "opacity": 0.5, "metadata": dict(metadata or {}),
    }
    if isinstance(labels, list | tuple) and not multiscale:
        labels = labels[0]
    return (labels, kwargs, "labels")


def outline_layers_data(annotations: AnnotationSet, scale: tuple[float, float],
                        translate: tuple[float, float], units: tuple[str, str] = ("µm", "µm"),
                        mpp: float | None = None) -> list[LayerDataTuple]:
    """Shapes layers of outlines (level-0 pixel (x, y)) over the image layer they were
    traced on, given its scale and translate (see :func:`threshold_labels_data`).

    Over a slide layer this is :func:`annotation_layers_data` (world = level-0 (x, y)
    × mpp): the layers save as annotation files of the slide. Over another image layer
    the shapes are translated onto it.
    """
    out = annotation_layers_data(annotations, scale, units, mpp=mpp)
    base = np.asarray(translate, float) - np.asarray(scale, float) / 2
    if np.any(np.abs(base) > 1e-9 * np.abs(np.asarray(scale, float))):
        for _, kwargs, _ in out:
            kwargs["translate"] = tuple(float(v) for v in base)
    return out


# -- measurements: objects of Labels and Shapes layers, where they are, class colours ---
#
# Measurements are in the level-0 pixel-corner (x, y) frame of a reference image layer
# (the slide, or the image whose intensities are measured): napari centres that layer's
# level-0 pixel (i, j) on world translate + (i, j) * scale, so level-0 point (x, y) is at
# world translate + ((y, x) - 1/2) * scale (world = level-0 (x, y) * mpp for a slide
# layer, whose translate is half a pixel).

#: Colours of object classes, in the order classes are first seen.
CLASS_COLORS = ((0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17),
                (0.84, 0.15, 0.16), (0.58, 0.4, 0.74), (0.55, 0.34, 0.29),
                (0.89, 0.47, 0.76), (0.74, 0.74, 0.13), (0.09, 0.75, 0.81),
                (0.5, 0.5, 0.5))
#: Colour of objects without a class when classes are shown.
UNCLASSIFIED_COLOR = (0.75, 0.75, 0.75, 0.35)


def level0_to_world(xy: np.ndarray, scale: tuple[float, float],
                    translate: tuple[float, float]) -> np.ndarray:
    """World (row, col) of level-0 pixel-corner points (x, y) of a reference layer.

    ``scale`` and ``translate`` are the reference image layer's (row, col) ones.
    ``xy`` is (n, 2) or (2,); the result has the same shape, columns (row, col).
    """
    xy = np.asarray(xy, np.float64)
    yx = xy[..., ::-1]
    return np.asarray(translate, float) + (yx - 0.5) * np.asarray(scale, float)


def world_to_level0(world: np.ndarray, scale: tuple[float, float],
                    translate: tuple[float, float]) -> np.ndarray:
    """Level-0 pixel-corner (x, y) of world (row, col) points: the inverse of
    :func:`level0_to_world`."""
    world = np.asarray(world, np.float64)[..., -2:]
    yx = (world - np.asarray(translate, float)) / np.asarray(scale, float) + 0.5
    return yx[..., ::-1]


def labels_frame(scale: tuple[float, float], translate: tuple[float, float],
                 ref_scale: tuple[float, float], ref_translate: tuple[float, float],
                 rtol: float = 1e-6) -> tuple[float, tuple[float, float]]:
    """Where a Labels layer's pixels lie on a reference image layer.

    Parameters
    ----------
    scale, translate : (row, col)
        The Labels layer's (of its level 0 when multiscale).
    ref_scale, ref_translate : (row, col)
        The reference image layer's.

    Returns
    -------
    downsample : float
        Reference level-0 pixels per label pixel.
    origin : (x, y)
        Reference level-0 pixel-corner coordinates of label pixel (0, 0)'s corner, so
        that label pixel (i, j) covers x in [x0 + j d, x0 + (j + 1) d), y likewise (the
        convention of :func:`~napari_slideseg.measure`). The inverse of
        :func:`threshold_labels_data`.

    Raises
    ------
    ValueError
        The label pixels are not square in the reference's pixels.
    """
    s = np.asarray(scale, float)[-2:]
    t = np.asarray(translate, float)[-2:]
    rs = np.asarray(ref_scale, float)[-2:]
    rt = np.asarray(ref_translate, float)[-2:]
    dy, dx = s / rs
    if not np.isclose(dy, dx, rtol=rtol):
        raise ValueError(f"the labels' pixels are {dx:g} x {dy:g} pixels of the image: "
                         "they must be square on it.")
    # label pixel (0, 0)'s centre, in reference level-0 pixel-corner coordinates, less
    # half a label pixel
    corner = (t - rt) / rs + 0.5 - s / rs / 2
    return float(dx), (float(corner[1]), float(corner[0]))


def shapes_objects(layers: list[tuple[Any, dict[str, Any]]],
                   ref_scale: tuple[float, float], ref_translate: tuple[float, float]
                   ) -> tuple[AnnotationSet, list[tuple[int, int]], dict[int, str]]:
    """The area shapes of Shapes layers as measurable objects, one region each.

    Parameters
    ----------
    layers : list of (data, attributes)
        Shapes layer data (``layer.as_layer_data_tuple()[:2]``): (row, col) vertices,
        with the layer's ``scale``, ``translate``, ``shape_type``, ``name`` and
        ``features``.
    ref_scale, ref_translate : (row, col)
        The reference image layer's frame (see :func:`level0_to_world`).

    Returns
    -------
    annotations : AnnotationSet
        One annotation layer per Shapes layer, one region per polygon, rectangle or
        ellipse (a polygon's holes kept), vertices in reference level-0 pixel (x, y).
        Lines, paths and negative regions (a ``negative`` feature, as annotation
        files' exclusions are shown) are left out.
    keys : list of (layer number, shape index)
        ``keys[k - 1]`` is the shape that is object ``k`` (numbered as
        :func:`~napari_slideseg.measure` numbers regions).
    classes : dict of int -> str
        Object -> class: the shape's ``class`` feature when it has one, else its layer's
        name.
    """
    rs = np.asarray(ref_scale, float)[-2:]
    rt = np.asarray(ref_translate, float)[-2:]
    out_layers, keys, classes = [], [], {}
    for n, (data, attrs) in enumerate(layers):
        scale = np.asarray(_get(attrs, "scale", (1.0, 1.0)), float)[-2:]
        translate = np.asarray(_get(attrs, "translate", (0.0, 0.0)), float)[-2:]
        types = attrs.get("shape_type") or ["polygon"] * len(data)
        if isinstance(types, str):
            types = [types] * len(data)
        features = attrs.get("features")
        class_col = list(features["class"]) if features is not None and \
            "class" in features else [None] * len(data)
        negative = [bool(v) for v in features["negative"]] if features is not None and \
            "negative" in features else [False] * len(data)
        name = str(attrs.get("name", "") or f"shapes {n + 1}")
        regions = []
        for k, (shape, kind) in enumerate(zip(data, types, strict=True)):
            if kind not in ("polygon", "rectangle", "ellipse") or negative[k]:
                continue
            world = np.asarray(shape, np.float64)[:, -2:] * scale + translate
            level0 = (world - rt) / rs + 0.5  # (row, col) pixel-corner coordinates
            region, holes = _region_from_shape(level0, kind)
            region.holes = holes
            regions.append(region)
            keys.append((n, k))
            given = class_col[k]
            missing = given is None or (isinstance(given, float) and np.isnan(given)) or \
                str(given) == ""
            classes[len(keys)] = name if missing else str(given)
        out_layers.append(AnnotationLayer(name=name, regions=regions))
    return AnnotationSet(out_layers), keys, classes


def marker_points_data(xy: np.ndarray, diameters: np.ndarray,
                       ref_scale: tuple[float, float], ref_translate: tuple[float, float],
                       units: tuple[str, str] = ("µm", "µm"),
                       name: str = "selected objects") -> LayerDataTuple:
    """A Points layer of rings around objects, in a reference layer's frame.

    ``xy`` are the objects' level-0 centroids (x, y), ``diameters`` their sizes in
    level-0 pixels; a circle (its outline only) is 1.5 times its object's size and at
    least 16 screen pixels across, so it shows at every zoom.
    """
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    scale = tuple(float(v) for v in np.asarray(ref_scale, float)[-2:])
    # points hold level-0 (row, col) pixel-corner coordinates: translate by -1/2 pixel
    translate = tuple(float(t - s / 2) for t, s in zip(np.asarray(ref_translate, float)[-2:],
                                                       scale, strict=True))
    sizes = np.maximum(np.asarray(diameters, np.float64).reshape(-1) * 1.5, 1.0)
    kwargs = {
        "name": name, "scale": scale, "translate": translate, "units": tuple(units),
        "size": sizes if len(sizes) else 10.0, "symbol": "disc",
        "face_color": "transparent", "border_color": "#ffe600", "border_width": 0.07,
        "border_width_is_relative": True, "canvas_size_limits": (16, 100000),
        "opacity": 1.0,
        "metadata": {"slideseg_markers": True},
    }
    return (xy[:, ::-1].copy(), kwargs, "points")


def class_colors(names: list[str]) -> dict[str, tuple[float, float, float, float]]:
    """RGBA of each class, in order (colours repeat after ten classes)."""
    return {name: (*CLASS_COLORS[k % len(CLASS_COLORS)], 1.0) for k, name in enumerate(names)}


def class_label_colormap(labels: np.ndarray, classes: list[Any],
                         colors: dict[str, tuple[float, float, float, float]]) -> Any:
    """A napari label colormap drawing each object in its class's colour.

    ``labels`` are label values, ``classes`` their class names (None: no class, drawn in
    :data:`UNCLASSIFIED_COLOR`).
    """
    from napari.utils.colormaps import DirectLabelColormap

    # float32 RGBA arrays: napari converts other colour values one by one (3 x slower)
    rgba = {name: np.asarray(c, np.float32) for name, c in colors.items()}
    color_dict: dict[Any, Any] = {None: np.asarray(UNCLASSIFIED_COLOR, np.float32),
                                  0: np.zeros(4, np.float32)}
    for label, name in zip(np.asarray(labels).tolist(), classes, strict=True):
        if name is not None and name in rgba:
            color_dict[int(label)] = rgba[name]
    return DirectLabelColormap(color_dict=color_dict)


def class_labels_data(data: Any, labels: np.ndarray, classes: list[Any],
                      colors: dict[str, tuple[float, float, float, float]],
                      scale: tuple[float, float], translate: tuple[float, float],
                      units: tuple[str, str] = ("µm", "µm"), name: str = "classes",
                      unclassified: bool = True) -> LayerDataTuple:
    """A Labels layer of object classes over a Labels layer of objects.

    Each pixel of ``data`` (the objects layer's array, or its list of levels; numpy or
    dask) holding one of ``labels`` becomes its class's number (1, 2, ... in the order
    of ``colors``; objects without a class the next number, drawn in
    :data:`UNCLASSIFIED_COLOR` when ``unclassified``), through a lookup table: at once
    for numpy arrays, chunk by chunk as napari draws for dask arrays. For label values
    a label colormap cannot map (napari maps direct colours of labels above 65,535
    only with numba), this shows the classes whatever the labels.
    """
    from napari.utils.colormaps import DirectLabelColormap

    labels = np.asarray(labels, np.int64)
    names = list(colors)
    index = {n: k + 1 for k, n in enumerate(names)}
    none = len(names) + 1
    lut = np.zeros(int(labels.max(initial=0)) + 2, np.uint8 if none < 255 else np.uint16)
    keep = labels >= 0
    lut[labels[keep]] = [index.get(c, none) if c is not None else none
                         for c, k in zip(classes, keep.tolist(), strict=True) if k]
    top = len(lut) - 1

    def lookup(block: Any) -> Any:
        return lut[np.clip(block, 0, top)]

    def mapped(level: Any) -> Any:
        if hasattr(level, "map_blocks"):
            return level.map_blocks(lookup, dtype=lut.dtype)
        return lookup(np.asarray(level))

    multiscale = isinstance(data, list | tuple) and len(data) > 1
    out = [mapped(level) for level in data] if multiscale else \
        mapped(data[0] if isinstance(data, list | tuple) else data)
    color_dict: dict[Any, Any] = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for n, k in index.items():
        color_dict[k] = colors[n]
    color_dict[none] = UNCLASSIFIED_COLOR if unclassified else (0.0, 0.0, 0.0, 0.0)
    kwargs = {"name": name, "scale": tuple(scale), "translate": tuple(translate),
              "units": tuple(units), "multiscale": multiscale, "opacity": 0.7,
              "colormap": DirectLabelColormap(color_dict=color_dict),
              "metadata": {"slideseg_classes": True}}
    return (out, kwargs, "labels")
