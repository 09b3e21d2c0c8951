"""Measure dock: measure objects, explore them in a table and plots, classify, export.

The widget collects the inputs of :func:`napari_slideseg.measure` from the viewer: the
objects (a Labels layer, such as the "threshold" result, or annotation Shapes layers)
and the image layer whose pixels give the intensities and whose frame gives the
coordinates. The measurement runs in a thread worker with a progress bar and a cancel
button; the rows go into the objects layer's ``features`` (napari shows them under the
cursor) and into a table.

The table is a Qt model/view (:mod:`._object_table`): 100,000 rows build in a fraction
of a second and scroll freely; click a header to sort, type in the filter to keep rows
where a word appears or a condition holds (``area_um2 > 40``). Selecting rows centres
the view on the current object and rings the selected ones (the "selected objects"
Points layer, and the Labels layer's selected label); clicking an object in the viewer
selects its row. A histogram and a scatter plot (:mod:`._plots`) of chosen features
follow the filter and the selection. A per-class summary gives the count, total area,
area fraction of the tissue (a tissue layer, e.g. a threshold result) or of the objects,
and the density per mm².

Classification: give the selected objects a class by hand, then "Train & classify"
trains a random forest (:class:`~napari_slideseg.core.classify.ObjectClassifier`) on
them, reports its cross-validated accuracy and classifies the other objects; classes
are shown as the objects' colours (beyond 20,000 objects, or label values above 65,535
without numba, as a "<layer> classes" Labels layer over them) and kept in the ``class``
column (with ``class_source``: hand, annotation or classifier, and
``class_probability``). Models
save and load as files. Export writes the table (CSV, TSV, Parquet), the outlines with
their measurements (GeoJSON, read by QuPath) or an EcoTaxa archive.

Coordinates: measurements are in level-0 pixel (x, y) of the image layer chosen (of the
objects layer itself without one); ``_layers.labels_frame`` and
``_layers.level0_to_world`` go between that frame and napari's world.
"""

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
)
from qtpy.QtCore import (
    QItemSelection,
    QItemSelectionModel,
    QItemSelectionRange,
    QObject,
    Qt,
    Signal,
)
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QSizePolicy,
    QSplitter,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ._form import align_labels, error_message, level_choices, row
from ._object_table import ObjectFilterProxy, ObjectTableModel, filter_mask
from ._plots import HistogramPlot, ScatterPlot
from .slide_info import _slide_of
from .threshold import _as_image, _factors, _layer_frame, _micrometres

__all__ = ["ALL_SHAPES", "MARKER_LAYER", "MeasureInput", "MeasureWidget", "field_area_um2",
           "measure_input", "measure_layers", "measure_objects", "show_measurements",
           "tissue_area_um2"]

#: Name of the Points layer ringing the selected objects.
MARKER_LAYER = "selected objects"
#: The objects choice that measures every Shapes layer together.
ALL_SHAPES = "all Shapes layers"
#: Columns the dock adds for classes.
CLASS_COLUMNS = ("class", "class_source", "class_probability")
#: Feature groups offered for training (see ``_feature_set``).
FEATURE_SETS = ("shape and intensity", "shape", "intensity")
#: Selected objects ringed at most (the table may select more).
MAX_MARKERS = 2000
#: Selections of more runs of rows than this are drawn by the table model, not Qt's
#: selection model (whose cost grows with the square of the runs).
MAX_RUNS = 500
#: Objects coloured by class through their layer's colormap at most (more: a layer of
#: classes over them, see ``_layers.class_labels_data``).
DIRECT_LABELS = 20_000
#: Tissue masks are counted at their largest level with at most this many pixels.
TISSUE_PIXELS = 16_000_000
#: Modes of the active layer in which a click in the viewer picks an object.
PICK_MODES = ("pan_zoom", "select", "pick", "transform")


# -- inputs ----------------------------------------------------------------------------------


@dataclass
class MeasureInput:
    """What to measure, and where it lies.

    ``objects`` is a label array (level 0 of the Labels layer) or an AnnotationSet
    (level-0 pixel (x, y) of the reference layer). The reference frame ``scale``,
    ``translate`` (row, col) and ``units`` are those of the image layer chosen (of the
    objects layer without one): its level-0 pixel-corner point (x, y) is at world
    ``translate + ((y, x) - 1/2) * scale``. ``downsample`` and ``origin`` place the
    label pixels (or the level regions are rasterised at) on that frame.
    """

    kind: str  # "labels" or "shapes"
    layers: list[Any]
    objects: Any
    image: Any  # a Slide, an RGB uint8 array, or None
    downsample: float
    origin: tuple[float, float]
    mpp: tuple[float, float] | None  # µm per reference level-0 pixel (x, y)
    scale: tuple[float, float]
    translate: tuple[float, float]
    units: tuple[str, str]
    keys: list[tuple[int, int]] = field(default_factory=list)  # object k -> (layer, shape)
    classes: dict[int, str] | None = None
    regions: Any = None  # AnnotationSet of regions reported per object, or None
    field_px2: float | None = None  # area measured in, level-0 px²
    description: str = ""


def _check_image(layer: Any) -> None:
    from ..core.errors import SlideSegError

    if getattr(layer, "_type_string", "") != "image" or layer.ndim != 2:
        raise SlideSegError(f"{getattr(layer, 'name', layer)!r} is not a 2-D image layer "
                            "(RGB or one channel): choose another image, or none.")


def _rgb(pixels: Any, layer: Any) -> np.ndarray:
    """RGB uint8 of image layer pixels; one channel is repeated in R, G and B."""
    image = _as_image(pixels, layer)
    if image.ndim == 2:
        if image.dtype != np.uint8:
            lo, hi = (float(v) for v in layer.contrast_limits)
            image = np.clip((image.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-12))
                            + 0.5, 0, 255).astype(np.uint8)
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image)


def _image_level(layer: Any, downsample: float, origin: tuple[float, float],
                 shape: tuple[int, int] | None) -> tuple[np.ndarray, int]:
    """Pixels of a (non-slide) image layer on the grid of the labels: the level with
    their downsample, cropped to them (the whole level for shapes)."""
    from ..core.errors import SlideSegError

    levels = list(layer.data) if layer.multiscale else [layer.data]
    for k, data in enumerate(levels):
        fy, fx = _factors(layer, k)
        if not (np.isclose(fx, downsample, rtol=1e-6) and np.isclose(fy, downsample,
                                                                     rtol=1e-6)):
            continue
        if shape is None:
            return _rgb(np.asarray(data), layer), k
        c0, r0 = origin[0] / fx, origin[1] / fy
        if not (np.isclose(c0, round(c0), atol=1e-6) and np.isclose(r0, round(r0),
                                                                    atol=1e-6)):
            break
        c0, r0 = int(round(c0)), int(round(r0))
        h, w = shape
        lh, lw = data.shape[:2]
        if r0 < 0 or c0 < 0 or r0 + h > lh or c0 + w > lw:
            raise SlideSegError(f"the labels reach outside {layer.name!r}: measure without "
                                "an image, or choose the image they were made on.")
        return _rgb(np.asarray(data[r0:r0 + h, c0:c0 + w]), layer), k
    raise SlideSegError(f"the labels' pixels do not fall on the pixels of any level of "
                        f"{layer.name!r} (downsample {downsample:g}, origin "
                        f"{origin[0]:g}, {origin[1]:g}): measure without an image, or "
                        "choose the image they were made on.")


def _mpp(image_layer: Any, scale: tuple[float, float],
         units: tuple[str, str]) -> tuple[float, float] | None:
    slide = _slide_of(image_layer) if image_layer is not None else None
    if slide is not None:
        return (float(slide.mpp[0]), float(slide.mpp[1])) if slide.mpp else None
    if _micrometres(units[0]) and _micrometres(units[1]):
        return (float(scale[1]), float(scale[0]))
    return None


