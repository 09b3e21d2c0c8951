"""The only place that turns core objects into napari layer data and back.

napari's world frame here is (row, col) in micrometres: every layer keeps its data in
level-0 pixels and carries ``scale = (mpp_y, mpp_x)``, so slide, shapes and labels
overlay exactly. A slide with unknown mpp is shown in pixels (scale 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .core.slide import Slide

__all__ = [
    "slide_scale",
    "slide_units",
    "slide_layer_data",
    "associated_image_layer_data",
    "regions_layer_data",
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


def _shape_data(kind: str, vertices: np.ndarray) -> tuple[np.ndarray, str]:
    """napari (row, col) shape data in level-0 pixels for level-0 (x, y) vertices."""
    rc = np.asarray(vertices, dtype=np.float64)[:, ::-1]
    if kind == "ellipse":
        (r0, c0), (r1, c1) = rc[0], rc[1]
        return np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]]), "ellipse"
    if kind == "rectangle":
        return rc, "rectangle"
    if kind in ("line", "arrow", "ruler"):
        return rc, "path"
    return rc, "polygon"


def regions_layer_data(
    name: str,
    regions: list[tuple[str, np.ndarray, bool]],
    color: tuple[int, int, int],
    scale: tuple[float, float],
    units: tuple[str, str] = ("µm", "µm"),
) -> LayerDataTuple:
    """A Shapes layer for one annotation layer.

    Parameters
    ----------
    name : str
        Layer name (the annotation class).
    regions : list of (kind, vertices, negative)
        ``vertices`` are level-0 pixel (x, y); negative regions (holes) are drawn with a
        dashed-looking white edge and no fill.
    color : (r, g, b)
    scale : (sy, sx)
        World units per level-0 pixel, as :func:`slide_scale` gives.
    units : (str, str)
        The slide layer's units (:func:`slide_units`), so napari can render both.
    """
    data, types, edges, faces = [], [], [], []
    rgba = np.array([*color, 255], float) / 255
    for kind, vertices, negative in regions:
        shape, shape_type = _shape_data(kind, vertices)
        data.append(shape)
        types.append(shape_type)
        edges.append(np.array([1, 1, 1, 1.0]) if negative else rgba)
        faces.append(np.array([1, 1, 1, 0.35]) if negative else np.array([*rgba[:3], 0.15]))
    features = {"negative": [n for _, _, n in regions], "type": [k for k, _, _ in regions]}
    return (data, {"name": name, "shape_type": types, "edge_color": edges,
                   "face_color": faces, "edge_width": 2,
                   "scale": scale, "units": units, "features": features}, "shapes")
