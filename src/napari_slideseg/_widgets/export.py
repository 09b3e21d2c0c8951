"""Export patches dock: image patches and label masks of the slide shown, with a preview.

The widget only collects the parameters of :func:`napari_slideseg.export_patches` (and
of :func:`napari_slideseg.plan_patches` for the preview) from the viewer: the slide
layer, the annotation layers drawn over it (or a file), and a region (the whole slide,
the annotated area, the current view, or a rectangle drawn in a Shapes layer). The
export runs in a thread worker with a progress bar and a cancel button; the preview
shows the planned patches as a "patch grid" layer, and "Show mask" adds the label mask
the export fills, as a lazy Labels layer over the slide.

Coordinates handed to the engine are level-0 pixel (x, y) of the slide; napari layers
of a slide hold level-0 (row, col) data scaled by the pixel size (see ``_layers``).
"""

import inspect
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import QSizePolicy

from ._form import (
    align_labels,
    error_message,
    level_choices,
    require_slide,
    row,
    slide_choices,
)
from .annotations import view_box
from .slide_info import _slide_of

__all__ = ["ExportWidget", "annotation_layers", "export_from_viewer", "rectangle_region",
           "resolve_key", "slide_annotations", "view_region"]

GRID_LAYER = "patch grid"
#: Region choices: what the widget shows -> what it means.
REGIONS = {"whole slide": "slide", "annotated area": "annotated", "current view": "view",
           "drawn rectangle": "rectangle"}


def _same_frame(layer: Any, slide_layer: Any) -> bool:
    return layer.ndim == 2 and np.allclose(np.asarray(layer.scale, float)[-2:],
                                           np.asarray(slide_layer.scale, float)[-2:],
                                           rtol=1e-6)


def annotation_layers(viewer: Any, slide_layer: Any) -> list[Any]:
    """The annotation layers of ``viewer`` drawn over ``slide_layer``.

    Shapes layers with the slide's scale (opened from annotation files or drawn in
    napari) and Labels layers holding a large annotation file, in layer-list order.
    Shapes layers made to edit part of such a Labels layer are left out: their edits
    count once applied to it (the Annotations widget).
    """
    from .._layers import META_SET

    found = []
    for layer in viewer.layers:
        if layer is slide_layer or layer.name == GRID_LAYER or not _same_frame(layer,
                                                                                slide_layer):
            continue
        kind = layer._type_string
        if kind == "shapes" and "slideseg_labels_layer" not in layer.metadata:
            found.append(layer)
        elif kind == "labels" and layer.metadata.get(META_SET) is not None:
            found.append(layer)
    return found


def _from_file(layer: Any) -> bool:
    from .._layers import META_LAYER, META_SET

    return layer.metadata.get(META_LAYER) is not None or \
        layer.metadata.get(META_SET) is not None


def slide_annotations(layers: list[Any]) -> Any:
    """One AnnotationSet (level-0 pixel (x, y) vertices) from annotation layers.

    Shapes layers are read the way saving them reads them (regions left untouched are
    kept as in their file); a Labels layer holding a large annotation file gives the
    regions it holds. None when ``layers`` is empty.
    """
    from .._layers import META_SET, shapes_to_annotations
    from ..core.annotations import AnnotationSet

    if not layers:
        return None
    shapes = [la.as_layer_data_tuple()[:2] for la in layers if la._type_string == "shapes"]
    parts = [shapes_to_annotations(shapes)] if shapes else []
    parts += [la.metadata[META_SET] for la in layers if la._type_string == "labels"]
    if len(parts) == 1:
        return parts[0]
    return AnnotationSet([layer for part in parts for layer in part],
                         attributes=dict(parts[0].attributes))


