"""npe2 reader: whole-slide images as one multiscale RGB image layer."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .core.suffixes import ANNOTATION_SUFFIXES, SLIDE_SUFFIXES

__all__ = ["napari_get_reader", "read_slide", "napari_get_annotation_reader",
           "read_annotation_layers", "sidecar_annotations", "annotation_layers_for",
           "shapes_limit"]

#: Default of :func:`shapes_limit` (override with $SLIDESEG_SHAPES_LIMIT).
SHAPES_LIMIT = 5000


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list[Any]] | None:
    """Return :func:`read_slide` if ``path`` looks like a slide this plugin reads, else None.

    The check is cheap (suffix, TIFF magic, folder of .dcm files); a file that passes
    it but cannot be opened raises a clear ``SlideSegError`` from the reader itself,
    which napari shows to the user.
    """
    if isinstance(path, list):
        if not path:
            return None
        path = path[0] if len(path) == 1 else None  # type: ignore[assignment]
        if path is None:
            return None
    p = Path(os.fspath(path))
    if p.is_dir():
        try:
            has_dicom = any(c.suffix.lower() == ".dcm" for c in p.iterdir())
        except OSError:
            return None
        return read_slide if has_dicom else None
    if p.suffix.lower() not in SLIDE_SUFFIXES:
        return None
    return read_slide


def read_slide(path: str | list[str]) -> list[Any]:
    """Open ``path`` and return its layer data: the slide as a multiscale image, plus the
    annotations of a sidecar file with the same stem beside it (``slide.xml`` for
    ``slide.svs``), aligned to the slide."""
    from ._layers import slide_layer_data
    from .core.annotations import read_annotations
    from .core.slide import open_slide

    if isinstance(path, list):
        path = path[0]
    # Inside a viewer one damaged tile must not stop the whole view: it is shown as
    # background and reported once as a warning.
    slide = open_slide(path, tile_errors="fill")
    layers = [slide_layer_data(slide)]
    sidecar = sidecar_annotations(slide.path)
    if sidecar is not None:
        layers += annotation_layers_for(read_annotations(sidecar), slide)
    return layers


def shapes_limit() -> int:
    """Area regions above which annotations are shown as labels, not Shapes layers."""
    try:
        return int(os.environ.get("SLIDESEG_SHAPES_LIMIT", SHAPES_LIMIT))
    except ValueError:
        return SHAPES_LIMIT


def annotation_layers_for(annotations: Any, slide: Any = None) -> list[Any]:
    """Layer data for an annotation set, over ``slide`` when given.

    Up to :func:`shapes_limit` area regions: one editable Shapes layer per annotation
    layer. Above it: one lazy multiscale Labels layer (napari's Shapes layer needs
    seconds per thousand polygons and turns sluggish to pan), with the regions kept in
    its metadata for editing part of them as shapes (the Annotations widget).
    """
    from ._layers import annotation_labels_data, annotation_layers_data, slide_scale, slide_units

    if slide is not None:
        scale, units = slide_scale(slide), slide_units(slide)
        mpp = slide.mpp[0] if slide.mpp else annotations.mpp
    elif annotations.mpp:
        scale, units, mpp = (annotations.mpp, annotations.mpp), ("µm", "µm"), annotations.mpp
    else:
        scale, units, mpp = (1.0, 1.0), ("pixel", "pixel"), None
    areas = sum(1 for _, r in annotations.regions() if r.is_area)
    if areas > shapes_limit():
        name = Path(annotations.source).name if annotations.source else "annotations"
        dims = list(slide.level_dimensions) if slide is not None else None
        downsamples = list(slide.level_downsamples) if slide is not None else None
        return [annotation_labels_data(annotations, dims, downsamples, scale, units,
                                       name=f"{name} [{areas} regions]")]
    return annotation_layers_data(annotations, scale, units, mpp=mpp)


def sidecar_annotations(slide_path: Path) -> Path | None:
    """The annotation file beside a slide with the same stem, if there is one."""
    from .core.annotations import find_annotations

    if Path(slide_path).is_dir():
        return None
    return find_annotations(slide_path)


def napari_get_annotation_reader(path: str | list[str]) -> Callable[[Any], list[Any]] | None:
    """Return :func:`read_annotation_layers` for Aperio/ASAP XML and GeoJSON files."""
    from .core.annotations import sniff_format
    from .core.errors import AnnotationError

    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(os.fspath(path))
    if p.suffix.lower() not in ANNOTATION_SUFFIXES or not p.is_file():
        return None
    try:
        sniff_format(p)
    except (AnnotationError, OSError):
        return None
    return read_annotation_layers


def read_annotation_layers(path: str | list[str]) -> list[Any]:
    """Annotation file -> Shapes layers, aligned to the slide the current viewer shows.

    With a slide layer open, the shapes take its scale (level-0 px x mpp), so they overlay
    it exactly; otherwise they use the file's own MicronsPerPixel (or pixels if unknown).
    """
    from .core.annotations import read_annotations

    if isinstance(path, list):
        path = path[0]
    return annotation_layers_for(read_annotations(path), _current_slide())


def _current_slide() -> Any:
    """The slide of the topmost slide layer in the current napari viewer, if any."""
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # no napari, or no viewer
        return None
    if viewer is None:
        return None
    for layer in reversed(list(viewer.layers)):
        slide = layer.metadata.get("slideseg_slide") if hasattr(layer, "metadata") else None
        if slide is not None:
            return slide
    return None
