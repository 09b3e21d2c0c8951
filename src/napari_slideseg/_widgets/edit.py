"""Edit segments dock: merge, split and cut objects of a Labels layer with gestures.

Gestures are drawn in two helper layers: paths in the Shapes layer "gestures" (the last
shape drawn is the line a button uses) and points in the Points layer "markers". Their
world coordinates go to the Labels layer's data coordinates through ``world_to_data``
(any scale and translate), and the edit functions of :mod:`napari_slideseg.core.edit`
compute the change; it is applied with ``Labels.data_setitem``, one step of the layer's
undo history (Ctrl+Z with the Labels layer selected, or the Undo button).

A lazy (dask, multiscale) Labels layer such as a whole-slide threshold cannot be
edited in place: "Edit view" copies the part the canvas shows into an editable numpy
Labels layer aligned with it.
"""

from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QSizePolicy

__all__ = ["EDIT_VIEW_PIXELS", "GESTURES_LAYER", "MARKERS_LAYER", "EditWidget",
           "cut_along_line", "edit_view", "editable", "gesture_line", "marker_points",
           "merge_along_line", "merge_ids", "new_object", "split_at_markers", "to_data"]

GESTURES_LAYER = "gestures"
MARKERS_LAYER = "markers"
#: "Edit view" copies level 0 when the view holds at most this many of its pixels.
EDIT_VIEW_PIXELS = 16_000_000

HELP = {
    "merge": "Merge: a line over the pieces of one object.",
    "selected": "Merge selected: ids typed or + selected, and markers.",
    "split": "Split: one marker on each touching object.",
    "cut": "Cut: a line across the object.",
    "new": "New object: a free id, then paint it.",
    "view": "Lazy whole-slide labels: copy the view to edit it.",
}


# -- coordinates -------------------------------------------------------------------------


def to_data(labels: Any, world: Any) -> np.ndarray:
    """World (row, col) points to (row, col) data coordinates of a 2-D Labels layer
    (pixel (i, j) centred on (i, j)), through the layer's scale and translate."""
    world = np.asarray(world, float).reshape(-1, 2)
    return np.array([np.asarray(labels.world_to_data(p), float)[-2:] for p in world]
                    ).reshape(-1, 2)


def _world(layer: Any, data: Any) -> np.ndarray:
    data = np.asarray(data, float).reshape(-1, layer.ndim)
    return np.array([np.asarray(layer.data_to_world(p), float)[-2:] for p in data]
                    ).reshape(-1, 2)


def gesture_line(shapes: Any, index: int = -1) -> np.ndarray:
    """World (row, col) vertices of a shape of the gestures layer (default: the last
    drawn); a polygon or rectangle gives its outline, closed."""
    from ..core.errors import SlideSegError

    if shapes is None or not len(shapes.data):
        raise SlideSegError(f"draw a line first: a path in the '{GESTURES_LAYER}' Shapes "
                            "layer ('Draw line').")
    vertices = _world(shapes, shapes.data[index])
    if shapes.shape_type[index] in ("polygon", "rectangle", "ellipse") and len(vertices) > 2:
        vertices = np.vstack([vertices, vertices[:1]])
    return vertices


def marker_points(points: Any) -> np.ndarray:
    """World (row, col) positions of the markers, in the order they were placed."""
    if points is None or not len(points.data):
        return np.empty((0, 2))
    return _world(points, points.data)


# -- edits on a layer ----------------------------------------------------------------------


def editable(labels: Any) -> bool:
    """Whether a Labels layer can be edited in place: 2-D numpy data."""
    return (labels is not None and getattr(labels, "_type_string", "") == "labels"
            and not labels.multiscale and isinstance(labels.data, np.ndarray)
            and labels.data.ndim == 2)


def _check(labels: Any) -> np.ndarray:
    from ..core.errors import SlideSegError

    if labels is None:
        raise SlideSegError("choose a Labels layer to edit.")
    if not editable(labels):
        raise SlideSegError(f"{labels.name!r} is not a 2-D numpy Labels layer: use 'Edit "
                            "view' to edit the part in view.")
    return labels.data


def _apply(labels: Any, edit: Any) -> Any:
    """Write an edit into the layer as one undo step."""
    if len(edit):
        labels.data_setitem(edit.indices, edit.new_values)
    return edit


