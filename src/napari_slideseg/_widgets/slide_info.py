"""Slide info dock widget: metadata, pyramid levels and associated images of a slide layer."""

from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    import napari

__all__ = ["SlideInfoWidget"]


def _slide_of(layer: Any) -> Any:
    return getattr(layer, "metadata", {}).get("slideseg_slide")


class SlideInfoWidget(QWidget):
    """Shows the slide behind an image layer and adds its associated images on request."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("Slide layer to describe")
        self.summary = QFormLayout()
        self.fields: dict[str, QLabel] = {}
        for key in ("File", "Vendor", "Size (level 0)", "Pixel size", "Objective",
                    "Level shown", "Cache"):
            label = QLabel("-")
            label.setWordWrap(True)
            self.fields[key] = label
            self.summary.addRow(key, label)
        self.levels = QTableWidget(0, 3)
        self.levels.setHorizontalHeaderLabels(["Width", "Height", "Downsample"])
        self.levels.verticalHeader().setVisible(True)
        self.levels.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.associated_combo = QComboBox()
        self.associated_combo.setToolTip("Label, macro and thumbnail images stored in the file")
        self.add_associated = QPushButton("Add as layer")
        self.add_associated.clicked.connect(self._on_add_associated)
        row = QHBoxLayout()
        row.addWidget(self.associated_combo, 1)
        row.addWidget(self.add_associated)

        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Slide layer"))
        layout.addWidget(self.layer_combo)
        layout.addLayout(self.summary)
        layout.addWidget(QLabel("Pyramid levels"))
        layout.addWidget(self.levels)
        layout.addWidget(QLabel("Associated images"))
        layout.addLayout(row)
        layout.addStretch(1)

        self._watched: Any = None
        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        # napari 0.9 moved the camera to viewer.scene; older versions have viewer.camera
        scene = getattr(self.viewer, "scene", None)
        camera = scene.camera if scene is not None else self.viewer.camera
        camera.events.zoom.connect(self._on_view_changed)
        self._on_layers_changed()

    # -- helpers ----------------------------------------------------------------------
    def slide_layers(self) -> list[Any]:
        return [layer for layer in self.viewer.layers if _slide_of(layer) is not None]

    def current_layer(self) -> Any:
        name = self.layer_combo.currentText()
        return next((la for la in self.slide_layers() if la.name == name), None)

    # -- callbacks --------------------------------------------------------------------
    def _on_layers_changed(self, event: Any = None) -> None:
        current = self.layer_combo.currentText()
        names = [layer.name for layer in self.slide_layers()]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)
        self._on_layer_changed()

    def _on_layer_changed(self, index: int = 0) -> None:
        layer = self.current_layer()
        slide = _slide_of(layer) if layer is not None else None
        # Follow the level napari shows: set_data fires after each (re)slice.
        if self._watched is not None and self._watched is not layer:
            self._watched.events.set_data.disconnect(self._on_view_changed)
            self._watched = None
        if layer is not None and self._watched is None:
            layer.events.set_data.connect(self._on_view_changed)
            self._watched = layer
        self.levels.setRowCount(0)
        self.associated_combo.clear()
        if slide is None:
            for label in self.fields.values():
                label.setText("-")
            self.add_associated.setEnabled(False)
            return
        w, h = slide.dimensions
        self.fields["File"].setText(str(slide.path))
        self.fields["Vendor"].setText(f"{slide.vendor} ({slide.backend})")
        self.fields["Size (level 0)"].setText(f"{w} x {h} px")
        self.fields["Pixel size"].setText(
            f"{slide.mpp[0]:.4g} x {slide.mpp[1]:.4g} µm/px" if slide.mpp else "unknown")
        self.fields["Objective"].setText(
            f"{slide.objective_power:g}x" if slide.objective_power else "unknown")
        self.levels.setRowCount(slide.level_count)
        for i, ((lw, lh), ds) in enumerate(zip(slide.level_dimensions,
                                              slide.level_downsamples, strict=True)):
            for j, text in enumerate((str(lw), str(lh), f"{ds:.4f}")):
                self.levels.setItem(i, j, QTableWidgetItem(text))
        self.associated_combo.addItems(list(slide.associated_images))
        self.add_associated.setEnabled(len(slide.associated_images) > 0)
        self._on_view_changed()

    def _on_view_changed(self, event: Any = None) -> None:
        layer = self.current_layer()
        slide = _slide_of(layer) if layer is not None else None
        if slide is None:
            return
        level = int(getattr(layer, "data_level", 0)) if layer.multiscale else 0
        self.fields["Level shown"].setText(
            f"{level} (downsample {slide.level_downsamples[level]:.3f})")
        info = slide.cache_info()
        self.fields["Cache"].setText(
            f"{info['cached_bytes'] / 2**20:.0f} / {info['capacity_bytes'] / 2**20:.0f} MiB, "
            f"{info['hits']} hits, {info['backend_reads']} reads")

    def _on_add_associated(self) -> None:
        from .._layers import associated_image_layer_data

        layer = self.current_layer()
        name = self.associated_combo.currentText()
        if layer is None or not name:
            return
        data, kwargs, _ = associated_image_layer_data(_slide_of(layer), name)
        self.viewer.add_image(data, **kwargs)