def measure_input(objects: Any, image: Any = None, *, level: int = 0,
                  regions: Any = None) -> MeasureInput:
    """Collect what :func:`napari_slideseg.measure` needs from napari layers.

    Parameters
    ----------
    objects : Labels layer, Shapes layer, or list of Shapes layers
        The objects: each label value of a 2-D Labels layer (level 0 of a multiscale
        one), or each polygon, rectangle and ellipse of the Shapes layers.
    image : image layer, optional
        A slide layer opened by napari-slideseg, or any 2-D image layer (RGB or one
        channel) the objects lie on: the intensities and the level-0 frame of the
        coordinates. None: shapes only, in the objects layer's frame.
    level : int
        For Shapes over a slide: the pyramid level the regions are rasterised at (and
        the slide read at). Ignored for Labels, whose pixels set the resolution.
    regions : Shapes layer or list of Shapes layers, optional
        Annotation regions: each object gets the one containing its centroid
        (``region`` and ``region_class`` columns; the class is the layer's name).
    """
    from .._layers import labels_frame, shapes_objects
    from ..core.errors import SlideSegError

    layers = list(objects) if isinstance(objects, list | tuple) else [objects]
    if not layers or any(la is None for la in layers):
        raise SlideSegError("choose the objects to measure: a Labels layer or Shapes "
                            "layers.")
    kinds = {la._type_string for la in layers}
    if kinds == {"labels"} and len(layers) == 1:
        kind = "labels"
    elif kinds == {"shapes"}:
        kind = "shapes"
    else:
        raise SlideSegError("objects are one Labels layer, or Shapes layers.")
    if any(la.ndim != 2 for la in layers):
        raise SlideSegError("only 2-D layers can be measured.")
    slide = None
    if image is not None:
        _check_image(image)
        scale, translate, units = _layer_frame(image)
        slide = _slide_of(image)
    elif kind == "labels":
        scale, translate, units = _layer_frame(layers[0])
    else:  # shapes alone: their data are level-0 (row, col) pixel-corner coordinates
        scale, translate, units = _layer_frame(layers[0])
        translate = tuple(t + s / 2 for t, s in zip(translate, scale, strict=True))
    mpp = _mpp(image, scale, units)
    name = image.name if image is not None else "no image"
    region_set = None
    if regions is not None:
        region_layers = list(regions) if isinstance(regions, list | tuple) else [regions]
        region_set, _, _ = shapes_objects([la.as_layer_data_tuple()[:2]
                                           for la in region_layers], scale, translate)

    if kind == "labels":
        layer = layers[0]
        data = layer.data[0] if layer.multiscale else layer.data
        if np.dtype(data.dtype).kind not in "iub":
            raise SlideSegError(f"{layer.name!r} holds {data.dtype} values, not labels.")
        lscale, ltranslate, _ = _layer_frame(layer)
        try:
            ds, origin = labels_frame(lscale, ltranslate, scale, translate)
        except ValueError as exc:
            raise SlideSegError(f"{layer.name!r} over {name!r}: {exc}") from None
        h, w = (int(v) for v in data.shape)
        pixels: Any = slide
        if image is not None and slide is None:
            pixels, _ = _image_level(image, ds, origin, (h, w))
        return MeasureInput("labels", layers, data, pixels, ds, origin, mpp, scale,
                            translate, units, regions=region_set, field_px2=h * w * ds * ds,
                            description=f"{layer.name!r} ({w} x {h} px at "
                                        f"{ds:.4g}x) over {name!r}")

    annotations, keys, classes = shapes_objects(
        [la.as_layer_data_tuple()[:2] for la in layers], scale, translate)
    if not keys:
        raise SlideSegError("the Shapes layers hold no polygon, rectangle or ellipse.")
    ds = 1.0
    pixels = None
    field_px2 = None
    if slide is not None:
        if not 0 <= level < slide.level_count:
            raise SlideSegError(f"the slide has no level {level}.")
        ds = float(slide.level_downsamples[level])
        pixels = slide
        field_px2 = float(slide.dimensions[0]) * float(slide.dimensions[1])
    elif image is not None:
        levels = len(image.data) if image.multiscale else 1
        k = min(max(level, 0), levels - 1)
        ds = _factors(image, k)[1]
        pixels, _ = _image_level(image, ds, (0.0, 0.0), None)
        field_px2 = pixels.shape[0] * pixels.shape[1] * ds * ds
    names = ", ".join(repr(la.name) for la in layers)
    return MeasureInput("shapes", layers, annotations, pixels, ds, (0.0, 0.0), mpp, scale,
                        translate, units, keys=keys, classes=classes, regions=region_set,
                        field_px2=field_px2,
                        description=f"{len(keys)} shapes of {names} at {ds:.4g}x over "
                                    f"{name!r}")


def measure_objects(inp: MeasureInput, *, intensity: bool = True, stains: bool = True,
                    progress: Any = None) -> Any:
    """:func:`napari_slideseg.measure` of an input: one row per object (a DataFrame)."""
    from ..core.measure import measure

    return measure(inp.objects, inp.image, mpp=inp.mpp, downsample=inp.downsample,
                   origin=inp.origin, regions=inp.regions,
                   classes=inp.classes if inp.kind == "shapes" else None,
                   intensity=intensity and inp.image is not None, stains=stains,
                   progress=progress)


def _features_frame(df: Any) -> Any:
    """A measurement table as Labels features: the label in napari's ``index`` column."""
    out = df.copy()
    out.insert(0, "index", df["label"].to_numpy())
    return out


def show_measurements(inp: MeasureInput, df: Any) -> None:
    """Put the rows of ``df`` into the objects layers' ``features``.

    A Labels layer gets the table with an ``index`` column (the label, as napari
    matches features to labels); each Shapes layer gets its shapes' rows added to its
    features (lines and paths get empty values).
    """
    import pandas as pd

    if inp.kind == "labels":
        inp.layers[0].features = _features_frame(df)
        return
    labels = df["label"].to_numpy()
    for n, layer in enumerate(inp.layers):
        features = layer.features.copy() if len(layer.features.columns) else \
            pd.DataFrame(index=range(len(layer.data)))
        features = features.reset_index(drop=True)
        rows = [k for k, v in enumerate(labels.tolist()) if inp.keys[int(v) - 1][0] == n]
        shapes = [inp.keys[int(labels[k]) - 1][1] for k in rows]
        for column in df.columns:
            values = df[column].to_numpy()[rows]
            numeric = pd.api.types.is_numeric_dtype(df[column]) and \
                not pd.api.types.is_bool_dtype(df[column])
            full = np.full(len(features), np.nan) if numeric else \
                np.full(len(features), None, object)
            if column in features.columns and not numeric:
                full[:] = features[column].to_numpy(object)
            full[shapes] = values
            features[column] = full
        layer.features = features


def measure_layers(objects: Any, image: Any = None, *, level: int = 0, regions: Any = None,
                   intensity: bool = True, stains: bool = True) -> Any:
    """Measure layers and put the rows in their features (the dock's Run, synchronously).

    See :func:`measure_input` for the arguments. Returns the DataFrame.
    """
    inp = measure_input(objects, image, level=level, regions=regions)
    df = measure_objects(inp, intensity=intensity, stains=stains)
    show_measurements(inp, df)
    return df


def _pixel_um2(inp: MeasureInput) -> float | None:
    """µm² per world unit² (world = the reference's scaled level-0 pixels)."""
    if inp.mpp is None:
        return None
    sy, sx = inp.scale
    return inp.mpp[0] * inp.mpp[1] / (sx * sy)


def tissue_area_um2(layer: Any, inp: MeasureInput) -> float | None:
    """Area of a tissue (or any reference) layer in µm², in the frame of ``inp``.

    A Labels layer: its non-zero pixels, counted at its largest level with at most
    :data:`TISSUE_PIXELS` pixels. A Shapes layer: the area of its polygons, rectangles
    and ellipses (overlaps counted twice). None without a pixel size.
    """
    from .._layers import shapes_objects

    per_world = _pixel_um2(inp)
    if per_world is None or layer is None:
        return None
    if layer._type_string == "labels":
        k = 0
        if layer.multiscale:
            sizes = [int(np.prod(d.shape[-2:])) for d in layer.data]
            fitting = [i for i, s in enumerate(sizes) if s <= TISSUE_PIXELS]
            k = fitting[0] if fitting else len(sizes) - 1
            data = layer.data[k]
        else:
            data = layer.data
        fy, fx = (np.asarray(layer.downsample_factors[k], float)[-2:] if layer.multiscale
                  else (1.0, 1.0))
        sy, sx = np.asarray(layer.scale, float)[-2:]
        count = int(np.count_nonzero(np.asarray(data)))
        return count * (sy * fy) * (sx * fx) * per_world
    if layer._type_string == "shapes":
        annotations, _, _ = shapes_objects([layer.as_layer_data_tuple()[:2]], inp.scale,
                                           inp.translate)
        px2 = sum(r.area() for _, r in annotations.regions())
        sy, sx = inp.scale
        return px2 * sy * sx * per_world
    return None


