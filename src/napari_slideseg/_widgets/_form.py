"""Pieces every dock uses: form rows and error messages for the user."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container, Label

__all__ = ["align_labels", "error_message", "level_choices", "require_slide", "row",
           "slide_choices"]


def row(label: str, *items: Any, stretch: bool = False) -> Container:
    """One form row: widgets side by side, strings as small labels between them (each
    with the tooltip of the field it names); with ``stretch``, packed to the left."""
    widgets = []
    for item, after in zip(items, [*items[1:], None], strict=True):
        if isinstance(item, str):
            widgets.append(Label(value=item, tooltip=getattr(after, "tooltip", None)))
        else:
            widgets.append(item)
    container = Container(layout="horizontal", labels=False, label=label, widgets=widgets)
    container.margins = (0, 0, 0, 0)
    if stretch:
        container.native.layout().addStretch(1)
    return container


def error_message(exc: BaseException) -> str:
    """What to tell the user: our errors and OS/value errors as they are, others typed."""
    from ..core.errors import SlideSegError

    if isinstance(exc, SlideSegError | ValueError | OSError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def align_labels(container: Container, stretch: bool = True) -> None:
    """Give every labelled field of ``container`` the width its longest label needs; with
    ``stretch``, pack the fields to the top.

    magicgui unifies label widths only for widgets added later, and from a font measure
    that can fall short of what the label needs: size them from Qt's hints.
    """
    labelled = [w._labeled_widget() for w in container]
    labelled = [w for w in labelled if w is not None]
    width = max(w._label_widget.native.fontMetrics().horizontalAdvance(
        w._label_widget.native.text()) for w in labelled) + 8
    for w in labelled:
        w.label_width = width
    if stretch:
        container.native.layout().addStretch(1)


def slide_choices(viewer: Any) -> list[tuple[str, Any]]:
    """(name, layer) of the viewer's slide layers (opened with napari-slideseg)."""
    from .slide_info import _slide_of

    return [(la.name, la) for la in viewer.layers if _slide_of(la) is not None]


def level_choices(layer: Any) -> list[tuple[str, int]]:
    """(label, level) of a slide layer's pyramid levels, labelled with their pixel size
    (or their size when the pixel size is unknown); [] for a layer that is no slide."""
    from .slide_info import _slide_of

    slide = _slide_of(layer) if layer is not None else None
    if slide is None:
        return []
    mpp0 = slide.mpp[0] if slide.mpp else None
    return [(f"{k} ({mpp0 * ds:.3g} µm/px)" if mpp0 else f"{k} ({w} x {h})", k)
            for k, ((w, h), ds) in enumerate(zip(slide.level_dimensions,
                                                 slide.level_downsamples, strict=True))]


def require_slide(viewer: Any, layer: Any) -> Any:
    """``layer`` if it is a slide layer still in the viewer; else a SlideSegError saying
    what to do."""
    from ..core.errors import SlideSegError

    if layer is None or layer not in viewer.layers:
        raise SlideSegError("open a slide with napari-slideseg first (File > Open, or "
                            "the sample).")
    return layer
