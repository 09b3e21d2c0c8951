"""Review dock: accept, reject, reshape, reclassify, delete and add predicted regions.

Predicted regions (auto-annotation) come as Shapes layers, one per class, whose features
hold each region's review status ('pending' until reviewed), reviewer, time, opinion and
prediction figures (see ``_layers.REVIEW_COLUMNS``). The dock steps through the pending
regions, centring and zooming the view on each and selecting its shape; Accept, Reject
and Mark edited set the status (with the reviewer's name and the time) on the selected
shape, and the opinion typed for it. Choosing another class moves the shape into that
class's layer (made when missing) with its features: status 'edited'. Reshaping a
predicted shape makes it 'edited'; a shape drawn in a class layer with napari's tools is
'added' (the layer's feature default). "Save reviewed XML..." writes every class layer,
with the slide's opinion, as an Aperio ImageScope file through the writer's path
(``shapes_to_annotations`` + ``write_annotations``): statuses and opinions are the
regions' Attributes, and opening the file again shows them.

Keys with the dock focused: A accept, R reject, E mark edited, N next pending,
P previous.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    LineEdit,
    PushButton,
    Select,
    TextEdit,
)
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QSizePolicy

from ._form import align_labels, error_message, row

__all__ = ["NEW_CLASS", "ReviewWidget", "class_layers", "default_reviewer",
           "ensure_review_columns", "is_class_layer", "move_shape", "new_class_layer",
           "shape_box", "show_statuses", "status_counts"]

#: The class choice that asks for a new class name.
NEW_CLASS = "new class..."
#: Space left around a region zoomed to, as a fraction of its size on each side.
MARGIN = 0.25
#: Helper Shapes layers that hold no annotations.
HELPER_LAYERS = ("gestures",)
#: Statuses the dock sets, and the shortcut key of each action.
KEYS = {"accepted": "A", "rejected": "R", "edited": "E", "next": "N", "previous": "P"}

HINT = ("Missed a region? Select its class layer in the layer list and draw it with "
        "napari's polygon, rectangle, ellipse or freehand (lasso) tool: it is saved as "
        "'added'. Reshaping a region (vertex or select tool) makes it 'edited'.")


def _settings() -> Any:
    from qtpy.QtCore import QSettings

    return QSettings("napari-slideseg", "napari-slideseg")


def default_reviewer() -> str:
    """The reviewer name used last (remembered in Qt's settings), else the login name."""
    try:
        value = _settings().value("review/reviewer", "")
    except Exception:  # no settings store
        value = ""
    if value:
        return str(value)
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return ""


def _remember_reviewer(name: str) -> None:
    try:
        _settings().setValue("review/reviewer", name)
    except Exception:  # no settings store: the name is not remembered
        pass


def _camera(viewer: Any) -> Any:
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def _now() -> str:
    from ..core.review import review_time

    return review_time()


def is_class_layer(layer: Any) -> bool:
    """A 2-D Shapes layer that can hold annotation regions (not a helper layer)."""
    return (getattr(layer, "_type_string", "") == "shapes" and layer.ndim == 2
            and not layer.metadata.get("slideseg_markers")
            and layer.name not in HELPER_LAYERS)


def class_layers(viewer: Any) -> list[Any]:
    """The viewer's annotation Shapes layers, bottom first."""
    return [la for la in viewer.layers if is_class_layer(la)]


def shape_box(layer: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
    """World (row, col) bounding box (low, high) of a shape: data * scale + translate."""
    data = np.asarray(layer.data[index], np.float64)[:, -2:]
    world = data * np.asarray(layer.scale, float)[-2:] + np.asarray(layer.translate,
                                                                    float)[-2:]
    return world.min(axis=0), world.max(axis=0)


def ensure_review_columns(layer: Any) -> None:
    """Give a Shapes layer the review feature columns if it has none: its shapes have no
    status (''), and a shape drawn in it gets 'added'."""
    from .._layers import REVIEW_COLUMNS, REVIEW_DEFAULTS, has_review_columns

    features = layer.features
    if has_review_columns(features) and all(c in features for c in REVIEW_COLUMNS):
        return
    import pandas as pd

    n = len(layer.data)
    features = features.copy() if len(features.columns) else pd.DataFrame(index=range(n))
    for name in REVIEW_COLUMNS:
        if name in features:
            continue
        default = REVIEW_DEFAULTS[name]
        if isinstance(default, str):  # no status: not a prediction
            features[name] = np.full(n, "", dtype=object)
        elif isinstance(default, float):
            features[name] = np.full(n, np.nan)
        else:
            features[name] = np.full(n, default, dtype=np.int64)
    defaults = layer.feature_defaults
    defaults = defaults.iloc[0].to_dict() if len(defaults.columns) and len(defaults) else {}
    layer.features = features
    layer.feature_defaults = {**defaults, **{c: REVIEW_DEFAULTS[c] for c in REVIEW_COLUMNS
                                             if c not in defaults}}


def _get(layer: Any, index: int, column: str, default: Any = "") -> Any:
    features = layer.features
    if column not in features or index >= len(features):
        return default
    value = features[column].iat[index]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return default
    return value


def _set(layer: Any, index: int, values: dict[str, Any]) -> None:
    features = layer.features
    for column, value in values.items():
        if column in features:
            features.iat[index, features.columns.get_loc(column)] = value
    _refresh_text(layer)


#: The text napari draws on each shape when statuses are shown.
STATUS_TEXT = "{review_status}"


def _shows_status(layer: Any) -> bool:
    text = getattr(layer, "text", None)
    return text is not None and getattr(text.string, "format", None) == STATUS_TEXT


def _refresh_text(layer: Any) -> None:
    if _shows_status(layer) and layer.text.visible:
        layer.text.refresh(layer.features)


def show_statuses(layer: Any, show: bool = True) -> None:
    """Draw (or stop drawing) each shape's review status on it, as napari text."""
    if show:
        if not _shows_status(layer):
            layer.text = {"string": STATUS_TEXT, "size": 9, "color": "#ffe600",
                          "anchor": "upper_left"}
        layer.text.visible = True
        _refresh_text(layer)
    elif _shows_status(layer):
        layer.text.visible = False


def _status(layer: Any, index: int) -> str:
    return str(_get(layer, index, "review_status", "")).strip().lower()


def status_counts(layers: list[Any]) -> dict[str, int]:
    """Shapes per review status in Shapes layers (keys as
    :func:`napari_slideseg.core.review.review_counts`: every status, and 'unreviewed'
    for shapes without one; negative shapes without a status are not counted)."""
    from ..core.review import STATUSES, UNREVIEWED

    counts = dict.fromkeys((*STATUSES, UNREVIEWED), 0)
    for layer in layers:
        features = layer.features
        n = len(layer.data)
        statuses = [str(v).strip().lower() if isinstance(v, str) else ""
                    for v in features["review_status"]] if "review_status" in features \
            else [""] * n
        negative = [bool(v) for v in features["negative"]] if "negative" in features \
            else [False] * n
        for status, neg in zip(statuses, negative, strict=False):
            if status in counts and status != UNREVIEWED:
                counts[status] += 1
            elif not neg:
                counts[UNREVIEWED] += 1
    return counts


def _rgba(color: Any, alpha: float = 1.0) -> np.ndarray:
    return np.array([*(np.asarray(color, float)[:3] / 255.0), alpha])


def new_class_layer(viewer: Any, name: str, like: Any = None) -> Any:
    """An empty Shapes layer for class ``name``, made as the reader makes annotation
    layers (same frame as ``like``, a colour of its own, review columns), so that it is
    saved with the others."""
    from .._layers import CLASS_COLORS, META_SET, annotation_layers_data
    from ..core.annotations import AnnotationLayer, AnnotationSet

    used = set()
    for la in class_layers(viewer):
        source = la.metadata.get("slideseg_annotation_layer")
        if source is not None:
            used.add(tuple(source.color))
    palette = [tuple(int(round(c * 255)) for c in rgb) for rgb in CLASS_COLORS]
    color = next((c for c in palette if c not in used), palette[len(used) % len(palette)])
    scale = tuple(np.asarray(like.scale, float)[-2:]) if like is not None else (1.0, 1.0)
    units = tuple(str(u) for u in like.units[-2:]) if like is not None else ("pixel", "pixel")
    mpp = scale[-1] if units[-1] in ("µm", "micrometer", "um") else None
    base = like.metadata.get(META_SET) if like is not None else None
    layer = AnnotationLayer(name=name, color=color)
    data, kwargs, _ = annotation_layers_data(AnnotationSet([layer]), scale, units, mpp=mpp,
                                             review=True)[0]
    if base is not None:
        kwargs["metadata"][META_SET] = base
    if like is not None:
        kwargs["translate"] = tuple(np.asarray(like.translate, float)[-2:])
    return viewer.add_shapes(data, **kwargs)


def move_shape(source: Any, index: int, target: Any, *, reviewer: str = "",
               when: str | None = None) -> int:
    """Move shape ``index`` of Shapes layer ``source`` into ``target`` (a class change).

    The shape keeps its place in the world and its features; its class becomes the
    target's, its status 'edited' (by ``reviewer``, at ``when``, default now). A region
    read from a file keeps its id and attributes when the target is saved (it is put in
    the target's ``slideseg_moved_regions`` metadata). Returns its index in ``target``.
    """
    from .._layers import META_LAYER, META_MOVED, META_SHAPES

    data = np.asarray(source.data[index], np.float64)[:, -2:]
    world = data * np.asarray(source.scale, float)[-2:] + np.asarray(source.translate,
                                                                     float)[-2:]
    moved = (world - np.asarray(target.translate, float)[-2:]) / np.asarray(target.scale,
                                                                           float)[-2:]
    kind = source.shape_type[index]
    row = source.features.iloc[index].to_dict() if len(source.features.columns) else {}
    width = float(np.asarray(source.edge_width)[index]) if len(source.edge_width) else 2.0
    # the region object it shows, to keep its id and attributes
    region = None
    src_layer = source.metadata.get(META_LAYER)
    src_shapes = source.metadata.get(META_SHAPES) or {}
    src_moved = source.metadata.get(META_MOVED) or []
    idx = int(row.get("region", -1)) if row.get("region") is not None else -1
    own = len(src_layer.regions) if src_layer is not None else 0
    if src_layer is not None and idx in src_shapes and 0 <= idx < own:
        region = src_layer.regions[idx]
    elif own <= idx < own + len(src_moved):
        region = src_moved[idx - own]
    dst_layer = target.metadata.get(META_LAYER)
    if dst_layer is not None:
        edge, face = _rgba(dst_layer.color), _rgba(dst_layer.color, 0.2)
    else:
        edge, face = target.current_edge_color, target.current_face_color
    ensure_review_columns(target)
    target.add([moved], shape_type=[kind], edge_color=edge, face_color=face,
               edge_width=width)
    new = len(target.data) - 1
    region_index = -1
    if region is not None:
        dst_moved = target.metadata.setdefault(META_MOVED, [])
        dst_own = len(dst_layer.regions) if dst_layer is not None else 0
        dst_moved.append(region)
        region_index = dst_own + len(dst_moved) - 1
    class_name = dst_layer.class_name if dst_layer is not None else target.name
    values = {k: v for k, v in row.items() if k in target.features}
    values.update({"region": region_index, "class": class_name, "review_status": "edited",
                   "reviewer": reviewer, "reviewed_at": when or _now()})
    _set(target, new, values)
    source.remove([index])
    return new


class ReviewWidget(Container):
    """Step through predicted regions; accept, reject, reclassify, delete; save."""

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        self.current: tuple[Any, int] | None = None  # (layer, shape index)
        self.last_error = ""
        self.last_saved: Path | None = None
        self._after: tuple[Any, float] | None = None  # where a deleted current region was
        self._syncing = False
        self._busy = False  # the dock is changing layers: their events are its own
        self._removing = False  # a layer is removing shapes: its selection is in flux
        self._connected: dict[int, tuple[Any, list[tuple[Any, Any]]]] = {}
        self._slide_when: str | None = None
        self._closed = False

        self.layers = Select(label="Layers", choices=self._layer_choices,
                             tooltip="Annotation Shapes layers to review (those with review "
                                     "columns at first). Ctrl-click to choose several")
        self.reviewer = LineEdit(label="Reviewer", value=default_reviewer(),
                                 tooltip="Your name, stored with each review (remembered)")
        self.previous = PushButton(text="◀ Previous",
                                   tooltip=f"The region before this one, reviewed or not "
                                           f"({KEYS['previous']})")
        self.next = PushButton(text="Next pending ▶",
                               tooltip="Centre the view on the next region still pending "
                                       f"review and select it ({KEYS['next']})")
        self.position = Label(value="", tooltip="The region selected")
        self.accept = PushButton(text="Accept", tooltip="The prediction is right: status "
                                                        f"'accepted' ({KEYS['accepted']})")
        self.reject = PushButton(text="Reject",
                                 tooltip="The prediction is wrong: status 'rejected'. The "
                                         "region stays in the file, marked, and is left "
                                         f"out of the truth ({KEYS['rejected']})")
        self.mark_edited = PushButton(text="Mark edited",
                                      tooltip="You corrected it: status 'edited' (reshaping "
                                              f"a region sets it too) ({KEYS['edited']})")
        self.delete = PushButton(text="Delete",
                                 tooltip="Remove the region from the annotations (Reject "
                                         "keeps it, marked as rejected)")
        self.advance = CheckBox(text="then next pending", value=True,
                                tooltip="After Accept, Reject, Mark edited or Delete, go on "
                                        "to the next pending region")
        self.show_status = CheckBox(text="statuses on shapes", value=True,
                                    tooltip="Write each region's review status on it in "
                                            "the viewer")
        self.klass = ComboBox(label="Class", choices=self._class_choices,
                              tooltip="The selected region's class: choose another to move "
                                      "it into that class's layer (status 'edited'); "
                                      f"'{NEW_CLASS}' makes a layer for a new class")
        self.opinion = TextEdit(label="Opinion", value="",
                                tooltip="Your opinion on this region (free text), saved with "
                                        "it on Accept, Reject, Next and Previous")
        self.slide_opinion = TextEdit(label="Slide", value="",
                                      tooltip="Your overall opinion on the slide, saved in "
                                              "the file's first annotation layer")
        self.counts = Label(value="", tooltip="Regions of the layers reviewed, per status")
        self.hint = Label(value=HINT, tooltip=HINT)
        self.save_button = PushButton(text="Save reviewed XML...",
                                      tooltip="Write every annotation layer with the review "
                                              "as an Aperio ImageScope XML file")
        self.status = Label(value="", tooltip="What the last action did")

        for label in (self.position, self.counts, self.hint, self.status):
            label.native.setWordWrap(True)
            label.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
            label.native.setSizePolicy(QSizePolicy.Policy.Ignored,
                                       QSizePolicy.Policy.Preferred)
        self.hint.native.setStyleSheet("color: palette(mid); font-size: small;")
        self.layers.native.setMaximumHeight(96)
        for text in (self.opinion, self.slide_opinion):
            text.native.setMinimumHeight(48)
            text.native.setMaximumHeight(90)
            text.native.setTabChangesFocus(True)
        self.klass.native.setSizeAdjustPolicy(
            self.klass.native.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.klass.native.setMinimumContentsLength(8)

        super().__init__(widgets=[
            self.layers, self.reviewer,
            row("Go to", self.previous, self.next, stretch=True), self.position,
            row("Review", self.accept, self.reject, self.mark_edited, self.delete,
                stretch=True),
            row("", self.advance, self.show_status, stretch=True),
            self.klass, self.opinion, self.slide_opinion,
            row("Counts", self.counts), self.hint,
            row("", self.save_button, stretch=True), self.status])
        align_labels(self)
        self.native.setMinimumWidth(360)

        self.layers.changed.connect(self._on_layers_chosen)
        self.reviewer.changed.connect(self._on_reviewer)
        self.previous.changed.connect(lambda *_: self._guard(self.go_previous))
        self.next.changed.connect(lambda *_: self._guard(self.go_next))
        self.accept.changed.connect(lambda *_: self._guard(self.review, "accepted"))
        self.reject.changed.connect(lambda *_: self._guard(self.review, "rejected"))
        self.mark_edited.changed.connect(lambda *_: self._guard(self.review, "edited"))
        self.delete.changed.connect(lambda *_: self._guard(self.delete_selected))
        self.klass.changed.connect(self._on_class)
        self.show_status.changed.connect(self._on_show_status)
        # Qt's own signal: magicgui's TextEdit reports a change only when it loses focus,
        # and the slide's opinion must reach the layers however they are saved next
        self.slide_opinion.native.textChanged.connect(self._on_slide_opinion)
        self.opinion.native.textChanged.connect(
            lambda: None if self._syncing else self._store_opinion())
        self.save_button.changed.connect(self._on_save)
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self.native.destroyed.connect(self._on_closed)
        self._shortcuts()
        self._on_layers_changed()

    # -- layers ------------------------------------------------------------------------
    def _layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(la.name, la) for la in class_layers(self.viewer)]

    def _class_choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        names = []
        for la in class_layers(self.viewer):
            if la.name not in names:
                names.append(la.name)
        return [(n, n) for n in names] + [(NEW_CLASS, NEW_CLASS)]

    def reset_choices(self, *_: Any) -> None:
        """Refresh the layers offered (napari calls this on layer events)."""
        if hasattr(self, "status"):
            self._on_layers_changed()
        else:
            super().reset_choices()

    def review_layers(self) -> list[Any]:
        """The layers reviewed, bottom first."""
        chosen = {id(la) for la in (self.layers.value or [])}
        return [la for la in class_layers(self.viewer) if id(la) in chosen]

    def _on_layers_changed(self, _event: Any = None) -> None:
        from .._layers import has_review_columns

        if self._closed:
            return
        before = list(self.layers.value or [])
        # layers new to the dock are reviewed when they have review columns
        new = [la for la in class_layers(self.viewer) if id(la) not in self._connected]
        self._syncing = True
        try:
            self.layers.reset_choices()
            present = [la for la in before if la in list(self.viewer.layers)]
            added = [la for la in new if has_review_columns(la.features)]
            self.layers.value = present + [la for la in added if la not in present]
            self.klass.reset_choices()
        finally:
            self._syncing = False
        for la in class_layers(self.viewer):
            self._connect(la)
        for key in [k for k, (la, _) in self._connected.items()
                    if la not in list(self.viewer.layers)]:
            self._disconnect(key)
        if self.current is not None and self.current[0] not in list(self.viewer.layers):
            self.current = None
        self._on_layers_chosen()

    def _on_layers_chosen(self, _value: Any = None) -> None:
        if self._syncing:
            return
        reviewed = self.review_layers()
        for layer in reviewed:
            ensure_review_columns(layer)
        for layer in class_layers(self.viewer):
            show_statuses(layer, self.show_status.value and any(layer is la for la in reviewed))
        if not self.slide_opinion.value:
            self._load_slide_opinion()
        self._update_counts()
        self._update_position()

    def _connect(self, layer: Any) -> None:
        if id(layer) in self._connected:
            return

        def on_data(event: Any, layer: Any = layer) -> None:
            self._on_data(layer, event)

        def on_selection(*_args: Any) -> None:
            self._on_selection(layer)

        selection = layer.selected_data.events  # psygnal (napari >= 0.6) or napari's
        changed = getattr(selection, "items_changed", None) or selection.changed
        pairs = [(layer.events.data, on_data), (changed, on_selection)]
        for emitter, callback in pairs:
            emitter.connect(callback)
        self._connected[id(layer)] = (layer, pairs)

    def _disconnect(self, key: int) -> None:
        _, pairs = self._connected.pop(key)
        for emitter, callback in pairs:
            emitter.disconnect(callback)

    def _on_closed(self, *_: Any) -> None:
        self._closed = True
        for key in list(self._connected):
            self._disconnect(key)
        for emitter in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            try:
                emitter.disconnect(self._on_layers_changed)
            except Exception:  # already gone with the viewer
                pass

    # -- events of the layers -------------------------------------------------------------
    def _on_data(self, layer: Any, event: Any) -> None:
        """Shapes drawn: reviewer and time; reshaped: 'edited'; removed: keep the place."""
        if self._closed:
            return
        action = str(getattr(event, "action", ""))
        reviewed = any(layer is la for la in self.review_layers())
        if action == "removing":
            self._removing = True
            return
        if action == "added" and reviewed and not self._busy:
            new = len(layer.data) - 1
            if new >= 0 and _status(layer, new) == "added" and not _get(layer, new, "reviewer"):
                _set(layer, new, {"reviewer": self.reviewer.value, "reviewed_at": _now()})
        elif action == "changed" and reviewed and not self._busy:
            for index in getattr(event, "data_indices", ()) or ():
                index = int(index)
                if 0 <= index < len(layer.data) and self._reshaped(layer, index) and \
                        _status(layer, index) in ("pending", "accepted"):
                    _set(layer, index, {"review_status": "edited",
                                        "reviewer": self.reviewer.value,
                                        "reviewed_at": _now()})
        elif action == "removed":
            self._removing = False
            removed = sorted(int(i) for i in (getattr(event, "data_indices", ()) or ()))
            if self.current is not None and self.current[0] is layer and removed:
                k = self.current[1]
                if k in removed:
                    below = sum(1 for i in removed if i < k)
                    self._after = (layer, k - below - 0.5)
                    self.current = None
                else:
                    self.current = (layer, k - sum(1 for i in removed if i < k))
        if action in ("added", "changed", "removed"):
            self._update_counts()
            self._update_position()

    @staticmethod
    def _reshaped(layer: Any, index: int) -> bool:
        """Whether a shape differs from the region it was made from (True when unknown)."""
        from .._layers import META_SHAPES, same_shape

        shapes = layer.metadata.get(META_SHAPES) or {}
        region = int(_get(layer, index, "region", -1))
        if region not in shapes:
            return True
        return not same_shape(shapes[region][1], layer.data[index])

    def _on_selection(self, layer: Any) -> None:
        """A shape selected in a layer reviewed becomes the current region."""
        if self._syncing or self._busy or self._closed or self._removing:
            return
        if not any(layer is la for la in self.review_layers()):
            return
        selected = sorted(layer.selected_data)
        if len(selected) != 1 or selected[0] >= len(layer.data):
            return
        if self.current == (layer, selected[0]):
            return
        self._store_opinion()
        self.current = (layer, selected[0])
        self._show_current()

    # -- navigation ----------------------------------------------------------------------
    def _order(self) -> list[tuple[Any, int]]:
        return [(la, k) for la in self.review_layers() for k in range(len(la.data))]

    def _position_key(self, layers: list[Any]) -> tuple[int, float]:
        ids = [id(la) for la in layers]
        if self.current is not None and id(self.current[0]) in ids:
            return ids.index(id(self.current[0])), float(self.current[1])
        if self._after is not None and id(self._after[0]) in ids:
            return ids.index(id(self._after[0])), float(self._after[1])
        return -1, -1.0

    def pending(self) -> list[tuple[Any, int]]:
        """(layer, shape index) of the regions still pending, in review order."""
        out = []
        for layer in self.review_layers():
            if "review_status" not in layer.features:
                continue
            statuses = layer.features["review_status"].tolist()
            out += [(layer, k) for k, v in enumerate(statuses[:len(layer.data)])
                    if isinstance(v, str) and v.strip().lower() == "pending"]
        return out

    def go_next(self) -> tuple[Any, int] | None:
        """Go to the next pending region after the current one (from the first after the
        last); returns it, or None when none is left."""
        self._store_opinion()
        layers = self.review_layers()
        here = self._position_key(layers)
        ids = [id(la) for la in layers]
        keyed = [((ids.index(id(la)), float(k)), (la, k)) for la, k in self.pending()]
        after = [item for key, item in keyed if key > here]
        target = after[0] if after else (keyed[0][1] if keyed else None)
        if target is None:
            self.status.value = "No region is pending review: every region is reviewed."
            self._update_position()
            return None
        self.show_region(*target)
        return target

    def go_previous(self) -> tuple[Any, int] | None:
        """Go to the region before the current one (any status)."""
        self._store_opinion()
        layers = self.review_layers()
        here = self._position_key(layers)
        ids = [id(la) for la in layers]
        keyed = [((ids.index(id(la)), float(k)), (la, k)) for la, k in self._order()]
        before = [item for key, item in keyed if key < here]
        target = before[-1] if before else (keyed[-1][1] if keyed else None)
        if target is None:
            self.status.value = "No region to review: choose layers with regions."
            return None
        self.show_region(*target)
        return target

    def show_region(self, layer: Any, index: int, zoom: bool = True) -> None:
        """Make a shape the current region: select it, centre the view on it and zoom so
        that it fills the view but for a margin."""
        self.current = (layer, index)
        self._after = None
        lo, hi = shape_box(layer, index)
        camera = _camera(self.viewer)
        camera.center = tuple(float(v) for v in (lo + hi) / 2)
        size = hi - lo
        if zoom and np.all(size > 0):
            canvas = np.asarray(self.viewer.canvas.size, float) \
                if hasattr(self.viewer, "canvas") else np.array([600.0, 800.0])
            if np.all(canvas > 0):
                camera.zoom = float(np.min(canvas / (size * (1 + 2 * MARGIN))))
        self._syncing = True
        try:
            self.viewer.layers.selection.active = layer
            if layer.mode not in ("select", "direct"):
                layer.mode = "select"
            layer.selected_data = {index}
        finally:
            self._syncing = False
        self._show_current()

    def _show_current(self) -> None:
        """The current region's opinion and class in the form."""
        self._syncing = True
        try:
            if self.current is not None:
                layer, index = self.current
                self.opinion.value = str(_get(layer, index, "opinion", ""))
                self.klass.reset_choices()
                self.klass.value = layer.name
        finally:
            self._syncing = False
        self._update_position()

    def _valid(self, key: tuple[Any, int] | None) -> bool:
        return key is not None and key[0] in list(self.viewer.layers) and \
            0 <= key[1] < len(key[0].data)

    def _targets(self) -> list[tuple[Any, int]]:
        """The shapes an action applies to: those selected in the current region's layer
        (or in the active layer, if reviewed), else the current region."""
        if self._valid(self.current):
            layer, index = self.current
            selected = sorted(i for i in layer.selected_data if i < len(layer.data))
            if index in selected:
                return [(layer, i) for i in selected]
            return [(layer, index)]
        active = self.viewer.layers.selection.active
        if active is not None and any(active is la for la in self.review_layers()):
            return [(active, i) for i in sorted(active.selected_data) if i < len(active.data)]
        return []

    # -- review --------------------------------------------------------------------------
    def _store_opinion(self) -> None:
        """Save the opinion typed into the current region's features."""
        if not self._valid(self.current):
            return
        layer, index = self.current
        text = self.opinion.value or ""
        if text != str(_get(layer, index, "opinion", "")):
            _set(layer, index, {"opinion": text})

    def review(self, status: str) -> int:
        """Give the selected regions ``status`` (accepted, rejected, edited), with the
        reviewer and the time, and the current one the opinion typed; then go on to the
        next pending one when asked. Returns how many regions were reviewed."""
        from ..core.review import STATUSES

        if status not in STATUSES:
            raise ValueError(f"unknown review status {status!r}: use one of "
                             f"{', '.join(STATUSES)}.")
        self._store_opinion()
        targets = self._targets()
        if not targets:
            self.status.value = "Select a region first: Next pending, or click a shape."
            return 0
        when = _now()
        for layer, index in targets:
            _set(layer, index, {"review_status": status, "reviewer": self.reviewer.value,
                                "reviewed_at": when})
        self.status.value = (f"{len(targets)} regions {status}." if len(targets) > 1
                             else f"Region {status}.")
        self._update_counts()
        self._update_position()
        if self.advance.value:
            self.go_next()
        return len(targets)

    def delete_selected(self) -> int:
        """Remove the selected regions from their layer (they are not saved)."""
        self._store_opinion()
        targets = self._targets()
        if not targets:
            self.status.value = "Select a region first: Next pending, or click a shape."
            return 0
        layer = targets[0][0]
        indices = [i for la, i in targets if la is layer]
        if self.current is not None and self.current[0] is layer:
            k = self.current[1]
            self._after = (layer, k - sum(1 for i in indices if i < k) - 0.5)
        layer.remove(indices)
        self.current = None
        self.status.value = f"{len(indices)} region{'s' if len(indices) > 1 else ''} deleted."
        self._update_counts()
        if self.advance.value:
            self.go_next()
        else:
            self._update_position()
        return len(indices)

    def set_class(self, name: str) -> list[tuple[Any, int]]:
        """Move the selected regions into the layer of class ``name`` (made when there
        is none): status 'edited'. Returns their (layer, index) after the move."""
        from ..core.errors import SlideSegError

        name = str(name).strip()
        if not name or name == NEW_CLASS:
            raise SlideSegError("type a class name.")
        self._store_opinion()
        targets = self._targets()
        if not targets:
            self.status.value = "Select a region first: Next pending, or click a shape."
            return []
        target = next((la for la in self.review_layers() if la.name == name), None)
        if target is None:
            target = next((la for la in class_layers(self.viewer) if la.name == name), None)
        self._busy = True
        try:
            if target is None:
                target = new_class_layer(self.viewer, name, like=targets[0][0])
            if not any(target is la for la in self.review_layers()):
                self._syncing = True
                try:
                    self.layers.reset_choices()
                    self.layers.value = [*self.review_layers(), target]
                finally:
                    self._syncing = False
            ensure_review_columns(target)
            moved = []
            when = _now()
            for layer, index in sorted(targets, key=lambda t: -t[1]):
                if layer is target:
                    _set(layer, index, {"review_status": "edited",
                                        "reviewer": self.reviewer.value, "reviewed_at": when})
                    moved.append((layer, index))
                    continue
                moved.append((target, move_shape(layer, index, target,
                                                 reviewer=self.reviewer.value, when=when)))
        finally:
            self._busy = False
        moved.reverse()
        self.status.value = (f"{len(moved)} region{'s' if len(moved) > 1 else ''} moved to "
                             f"{name!r} (edited).")
        self.show_region(*moved[-1], zoom=False)
        if len(moved) > 1:
            self._syncing = True
            try:
                target.selected_data = {k for _, k in moved}
            finally:
                self._syncing = False
        self._update_counts()
        return moved

    def _on_class(self, value: Any = None) -> None:
        if self._syncing:
            return
        name = value
        if value == NEW_CLASS:
            name = self._ask_class_name()
            if not name:
                self._show_current()
                return
        if self._valid(self.current) and self.current[0].name == name:
            return
        self._guard(self.set_class, name)

    def _ask_class_name(self) -> str:
        from qtpy.QtWidgets import QInputDialog

        text, ok = QInputDialog.getText(self.native, "New class",
                                        "Name of the new class (its Shapes layer):")
        return str(text).strip() if ok else ""

    # -- the slide's opinion, the reviewer -----------------------------------------------
    def _load_slide_opinion(self) -> None:
        from .._layers import META_SET, META_SLIDE_OPINION
        from ..core.review import slide_opinion

        for layer in self.review_layers():
            stored = layer.metadata.get(META_SLIDE_OPINION)
            if stored is None and layer.metadata.get(META_SET) is not None:
                stored = slide_opinion(layer.metadata[META_SET]) or None
            if stored:
                self._syncing = True
                try:
                    self.slide_opinion.value = stored.get("opinion", "")
                finally:
                    self._syncing = False
                self._slide_when = stored.get("reviewed_at")
                return

    def _on_slide_opinion(self, _value: Any = None) -> None:
        if self._syncing:
            return
        self._slide_when = _now()
        self._store_slide_opinion()

    def _store_slide_opinion(self) -> None:
        """Put the slide's opinion in the metadata of every layer reviewed, so that any
        way of saving them writes it."""
        from .._layers import META_SLIDE_OPINION

        text = self.slide_opinion.value or ""
        value = {"opinion": text, "reviewer": self.reviewer.value,
                 "reviewed_at": self._slide_when or _now()}
        for layer in self.review_layers():
            layer.metadata[META_SLIDE_OPINION] = value

    def _on_show_status(self, value: Any = None) -> None:
        for layer in self.review_layers():
            show_statuses(layer, bool(value))

    def _on_reviewer(self, value: Any = None) -> None:
        _remember_reviewer(str(value or ""))

    # -- saving --------------------------------------------------------------------------
    def layers_to_save(self) -> list[Any]:
        """The layers reviewed and every class layer of the same annotation files,
        bottom first (the first holds the slide's opinion)."""
        from .._layers import META_SET

        reviewed = self.review_layers()
        sets = {id(la.metadata.get(META_SET)) for la in reviewed
                if la.metadata.get(META_SET) is not None}
        return [la for la in class_layers(self.viewer)
                if any(la is r for r in reviewed) or id(la.metadata.get(META_SET)) in sets]

    def save(self, path: str | Path) -> Path:
        """Write the reviewed annotations (every class layer, the slide's opinion) as an
        Aperio ImageScope XML file; returns its path."""
        from .._layers import shapes_to_annotations
        from .._writer import _mpp_of
        from ..core.annotations import write_annotations
        from ..core.errors import SlideSegError
        from ..core.review import set_slide_opinion

        self._store_opinion()
        layers = self.layers_to_save()
        if not layers:
            raise SlideSegError("no annotation layer to save: open the predictions first.")
        self._store_slide_opinion()
        pairs = [la.as_layer_data_tuple()[:2] for la in layers]
        annotations = shapes_to_annotations(pairs, mpp=_mpp_of(pairs[0][1]))
        set_slide_opinion(annotations, self.slide_opinion.value or None,
                          self.reviewer.value, self._slide_when)
        target = Path(path)
        if not target.suffix:
            target = target.with_suffix(".xml")
        lost = write_annotations(annotations, target, format="aperio")
        self.last_saved = target
        counts = status_counts(self.review_layers())
        self.status.value = f"Saved {target.name}: {_counts_text(counts)}." + (
            f" Not kept: {'; '.join(lost[:3])}" if lost else "")
        return target

    def _default_path(self) -> str:
        from .._layers import META_SET

        for layer in self.layers_to_save():
            source = getattr(layer.metadata.get(META_SET), "source", None)
            if source:
                source = Path(source)
                return str(source.with_name(f"{source.stem} reviewed.xml"))
        return "reviewed annotations.xml"

    def _on_save(self, _value: Any = None) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self.native, "Save reviewed annotations",
                                              self._default_path(),
                                              "Aperio ImageScope XML (*.xml)")
        if path:
            self._guard(self.save, path)

    # -- display -------------------------------------------------------------------------
    def _update_counts(self) -> None:
        self.counts.value = _counts_text(status_counts(self.review_layers()))

    def _update_position(self) -> None:
        pending = self.pending()
        if not self._valid(self.current):
            self.position.value = f"{len(pending)} pending. Next pending ▶ to start." \
                if pending else "No region selected."
            return
        layer, index = self.current
        status = _status(layer, index) or "no status"
        order = [k for k, (la, i) in enumerate(pending) if la is layer and i == index]
        where = f"pending {order[0] + 1} of {len(pending)}" if order else \
            f"{len(pending)} pending"
        parts = [f"{layer.name}, shape {index + 1}: {status}"]
        mean = _get(layer, index, "probability_mean", None)
        if mean is not None:
            std = _get(layer, index, "probability_std", None)
            tiles = int(_get(layer, index, "tile_count", -1))
            parts.append(f"p = {float(mean):.2f}" + (f" ± {float(std):.2f}" if std is not None
                                                     else "")
                         + (f", {tiles} tiles" if tiles >= 0 else ""))
        parts.append(where)
        self.position.value = " · ".join(parts)

    # -- keys, errors ----------------------------------------------------------------------
    def _shortcuts(self) -> None:
        from qtpy.QtGui import QKeySequence, QShortcut

        actions = {"accepted": lambda: self._guard(self.review, "accepted"),
                   "rejected": lambda: self._guard(self.review, "rejected"),
                   "edited": lambda: self._guard(self.review, "edited"),
                   "next": lambda: self._guard(self.go_next),
                   "previous": lambda: self._guard(self.go_previous)}
        self._keys = []
        for name, key in KEYS.items():
            shortcut = QShortcut(QKeySequence(key), self.native)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(actions[name])
            self._keys.append(shortcut)

    def _guard(self, action: Any, *args: Any) -> Any:
        """Run an action of the dock; an error becomes the status line, not a traceback."""
        try:
            result = action(*args)
        except Exception as exc:  # shown to the user
            self.last_error = error_message(exc)
            self.status.value = f"Error: {self.last_error}"
            return None
        self.last_error = ""
        return result


def _counts_text(counts: dict[str, int]) -> str:
    from ..core.review import STATUSES, UNREVIEWED

    parts = [f"{s} {counts.get(s, 0)}" for s in STATUSES]
    if counts.get(UNREVIEWED):
        parts.append(f"{UNREVIEWED} {counts[UNREVIEWED]}")
    return " · ".join(parts)
