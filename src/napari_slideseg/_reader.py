"""npe2 reader: whole-slide images as one multiscale RGB image layer."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["napari_get_reader", "read_slide"]

# Suffixes of formats OpenSlide reads, plus TIFF for the tifffile backend.
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs",
                  ".svslide", ".bif", ".dcm", ".btf")


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
    """Open ``path`` and return its layer data: the slide as a multiscale image."""
    from ._layers import slide_layer_data
    from .core.slide import open_slide

    if isinstance(path, list):
        path = path[0]
    # Inside a viewer one damaged tile must not stop the whole view: it is shown as
    # background and reported once as a warning.
    slide = open_slide(path, tile_errors="fill")
    return [slide_layer_data(slide)]