def field_area_um2(inp: MeasureInput) -> float | None:
    """Area of the field measured (the labels' extent, or the slide's) in µm²."""
    if inp.mpp is None or inp.field_px2 is None:
        return None
    return inp.field_px2 * inp.mpp[0] * inp.mpp[1]


# -- the dock ----------------------------------------------------------------------------


def _camera(viewer: Any) -> Any:
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera






class _Cancelled(Exception):
    """Raised in the worker by the progress callback after Cancel."""


class _Progress(QObject):
    """Carries progress from the worker thread to the widget (queued signal)."""

    changed = Signal(int, int)


def _feature_set(df: Any, which: str) -> list[str]:
    from ..core.classify import default_features
    from ..core.measure import INTENSITY_CHANNELS

    features = default_features(df)
    intensity = [f for f in features if f.split("_")[0] in INTENSITY_CHANNELS]
    if which == "shape":
        return [f for f in features if f not in intensity]
    if which == "intensity":
        return intensity
    return features


def _direct_colours(labels: np.ndarray) -> bool:
    """Whether to colour objects through their layer's colormap: napari maps direct
    colours of labels above 65,535 only with numba installed, and builds a colormap at
    about 20 µs a label; past :data:`DIRECT_LABELS` objects a classes layer is quicker."""
    import importlib.util

    if len(labels) > DIRECT_LABELS:
        return False
    top = int(np.abs(labels).max(initial=0))
    return top <= 65_535 or importlib.util.find_spec("numba") is not None


