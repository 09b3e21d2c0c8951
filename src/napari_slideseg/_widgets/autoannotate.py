"""Auto-annotate dock: train the tile classifier, predict, show the heatmap, iterate.

The dock collects the parameters of :func:`napari_slideseg.core.autoannotate.run_iteration`
from the viewer: the slide layer, the annotation layers to train from (or a model file),
the tile grid, the cluster filters and the outline. Each run is one iteration kept in a
work folder (training annotations, model, prediction, tile probabilities); it runs in a
thread worker with a progress bar and Cancel. Results appear as one Shapes layer per
class (regions with review status 'pending', for the Review dock) and a probability
heatmap Image layer aligned with the slide. "Record review & retrain" scores the
reviewed prediction (Dice and IoU per class, plotted across iterations), then trains on
the corrected annotations and predicts again.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
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
from ._plots import LinePlot
from .export import annotation_layers, slide_annotations
from .slide_info import _slide_of

__all__ = ["AutoAnnotateWidget", "heatmap_layer_data", "PREDICTED", "HEATMAP"]

#: Metadata key marking the Shapes layers of a prediction (value: iteration number).
PREDICTED = "slideseg_predicted"
HEATMAP = "probability heatmap"
COLORMAPS = ["inferno", "viridis", "magma", "plasma", "turbo", "hot", "red"]


def heatmap_layer_data(predictions: Any, cls: str, slide_layer: Any, *,
                       colormap: str = "inferno", opacity: float = 0.5,
                       name: str = HEATMAP) -> tuple[np.ndarray, dict[str, Any], str]:
    """A class's tile probabilities as an Image layer lying on the slide layer.

    Pixel (r, c) of the image is tile (r, c) of the grid: level-0 pixels
    ``[c * size0, (c + 1) * size0)``; napari puts a pixel's centre at its index, so the
    layer's translate is half a tile less half a slide pixel. Tiles that were not
    classified (no tissue) are NaN, drawn transparent.
    """
    grid = predictions.grid
    scale = np.asarray(slide_layer.scale, float)[-2:]
    translate = np.asarray(slide_layer.translate, float)[-2:]
    data = predictions.heatmap(cls)
    kwargs = {"name": name, "scale": tuple(scale * grid.size0),
              "translate": tuple(translate + (0.5 * grid.size0 - 0.5) * scale),
              "colormap": colormap, "opacity": opacity, "contrast_limits": (0.0, 1.0),
              "blending": "translucent", "interpolation2d": "nearest",
              "units": tuple(str(u) for u in slide_layer.units[-2:]),
              "metadata": {"slideseg_heatmap": cls}}
    return data, kwargs, "image"


class _Progress(QObject):
    changed = Signal(str, int, int)


class AutoAnnotateWidget(Container):
    """Auto-annotation with expert review and iterative retraining (dock widget)."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self._cancel = threading.Event()
        self._progress = _Progress()
        self._progress.changed.connect(self._on_progress)
        self._worker: Any = None
        self._busy = False
        self.last_error = ""
        self.result: Any = None  # the last AutoAnnotation
        self.folder: Path | None = None  # its iteration folder
        self.slide = ComboBox(label="Slide", choices=self._slide_choices,
                              tooltip="The slide layer to annotate")
        self.source = ComboBox(label="Classifier", value="train from layers",
                               choices=["train from layers", "model file"],
                               tooltip="Train the built-in classifier (colour, stain and "
                                       "texture features + random forest) from annotation "
                                       "layers, or load a model file")
        self.layers = Select(label="Training", choices=self._layer_choices,
                             tooltip="Annotation layers to train from: tiles inside each "
                                     "class's polygons are that class, tissue outside "
                                     "them is 'other' (Ctrl-click for several)")
        self.model_file = FileEdit(label="Model", mode="r",
                                   filter="*.joblib *.onnx *.pt *.pth *.ts *.torchscript",
                                   tooltip="Built-in model (.joblib) or a user model (.onnx, "
                                           "TorchScript .pt) declared by a FILE.json with "
                                           "classes, input_size, mean and std")
        self.size = SpinBox(label="Tile size", value=512, min=32, max=8192,
                            tooltip="Tile side in pixels of the level read")
        self.scale_by = ComboBox(label="Scale", value="level", choices=["level", "mpp"],
                                 tooltip="Read tiles at a pyramid level or at a pixel size")
        self.level = ComboBox(label="Level", choices=self._level_choices,
                              tooltip="Pyramid level the tiles are read at")
        self.mpp = FloatSpinBox(label="µm/px", value=0.5, min=0.01, max=100.0, step=0.05,
                                tooltip="Pixel size the tiles are read at (resized from the "
                                        "nearest finer level)")
        self.min_tissue = FloatSpinBox(label="Min tissue", value=0.25, min=0.0, max=1.0,
                                       step=0.05, tooltip="Classify tiles with at least "
                                                          "this tissue fraction")
        self.threshold = FloatSpinBox(label="Threshold", value=0.5, min=0.0, max=1.0,
                                      step=0.05, tooltip="A tile is positive for its most "
                                                         "probable class from this "
                                                         "probability")
        self.eps = FloatSpinBox(label="eps", value=1.5, min=0.5, max=50.0, step=0.5,
                                tooltip="DBSCAN radius in tiles (1.5 joins diagonal "
                                        "neighbours, 1 only edge neighbours)")
        self.min_samples = SpinBox(label="Min samples", value=3, min=1, max=1000,
                                   tooltip="DBSCAN: tiles within eps that make a core tile")
        self.min_tiles = SpinBox(label="Min tiles", value=1, min=1, max=100000,
                                 tooltip="Drop clusters of fewer tiles")
        self.min_mean = FloatSpinBox(label="Min mean", value=0.0, min=0.0, max=1.0, step=0.05,
                                     tooltip="Drop clusters whose mean probability is lower")
        self.max_std = FloatSpinBox(label="Max std", value=0.0, min=0.0, max=1.0, step=0.01,
                                    tooltip="Drop clusters whose probability standard "
                                            "deviation is higher (0: no limit)")
        self.max_var = FloatSpinBox(label="Max var", value=0.0, min=0.0, max=1.0, step=0.01,
                                    tooltip="Drop clusters whose probability variance is "
                                            "higher (0: no limit)")
        self.outline = ComboBox(label="Outline", value="convex",
                                choices=["convex", "tiles", "concave"],
                                tooltip="Cluster outline: convex hull (Graham scan), exact "
                                        "union of its tiles, or a concave hull")
        self.concavity = FloatSpinBox(label="Concavity", value=1.0, min=0.5, max=20.0,
                                      step=0.25, tooltip="Concave hull: largest triangle "
                                                         "circumradius kept, in tiles")
        self.workdir = FileEdit(label="Work folder", mode="d",
                                tooltip="Each run is kept in WORK/iteration_NNN (training "
                                        "annotations, model, prediction, probabilities); "
                                        "metrics.csv tracks Dice/IoU per iteration")
        self.run = PushButton(text="Run", tooltip="Train (or load the model), classify every "
                                                  "tile over tissue, cluster and outline")
        self.cancel = PushButton(text="Cancel", enabled=False,
                                 tooltip="Stop after the tiles being read; nothing is kept")
        self.bar = ProgressBar(value=0, min=0, max=1, label="Progress", visible=False)
        self.status = Label(value="")
        self.heat_class = ComboBox(label="Heatmap", choices=self._heat_choices,
                                   tooltip="Class whose tile probability the heatmap shows")
        self.colormap = ComboBox(label="Colormap", value="inferno", choices=COLORMAPS)
        self.opacity = FloatSlider(label="Opacity", value=0.5, min=0.0, max=1.0, step=0.05)
        self.retrain = PushButton(text="Record review && retrain", enabled=False,
                                  tooltip="Score the reviewed prediction against the "
                                          "corrections (Dice, IoU per class), then train on "
                                          "the corrected annotations and predict again")
        self.metric = ComboBox(label="Plot", value="dice", choices=["dice", "iou"])
        self.plot = LinePlot(yname="Dice")
        self.plot.setMinimumHeight(150)
        self.save_model_button = PushButton(text="Save model...", enabled=False)
        self.save_xml_button = PushButton(text="Save XML...", enabled=False,
                                          tooltip="Write the predicted (reviewed) regions as "
                                                  "Aperio XML")
        self.weak_button = PushButton(text="Weak labels...", enabled=False,
                                      tooltip="Export every tile with a multi-hot class "
                                              "vector (from the annotations and the review) "
                                              "and labels.csv")
        self.pseudo_button = PushButton(text="Pseudo-mask...", enabled=False,
                                        tooltip="Save the tile-probability pseudo-mask "
                                                "(255 = uncertain) with its JSON")
        self.status.native.setWordWrap(True)
        self.status.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.status.native.setSizePolicy(QSizePolicy.Policy.Expanding,
                                         QSizePolicy.Policy.Preferred)
        self.layers.native.setMaximumHeight(72)
        for spin in (self.size, self.mpp, self.min_tissue, self.threshold, self.eps,
                     self.min_samples, self.min_tiles, self.min_mean, self.max_std,
                     self.max_var, self.concavity):
            spin.native.setMaximumWidth(80)
        for combo in (self.slide, self.source, self.scale_by, self.level, self.outline,
                      self.heat_class, self.colormap, self.metric):
            combo.native.setSizeAdjustPolicy(
                combo.native.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.native.setMinimumContentsLength(4)
        for edit in (self.model_file, self.workdir):
            edit.choose_btn.text = "..."
        plot_box = Container(widgets=[], labels=False)
        plot_box.native.layout().addWidget(self.plot)
        plot_box.margins = (0, 0, 0, 0)
        super().__init__(widgets=[
            self.slide, self.source, self.layers, self.model_file,
            row("Tiles", self.size, "px", self.scale_by, self.level, self.mpp),
            row("Min tissue", self.min_tissue, "threshold", self.threshold, stretch=True),
            row("DBSCAN", self.eps, "min samples", self.min_samples, stretch=True),
            row("Keep if", "tiles ≥", self.min_tiles, "mean ≥", self.min_mean, stretch=True),
            row("", "std ≤", self.max_std, "var ≤", self.max_var, stretch=True),
            row("Outline", self.outline, "concavity", self.concavity, stretch=True),
            self.workdir, row("", self.run, self.cancel), self.bar, self.status,
            row("Heatmap", self.heat_class, self.colormap), self.opacity,
            row("", self.retrain, stretch=True), self.metric, plot_box,
            row("", self.save_xml_button, self.save_model_button),
            row("", self.weak_button, self.pseudo_button)])
        align_labels(self)
        self.slide.changed.connect(self._on_slide)
        self.source.changed.connect(self._on_form)
        self.scale_by.changed.connect(self._on_form)
        self.outline.changed.connect(self._on_form)
        self.run.changed.connect(lambda *_: self.start_run())
        self.cancel.changed.connect(self._on_cancel)
        self.retrain.changed.connect(lambda *_: self.start_retrain())
        self.heat_class.changed.connect(self._on_heatmap)
        self.colormap.changed.connect(self._on_heat_style)
        self.opacity.changed.connect(self._on_heat_style)
        self.metric.changed.connect(lambda *_: self.update_plot())
        self.save_xml_button.changed.connect(self._ask_save_xml)
        self.save_model_button.changed.connect(self._ask_save_model)
        self.weak_button.changed.connect(self._ask_weak_labels)
        self.pseudo_button.changed.connect(self._ask_pseudo_mask)
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self.native.destroyed.connect(lambda *_: self._cancel.set())
        self._on_slide()
        self._on_form()

    # -- choices ------------------------------------------------------------------------
    def _slide_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return slide_choices(self.viewer)

    def _layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        layer = self.slide.value if hasattr(self, "slide") else None
        if layer is None:
            return []
        return [(la.name, la) for la in annotation_layers(self.viewer, layer)
                if PREDICTED not in la.metadata and la._type_string == "shapes"]

    def _level_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        return level_choices(self.slide.value if hasattr(self, "slide") else None)

    def _heat_choices(self, _widget: Any = None) -> list[str]:
        if getattr(self, "result", None) is None:
            return []
        return list(self.result.predictions.classes)

    def _on_layers_changed(self, _event: Any = None) -> None:
        chosen = list(self.layers.value)
        self.slide.reset_choices()
        self.layers.reset_choices()
        self.layers.value = [la for la in chosen if la in self.viewer.layers]

    def _on_slide(self, _value: Any = None) -> None:
        self.level.reset_choices()
        if len(self.level.choices):
            self.level.value = 0
        layer = self.slide.value
        slide = _slide_of(layer) if layer is not None else None
        if slide is not None and slide.mpp:
            self.mpp.value = float(np.ceil(round(slide.mpp[0] * 1e4, 6)) / 1e4)
        self.layers.reset_choices()
        self.layers.value = list(self.layers.choices)
        if slide is not None and self.workdir.value in (None, Path("."), Path("")):
            stem = Path(str(slide.path)).stem
            self.workdir.value = Path.home() / "slideseg-auto-annotate" / stem

    def _on_form(self, _value: Any = None) -> None:
        train = self.source.value == "train from layers"
        self.layers.visible, self.model_file.visible = train, not train
        self.level.visible = self.scale_by.value == "level"
        self.mpp.visible = self.scale_by.value == "mpp"
        self.concavity.enabled = self.outline.value == "concave"

    # -- parameters ---------------------------------------------------------------------
    def _slide_layer(self) -> Any:
        return require_slide(self.viewer, self.slide.value)

    def params(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~napari_slideseg.core.autoannotate.auto_annotate`
        set in the dock (not the slide, model or annotations)."""
        by_level = self.scale_by.value == "level"
        return {
            "size": int(self.size.value),
            "level": int(self.level.value) if by_level and self.level.value is not None
            else None,
            "mpp": None if by_level else float(self.mpp.value),
            "min_tissue": float(self.min_tissue.value),
            "threshold": float(self.threshold.value), "eps": float(self.eps.value),
            "min_samples": int(self.min_samples.value),
            "min_tiles": int(self.min_tiles.value), "min_mean": float(self.min_mean.value),
            "max_std": float(self.max_std.value) or math.inf,
            "max_var": float(self.max_var.value) or math.inf,
            "outline": self.outline.value, "concavity": float(self.concavity.value),
        }

    def training_annotations(self) -> Any:
        """The chosen training layers as one AnnotationSet."""
        from ..core.errors import SlideSegError

        layers = list(self.layers.value)
        if not layers:
            raise SlideSegError("choose the annotation layers to train from (draw a few "
                                "polygons of each class in a Shapes layer named after it).")
        return slide_annotations(layers)

    def predicted_layers(self) -> list[Any]:
        """The Shapes layers of the current prediction (being reviewed)."""
        return [la for la in self.viewer.layers if PREDICTED in la.metadata]

    def reviewed_annotations(self) -> Any:
        """The predicted layers as they are now (after review) as one AnnotationSet."""
        from .._layers import shapes_to_annotations

        layers = self.predicted_layers()
        mpp = None
        slide = _slide_of(self.slide.value) if self.slide.value is not None else None
        if slide is not None and slide.mpp:
            mpp = slide.mpp[0]
        return shapes_to_annotations([la.as_layer_data_tuple()[:2] for la in layers], mpp=mpp)

    # -- running ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._busy

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.run.enabled = not busy
        self.retrain.enabled = not busy and self.folder is not None
        self.cancel.enabled = busy
        self.bar.visible = busy or self.bar.visible

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.last_error = message
        self.status.value = f"Error: {message}"
        show_error(f"Auto-annotate: {message}")

    def _on_progress(self, step: str, done: int, total: int) -> None:
        self.bar.max = max(total, 1)
        self.bar.value = min(done, max(total, 1))
        self.bar.label = step

    def _on_cancel(self, _value: Any = None) -> None:
        self._cancel.set()
        self.cancel.enabled = False
        self.status.value = "Cancelling after the tiles being read..."

    def _workdir(self) -> Path:
        from ..core.errors import SlideSegError

        if self.workdir.value is None or str(self.workdir.value) in ("", "."):
            raise SlideSegError("choose a work folder: every iteration is kept there.")
        return Path(self.workdir.value)

    def start_run(self, review_first: bool = False) -> None:
        """Run one iteration in the background (``review_first``: record the review of
        the current prediction and train on the corrected annotations)."""
        from ..core.autoannotate import next_training, record_review, run_iteration

        try:
            slide_layer = self._slide_layer()
            slide = _slide_of(slide_layer)
            workdir = self._workdir()
            params = self.params()
            model = None
            training = None
            reviewed = None
            if review_first:
                if self.folder is None:
                    raise ValueError("run a first iteration, then review it.")
                reviewed = self.reviewed_annotations()
            elif self.source.value == "model file":
                if self.model_file.value is None or not Path(self.model_file.value).is_file():
                    raise ValueError("choose a model file.")
                from ..core.tilemodels import load_model

                model = load_model(self.model_file.value)
            else:
                training = self.training_annotations()
        except Exception as exc:
            self._fail(error_message(exc))
            return
        self._cancel.clear()
        self.bar.max, self.bar.value = 1, 0
        self.bar.visible = True
        self.status.value = "Recording the review and retraining..." if review_first \
            else "Running..."
        started = time.perf_counter()
        emit = self._progress.changed.emit

        def work() -> tuple[Any, Any, Any]:
            rows = None
            ann = training
            if review_first:
                rows = record_review(workdir, reviewed)
                ann = next_training(workdir)
            if ann is None:  # a model file: the annotations only name the iteration
                from ..core.annotations import AnnotationSet

                ann = AnnotationSet([])
            folder, result = run_iteration(workdir, slide, ann, model=model,
                                           progress=emit, cancel=self._cancel, **params)
            return folder, result, rows

        def done(out: tuple[Any, Any, Any]) -> None:
            folder, result, rows = out
            self.show_result(result, folder, slide_layer)
            seconds = time.perf_counter() - started
            kept = result.clusters[result.clusters["kept"]] if len(result.clusters) \
                else result.clusters
            trained = ""
            if result.training is not None:
                trained = "Trained on " + ", ".join(
                    f"{k} {v}" for k, v in result.training.counts().items()) + " tiles. "
            scored = ""
            if rows is not None:
                scored = "Review scored: " + ", ".join(
                    f"{r['class']} Dice {r['dice']:.2f}" for _, r in rows.iterrows()) + ". "
            self.status.value = (f"{scored}{trained}{folder.name}: {len(result.grid)} tiles, "
                                 f"{len(kept)} of {len(result.clusters)} clusters kept, "
                                 f"{seconds:.1f} s. Review them in the Review dock.")

        self._start(work, done)

    def start_retrain(self) -> None:
        """Record the review of the current prediction, retrain on it, predict again."""
        self.start_run(review_first=True)

    def _start(self, func: Any, done: Any) -> None:
        from napari.qt.threading import create_worker

        self.last_error = ""
        worker = create_worker(func, _start_thread=False, _connect={
            "returned": done, "errored": self._on_error, "finished": self._on_finished})
        self._worker = worker
        self._set_busy(True)
        worker.start()

    def _on_error(self, exc: BaseException) -> None:
        from ..core.errors import Cancelled

        if isinstance(exc, Cancelled):
            self.status.value = "Cancelled: nothing was kept."
            return
        self._fail(error_message(exc))

    def _on_finished(self) -> None:
        self._worker = None
        self._set_busy(False)
        self.bar.visible = False

    # -- results --------------------------------------------------------------------------
    def show_result(self, result: Any, folder: Path | None, slide_layer: Any) -> list[Any]:
        """Show a prediction: a Shapes layer per class (replacing the last prediction's)
        and the heatmap; returns the Shapes layers."""
        from .._layers import annotation_layers_data, slide_units

        self.result, self.folder = result, folder
        for layer in self.predicted_layers():
            self.viewer.layers.remove(layer)
        slide = _slide_of(slide_layer)
        scale = tuple(float(s) for s in np.asarray(slide_layer.scale, float)[-2:])
        number = int(folder.name.split("_")[1]) if folder is not None else 0
        added = []
        for data, kwargs, _ in annotation_layers_data(result.annotations, scale,
                                                      slide_units(slide)):
            kwargs["metadata"][PREDICTED] = number
            added.append(self.viewer.add_shapes(data, **kwargs))
        self.heat_class.reset_choices()
        classes = [c for c in result.predictions.classes if c != "other"]
        if classes:  # the class with the most positive tiles
            labels = result.predictions.labels(float(self.threshold.value))
            names = result.predictions.classes
            self.heat_class.value = max(classes, key=lambda c: int(
                (labels == names.index(c)).sum()))
        self._on_heatmap()
        for button in (self.save_xml_button, self.weak_button, self.pseudo_button):
            button.enabled = True
        self.save_model_button.enabled = hasattr(result.model, "save")
        self.retrain.enabled = folder is not None
        self.update_plot()
        return added

    def _on_heatmap(self, _value: Any = None) -> None:
        if self.result is None or not self.heat_class.value:
            return
        try:
            slide_layer = self._slide_layer()
        except Exception:
            return
        data, kwargs, _ = heatmap_layer_data(self.result.predictions, self.heat_class.value,
                                             slide_layer, colormap=self.colormap.value,
                                             opacity=float(self.opacity.value))
        kwargs["name"] = f"{HEATMAP}: {self.heat_class.value}"
        old = [la for la in self.viewer.layers if "slideseg_heatmap" in la.metadata]
        for layer in old:
            self.viewer.layers.remove(layer)
        layer = self.viewer.add_image(data, **kwargs)
        # under the predicted outlines
        first_predicted = min((self.viewer.layers.index(la) for la in self.predicted_layers()),
                              default=None)
        if first_predicted is not None and self.viewer.layers.index(layer) > first_predicted:
            self.viewer.layers.move(self.viewer.layers.index(layer), first_predicted)

    def heatmap_layer(self) -> Any:
        found = [la for la in self.viewer.layers if "slideseg_heatmap" in la.metadata]
        return found[0] if found else None

    def _on_heat_style(self, _value: Any = None) -> None:
        layer = self.heatmap_layer()
        if layer is not None:
            layer.colormap = self.colormap.value
            layer.opacity = float(self.opacity.value)

    def update_plot(self) -> None:
        """Plot the chosen metric per class across the work folder's iterations."""
        from ..core.autoannotate import read_metrics

        try:
            table = read_metrics(self._workdir())
        except Exception:
            table = None
        metric = self.metric.value
        series = {}
        if table is not None and len(table):
            for cls, part in table.groupby("class", sort=False):
                series[str(cls)] = (part["iteration"].to_numpy(), part[metric].to_numpy())
        self.plot.set_series(series, yname="Dice" if metric == "dice" else "IoU")

    # -- saving ---------------------------------------------------------------------------
    def save_annotations(self, path: str | Path) -> Path:
        """Write the predicted layers as they are now (with the review) as Aperio XML."""
        from ..core.annotations import write_annotations

        annotations = self.reviewed_annotations()
        write_annotations(annotations, path, format="aperio")
        return Path(path)

    def save_model(self, path: str | Path) -> Path:
        if self.result is None or not hasattr(self.result.model, "save"):
            raise ValueError("no built-in classifier to save: run first.")
        self.result.model.save(path)
        return Path(path)

    def export_weak_labels(self, out: str | Path, **kwargs: Any) -> Any:
        """Tiles + multi-hot labels from the training layers and the reviewed prediction
        (source 'review': rejected and pending regions are not truth)."""
        from ..core.autoannotate import merge_annotations
        from ..core.weaklabels import export_weak_labels

        slide = _slide_of(self._slide_layer())
        parts = [self.reviewed_annotations()]
        if self.layers.value:
            parts.insert(0, self.training_annotations())
        params = self.params()
        return export_weak_labels(slide, merge_annotations(*parts), out, size=params["size"],
                                  level=params["level"], mpp=params["mpp"],
                                  min_tissue=params["min_tissue"], source="review", **kwargs)

    def save_pseudo_mask(self, path: str | Path) -> Path:
        from ..core.weaklabels import save_pseudo_mask

        if self.result is None:
            raise ValueError("no prediction yet: run first.")
        save_pseudo_mask(self.result.predictions, path,
                         threshold=float(self.threshold.value))
        return Path(path)

    def _ask(self, what: str, save: Any, *, folder: bool = False, filt: str = "") -> None:
        from qtpy.QtWidgets import QFileDialog

        start = str(self.folder or self._workdir_or_home())
        if folder:
            path = QFileDialog.getExistingDirectory(self.native, what, start)
        else:
            path, _ = QFileDialog.getSaveFileName(self.native, what, start, filt)
        if not path:
            return
        try:
            save(path)
        except Exception as exc:
            self._fail(error_message(exc))
            return
        self.status.value = f"Saved {path}"

    def _workdir_or_home(self) -> Path:
        try:
            return self._workdir()
        except Exception:
            return Path.home()

    def _ask_save_xml(self, _value: Any = None) -> None:
        self._ask("Save predicted regions", self.save_annotations,
                  filt="Aperio XML (*.xml)")

    def _ask_save_model(self, _value: Any = None) -> None:
        self._ask("Save classifier", self.save_model, filt="Model (*.joblib)")

    def _ask_weak_labels(self, _value: Any = None) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.native, "Weak-label dataset folder",
                                                  str(self._workdir_or_home()))
        if folder:
            self.start_weak_labels(folder)

    def start_weak_labels(self, out: str | Path) -> None:
        """Export the weak-label dataset in the background, with progress and Cancel."""
        self._cancel.clear()
        self.bar.max, self.bar.value = 1, 0
        self.bar.visible = True
        self.status.value = "Writing the weak-label dataset..."
        emit = self._progress.changed.emit

        def work() -> Any:
            return self.export_weak_labels(out, progress=lambda d, t: emit("tiles", d, t),
                                           cancel=self._cancel)

        def done(table: Any) -> None:
            what = "Cancelled: wrote" if self._cancel.is_set() else "Wrote"
            self.status.value = f"{what} {len(table)} tiles and labels.csv to {out}."

        self._start(work, done)

    def _ask_pseudo_mask(self, _value: Any = None) -> None:
        self._ask("Save pseudo-mask", self.save_pseudo_mask, filt="PNG (*.png);;TIFF (*.tif)")