def view_region(viewer: Any, slide_layer: Any) -> list[float]:
    """The level-0 (x, y, w, h) the canvas shows of the slide, clipped to the slide.

    Whole pixels: the box is widened to the pixel edges around it.
    """
    from ..core.errors import SlideSegError

    w0, h0 = _slide_of(slide_layer).dimensions
    x0, y0, x1, y1 = view_box(viewer, slide_layer)
    x0, y0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    x1, y1 = min(w0, int(np.ceil(x1))), min(h0, int(np.ceil(y1)))
    if x1 <= x0 or y1 <= y0:
        raise SlideSegError("the current view does not show the slide: pan to it, or "
                            "choose another region.")
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def rectangle_region(shapes: Any, slide_layer: Any) -> list[float]:
    """The level-0 (x, y, w, h) of the first rectangle of a Shapes layer.

    The rectangle's vertices go from the Shapes layer's data to world coordinates
    (its scale and translate) and then to the slide's level-0 pixels; a rotated
    rectangle gives its bounding box.
    """
    from ..core.errors import SlideSegError

    types = list(shapes.shape_type)
    if "rectangle" not in types:
        raise SlideSegError(f"the Shapes layer {shapes.name!r} holds no rectangle: draw "
                            "one with its rectangle tool.")
    vertices = np.asarray(shapes.data[types.index("rectangle")], float)[:, -2:]
    world = np.array([np.asarray(shapes.data_to_world(v), float)[-2:] for v in vertices])
    scale = np.asarray(slide_layer.scale, float)[-2:]
    translate = np.asarray(slide_layer.translate, float)[-2:]
    # the slide layer centres pixel i on world (i + 1/2) * scale; rounded to a thousandth
    # of a pixel so that float32 noise in the shape cannot move the grid's corner
    rows, cols = np.round((world - translate) / scale + 0.5, 3).T
    x0, x1, y0, y1 = cols.min(), cols.max(), rows.min(), rows.max()
    if x1 <= x0 or y1 <= y0:
        raise SlideSegError(f"the first rectangle of {shapes.name!r} is empty.")
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def resolve_key(key: Any, annotations: Any, class_from: str, out: Any = None) -> Any:
    """The AnnotationKey an export uses: ``key`` (a key or a file), the ``key.json`` a
    previous export left in ``out``, or one made from ``annotations`` and ``class_from``.
    """
    from ..core.masks import AnnotationKey

    if isinstance(key, AnnotationKey):
        return key
    if key is not None:
        return AnnotationKey.load(key)
    if out is not None and (Path(out) / "key.json").is_file():
        return AnnotationKey.load(Path(out) / "key.json")
    return AnnotationKey.from_annotations([annotations] if annotations is not None else [],
                                          class_from)


def _slide_argument(slide: Any) -> Any:
    # a path: the export opens the slide itself and reads it strictly (the viewer's
    # handle shows a damaged tile as background); a folder (DICOM) would be taken for a
    # folder of slides, so it goes as the open slide
    return slide if Path(slide.path).is_dir() else str(slide.path)