def merge_along_line(labels: Any, line: Any, *, fill_gap: bool = True,
                     width: int = 1) -> Any:
    """Merge the objects a line (world (row, col) vertices) touches, with undo.

    See :func:`napari_slideseg.merge_labels`; returns its :class:`~napari_slideseg.LabelEdit`.
    """
    from ..core.edit import merge_labels

    data = _check(labels)
    return _apply(labels, merge_labels(data, to_data(labels, line), fill_gap=fill_gap,
                                       width=width).edit)


def merge_ids(labels: Any, ids: Any) -> Any:
    """Give every pixel of the given ids the lowest of them, with undo
    (:func:`napari_slideseg.merge_selected`)."""
    from ..core.edit import merge_selected

    return _apply(labels, merge_selected(_check(labels), ids).edit)


def split_at_markers(labels: Any, markers: Any) -> Any:
    """Split objects at markers (world (row, col) points), with undo
    (:func:`napari_slideseg.split_labels`)."""
    from ..core.edit import split_labels

    data = _check(labels)
    return _apply(labels, split_labels(data, to_data(labels, markers)).edit)


def cut_along_line(labels: Any, line: Any, *, width: int = 1) -> Any:
    """Cut the objects a line (world (row, col) vertices) crosses, with undo
    (:func:`napari_slideseg.cut_labels`)."""
    from ..core.edit import cut_labels

    data = _check(labels)
    return _apply(labels, cut_labels(data, to_data(labels, line), width=width).edit)


def new_object(labels: Any) -> int:
    """Select a free label id (one above the largest) and switch to the paint brush."""
    from ..core.edit import new_label_id

    label = new_label_id(_check(labels))
    labels.selected_label = label
    labels.mode = "paint"
    return label


def edit_view(viewer: Any, labels: Any, name: str | None = None) -> Any:
    """Copy the part of a (lazy) Labels layer the canvas shows into an editable layer.

    Level 0 is copied when the view holds at most :data:`EDIT_VIEW_PIXELS` of its pixels,
    else the level napari shows. The copy is int32 numpy, placed exactly over the
    layer; a 0/1 threshold mask is split into connected objects (8-connectivity), one
    id each, so that merge and split have objects to work on.

    Returns
    -------
    Labels layer
        Named "<name> (view)"; its metadata say where the window lies
        (``slideseg_view_of``: source name, level, (row0, row1, col0, col1)).
    """
    from ..core.errors import SlideSegError

    if labels is None or labels.ndim != 2:
        raise SlideSegError("choose a 2-D Labels layer.")
    arrays = list(labels.data) if labels.multiscale else [labels.data]
    scene = getattr(viewer, "scene", None)
    camera = scene.camera if scene is not None else viewer.camera
    cy, cx = np.asarray(camera.center, float)[-2:]
    h, w = viewer.canvas.size
    half = np.array([h, w], float) / 2 / camera.zoom
    corners = to_data(labels, [[cy, cx] - half, [cy, cx] + half]) + 0.5
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    level = 0
    if np.prod(np.clip(hi - lo, 0, arrays[0].shape)) > EDIT_VIEW_PIXELS:
        level = int(labels.data_level) if labels.multiscale else 0
    f = np.asarray(labels.downsample_factors[level], float)[-2:] if labels.multiscale \
        else np.ones(2)
    shape = arrays[level].shape
    r0, c0 = (max(0, int(np.floor(v))) for v in lo / f)
    r1, c1 = (min(n, int(np.ceil(v))) for v, n in zip(hi / f, shape, strict=True))
    if r1 <= r0 or c1 <= c0:
        raise SlideSegError(f"the current view does not show {labels.name!r}: pan to it.")
    window = np.asarray(arrays[level][r0:r1, c0:c1])
    copy = window.astype(np.int32)
    if window.size and window.max() <= 1 and "slideseg_threshold" in labels.metadata:
        import cv2

        copy = cv2.connectedComponents(window.astype(np.uint8), connectivity=8,
                                       ltype=cv2.CV_32S)[1]
    scale = np.asarray(labels.scale, float)[-2:]
    translate = np.asarray(labels.translate, float)[-2:]
    # napari draws pixel j of level k at data coordinate j * f (level 0's pixel grid)
    new = viewer.add_labels(
        copy, name=name or f"{labels.name} (view)", scale=tuple(scale * f),
        translate=tuple(translate + np.array([r0, c0]) * f * scale),
        units=tuple(str(u) for u in labels.units[-2:]),
        metadata={"slideseg_view_of": (labels.name, level, (r0, r1, c0, c1))})
    return new


