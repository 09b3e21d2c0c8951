"""Annotations dock: edit part of a large annotation set, shown as labels, as shapes.

Annotation files with more regions than :func:`napari_slideseg._reader.shapes_limit`
open as one lazy Labels layer. This widget turns the regions in the current view into
editable Shapes layers and folds the edits back into the label layer; saving those
Shapes layers writes the whole file (regions never shown are kept as they were).
"""

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton

__all__ = ["AnnotationsWidget", "edit_regions_in_view", "apply_shape_edits", "view_box"]


def view_box(viewer: Any, layer: Any) -> tuple[float, float, float, float]:
    """The level-0 (x0, y0, x1, y1) box the canvas shows, for a layer scaled like a slide."""
    scene = getattr(viewer, "scene", None)
    camera = scene.camera if scene is not None else viewer.camera
    cy, cx = np.asarray(camera.center, float)[-2:]
    h, w = viewer.canvas.size
    half_h, half_w = h / 2 / camera.zoom, w / 2 / camera.zoom
    sy, sx = np.asarray(layer.scale, float)[-2:]
    return ((cx - half_w) / sx, (cy - half_h) / sy, (cx + half_w) / sx, (cy + half_h) / sy)


def edit_regions_in_view(viewer: Any, labels: Any) -> list[Any]:
    """Add Shapes layers holding the regions of ``labels`` that meet the current view."""
    from .._layers import META_SET, annotation_layers_data

    annotations = labels.metadata[META_SET]
    box = view_box(viewer, labels)
    mpp = float(labels.scale[-1]) if str(labels.units[-1]) in ("µm", "micrometer") else None
    added = []
    for data, kwargs, _ in annotation_layers_data(annotations, tuple(labels.scale[-2:]),
                                                  tuple(str(u) for u in labels.units[-2:]),
                                                  mpp=mpp, within=box):
        if not len(data):
            continue
        kwargs["metadata"]["slideseg_labels_layer"] = labels.name
        added.append(viewer.add_shapes(data, **kwargs))
    return added


def apply_shape_edits(viewer: Any, labels: Any) -> int:
    """Fold the Shapes layers made from ``labels`` back into it; returns how many were used."""
    from .._layers import META_LAYER, META_SET, annotation_labels_data, shapes_to_annotations
    from ..core.annotations import AnnotationSet

    annotations = labels.metadata[META_SET]
    edited = {id(la.metadata[META_LAYER]): la for la in viewer.layers
              if la.metadata.get("slideseg_labels_layer") == labels.name
              and la.metadata.get(META_SET) is annotations}
    if not edited:
        return 0
    layers = []
    for layer in annotations:
        shapes = edited.get(id(layer))
        if shapes is None:
            layers.append(layer)
            continue
        data, attrs, _ = shapes.as_layer_data_tuple()  # what the npe2 writer is given
        layers.append(shapes_to_annotations([(data, attrs)]).layers[0])
    new = AnnotationSet(layers, attributes=annotations.attributes, format=annotations.format,
                        source=annotations.source, extra=annotations.extra)
    data, kwargs, _ = annotation_labels_data(
        new, [tuple(d.shape[::-1]) for d in labels.data] if labels.multiscale
        else [labels.data.shape[::-1]],
        [float(f[-1]) for f in labels.downsample_factors] if labels.multiscale else [1.0],
        tuple(labels.scale[-2:]), tuple(str(u) for u in labels.units[-2:]), labels.name)
    labels.data = data
    labels.metadata = kwargs["metadata"]
    for shapes in edited.values():
        viewer.layers.remove(shapes)
    return len(edited)


class AnnotationsWidget(Container):
    """Pick a label-rendered annotation layer; edit the regions in view as shapes."""

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        self.layer = ComboBox(label="Annotations", choices=self._choices)
        self.edit = PushButton(text="Edit regions in view")
        self.apply = PushButton(text="Apply shape edits")
        self.status = Label(value="")
        super().__init__(widgets=[self.layer, self.edit, self.apply, self.status])
        self.edit.changed.connect(self._on_edit)
        self.apply.changed.connect(self._on_apply)
        self.viewer.layers.events.inserted.connect(self.layer.reset_choices)
        self.viewer.layers.events.removed.connect(self.layer.reset_choices)

    def _choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        from .._layers import META_SET

        return [(la.name, la) for la in self.viewer.layers
                if la._type_string == "labels" and la.metadata.get(META_SET) is not None]

    def _on_edit(self, _value: Any = None) -> None:
        if self.layer.value is None:
            self.status.value = "No annotation labels layer: open a large annotation file."
            return
        added = edit_regions_in_view(self.viewer, self.layer.value)
        count = sum(len(la.data) for la in added)
        self.status.value = f"{count} regions in view, in {len(added)} Shapes layers."

    def _on_apply(self, _value: Any = None) -> None:
        if self.layer.value is None:
            return
        n = apply_shape_edits(self.viewer, self.layer.value)
        self.status.value = f"Applied the edits of {n} Shapes layers."