class MeasureWidget(Container):
    """Measure objects; explore, classify and export them."""

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        self.inp: MeasureInput | None = None
        self.table: Any = None  # the DataFrame shown
        self.classifier: Any = None
        self.last_error = ""
        self.last_seconds: dict[str, float] = {}
        self._worker: Any = None
        self._busy = False
        self._closed = False
        self._cancel = threading.Event()
        self._progress = _Progress()
        self._progress.changed.connect(self._on_progress)
        self._selected = np.zeros(0, np.int64)  # DataFrame rows selected
        self._current: int | None = None
        self._syncing = False  # the view's selection is being rebuilt from _selected
        self._plotting = True  # plots follow the feature choices
        self._class_colors: dict[str, tuple[float, float, float, float]] = {}
        self._original_colors: Any = None
        self._row_of_label: Any = None
        self._tissue_cache: tuple[Any, float | None] | None = None

        # -- inputs
        self.objects = ComboBox(label="Objects", choices=self._object_choices,
                                tooltip="What to measure: each label of a Labels layer "
                                        "(e.g. the threshold result), or each polygon, "
                                        "rectangle and ellipse of a Shapes layer (or of "
                                        "all of them)")
        self.image = ComboBox(label="Image", choices=self._image_choices,
                              tooltip="The image the objects lie on: intensities (RGB and "
                                      "stains) are measured in it, and positions are its "
                                      "level-0 pixels. 'none': shapes only")
        self.level = ComboBox(label="Level", choices=self._level_choices,
                              tooltip="Shapes over a slide: the pyramid level regions are "
                                      "measured at (0: full resolution). Labels are "
                                      "measured at their own resolution")
        self.tissue = ComboBox(label="Tissue", choices=self._tissue_choices,
                               tooltip="Optional tissue mask (Labels: non-zero pixels; or "
                                       "Shapes): the summary gives area fractions and "
                                       "densities per mm² of it. None: fractions of the "
                                       "objects' area, densities per mm² of the field")
        self.regions = ComboBox(label="Regions", choices=self._region_choices,
                                tooltip="Optional annotation regions: each object gets the "
                                        "region containing its centroid and that region's "
                                        "class (the layer's name) in the columns region, "
                                        "region_class")
        self.intensity = CheckBox(text="Intensities", value=True,
                                  tooltip="Measure mean/std/min/max of R, G, B in the image")
        self.stains = CheckBox(text="Stains", value=True,
                               tooltip="Also haematoxylin, eosin and DAB by colour "
                                       "deconvolution")
        self.run = PushButton(text="Measure", tooltip="Measure every object (in the "
                                                      "background); the rows go to the "
                                                      "layer's features and the table")
        self.cancel = PushButton(text="Cancel", enabled=False,
                                 tooltip="Stop the measurement under way")
        self.bar = ProgressBar(value=0, min=0, max=0, visible=False,
                               tooltip="Windows of the labels measured")
        self.status = Label(value="", tooltip="Objects measured, and how long it took")
        self.filter = LineEdit(label="Filter", value="",
                               tooltip="Keep rows where this text appears (class, region, "
                                       "label), or a condition on columns: area_um2 > 40, "
                                       "class == 'tumour' and circularity > 0.8")
        self.shown = Label(value="", tooltip="Rows shown by the filter / all rows")

        # -- plots
        self.hist_feature = ComboBox(choices=self._feature_choices,
                                     tooltip="Feature of the histogram")
        self.x_feature = ComboBox(choices=self._feature_choices,
                                  tooltip="Feature along x of the scatter plot")
        self.y_feature = ComboBox(choices=self._feature_choices,
                                  tooltip="Feature along y of the scatter plot")

        # -- classes
        self.class_name = LineEdit(value="positive",
                                   tooltip="Class to give the selected objects (a new name "
                                           "or one of the summary's; click a summary row "
                                           "to take its name)")
        self.assign = PushButton(text="Assign to selected",
                                 tooltip="Give the selected rows/objects this class by "
                                         "hand: training examples for the classifier")
        self.unassign = PushButton(text="Clear",
                                   tooltip="Remove the class of the selected objects")
        self.features = ComboBox(value=FEATURE_SETS[0], choices=list(FEATURE_SETS),
                                 tooltip="Features the random forest learns from: size, "
                                         "shape factors and intensities; positions are "
                                         "never used")
        self.train = PushButton(text="Train && classify",
                                tooltip="Train a random forest on the objects classed by "
                                        "hand (or by their annotation layer), report its "
                                        "5-fold cross-validated accuracy and classify "
                                        "every other object")
        self.show_classes = CheckBox(text="Colour by class", value=True,
                                     tooltip="Draw objects in their class's colour "
                                             "(unclassified: light grey)")
        self.model_file = FileEdit(label="Model", mode="w", nullable=True,
                                   filter="*.joblib",
                                   tooltip="Classifier file (.joblib). Load only model "
                                           "files from trusted sources: loading runs code "
                                           "stored in the file")
        self.save_model = PushButton(text="Save model",
                                     tooltip="Save the trained classifier to the file")
        self.load_model = PushButton(text="Load && classify",
                                     tooltip="Load a classifier from the file and classify "
                                             "every object not classed by hand")
        self.class_status = Label(value="", tooltip="Training result: cross-validated "
                                                    "accuracy and objects classified")

        # -- export
        self.out = FileEdit(label="File", mode="w", nullable=True,
                            filter="*.csv *.tsv *.parquet *.geojson *.zip",
                            tooltip="Output by suffix: .csv, .tsv, .parquet (the table); "
                                    ".geojson (outlines with their measurements, as QuPath "
                                    "reads them); .zip (an EcoTaxa archive: an image of "
                                    "each object and a TSV of its features)")
        self.only_shown = CheckBox(text="Only rows the filter shows", value=False,
                                   tooltip="Export the filtered rows only")
        self.contour = CheckBox(text="Outlines on EcoTaxa images", value=False,
                                tooltip="Draw each object's outline on its EcoTaxa image")
        self.export = PushButton(text="Export", tooltip="Write the file (in the background)")
        self.export_status = Label(value="", tooltip="The last export")

        for label in (self.status, self.class_status, self.export_status):
            label.native.setWordWrap(True)
            label.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
            label.native.setSizePolicy(QSizePolicy.Policy.Expanding,
                                       QSizePolicy.Policy.Preferred)
        for combo in (self.objects, self.image, self.level, self.tissue, self.regions,
                      self.hist_feature,
                      self.x_feature, self.y_feature, self.features):
            combo.native.setSizeAdjustPolicy(
                combo.native.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.native.setMinimumContentsLength(6)

        super().__init__(widgets=[
            self.objects, self.image, self.level, self.regions, self.tissue,
            row("Measure", self.intensity, self.stains, stretch=True),
            row("", self.run, self.cancel), self.bar, self.status,
            row("Filter", self.filter, self.shown)])
        align_labels(self, stretch=False)

        # -- the table and, below it, plots / classes / export tabs
        self.model = ObjectTableModel()
        self.proxy = ObjectFilterProxy()
        self.proxy.setSourceModel(self.model)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setWordWrap(False)
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.view.verticalHeader().setDefaultSectionSize(
            self.view.fontMetrics().height() + 4)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setDefaultSectionSize(76)
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        header.setSortIndicatorShown(True)
        self.view.setSortingEnabled(True)
        self.view.setToolTip("One row per object. Click a header to sort; select rows to "
                             "centre the view on an object and ring it; Ctrl/Shift-click "
                             "for several")
        self.view.setMinimumHeight(160)
        self.view.selectionModel().selectionChanged.connect(self._on_table_selection)
        # the selected objects are the widget's (``_selected``): a sort or a filter
        # rebuilds the view's selection from them rather than trusting row moves
        self.model.layoutAboutToBeChanged.connect(self._on_reordering)
        self.model.layoutChanged.connect(self._on_reordered)

        self.hist = HistogramPlot()
        self.scatter = ScatterPlot()
        self.hist.setToolTip("Histogram of the feature over the rows shown; selected "
                             "objects in orange")
        self.scatter.setToolTip("Scatter plot of the rows shown, coloured by class; "
                                "selected objects ringed. Click a point to select it")
        self.scatter.picked.connect(self._on_scatter_pick)
        plots = QWidget()
        plot_layout = QVBoxLayout(plots)
        plot_layout.setContentsMargins(2, 2, 2, 2)
        plot_layout.addWidget(row("", "histogram", self.hist_feature, "scatter",
                                   self.x_feature, "vs", self.y_feature).native)
        pair = QHBoxLayout()
        pair.addWidget(self.hist, 1)
        pair.addWidget(self.scatter, 1)
        plot_layout.addLayout(pair, 1)

        self.summary = QTableWidget(0, 5)
        self.summary.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.summary.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.summary.verticalHeader().setVisible(False)
        self.summary.horizontalHeader().setStretchLastSection(True)
        self.summary.setToolTip("Per class: objects, total area, fraction of the tissue "
                                "(or of all objects' area) and objects per mm². Click a "
                                "row to take its class name")
        self.summary.cellClicked.connect(self._on_summary_click)
        classes = Container(widgets=[
            row("", "class", self.class_name, self.assign, self.unassign),
            row("", "features", self.features, self.train),
            row("", self.show_classes, stretch=True),
            row("", "model", self.model_file, self.save_model, self.load_model),
            self.class_status], labels=False)
        classes.margins = (2, 2, 2, 2)
        class_tab = QWidget()
        class_layout = QVBoxLayout(class_tab)
        class_layout.setContentsMargins(0, 0, 0, 0)
        class_layout.addWidget(self.summary, 1)
        class_layout.addWidget(classes.native)

        export = Container(widgets=[self.out, row("", self.only_shown, self.contour),
                                    row("", self.export, stretch=True), self.export_status])
        export.native.layout().addStretch(1)

        self.tabs = QTabWidget()
        self.tabs.addTab(class_tab, "Classes")
        self.tabs.addTab(export.native, "Export")
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.view)
        self.splitter.addWidget(plots)
        self.splitter.addWidget(self.tabs)
        for k, stretch in enumerate((4, 3, 3)):
            self.splitter.setStretchFactor(k, stretch)
        self.splitter.setChildrenCollapsible(False)
        self.native.layout().addWidget(self.splitter, 1)
        self.native.setMinimumWidth(420)
        self._apply_theme()

        self.objects.changed.connect(self._on_objects)
        self.image.changed.connect(self._on_form)
        self.tissue.changed.connect(self._on_tissue)
        self.run.changed.connect(self._on_run)
        self.cancel.changed.connect(self._on_cancel)
        self.filter.changed.connect(self._on_filter)
        for combo in (self.hist_feature, self.x_feature, self.y_feature):
            combo.changed.connect(self._update_plots)
        self.assign.changed.connect(self._on_assign)
        self.unassign.changed.connect(self._on_unassign)
        self.train.changed.connect(self._on_train)
        self.show_classes.changed.connect(self._show_class_colors)
        self.save_model.changed.connect(self._on_save_model)
        self.load_model.changed.connect(self._on_load_model)
        self.export.changed.connect(self._on_export)
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self.viewer.mouse_drag_callbacks.append(self._on_viewer_click)
        if hasattr(self.viewer.events, "theme"):
            self.viewer.events.theme.connect(self._apply_theme)
        self.native.destroyed.connect(self._on_closed)
        self._on_layers_changed()

    # -- choices ----------------------------------------------------------------------------
    def _object_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        layers = [la for la in reversed(list(self.viewer.layers))
                  if la._type_string in ("labels", "shapes") and la.ndim == 2
                  and not la.metadata.get("slideseg_markers")
                  and not la.metadata.get("slideseg_classes")]
        # results first (the threshold's, then other Labels), then annotation layers
        layers.sort(key=lambda la: (la._type_string != "labels", la.name != "threshold"))
        choices: list[tuple[str, Any]] = [(la.name, la) for la in layers]
        shapes = [la for la in layers if la._type_string == "shapes"]
        if len(shapes) > 1:
            choices.append((f"{ALL_SHAPES} ({len(shapes)})", ALL_SHAPES))
        return choices

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        layers = [la for la in reversed(list(self.viewer.layers))
                  if la._type_string == "image" and la.ndim == 2]
        layers = sorted(layers, key=lambda la: _slide_of(la) is None)
        return [(la.name, la) for la in layers] + [("none", None)]

    def _level_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        return level_choices(self.image.value if hasattr(self, "image") else None) \
            or [("0", 0)]

    def _tissue_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        layers = [la for la in reversed(list(self.viewer.layers))
                  if la._type_string in ("labels", "shapes") and la.ndim == 2
                  and not la.metadata.get("slideseg_markers")
                  and not la.metadata.get("slideseg_classes")]
        return [("none", None)] + [(la.name, la) for la in layers]

    def _region_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        layers = self._shapes_layers()
        choices: list[tuple[str, Any]] = [("none", None)] + [(la.name, la) for la in layers]
        if len(layers) > 1:
            choices.append((f"{ALL_SHAPES} ({len(layers)})", ALL_SHAPES))
        return choices

    def _shapes_layers(self) -> list[Any]:
        """Shapes layers of the viewer, in layer-list order (bottom first)."""
        return [la for la in self.viewer.layers
                if la._type_string == "shapes" and la.ndim == 2
                and not la.metadata.get("slideseg_markers")]

    def _feature_choices(self, _widget: Any = None) -> list[str]:
        import pandas as pd

        if self.table is None:
            return []
        return [str(c) for c in self.table.columns if c not in ("label", "index")
                and pd.api.types.is_numeric_dtype(self.table[c])
                and not pd.api.types.is_bool_dtype(self.table[c])]

    def reset_choices(self, *_: Any) -> None:
        """Refresh the layer choices (napari calls this on layer events)."""
        if not hasattr(self, "splitter"):
            super().reset_choices()
            return
        self._on_layers_changed()

    def _on_layers_changed(self, _event: Any = None) -> None:
        if self._closed:
            return
        before = self.objects.value
        for combo in (self.objects, self.image, self.tissue, self.regions):
            combo.reset_choices()
        if self.objects.value is not before or _event is None:
            self._on_objects()

    def _on_objects(self, _value: Any = None) -> None:
        """Default the image to the one a threshold result was made on."""
        from .threshold import META

        layer = self.objects.value
        if layer is not None and not isinstance(layer, str):
            source = layer.metadata.get(META, {}).get("source")
            for _, candidate in self._image_choices():
                if candidate is not None and candidate.name == source:
                    self.image.value = candidate
                    break
        self._on_form()

    def _on_form(self, _value: Any = None) -> None:
        self.level.reset_choices()
        value = self.objects.value
        shapes = isinstance(value, str) or (value is not None and
                                            value._type_string == "shapes")
        image = self.image.value
        self.level.visible = shapes and image is not None and _slide_of(image) is not None
        self.intensity.enabled = self.stains.enabled = image is not None

    def _apply_theme(self, _event: Any = None) -> None:
        try:
            from napari.utils.theme import get_theme

            theme = get_theme(self.viewer.theme)
            colours = (theme.background.as_hex(), theme.secondary.as_hex(),
                       theme.text.as_hex())
        except Exception:  # an unknown theme: keep the default colours
            return
        for plot in (self.hist, self.scatter):
            plot.set_theme(*colours)

    # -- measuring --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a measurement, training or export is under way."""
        return self._busy

    def _set_busy(self, busy: bool, cancellable: bool = False) -> None:
        self._busy = busy
        for button in (self.run, self.train, self.load_model, self.export):
            button.enabled = not busy
        self.cancel.enabled = busy and cancellable
        self.bar.visible = busy and cancellable

    def _fail(self, message: str, where: Label | None = None) -> None:
        from napari.utils.notifications import show_error

        self.last_error = message
        (where or self.status).value = f"Error: {message}"
        show_error(f"Measure: {message}")

    def _start(self, func: Any, done: Any, where: Label, cancellable: bool = False) -> None:
        """Run ``func`` in a thread worker; ``done`` gets its result, ``where`` its error."""
        from napari.qt.threading import create_worker

        def errored(exc: BaseException) -> None:
            if self._closed:
                return
            if isinstance(exc, _Cancelled):
                where.value = "Cancelled."
            else:
                self._fail(error_message(exc), where)

        def returned(value: Any) -> None:
            if not self._closed:
                done(value)

        self.last_error = ""
        self._worker = create_worker(func, _start_thread=False, _connect={
            "returned": returned, "errored": errored, "finished": self._on_finished})
        self._set_busy(True, cancellable)
        self._worker.start()

    def _on_finished(self) -> None:
        self._worker = None
        if not self._closed:
            self._set_busy(False)

    def _on_progress(self, done: int, total: int) -> None:
        self.bar.max = max(total, 1)
        self.bar.value = min(done, max(total, 1))

    def _on_cancel(self, _value: Any = None) -> None:
        self._cancel.set()
        self.cancel.enabled = False
        self.status.value = "Cancelling..."

    def _selected_objects(self) -> Any:
        value = self.objects.value
        if isinstance(value, str) and value == ALL_SHAPES:
            return self._shapes_layers()
        return value

    def _selected_regions(self) -> Any:
        value = self.regions.value
        if isinstance(value, str) and value == ALL_SHAPES:
            return self._shapes_layers()
        return value

    def _on_run(self, _value: Any = None) -> None:
        if self._busy:
            return
        try:
            inp = measure_input(self._selected_objects(), self.image.value,
                                level=int(self.level.value or 0),
                                regions=self._selected_regions())
        except Exception as exc:
            self._fail(error_message(exc))
            return
        self._cancel.clear()
        intensity, stains = bool(self.intensity.value), bool(self.stains.value)
        started = time.perf_counter()

        def progress(done: int, total: int) -> None:
            if self._cancel.is_set():
                raise _Cancelled()
            self._progress.changed.emit(done, total)

        def done(df: Any) -> None:
            seconds = time.perf_counter() - started
            shown = time.perf_counter()
            self.show_table(inp, df)
            self.last_seconds["measure"] = seconds
            self.last_seconds["show"] = time.perf_counter() - shown
            n = len(df)
            unit = "µm" if df.attrs.get("mpp") else "level-0 px (no pixel size)"
            self.status.value = (f"{n} object{'s' if n != 1 else ''} of "
                                 f"{inp.description}; lengths in {unit} "
                                 f"({seconds:.2f} s, shown in "
                                 f"{self.last_seconds['show']:.2f} s).")

        self.status.value = f"Measuring {inp.description}..."
        self.bar.value, self.bar.max = 0, 0
        self._start(lambda: measure_objects(inp, intensity=intensity, stains=stains,
                                            progress=progress), done, self.status,
                    cancellable=True)

    def show_table(self, inp: MeasureInput, df: Any) -> None:
        """Show measurements: the layers' features, the table, plots and summary."""
        import pandas as pd

        self._restore_colors()
        self.inp, self.table, self.classifier = inp, df, None
        show_measurements(inp, df)
        self._row_of_label = pd.Index(df["label"].to_numpy())
        self._selected = np.zeros(0, np.int64)
        self._current = None
        self._class_colors = {}
        self._tissue_cache = None
        self.view.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.model.set_table(df)
        self._fit_columns()
        self._plotting = False  # the feature choices change: one plot at the end
        try:
            for combo in (self.hist_feature, self.x_feature, self.y_feature):
                combo.reset_choices()
            choices = self._feature_choices()
            fallback = {"area_um2": "area_px2", "hematoxylin_mean": "circularity"}
            for combo, wanted in ((self.hist_feature, "area_um2"),
                                  (self.x_feature, "area_um2"),
                                  (self.y_feature, "hematoxylin_mean")):
                for name in (wanted, fallback.get(wanted), "circularity"):
                    if name in choices:
                        combo.value = name
                        break
        finally:
            self._plotting = True
        if "class" in df.columns:  # annotation classes: coloured in plots and summary
            for name in df["class"].dropna().unique().tolist():
                self._color_of(str(name))
        self._apply_filter()
        self._update_summary()
        self._update_markers()

    def _fit_columns(self) -> None:
        """Columns as wide as their names (the cells are not measured: 100k rows)."""
        header = self.view.horizontalHeader()
        metrics = header.fontMetrics()
        cells = self.view.fontMetrics()
        rows = min(200, self.model.rowCount())
        for j in range(self.model.columnCount()):
            name = str(self.model.headerData(j, Qt.Orientation.Horizontal))
            width = max(64, metrics.horizontalAdvance(name) + 24)
            if self.model.is_text(j):  # text: as wide as the first rows' (up to a limit)
                texts = [str(self.model.index(i, j).data() or "") for i in range(rows)]
                width = max(width, min(180, max((cells.horizontalAdvance(t) for t in texts),
                                                default=0) + 12))
            header.resizeSection(j, width)

    # -- filter -------------------------------------------------------------------------------
    def _on_filter(self, _value: Any = None) -> None:
        self._apply_filter()

    def _apply_filter(self) -> None:
        if self.table is None:
            self.shown.value = ""
            return
        try:
            mask = filter_mask(self.table, self.filter.value)
        except ValueError as exc:
            self.shown.value = "invalid"
            self.shown.tooltip = str(exc)
            return
        self.shown.tooltip = "Rows shown by the filter / all rows"
        started = time.perf_counter()
        self._syncing = True
        try:
            self.proxy.set_mask(mask)
        finally:
            self._syncing = False
        self.last_seconds["filter"] = time.perf_counter() - started
        n = len(self.table)
        self.shown.value = f"{n if mask is None else int(mask.sum())} / {n}"
        self._reselect()
        self._update_plots()

    def _reselect(self) -> None:
        """Select the selected objects' rows again (after a sort or a filter)."""
        if self._selected.size:
            self.select_rows(self._selected, current=self._current, centre=False)
        else:
            self.view.selectionModel().clearSelection()

    def _on_reordering(self, *_: Any) -> None:
        self._syncing = True

    def _on_reordered(self, *_: Any) -> None:
        self._syncing = False
        self._reselect()

    # -- selection ---------------------------------------------------------------------------
    def selected_rows(self) -> np.ndarray:
        """DataFrame row positions of the selected objects, sorted."""
        return np.sort(self._selected)

    def _on_table_selection(self, *_: Any) -> None:
        if self.table is None or self._syncing:
            return
        from qtpy.QtWidgets import QApplication

        shown = self.proxy.shown_df_rows()
        rows = []
        for r in self.view.selectionModel().selection():
            rows.append(shown[r.top():r.bottom() + 1])
        if self.model.marked is not None:  # a large selection drawn by the model
            adding = QApplication.keyboardModifiers() & (
                Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
            if adding:
                rows.append(np.flatnonzero(self.model.marked))
            self.model.set_marked(None)
        selected = np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)
        if self._selected.size and self.proxy.mask is not None:
            # rows hidden by the filter stay selected
            hidden = self._selected[~self.proxy.mask[self._selected]]
            selected = np.union1d(selected, hidden)
        current = self.view.currentIndex()
        current_row = self.proxy.df_row(current.row()) if current.isValid() else None
        if current_row is None or current_row not in selected:
            current_row = int(selected[-1]) if selected.size else None
        self._selected, self._current = selected.astype(np.int64), current_row
        self._highlight(centre=True)  # a click in the table

    def select_rows(self, rows: Any, *, current: int | None = None, centre: bool = True,
                    add: bool = False) -> None:
        """Select objects by DataFrame row position (the view scrolls to ``current``,
        default the last; with ``centre`` the camera centres on it)."""
        rows = np.unique(np.asarray(rows, np.int64).reshape(-1))
        if add and self._selected.size:
            rows = np.union1d(self._selected, rows)
        if current is None and rows.size:
            current = int(np.asarray(rows)[-1])
        selection = QItemSelection()
        last = self.proxy.columnCount() - 1
        proxy_rows = self.proxy.proxy_rows(rows)
        shown = np.unique(proxy_rows[proxy_rows >= 0])
        # runs of consecutive rows, one range each, appended as they are:
        # QItemSelection.select merges every range into all others (quadratic)
        breaks = np.flatnonzero(np.diff(shown) != 1) + 1
        if len(breaks) < MAX_RUNS:
            self.model.set_marked(None)
            for run in np.split(shown, breaks) if shown.size else []:
                selection.append(QItemSelectionRange(self.proxy.index(int(run[0]), 0),
                                                     self.proxy.index(int(run[-1]), last)))
        else:  # thousands of scattered rows: the model draws them as selected
            mask = np.zeros(len(self.table), bool)
            mask[rows] = True
            color = self.view.palette().color(self.view.palette().ColorRole.Highlight)
            self.model.set_marked(mask, color)
        model = self.view.selectionModel()
        self._syncing = True
        try:
            if current is not None:
                p = self.proxy.proxy_row(current)
                if p >= 0:
                    model.setCurrentIndex(self.proxy.index(p, 0),
                                          QItemSelectionModel.SelectionFlag.NoUpdate)
                    self.view.scrollTo(self.proxy.index(p, 0),
                                       QAbstractItemView.ScrollHint.EnsureVisible)
            model.select(selection, QItemSelectionModel.SelectionFlag.ClearAndSelect
                         | QItemSelectionModel.SelectionFlag.Rows)
        finally:
            self._syncing = False
        # rows hidden by the filter are selected too (ringed, not listed)
        self._selected, self._current = rows, current
        self._highlight(centre=centre)

    def _highlight(self, centre: bool) -> None:
        df = self.table
        if df is None:
            return
        if self._current is not None and self.inp is not None and \
                self.inp.kind == "labels":
            layer = self.inp.layers[0]
            layer.selected_label = int(df["label"].iat[self._current])
        self._update_markers()
        self._update_plot_selection()
        if centre and self._current is not None:
            self.centre_on(self._current)
        n = self._selected.size
        hidden = 0 if self.proxy.mask is None or not n else \
            int((~self.proxy.mask[self._selected]).sum())
        if n:
            label = int(df["label"].iat[self._current]) if self._current is not None else ""
            self.shown.tooltip = (f"{n} selected (object {label}"
                                  f"{f', {hidden} hidden by the filter' if hidden else ''})")

    def centre_on(self, row: int) -> None:
        """Centre the camera on the object of DataFrame row ``row``; zoom in (or out)
        when it would be under 8 or over 90 % of the canvas across."""
        from .._layers import level0_to_world

        df, inp = self.table, self.inp
        xy = (float(df["centroid_x"].iat[row]), float(df["centroid_y"].iat[row]))
        world = level0_to_world(np.array(xy), inp.scale, inp.translate)
        camera = _camera(self.viewer)
        camera.center = (float(world[0]), float(world[1]))
        size = max((float(df["bbox_x1"].iat[row]) - float(df["bbox_x0"].iat[row]))
                   * inp.scale[1],
                   (float(df["bbox_y1"].iat[row]) - float(df["bbox_y0"].iat[row]))
                   * inp.scale[0])
        canvas = float(min(self.viewer.canvas.size)) if hasattr(self.viewer, "canvas") \
            else 600.0
        on_screen = size * camera.zoom
        if size > 0 and canvas > 0 and (on_screen < 8 or on_screen > 0.9 * canvas):
            camera.zoom = canvas / (6 * size)

    def _update_markers(self) -> None:
        from .._layers import marker_points_data

        df, inp = self.table, self.inp
        rows = self._selected[:MAX_MARKERS]
        old = self.viewer.layers[MARKER_LAYER] if MARKER_LAYER in self.viewer.layers else None
        if df is None or inp is None:
            return
        xy = np.column_stack([df["centroid_x"].to_numpy(float)[rows],
                              df["centroid_y"].to_numpy(float)[rows]])
        size = np.maximum(df["bbox_x1"].to_numpy(float)[rows] - df["bbox_x0"].to_numpy(float)[rows],
                          df["bbox_y1"].to_numpy(float)[rows] - df["bbox_y0"].to_numpy(float)[rows])
        data, kwargs, _ = marker_points_data(xy, size, inp.scale, inp.translate, inp.units,
                                             name=MARKER_LAYER)
        if old is not None and old._type_string == "points":
            old.scale, old.translate = kwargs["scale"], kwargs["translate"]
            old.data = data
            if len(data):
                old.size = kwargs["size"]
            return
        if not len(data):
            return
        selection = list(self.viewer.layers.selection)
        active = self.viewer.layers.selection.active
        self.viewer.add_points(data, **kwargs)
        # keep the user's layer selection (adding a layer selects it)
        self.viewer.layers.selection.clear()
        self.viewer.layers.selection.update(selection)
        self.viewer.layers.selection.active = active

    # -- picking in the viewer -------------------------------------------------------------
    def _on_viewer_click(self, viewer: Any, event: Any) -> Any:
        if self.table is None or self.inp is None or getattr(event, "button", 1) != 1:
            return
        active = viewer.layers.selection.active
        if active is not None and getattr(active, "mode", "pan_zoom") not in PICK_MODES:
            return
        start = np.asarray(event.position, float)
        zoom = _camera(viewer).zoom
        yield
        moved = False
        while event.type == "mouse_move":
            if np.linalg.norm((np.asarray(event.position, float) - start)[-2:]) * zoom > 4:
                moved = True
            yield
        if moved:
            return
        modifiers = {str(getattr(m, "name", m)) for m in (event.modifiers or ())}
        self.pick_at(start, add=bool(modifiers & {"Control", "Shift", "Meta"}))

    def object_at(self, position: Any) -> int | None:
        """DataFrame row of the object under world point ``position``, or None."""
        inp = self.inp
        if inp is None or self.table is None:
            return None
        position = np.asarray(position, float)
        if inp.kind == "labels":
            layer = inp.layers[0]
            data = layer.data[0] if layer.multiscale else layer.data
            i, j = np.floor(np.asarray(layer.world_to_data(position), float)[-2:] + 0.5) \
                .astype(np.int64)
            if not (0 <= i < data.shape[0] and 0 <= j < data.shape[1]):
                return None
            value = int(np.asarray(data[int(i), int(j)]))
            if value == 0:
                return None
            k = int(self._row_of_label.get_indexer([value])[0])
            return k if k >= 0 else None
        for n in reversed(range(len(inp.layers))):
            value = inp.layers[n].get_value(position, world=True)
            shape = value[0] if isinstance(value, tuple) else value
            if shape is None:
                continue
            try:
                label = inp.keys.index((n, int(shape))) + 1
            except ValueError:
                continue
            k = int(self._row_of_label.get_indexer([label])[0])
            if k >= 0:
                return k
        return None

    def pick_at(self, position: Any, add: bool = False) -> int | None:
        """Select the object under world point ``position`` (its row scrolls into
        view; the camera stays); with ``add``, toggle it in the selection."""
        row = self.object_at(position)
        if row is None:
            return None
        if add and row in self._selected:
            rows = self._selected[self._selected != row]
            self.select_rows(rows, current=int(rows[-1]) if rows.size else None,
                             centre=False)
        else:
            self.select_rows([row], current=row, centre=False, add=add)
        return row

    def _on_scatter_pick(self, row: int) -> None:
        self.select_rows([row], current=row, centre=True)

    # -- plots --------------------------------------------------------------------------------
    def _shown_rows(self) -> np.ndarray:
        mask = self.proxy.mask
        n = 0 if self.table is None else len(self.table)
        return np.arange(n) if mask is None else np.flatnonzero(mask)

    def _update_plots(self, _value: Any = None) -> None:
        if not self._plotting:
            return
        df = self.table
        if df is None:
            self.hist.set_data(np.zeros(0), name="")
            self.scatter.set_data(np.zeros(0), np.zeros(0), np.zeros(0, np.int64))
            return
        rows = self._shown_rows()
        h, x, y = (v if v in df.columns else None for v in
                   (self.hist_feature.value, self.x_feature.value, self.y_feature.value))
        if h:
            self.hist.set_data(df[h].to_numpy(np.float64, na_value=np.nan)[rows],
                               df[h].to_numpy(np.float64, na_value=np.nan)[self._selected],
                               name=h)
        if x and y:
            colors = self._point_colors()
            self.scatter.set_data(df[x].to_numpy(np.float64, na_value=np.nan)[rows],
                                  df[y].to_numpy(np.float64, na_value=np.nan)[rows], rows,
                                  None if colors is None else colors[rows],
                                  self._selected, x, y)

    def _update_plot_selection(self) -> None:
        df = self.table
        h = self.hist_feature.value
        if df is not None and h in df.columns:
            self.hist.set_selected(df[h].to_numpy(np.float64, na_value=np.nan)[self._selected])
        self.scatter.set_selected(self._selected)

    def _point_colors(self) -> np.ndarray | None:
        df = self.table
        if df is None or "class" not in df.columns or not self._class_colors:
            return None
        colors = np.tile(np.array([170, 170, 170], np.uint8), (len(df), 1))
        names = df["class"].to_numpy(object)
        for name, rgba in self._class_colors.items():
            colors[names == name] = np.round(np.asarray(rgba[:3]) * 255).astype(np.uint8)
        return colors

    # -- summary -------------------------------------------------------------------------------
    def _tissue_area(self) -> float | None:
        layer = self.tissue.value
        if layer is None or self.inp is None:
            return None
        if self._tissue_cache is not None and self._tissue_cache[0] is layer:
            return self._tissue_cache[1]
        area = tissue_area_um2(layer, self.inp)
        self._tissue_cache = (layer, area)
        return area

    def _on_tissue(self, _value: Any = None) -> None:
        self._tissue_cache = None
        try:
            self._update_summary()
        except Exception as exc:
            self._fail(error_message(exc), self.class_status)

    def summary_frame(self) -> Any:
        """The per-class summary shown (see
        :func:`~napari_slideseg.core.classify.summarize_classes`)."""
        from ..core.classify import summarize_classes

        if self.table is None or self.inp is None:
            return None
        return summarize_classes(self.table, tissue_area_um2=self._tissue_area(),
                                 field_area_um2=field_area_um2(self.inp))

    def _update_summary(self) -> None:
        s = self.summary_frame()
        if s is None:
            self.summary.setRowCount(0)
            return
        area = s.columns[2]
        unit = "µm²" if area == "area_um2" else "px²"
        of = "tissue" if self.tissue.value is not None and \
            self._tissue_area() is not None else "objects"
        self.summary.setHorizontalHeaderLabels(
            ["Class", "Count", f"Area {unit}", f"% of {of}", "per mm²"])
        self.summary.setRowCount(len(s))
        for i, entry in enumerate(s.itertuples(index=False)):
            cells = [str(entry[0]), f"{entry[1]}", f"{entry[2]:,.1f}",
                     "" if np.isnan(entry[3]) else f"{100 * entry[3]:.2f}",
                     "" if np.isnan(entry[4]) else f"{entry[4]:,.1f}"]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if j:
                    item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight
                                              | Qt.AlignmentFlag.AlignVCenter))
                elif entry[0] in self._class_colors:
                    r, g, b, _ = (int(round(255 * c)) for c in self._class_colors[entry[0]])
                    from qtpy.QtGui import QColor

                    item.setForeground(QColor(r, g, b))
                self.summary.setItem(i, j, item)
        self.summary.resizeColumnsToContents()

    def _on_summary_click(self, row: int, _column: int) -> None:
        item = self.summary.item(row, 0)
        from ..core.classify import UNCLASSIFIED

        if item is not None and item.text() not in ("All", UNCLASSIFIED):
            self.class_name.value = item.text()

    # -- classes ---------------------------------------------------------------------------------
    def _ensure_class_columns(self) -> None:
        df = self.table
        n = len(df)
        if "class" not in df.columns:
            df.insert(1, "class", np.full(n, None, object))
        else:
            values = df["class"].to_numpy(object)
            df["class"] = np.array([None if v is None or (isinstance(v, float) and v != v)
                                    or v == "" else str(v) for v in values], object)
        if "class_source" not in df.columns:
            df.insert(2, "class_source", np.where(df["class"].notna().to_numpy(),
                                                  "annotation", None).astype(object))
        if "class_probability" not in df.columns:
            df.insert(3, "class_probability", np.full(n, np.nan))
        for name in df["class"].dropna().unique().tolist():
            self._color_of(str(name))

    def _color_of(self, name: str) -> tuple[float, float, float, float]:
        from .._layers import class_colors

        if name not in self._class_colors:
            names = [*self._class_colors, name]
            self._class_colors = class_colors(names)
        return self._class_colors[name]

    def assign_class(self, name: str | None, rows: Any = None) -> int:
        """Give objects (DataFrame rows; default the selected) a class by hand; None or
        '' removes it. Returns how many objects changed."""
        from ..core.errors import SlideSegError

        if self.table is None:
            raise SlideSegError("measure objects first.")
        rows = self._selected if rows is None else np.asarray(rows, np.int64).reshape(-1)
        if not len(rows):
            raise SlideSegError("select objects first: rows of the table, or click objects "
                                "in the viewer (Ctrl-click for several).")
        self._ensure_class_columns()
        df = self.table
        name = (name or "").strip() or None
        df.iloc[rows, df.columns.get_loc("class")] = name
        df.iloc[rows, df.columns.get_loc("class_source")] = "hand" if name else None
        df.iloc[rows, df.columns.get_loc("class_probability")] = np.nan
        if name:
            self._color_of(name)
        self._classes_changed()
        return len(rows)

    def _on_assign(self, _value: Any = None) -> None:
        try:
            n = self.assign_class(self.class_name.value)
        except Exception as exc:
            self._fail(error_message(exc), self.class_status)
            return
        self.class_status.value = (f"{n} object{'s' if n != 1 else ''} classed "
                                   f"'{self.class_name.value.strip()}' by hand "
                                   f"({self._hand_count()} in all).")

    def _on_unassign(self, _value: Any = None) -> None:
        try:
            n = self.assign_class(None)
        except Exception as exc:
            self._fail(error_message(exc), self.class_status)
            return
        self.class_status.value = f"Class removed from {n} object{'s' if n != 1 else ''}."

    def _hand_count(self) -> int:
        df = self.table
        if df is None or "class_source" not in df.columns:
            return 0
        return int(df["class_source"].isin(["hand", "annotation"]).sum())

    def _given(self) -> list[Any]:
        """Hand-given (and annotation) classes per row, None elsewhere."""
        df = self.table
        sources = df["class_source"].to_numpy(object)
        names = df["class"].to_numpy(object)
        return [c if s in ("hand", "annotation") else None
                for c, s in zip(names.tolist(), sources.tolist(), strict=True)]

    def _classes_changed(self) -> None:
        """Show changed classes: table, features, colours, plots, summary."""
        df = self.table
        before = self.model.columnCount()
        self.model.update_columns(list(CLASS_COLUMNS))
        if self.model.columnCount() != before:
            self._fit_columns()
        inp = self.inp
        if inp is not None:
            if inp.kind == "labels":
                features = inp.layers[0].features
                if len(features) == len(df):
                    for column in CLASS_COLUMNS:
                        features[column] = df[column].to_numpy()
                else:
                    inp.layers[0].features = _features_frame(df)
            else:
                show_measurements(inp, df)
        self._show_class_colors()
        self._apply_filter()
        self._update_summary()

    def _show_class_colors(self, _value: Any = None) -> None:
        from .._layers import UNCLASSIFIED_COLOR, class_label_colormap

        df, inp = self.table, self.inp
        if df is None or inp is None:
            return
        if not self.show_classes.value or "class_source" not in df.columns or \
                not df["class"].notna().any():
            self._restore_colors()
            return
        if inp.kind == "labels":
            started = time.perf_counter()
            layer = inp.layers[0]
            labels = df["label"].to_numpy()
            if _direct_colours(labels):
                if self._original_colors is None:
                    self._original_colors = ("labels", layer, layer.colormap)
                layer.colormap = class_label_colormap(labels, df["class"].tolist(),
                                                      self._class_colors)
            else:
                self._show_class_layer(layer, labels, df["class"].tolist())
            self.last_seconds["colours"] = time.perf_counter() - started
        else:
            if self._original_colors is None:
                self._original_colors = ("shapes", [(la, np.array(la.face_color))
                                                    for la in inp.layers], None)
            names = df["class"].to_numpy(object)
            labels = df["label"].to_numpy()
            for n, layer in enumerate(inp.layers):
                faces = np.array(layer.face_color, float).reshape(-1, 4)
                if len(faces) != len(layer.data):
                    continue
                for label, name in zip(labels.tolist(), names.tolist(), strict=True):
                    key = inp.keys[int(label) - 1]
                    if key[0] != n:
                        continue
                    rgba = self._class_colors.get(name, UNCLASSIFIED_COLOR) \
                        if name is not None else UNCLASSIFIED_COLOR
                    faces[key[1]] = (*rgba[:3], 0.45)
                layer.face_color = faces
        self._update_plots()

    def _show_class_layer(self, layer: Any, labels: np.ndarray, classes: list[Any]) -> None:
        """Classes as a Labels layer over the objects (too many, or too large labels for
        a colormap)."""
        from .._layers import class_labels_data

        data = list(layer.data) if layer.multiscale else layer.data
        scale, translate, units = _layer_frame(layer)
        out, kwargs, _ = class_labels_data(data, labels, classes, self._class_colors, scale,
                                           translate, units, name=f"{layer.name} classes")
        saved = self._original_colors
        if saved is not None and saved[0] == "layer" and saved[1] in self.viewer.layers:
            saved[1].data = out
            saved[1].colormap = kwargs["colormap"]
            return
        selection = list(self.viewer.layers.selection)
        active = self.viewer.layers.selection.active
        added = self.viewer.add_labels(out, **kwargs)
        self.viewer.layers.move(self.viewer.layers.index(added),
                                self.viewer.layers.index(layer) + 1)
        self.viewer.layers.selection.clear()
        self.viewer.layers.selection.update(selection)
        self.viewer.layers.selection.active = active
        self._original_colors = ("layer", added, None)

    def _restore_colors(self) -> None:
        saved, self._original_colors = self._original_colors, None
        if saved is None:
            return
        kind, target, colormap = saved
        try:
            if kind == "labels":
                target.colormap = colormap
            elif kind == "layer":
                if target in self.viewer.layers:
                    self.viewer.layers.remove(target)
            else:
                for layer, faces in target:
                    if len(faces) == len(layer.data):
                        layer.face_color = faces
        except Exception:  # the layer was removed or changed: nothing to restore
            pass

    def train_and_classify(self, features: str | list[str] | None = None,
                           folds: int = 5) -> Any:
        """Train a classifier on the hand-given classes and classify the other objects
        (synchronously; the button runs it in the background). Returns the
        cross-validation result (None when a class has a single example)."""
        clf, cv, predicted = self._train(features, folds)
        self._apply_classifier(clf, predicted)
        return cv

    def _train(self, features: Any, folds: int) -> tuple[Any, Any, Any]:
        from ..core.classify import ClassifierError, ObjectClassifier
        from ..core.errors import SlideSegError

        if self.table is None:
            raise SlideSegError("measure objects first.")
        self._ensure_class_columns()
        df = self.table
        if isinstance(features, str) or features is None:
            features = _feature_set(df, features or FEATURE_SETS[0])
        given = self._given()
        clf = ObjectClassifier(features)
        try:
            cv = clf.cross_validate(df, given, folds=folds)
        except ClassifierError as exc:
            if "at least two classes" in str(exc):
                raise
            cv = None  # a class with one example: train all the same
        clf.fit(df, given)
        return clf, cv, clf.predict(df)

    def _apply_classifier(self, clf: Any, predicted: Any) -> int:
        df = self.table
        self._ensure_class_columns()
        sources = df["class_source"].to_numpy(object)
        free = np.flatnonzero(~np.isin(sources, ["hand", "annotation"]))
        df.iloc[free, df.columns.get_loc("class")] = predicted["class"].to_numpy(object)[free]
        df.iloc[free, df.columns.get_loc("class_source")] = "classifier"
        df.iloc[free, df.columns.get_loc("class_probability")] = \
            predicted["probability"].to_numpy(float)[free]
        for name in clf.classes_:
            self._color_of(name)
        self.classifier = clf
        self._classes_changed()
        return len(free)

    def _on_train(self, _value: Any = None) -> None:
        if self._busy:
            return
        if self.table is None:
            self._fail("measure objects first.", self.class_status)
            return
        which = self.features.value
        started = time.perf_counter()
        n_given = sum(g is not None for g in self._given()) if \
            "class_source" in self.table.columns else 0

        def done(value: Any) -> None:
            clf, cv, predicted = value
            n = self._apply_classifier(clf, predicted)
            seconds = time.perf_counter() - started
            self.last_seconds["train"] = seconds
            accuracy = str(cv) if cv is not None else \
                "no cross-validation (a class has one example)"
            self.class_status.value = (
                f"Trained on {n_given} objects ({len(clf.classes_)} classes, "
                f"{len(clf.features_)} features): {accuracy}. {n} objects classified "
                f"({seconds:.1f} s).")

        self.class_status.value = "Training..."
        self._start(lambda: self._train(which, 5), done, self.class_status)

    def _on_save_model(self, _value: Any = None) -> None:
        try:
            if self.classifier is None:
                raise ValueError("no classifier yet: train one first.")
            path = self.model_file.value
            if path is None or not str(path) or Path(path).is_dir():
                raise ValueError("choose a model file to save to (.joblib).")
            path = Path(path)
            if not path.suffix:
                path = path.with_suffix(".joblib")
            self.classifier.save(path)
        except Exception as exc:
            self._fail(error_message(exc), self.class_status)
            return
        self.class_status.value = f"Model saved to {path}."

    def _on_load_model(self, _value: Any = None) -> None:
        from ..core.classify import ObjectClassifier

        try:
            if self.table is None:
                raise ValueError("measure objects first.")
            path = self.model_file.value
            if path is None or not str(path) or not Path(path).is_file():
                raise ValueError("choose an existing model file (.joblib) to load.")
            clf = ObjectClassifier.load(path)
            n = self._apply_classifier(clf, clf.predict(self.table))
        except Exception as exc:
            self._fail(error_message(exc), self.class_status)
            return
        self.class_status.value = (f"Model {Path(path).name} loaded ({', '.join(clf.classes_)}"
                                   f"): {n} objects classified.")

    # -- export -----------------------------------------------------------------------------
    def export_frame(self, only_shown: bool = False) -> Any:
        """The table to export: every row, or the rows the filter shows."""
        df = self.table
        if only_shown and self.proxy.mask is not None:
            out = df.iloc[np.flatnonzero(self.proxy.mask)]
            out.attrs = dict(df.attrs)
            return out
        return df

    def export_to(self, path: Any, *, only_shown: bool = False, contour: bool = False) -> Path:
        """Write the measurements to ``path``: a table (.csv, .tsv, .parquet), GeoJSON
        (.geojson, .json) or an EcoTaxa archive (.zip), synchronously."""
        from ..core.errors import SlideSegError
        from ..core.tables import TABLE_SUFFIXES, write_ecotaxa, write_geojson, write_table

        if self.table is None or self.inp is None:
            raise SlideSegError("measure objects first.")
        path = Path(path)
        suffix = path.suffix.lower()
        df = self.export_frame(only_shown)
        if suffix in TABLE_SUFFIXES:
            return write_table(df, path)
        if suffix in (".geojson", ".json"):
            return write_geojson(df, self.inp.objects, path)
        if suffix == ".zip":
            if self.inp.image is None:
                raise SlideSegError("an EcoTaxa archive needs the image: measure with an "
                                    "image layer.")
            return write_ecotaxa(df, self.inp.objects, self.inp.image, path,
                                 contour=contour)
        raise SlideSegError(f"{path.name}: export as .csv, .tsv, .parquet, .geojson or "
                            ".zip (EcoTaxa).")

    def _on_export(self, _value: Any = None) -> None:
        if self._busy:
            return
        path = self.out.value
        if self.table is None:
            self._fail("measure objects first.", self.export_status)
            return
        if path is None or not str(path) or Path(path).is_dir():
            self._fail("choose a file to export to.", self.export_status)
            return
        only, contour = bool(self.only_shown.value), bool(self.contour.value)
        started = time.perf_counter()
        rows = len(self.export_frame(only))

        def done(written: Path) -> None:
            seconds = time.perf_counter() - started
            self.last_seconds["export"] = seconds
            self.export_status.value = f"{rows} objects -> {written} ({seconds:.1f} s)."

        self.export_status.value = f"Writing {Path(path).name}..."
        self._start(lambda: self.export_to(path, only_shown=only, contour=contour), done,
                    self.export_status)

    # -- closing ------------------------------------------------------------------------------
    def _on_closed(self, *_: Any) -> None:
        self._closed = True
        self._cancel.set()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.disconnect(self._on_layers_changed)
        if self._on_viewer_click in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._on_viewer_click)
        if hasattr(self.viewer.events, "theme"):
            self.viewer.events.theme.disconnect(self._apply_theme)