# -- the dock --------------------------------------------------------------------------------


def _help(key: str) -> Label:
    """One short line of help above a gesture's buttons."""
    label = Label(value=HELP[key], tooltip=HELP[key])
    label.native.setStyleSheet("color: palette(mid); font-size: small;")
    # a narrow dock clips the line rather than widening to it
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
    return label


def _row(*items: Any) -> Container:
    widgets = [Label(value=i) if isinstance(i, str) else i for i in items]
    row = Container(layout="horizontal", labels=False, widgets=widgets)
    row.margins = (0, 0, 0, 0)
    row.native.layout().addStretch(1)
    return row


def _parse_ids(text: str) -> list[int]:
    from ..core.errors import SlideSegError

    ids = []
    for part in text.replace(";", ",").replace(" ", ",").split(","):
        if part.strip():
            try:
                ids.append(int(part))
            except ValueError:
                raise SlideSegError(f"{part!r} is not a label id: type whole numbers, "
                                    "e.g. 3, 7, 12.") from None
    return ids


class EditWidget(Container):
    """Merge, split and cut the objects of a Labels layer; pick a new id to paint."""

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        self.last_edit: Any = None
        self.last_error = ""
        self.target = ComboBox(label="Labels", choices=self._choices,
                               tooltip="Labels layer to edit (2-D numpy; a lazy whole-slide "
                                       "layer: 'Edit view' first)")
        self.draw_line = PushButton(text="Draw line",
                                    tooltip=f"Select the '{GESTURES_LAYER}' Shapes layer "
                                            "with its path tool: click the vertices, "
                                            "double-click to end")
        self.place_markers = PushButton(text="Place markers",
                                        tooltip=f"Select the '{MARKERS_LAYER}' Points layer "
                                                "to click markers")
        self.fill_gap = CheckBox(text="fill gap", value=True,
                                 tooltip="Merging also fills the background under the line "
                                         "between the pieces, so the object is connected")
        self.line_width = SpinBox(value=1, min=1, max=99,
                             tooltip="Width of the merge or cut line, in pixels of the "
                                     "labels")
        self.merge = PushButton(text="Merge along line",
                                tooltip="Every object the last drawn line touches becomes "
                                        "one, with the lowest id")
        self.ids = LineEdit(value="", tooltip="Label ids to merge, e.g. 3, 7, 12")
        self.add_selected = PushButton(text="+ selected",
                                       tooltip="Add the layer's selected label (pick one "
                                               "with the colour picker) to the ids")
        self.merge_selected = PushButton(text="Merge selected",
                                         tooltip="Merge the ids in the box and the labels "
                                                 "under the markers into the lowest id")
        self.split = PushButton(text="Split at markers",
                                tooltip="Each object with two markers or more is split by a "
                                        "watershed, one object per marker")
        self.cut = PushButton(text="Cut along line",
                              tooltip="The objects the last drawn line crosses are "
                                      "separated along it, each piece its own id")
        self.new = PushButton(text="New object",
                              tooltip="Select a free id (largest + 1) and the paint brush")
        self.undo = PushButton(text="Undo", tooltip="Undo the last edit of the layer "
                                                    "(as Ctrl+Z)")
        self.redo = PushButton(text="Redo", tooltip="Redo the edit undone")
        self.view = PushButton(text="Edit view",
                               tooltip="Copy the part of the layer in view into an editable "
                                       "Labels layer over it (level 0 when the view is small "
                                       "enough, else the level shown)")
        self.status = Label(value="", tooltip="Result of the last edit")
        self.status.native.setWordWrap(True)
        self.status.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.ids.native.setMinimumWidth(80)
        self.target.native.setSizeAdjustPolicy(
            self.target.native.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.target.native.setMinimumContentsLength(4)
        super().__init__(widgets=[
            self.target, _row(self.draw_line, self.place_markers),
            _help("merge"), _row(self.merge, self.fill_gap, "width", self.line_width),
            _help("selected"), _row(self.ids, self.add_selected, self.merge_selected),
            _help("split"), _row(self.split),
            _help("cut"), _row(self.cut),
            _help("new"), _row(self.new, self.undo, self.redo),
            _help("view"), _row(self.view), self.status])
        self.native.layout().addStretch(1)
        self.draw_line.changed.connect(self._on_draw_line)
        self.place_markers.changed.connect(self._on_place_markers)
        self.merge.changed.connect(self._on_merge)
        self.add_selected.changed.connect(self._on_add_selected)
        self.merge_selected.changed.connect(self._on_merge_selected)
        self.split.changed.connect(self._on_split)
        self.cut.changed.connect(self._on_cut)
        self.new.changed.connect(self._on_new)
        self.undo.changed.connect(lambda *_: self._history("undo"))
        self.redo.changed.connect(lambda *_: self._history("redo"))
        self.view.changed.connect(self._on_view)
        self.target.changed.connect(self._on_target)
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self._on_layers_changed()

    # -- layers -------------------------------------------------------------------------
    def _choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(la.name, la) for la in reversed(list(self.viewer.layers))
                if la._type_string == "labels"]

    def reset_choices(self, *_: Any) -> None:
        """Refresh the Labels layers offered (napari calls this on layer events)."""
        if hasattr(self, "status"):
            self._on_layers_changed()
        else:
            super().reset_choices()

    def _on_layers_changed(self, _event: Any = None) -> None:
        before = self.target.value
        self.target.reset_choices()
        if before is not None and before in list(self.viewer.layers):
            self.target.value = before
        self._on_target()

    def _on_target(self, _value: Any = None) -> None:
        ok = editable(self.target.value)
        for button in (self.merge, self.merge_selected, self.split, self.cut, self.new,
                       self.undo, self.redo, self.add_selected):
            button.enabled = ok
        self.view.enabled = self.target.value is not None

    def _helper_layer(self, name: str, kind: str) -> Any:
        """The gestures or markers layer, made over the target when missing."""
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is not None and layer._type_string == kind:
            return layer
        labels = self.target.value
        frame: dict[str, Any] = {}
        if labels is not None:
            frame = {"scale": tuple(np.asarray(labels.scale, float)[-2:]),
                     "translate": tuple(np.asarray(labels.translate, float)[-2:]),
                     "units": tuple(str(u) for u in labels.units[-2:])}
        # a size of about 10 screen pixels at the current zoom
        scene = getattr(self.viewer, "scene", None)
        camera = scene.camera if scene is not None else self.viewer.camera
        pixel = 1.0 / camera.zoom / float(frame.get("scale", (1.0, 1.0))[-1])
        if kind == "shapes":
            layer = self.viewer.add_shapes(name=name, edge_color="yellow",
                                           face_color="transparent", edge_width=3 * pixel,
                                           **frame)
        else:
            layer = self.viewer.add_points(name=name, face_color="magenta",
                                           border_color="white", size=12 * pixel, **frame)
        if labels is not None:  # adding a layer must not change the layer edited
            self.target.value = labels
        return layer

    def _on_draw_line(self, _value: Any = None) -> None:
        layer = self._helper_layer(GESTURES_LAYER, "shapes")
        self.viewer.layers.selection.active = layer
        layer.mode = "add_path"
        self.status.value = "Click the line's vertices; double-click to end it."

    def _on_place_markers(self, _value: Any = None) -> None:
        layer = self._helper_layer(MARKERS_LAYER, "points")
        self.viewer.layers.selection.active = layer
        layer.mode = "add"
        self.status.value = "Click a marker on each object."

    def _gestures(self) -> Any:
        layer = self.viewer.layers[GESTURES_LAYER] if GESTURES_LAYER in self.viewer.layers \
            else None
        return layer if layer is not None and layer._type_string == "shapes" else None

    def _markers(self) -> Any:
        layer = self.viewer.layers[MARKERS_LAYER] if MARKERS_LAYER in self.viewer.layers \
            else None
        return layer if layer is not None and layer._type_string == "points" else None

    # -- gestures -----------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        from ..core.errors import SlideSegError

        message = str(exc) if isinstance(exc, SlideSegError | ValueError | TypeError) \
            else f"{type(exc).__name__}: {exc}"
        self.last_error = message
        self.status.value = f"Error: {message}"

    def _done(self, what: str, edit: Any) -> None:
        self.last_error = ""
        self.last_edit = edit
        if not len(edit):
            self.status.value = f"{what}: nothing changed."
            return
        ids = ", ".join(str(i) for i in edit.new_ids[:8])
        more = "..." if len(edit.new_ids) > 8 else ""
        self.status.value = (f"{what}: {len(edit)} pixels changed, now ids {ids}{more}. "
                             "Undo: Ctrl+Z on the layer, or Undo.")

    def _drop_last_shape(self) -> None:
        shapes = self._gestures()
        if shapes is not None and len(shapes.data):
            shapes.selected_data = {len(shapes.data) - 1}
            shapes.remove_selected()

    def _clear_markers(self) -> None:
        points = self._markers()
        if points is not None and len(points.data):
            points.data = np.empty((0, points.ndim))

    def _on_merge(self, _value: Any = None) -> None:
        try:
            edit = merge_along_line(self.target.value, gesture_line(self._gestures()),
                                    fill_gap=bool(self.fill_gap.value),
                                    width=int(self.line_width.value))
        except Exception as exc:
            self._fail(exc)
            return
        self._drop_last_shape()
        self._done("Merged", edit)

    def _on_add_selected(self, _value: Any = None) -> None:
        labels = self.target.value
        if labels is None:
            return
        try:
            ids = _parse_ids(self.ids.value)
        except Exception as exc:
            self._fail(exc)
            return
        label = int(labels.selected_label)
        if label and label not in ids:
            ids.append(label)
        self.ids.value = ", ".join(str(i) for i in ids)

    def _on_merge_selected(self, _value: Any = None) -> None:
        try:
            labels = self.target.value
            data = _check(labels)
            ids = _parse_ids(self.ids.value)
            points = np.floor(to_data(labels, marker_points(self._markers())) + 0.5)
            points = points.astype(np.int64)
            inside = ((points >= 0) & (points < data.shape)).all(axis=1)
            ids += [int(v) for v in data[points[inside, 0], points[inside, 1]]]
            if len({i for i in ids if i}) < 2:
                raise ValueError("give two label ids or more: type them, add the "
                                 "selected label, or place markers on the objects.")
            edit = merge_ids(labels, ids)
        except Exception as exc:
            self._fail(exc)
            return
        self.ids.value = ""
        self._clear_markers()
        self._done("Merged", edit)

    def _on_split(self, _value: Any = None) -> None:
        try:
            markers = marker_points(self._markers())
            if len(markers) < 2:
                raise ValueError(f"place two markers or more in the '{MARKERS_LAYER}' "
                                 "layer ('Place markers').")
            edit = split_at_markers(self.target.value, markers)
        except Exception as exc:
            self._fail(exc)
            return
        self._clear_markers()
        self._done("Split", edit)

    def _on_cut(self, _value: Any = None) -> None:
        try:
            edit = cut_along_line(self.target.value, gesture_line(self._gestures()),
                                  width=int(self.line_width.value))
        except Exception as exc:
            self._fail(exc)
            return
        self._drop_last_shape()
        self._done("Cut", edit)

    def _on_new(self, _value: Any = None) -> None:
        try:
            labels = self.target.value
            label = new_object(labels)
        except Exception as exc:
            self._fail(exc)
            return
        self.viewer.layers.selection.active = labels
        self.last_error = ""
        self.status.value = f"New object: id {label}; paint it with the brush."

    def _history(self, which: str) -> None:
        labels = self.target.value
        if editable(labels):
            getattr(labels, which)()
            self.status.value = f"{which.capitalize()} done."

    def _on_view(self, _value: Any = None) -> None:
        try:
            source = self.target.value
            new = edit_view(self.viewer, source)
        except Exception as exc:
            self._fail(exc)
            return
        self.target.value = new
        level, (r0, r1, c0, c1) = new.metadata["slideseg_view_of"][1:]
        self.last_error = ""
        self.status.value = (f"Editing a copy of {source.name!r} (level {level}, "
                             f"{c1 - c0} x {r1 - r0} px) as {new.name!r}.")