def export_from_viewer(viewer: Any, out: Any, *, slide_layer: Any = None,
                       layers: list[Any] | None = None, region: Any = None,
                       **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`napari_slideseg.export_patches` of a slide shown in ``viewer``.

    Parameters
    ----------
    viewer : napari.Viewer
    out : path
        Output folder.
    slide_layer : napari layer, optional
        A slide layer opened by this plugin (default: the topmost one).
    layers : list of layers, optional
        Annotation layers to export (default: every one of :func:`annotation_layers`).
    region : 'slide', 'annotated', 'view' or (x, y, w, h), optional
        'view' is the part of the slide the canvas shows; a rectangle is in level-0
        pixels.
    **kwargs
        Every other keyword of :func:`napari_slideseg.export_patches`.

    Returns
    -------
    list of dict
        The manifest rows.
    """
    from ..core.patches import export_patches

    if slide_layer is None:
        slide_layer = next((la for la in reversed(list(viewer.layers))
                            if _slide_of(la) is not None), None)
        if slide_layer is None:
            raise ValueError("the viewer shows no slide opened by napari-slideseg.")
    if layers is None:
        layers = annotation_layers(viewer, slide_layer)
    if isinstance(region, str) and region == "view":
        region = view_region(viewer, slide_layer)
    return export_patches(_slide_argument(_slide_of(slide_layer)), slide_annotations(layers),
                          out, region=region, **kwargs)




class _Progress(QObject):
    """Carries progress from the export thread to the widget (queued signal)."""

    changed = Signal(int, int)




class ExportWidget(Container):
    """Preview and export image patches and label masks of a slide layer."""

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        self._worker: Any = None
        self._cancel = threading.Event()
        self._progress = _Progress()
        self._progress.changed.connect(self._on_progress)
        self._started = 0.0
        self._busy = False
        self._error_label: Label | None = None
        self._class_names: list[str] = []
        self._class_state: Any = None
        self._known: set[int] = set()  # annotation layers offered so far (ids)
        self._chosen: set[int] = set()  # annotation layers ticked (ids)
        self._refreshing = False
        self.last_plan: np.ndarray | None = None
        self.last_rows: list[dict[str, Any]] | None = None
        self.last_error = ""

        # -- what to export
        self.slide = ComboBox(label="Slide", choices=self._slide_choices,
                              tooltip="Slide layer (opened by napari-slideseg) to cut "
                                      "patches from")
        self.source = ComboBox(
            label="Annotations", value="layers",
            choices=[("viewer layers", "layers"), ("a file", "file"),
                     ("none (images only)", "none")],
            tooltip="Where the regions come from: the annotation layers drawn over the "
                    "slide (as they are now, edits included), an annotation file, or none "
                    "(images only, no masks worth writing)")
        self.layers = Select(label="Layers", choices=self._layer_choices, tooltip=(
            "Annotation layers to export (Ctrl/Shift-click for several). Layers opened "
            "from annotation files are ticked by default; tick drawn Shapes layers to add "
            "them (their name is the class)."))
        self.annotation_file = FileEdit(
            label="File", mode="r", nullable=True, filter="*.xml *.geojson *.json",
            tooltip="Annotation file: Aperio ImageScope XML, ASAP XML or QuPath GeoJSON")
        self.class_from = ComboBox(
            label="Class from", value="layer", choices=["layer", "text", "classification"],
            tooltip="A region's class: its layer's name, its text (SlideSeg's rule), or "
                    "its GeoJSON classification")
        self.key = FileEdit(label="Key file", mode="r", nullable=True,
                            filter="*.json *.tsv",
                            tooltip="Optional annotation key (class -> mask value, colour), "
                                    ".json or .tsv. Default: the key.json of a previous "
                                    "export in the output folder, else one made from the "
                                    "classes found (sorted by name, values 1, 2, ...)")
        self.out = FileEdit(label="Output", mode="d", nullable=True,
                            tooltip="Output folder: images/, masks/, manifest.csv, key.json "
                                    "and export.json. Patches already there are kept, so "
                                    "exporting again resumes")
        # -- the grid
        self.size = SpinBox(label="Patch size", value=256, min=8, max=16384, step=32,
                            tooltip="Patch side in output pixels")
        self.overlap = SpinBox(label="Overlap", value=0, min=0, max=16383,
                               tooltip="Overlap of neighbouring patches in output pixels; "
                                       "the grid's stride is size - overlap")
        self.scale_by = ComboBox(
            label="Scale", value="level",
            choices=[("level", "level"), ("µm/px", "mpp"), ("magnification", "magnification")],
            tooltip="Output pixel size: a level of the slide's pyramid as stored, a "
                    "target pixel size, or a target magnification (both read from the "
                    "nearest finer level and resized when no level has them)")
        self.level = ComboBox(label="Level", choices=self._level_choices,
                              tooltip="Pyramid level to read, with its pixel size (the Slide "
                                      "info dock lists the levels' sizes)")
        self.mpp = FloatSpinBox(label="Target µm/px", value=0.5, min=0.01, max=1000.0,
                                step=0.05, tooltip="Micrometres per output pixel; not finer "
                                                   "than the slide's own")
        self.mpp.native.setDecimals(4)
        self.magnification = FloatSpinBox(label="Magnification", value=10.0, min=0.1,
                                          max=200.0, step=1.0,
                                          tooltip="Target magnification (e.g. 10 for "
                                                  "10x), relative to the scan's objective "
                                                  "power; not above it")
        self.region = ComboBox(
            label="Region", value="whole slide", choices=list(REGIONS),
            tooltip="Where the grid lies: the whole slide; the annotated regions' "
                    "bounding boxes; the part of the slide the canvas shows now; or the "
                    "first rectangle drawn in a Shapes layer. The grid starts at the "
                    "region's top-left corner")
        self.rectangle = ComboBox(label="Rectangle", choices=self._rectangle_choices,
                                  tooltip="Shapes layer whose first rectangle is the region")
        self.edge = ComboBox(label="Edges", value="skip", choices=["skip", "pad"],
                             tooltip="Patches crossing the slide's (or region's) edge: left "
                                     "out, or kept and padded with the slide's background "
                                     "(mask 0)")
        # -- which patches
        self.annotated_only = CheckBox(label="Annotated only", value=True,
                                       tooltip="Keep only patches with at least one "
                                               "labelled pixel")
        self.min_fraction = FloatSpinBox(label="Min fraction", value=0.0, min=0.0, max=1.0,
                                         step=0.05, tooltip="Keep only patches whose pixels "
                                         "of the classes below make at least this fraction")
        self.classes = Select(label="Classes", choices=self._class_choices,
                              tooltip="Classes 'Min fraction' (and the ratio) count; none "
                                      "selected counts every class of the key")
        self.min_tissue = FloatSpinBox(label="Min tissue", value=0.0, min=0.0, max=1.0,
                                       step=0.05, tooltip="Keep only patches whose tissue "
                                       "fraction (found on the slide's overview) is at least "
                                       "this")
        self.use_ratio = CheckBox(label="Unannotated", value=False,
                                  tooltip="SlideSeg's rule: every annotated patch plus "
                                          "'Ratio' times as many unannotated ones, drawn at "
                                          "random (instead of 'Annotated only')")
        self.ratio = FloatSpinBox(label="Ratio", value=1.0, min=0.0, max=100.0, step=0.5,
                                  tooltip="Unannotated patches per annotated patch")
        self.seed = SpinBox(label="Seed", value=0, min=0, max=99999,
                            tooltip="Random seed of the unannotated draw (same seed, same "
                                    "patches)")
        # -- files
        self.image_format = ComboBox(label="Image format", value="jpg",
                                     choices=["jpg", "png", "tif"],
                                     tooltip="Image patch files: JPEG (lossy), PNG or TIFF")
        self.quality = SpinBox(label="JPEG quality", value=90, min=0, max=100,
                               tooltip="JPEG quality, 0-100")
        self.png_compression = SpinBox(label="PNG level", value=1, min=0, max=9,
                                       tooltip="PNG compression level, 0-9, for images and "
                                               "masks (higher: smaller, slower)")
        self.mask_format = ComboBox(label="Mask format", value="png", choices=["png", "tif"],
                                    tooltip="Mask files, always lossless: 8-bit (16-bit "
                                            "with more than 255 classes)")
        self.dataset = ComboBox(label="Dataset", value="files", choices=["files", "zarr"],
                                tooltip="files: an image and a mask file per patch; zarr: "
                                        "one chunked dataset, OUT/patches.zarr (images and "
                                        "masks lossless, a patch per chunk), instead of the "
                                        "files")
        self.workers = SpinBox(label="Workers", value=0, min=0, max=256,
                               tooltip="Threads reading and writing patches; 0 uses every "
                                       "CPU")
        # -- actions
        self.preview = PushButton(text="Preview grid",
                                  tooltip="Plan the patches with these settings and show "
                                          f"them as the '{GRID_LAYER}' layer (nothing is "
                                          "written)")
        self.show_mask = PushButton(text="Show mask",
                                    tooltip="Add the label mask the export fills, over the "
                                            "whole slide, as a Labels layer (computed as "
                                            "you look)")
        self.run = PushButton(text="Export", tooltip="Write the patches, masks and "
                                                     "manifest to the output folder")
        self.cancel = PushButton(text="Cancel", enabled=False,
                                 tooltip="Stop after the patches being written; what is "
                                         "written stays valid, and exporting again resumes")
        self.count = Label(value="", tooltip="Patches the last preview planned")
        self.bar = ProgressBar(value=0, min=0, max=1, label="Progress", visible=False,
                               tooltip="Patches checked of the grid")
        self.status = Label(value="", tooltip="Result of the last export")
        for label in (self.count, self.status):
            label.native.setWordWrap(True)
            label.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
            label.native.setSizePolicy(QSizePolicy.Policy.Expanding,
                                       QSizePolicy.Policy.Preferred)
        for select in (self.layers, self.classes):
            select.native.setMaximumHeight(72)
        for spin in (self.size, self.overlap, self.workers, self.min_fraction,
                     self.min_tissue, self.ratio, self.seed, self.quality,
                     self.png_compression, self.mpp, self.magnification):
            spin.native.setMaximumWidth(88)  # the dock's width follows their size hints
        for combo in (self.slide, self.source, self.class_from, self.scale_by, self.level,
                      self.region, self.rectangle, self.edge, self.image_format,
                      self.mask_format, self.dataset):
            combo.native.setSizeAdjustPolicy(
                combo.native.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.native.setMinimumContentsLength(4)
        self.use_ratio.native.setText("")  # the row's label says it
        for edit in (self.annotation_file, self.key, self.out):
            edit.choose_btn.text = "..."
            edit.choose_btn.tooltip = "Browse"
        super().__init__(widgets=[
            self.slide, self.source, self.layers, self.annotation_file, self.class_from,
            self.key, self.out,
            row("Patch size", self.size, "overlap", self.overlap, stretch=True),
            row("Scale", self.scale_by, self.level, self.mpp, self.magnification),
            row("Region", self.region, self.rectangle),
            row("Edges", self.edge, "workers", self.workers),
            self.annotated_only,
            row("Min fraction", self.min_fraction, stretch=True), self.classes,
            row("Min tissue", self.min_tissue, stretch=True),
            row("Unannotated", self.use_ratio, "ratio", self.ratio, "seed", self.seed),
            row("Images", self.image_format, "quality", self.quality),
            row("Masks", self.mask_format, "PNG level", self.png_compression),
            row("Dataset", self.dataset, stretch=True),
            row("", self.preview, self.show_mask), self.count,
            row("", self.run, self.cancel), self.bar, self.status])
        align_labels(self)

        self.slide.changed.connect(self._on_slide)
        self.layers.changed.connect(self._on_layers_ticked)
        for widget in (self.source, self.annotation_file, self.class_from, self.key,
                       self.out):
            widget.changed.connect(self._on_annotations)
        for widget in (self.source, self.scale_by, self.region, self.image_format,
                       self.mask_format, self.dataset, self.use_ratio,
                       self.annotated_only):
            widget.changed.connect(self._on_form)
        # annotated-only and a ratio of unannotated patches exclude each other
        self.annotated_only.changed.connect(
            lambda on: on and setattr(self.use_ratio, "value", False))
        self.use_ratio.changed.connect(
            lambda on: on and setattr(self.annotated_only, "value", False))
        self.preview.changed.connect(self._on_preview)
        self.show_mask.changed.connect(self._on_show_mask)
        self.run.changed.connect(self._on_export)
        self.cancel.changed.connect(self._on_cancel)
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self.native.destroyed.connect(lambda *_: self._cancel.set())
        self._on_layers_changed()
        self._on_slide()
        self._on_form()

    # -- choices ----------------------------------------------------------------------
    def _slide_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return slide_choices(self.viewer)

    def _rectangle_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(la.name, la) for la in self.viewer.layers if la._type_string == "shapes"]

    def _layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        layer = self.slide.value if hasattr(self, "slide") else None
        found = annotation_layers(self.viewer, layer) if layer is not None else []
        return [(la.name, la) for la in found]

    def _level_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        return level_choices(self.slide.value if hasattr(self, "slide") else None)

    def _class_choices(self, _widget: Any = None) -> list[str]:
        return list(self._class_names)

    def reset_choices(self, *_: Any) -> None:
        """Refresh every choice from the viewer (napari calls this on layer events)."""
        if not hasattr(self, "_chosen"):  # napari may call it before __init__ is done
            super().reset_choices()
            return
        self._refreshing = True  # a renamed layer drops out of the list for a moment
        try:
            super().reset_choices()
        finally:
            self._refreshing = False
        self._update_layers()  # ticks what was ticked, by layer

    def _on_layers_ticked(self, _value: Any = None) -> None:
        if not self._refreshing:
            self._chosen = {id(la) for la in self.layers.value}
            self._on_annotations()

    def _on_layers_changed(self, _event: Any = None) -> None:
        before = self.slide.value
        self.slide.reset_choices()
        self.rectangle.reset_choices()
        drawn = [la for la in self.viewer.layers if la._type_string == "shapes"
                 and not _from_file(la)]
        if drawn and (self.rectangle.value is None or _from_file(self.rectangle.value)):
            self.rectangle.value = drawn[-1]
        if self.slide.value is before:  # the slide is the same: its layers may not be
            self._update_layers()

    def _on_slide(self, _value: Any = None) -> None:
        layer = self.slide.value
        slide = _slide_of(layer) if layer is not None else None
        if slide is not None:
            if slide.mpp:  # never finer than the slide: round the default up
                self.mpp.value = float(np.ceil(round(slide.mpp[0] * 1e4, 6)) / 1e4)
            if slide.objective_power:
                self.magnification.value = float(slide.objective_power)
        self.level.reset_choices()
        if len(self.level.choices):
            self.level.value = 0
        self._known.clear()
        self._chosen.clear()
        self._update_layers()

    def _update_layers(self) -> None:
        """Offer the slide's annotation layers; tick the new ones from annotation files."""
        layer = self.slide.value
        found = annotation_layers(self.viewer, layer) if layer is not None else []
        self._chosen |= {id(la) for la in found if id(la) not in self._known and _from_file(la)}
        self._known = {id(la) for la in found}
        self._chosen &= self._known
        self._refreshing = True
        try:
            self.layers.reset_choices()
            self.layers.value = [la for la in found if id(la) in self._chosen]
        finally:
            self._refreshing = False
        self._on_annotations()

    def _on_annotations(self, _value: Any = None) -> None:
        """Offer the classes of the key the export would use."""
        if self._refreshing:
            return
        # reading every region of large layers again on each layer event is slow: only
        # when what the key depends on changed (the export always makes its key afresh)
        state = (self.source.value, tuple((id(la), la.name) for la in self.layers.value),
                 self.annotation_file.value, self.class_from.value, self.key.value,
                 self.out.value)
        if state == self._class_state:
            return
        self._class_state = state
        try:
            names = list(self._key(self._annotations()).values)
        except Exception:  # an unreadable file or key: said when previewing or exporting
            names = []
        chosen = [c for c in self.classes.value if c in names]
        self._class_names = names
        self._refreshing = True
        try:
            self.classes.reset_choices()
            self.classes.value = chosen
        finally:
            self._refreshing = False

    def _on_form(self, _value: Any = None) -> None:
        """Show the fields the current choices use."""
        self.layers.visible = self.source.value == "layers"
        self.annotation_file.visible = self.source.value == "file"
        by = self.scale_by.value
        self.level.visible, self.mpp.visible = by == "level", by == "mpp"
        self.magnification.visible = by == "magnification"
        self.rectangle.visible = self.region.value == "drawn rectangle"
        files = self.dataset.value == "files"
        self.image_format.enabled = self.mask_format.enabled = files
        self.quality.enabled = files and self.image_format.value == "jpg"
        self.png_compression.enabled = files and "png" in (self.image_format.value,
                                                           self.mask_format.value)
        self.ratio.enabled = self.seed.enabled = self.use_ratio.value

    # -- parameters -------------------------------------------------------------------
    def _slide_layer(self) -> Any:
        return require_slide(self.viewer, self.slide.value)

    def _annotations(self) -> Any:
        """The AnnotationSet (or file path) chosen; None for images only."""
        if self.source.value == "file":
            if self.annotation_file.value is None:
                raise ValueError("choose an annotation file, or take the viewer's layers.")
            return self.annotation_file.value
        if self.source.value == "none" or self.slide.value is None:
            return None
        return slide_annotations(list(self.layers.value))

    def _key(self, annotations: Any) -> Any:
        from ..core.annotations import read_annotations

        if annotations is not None and not hasattr(annotations, "regions"):
            annotations = read_annotations(annotations)
        return resolve_key(self.key.value, annotations, self.class_from.value,
                           self.out.value)

    def _region(self) -> Any:
        from ..core.errors import SlideSegError

        kind = REGIONS[self.region.value]
        if kind == "view":
            return view_region(self.viewer, self._slide_layer())
        if kind == "rectangle":
            if self.rectangle.value is None:
                raise SlideSegError("no Shapes layer to take the rectangle from: add one "
                                    "and draw a rectangle.")
            return rectangle_region(self.rectangle.value, self._slide_layer())
        return None if kind == "slide" else kind

    def export_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`napari_slideseg.export_patches` set here.

        ``slide``, ``annotations`` and ``out``, and the ``progress`` and ``cancel`` the
        widget passes itself, are not included.
        """
        return self._collect()[3]

    def _collect(self) -> tuple[Any, Any, Any, dict[str, Any]]:
        """(Slide, AnnotationSet or None, output folder or None, export keywords)."""
        from ..core.annotations import read_annotations

        slide = _slide_of(self._slide_layer())
        annotations = self._annotations()
        if annotations is not None and not hasattr(annotations, "regions"):
            annotations = read_annotations(annotations)
        by = self.scale_by.value
        ratio = self.use_ratio.value
        kwargs = {
            "size": int(self.size.value),
            "level": int(self.level.value) if by == "level" and self.level.value is not None
            else None,
            "mpp": float(self.mpp.value) if by == "mpp" else None,
            "magnification": float(self.magnification.value) if by == "magnification"
            else None,
            "overlap": int(self.overlap.value),
            "region": self._region(),
            "image_format": self.image_format.value,
            "quality": int(self.quality.value),
            "png_compression": int(self.png_compression.value),
            "mask_format": self.mask_format.value,
            "dataset": self.dataset.value,
            "key": self._key(annotations),
            "class_from": self.class_from.value,
            "annotated_only": bool(self.annotated_only.value) and not ratio,
            "min_fraction": float(self.min_fraction.value),
            "classes": list(self.classes.value) or None,
            "min_tissue": float(self.min_tissue.value),
            "unannotated_ratio": float(self.ratio.value) if ratio else None,
            "seed": int(self.seed.value),
            "edge": self.edge.value,
            "workers": int(self.workers.value) or None,
        }
        return slide, annotations, self.out.value, kwargs

    def plan_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`napari_slideseg.plan_patches` set here."""
        return self._plan_only(self.export_kwargs())

    @staticmethod
    def _plan_only(kwargs: dict[str, Any]) -> dict[str, Any]:
        from ..core.patches import plan_patches

        accepted = inspect.signature(plan_patches).parameters
        return {k: v for k, v in kwargs.items() if k in accepted}

    # -- running ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a preview or an export is under way."""
        return self._busy

    def _set_busy(self, busy: bool, exporting: bool = False) -> None:
        self._busy = busy
        for button in (self.preview, self.show_mask, self.run):
            button.enabled = not busy
        self.cancel.enabled = busy and exporting
        if exporting:
            self.bar.visible = True

    def _start(self, func: Any, done: Any, label: Label, exporting: bool = False) -> None:
        """Run ``func`` in a thread worker; ``done`` gets its result, ``label`` its error."""
        from napari.qt.threading import create_worker

        self.last_error = ""
        self._error_label = label
        worker = create_worker(func, _start_thread=False, _connect={
            "returned": done, "errored": self._on_error, "finished": self._on_finished})
        self._worker = worker
        self._set_busy(True, exporting)
        worker.start()

    def _fail(self, message: str, where: Label | None = None) -> None:
        from napari.utils.notifications import show_error

        self.last_error = message
        (where or self.status).value = f"Error: {message}"
        show_error(f"Export patches: {message}")

    def _on_error(self, exc: BaseException) -> None:
        self._fail(error_message(exc), self._error_label)

    def _on_finished(self) -> None:
        self._worker = None
        self._set_busy(False)

    def _on_progress(self, done: int, total: int) -> None:
        self.bar.max = max(total, 1)
        self.bar.value = min(done, max(total, 1))

    def _on_preview(self, _value: Any = None) -> None:
        from ..core.patches import plan_patches

        try:
            layer = self._slide_layer()
            slide, annotations, _, kwargs = self._collect()
            kwargs = self._plan_only(kwargs)
        except Exception as exc:  # a bad file, an empty view...: say so, no traceback
            self._fail(error_message(exc), self.count)
            return
        self.count.value = "Planning the grid..."
        started = time.perf_counter()

        def done(plan: np.ndarray) -> None:
            self.show_grid(plan, layer)
            seconds = time.perf_counter() - started
            self.count.value = (f"{len(plan)} patch{'es' if len(plan) != 1 else ''} "
                                f"planned ({seconds:.1f} s).")

        self._start(lambda: plan_patches(slide, annotations, **kwargs), done, self.count)

    def show_grid(self, plan: np.ndarray, slide_layer: Any) -> Any:
        """Show planned patches (level-0 x, y, w, h, level rows) as the grid layer."""
        from .._layers import patch_grid_data

        self.last_plan = plan
        data, kwargs, _ = patch_grid_data(plan, _slide_of(slide_layer), name=GRID_LAYER)
        old = self.viewer.layers[GRID_LAYER] if GRID_LAYER in self.viewer.layers else None
        if old is not None and old._type_string == "labels" and old.multiscale and \
                kwargs["multiscale"] and [d.shape for d in old.data] == [d.shape for d in data] \
                and np.allclose(old.scale, kwargs["scale"]):
            # the same slide: new data for the layer napari has set up already
            old.metadata = kwargs["metadata"]
            old.data = data
            return old
        if old is not None:
            self.viewer.layers.remove(old)
        return self.viewer.add_labels(data, **kwargs)

    def _on_show_mask(self, _value: Any = None) -> None:
        from .._layers import mask_labels_data
        from ..core.annotations import read_annotations

        try:
            layer = self._slide_layer()
            annotations = self._annotations()
            if annotations is None:
                raise ValueError("no annotations chosen: there is no mask to show.")
            if not hasattr(annotations, "regions"):
                annotations = read_annotations(annotations)
            key = self._key(annotations)
        except Exception as exc:
            self._fail(error_message(exc))
            return
        name = f"{layer.name} mask"
        self.status.value = "Indexing the regions..."

        def done(result: Any) -> None:
            data, kwargs, _ = result
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            self.viewer.add_labels(data, **kwargs)
            classes = ", ".join(f"{c}={v}" for c, v in sorted(key.values.items(),
                                                               key=lambda t: t[1]))
            self.status.value = f"Mask shown: {classes or 'no classes'}."

        # indexing many regions takes a while; the mask itself is filled as napari shows it
        self._start(lambda: mask_labels_data(annotations, key, _slide_of(layer), name), done,
                    label=self.status)

    def _on_export(self, _value: Any = None) -> None:
        from ..core.patches import export_patches

        try:
            if self.out.value is None:
                raise ValueError("choose an output folder first.")
            slide, annotations, out, kwargs = self._collect()
        except Exception as exc:
            self._fail(error_message(exc))
            return
        self._cancel.clear()
        self.bar.max, self.bar.value = 1, 0
        self.status.value = "Exporting..."
        self._started = time.perf_counter()
        key = kwargs["key"]

        def work() -> list[dict[str, Any]]:
            return export_patches(_slide_argument(slide), annotations, out, **kwargs,
                                  progress=self._progress.changed.emit, cancel=self._cancel)

        def done(rows: list[dict[str, Any]]) -> None:
            self.last_rows = rows
            seconds = time.perf_counter() - self._started
            classes = ", ".join(f"{c}={v}" for c, v in
                                sorted(key.values.items(), key=lambda t: t[1]))
            what = "Cancelled: wrote" if self._cancel.is_set() else "Wrote"
            self.status.value = (f"{what} {len(rows)} patches in {seconds:.1f} s to {out}. "
                                 f"Classes: {classes or 'none'}.")

        self._start(work, done, self.status, exporting=True)

    def _on_cancel(self, _value: Any = None) -> None:
        self._cancel.set()
        self.cancel.enabled = False
        self.status.value = "Cancelling after the patches in flight..."
