"""npe2 writer: Shapes layers -> Aperio ImageScope XML, ASAP XML or QuPath GeoJSON."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

__all__ = ["write_shapes"]


def write_shapes(path: str, layer_data: list[tuple[Any, dict[str, Any], str]]) -> list[str]:
    """Write one or several Shapes layers as an annotation file.

    The format follows the suffix: ``.geojson``/``.json`` -> QuPath GeoJSON; ``.xml`` ->
    Aperio ImageScope XML, or ASAP XML when the layers were read from an ASAP file.
    Regions read from a file keep their ids and attributes; shapes drawn in napari become
    new regions. MicronsPerPixel comes from the slide the layers are scaled to.
    What the target format cannot express is reported as a warning.
    """
    from ._layers import META_SET, shapes_to_annotations
    from .core.annotations import write_annotations

    target = Path(path)
    pairs = [(data, attrs) for data, attrs, kind in layer_data if kind == "shapes"]
    if not pairs:
        return []
    mpp = _mpp_of(pairs[0][1])
    annotations = shapes_to_annotations(pairs, mpp=mpp)
    suffix = target.suffix.lower()
    if suffix in (".geojson", ".json"):
        fmt = "geojson"
    else:
        source = (pairs[0][1].get("metadata") or {}).get(META_SET)
        fmt = "asap" if getattr(source, "format", None) == "asap" else "aperio"
    if not target.suffix:
        target = target.with_suffix(".xml")
    lost = write_annotations(annotations, target, format=fmt)
    if lost:
        shown = "; ".join(lost[:5]) + (f"; and {len(lost) - 5} more" if len(lost) > 5 else "")
        warnings.warn(f"{target.name}: {shown}", UserWarning, stacklevel=2)
    return [str(target)]


def _mpp_of(attrs: dict[str, Any]) -> float | None:
    """Micrometres per level-0 pixel: the slide's when the layer is scaled to a slide open
    in the current viewer, else the layer's scale when its units are µm."""
    import numpy as np

    from ._layers import slide_scale
    from ._reader import _current_slide

    units = attrs.get("units")
    scale = attrs.get("scale")
    if scale is None:
        return None
    slide = _current_slide()
    if slide is not None and slide.mpp and np.allclose(np.asarray(scale, float)[-2:],
                                                       slide_scale(slide)):
        return float(slide.mpp[0])
    names = [str(u) for u in units] if units is not None else []
    if names and all(n in ("µm", "um", "micrometer", "micron") for n in names):
        return float(scale[-1])
    return None
