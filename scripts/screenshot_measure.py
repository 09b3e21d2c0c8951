"""Save docs/measure-widget.png: nuclei of the sample slide measured, explored, classified.

Run under a display or ``xvfb-run -a python scripts/screenshot_measure.py [OUT.png]``.
Thresholds the tissue (whole slide, level 2) and the nuclei of a region at full
resolution (haematoxylin), measures the nuclei with the Measure dock (intensities,
stains, the annotation region of each), classes a few large nuclei of the tumour and a
few of the stroma by hand, trains and classifies the rest, selects one nucleus and
prints the timings.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_slideseg._sample_data import sample_layers
from napari_slideseg._widgets.measure import ALL_SHAPES, MeasureWidget
from napari_slideseg._widgets.threshold import (
    TISSUE,
    read_image,
    show_threshold,
    threshold_input,
    threshold_view,
)
from napari_slideseg.core.threshold import ThresholdParams

ROOT = Path(__file__).resolve().parents[1]
MPP = 0.5  # the sample's pixel size


def _settle(rounds: int = 20) -> None:
    for _ in range(rounds):  # let Qt lay out the docks and draw the canvas
        QApplication.processEvents()


def _wait(widget: MeasureWidget) -> None:
    while widget.running:
        QApplication.processEvents()
        time.sleep(0.01)
    _settle()
    if widget.last_error:
        raise SystemExit(f"error: {widget.last_error}")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "measure-widget.png"
    viewer = napari.Viewer(title="napari-slideseg: measure, classify, export")
    viewer.window._qt_window.resize(1750, 1150)
    for data, kwargs, kind in sample_layers():
        layer = getattr(viewer, f"add_{kind}")(data, **kwargs)
        if kind == "shapes":
            layer.opacity = 0.6
    slide_layer = viewer.layers["sample slide"]
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)  # napari >= 0.9
    (overlays.scale_bar if overlays is not None else viewer.scale_bar).visible = True
    widget = MeasureWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Measure", area="right")
    _settle()

    # tissue of the whole slide at level 2, as the Threshold dock's "Tissue settings"
    started = time.perf_counter()
    inp = read_image(slide_layer, level=2)
    tissue = threshold_input(inp, ThresholdParams(**TISSUE))
    show_threshold(viewer, tissue, inp, slide_layer, name="tissue")
    viewer.layers["tissue"].visible = False
    # nuclei of a region across the tumour's edge, at full resolution
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = (1130 * MPP, 1560 * MPP)
    camera.zoom = 0.6 / MPP  # a region larger than the view shown at the end
    _settle()
    nuclei = threshold_view(viewer, slide_layer, channel="hematoxylin", sigma_um=0.5,
                            method="otsu", open_um=0.5, min_area_um2=6.0)
    print(f"thresholds: tissue {100 * tissue.fraction():.1f} % of the slide, "
          f"{nuclei.count} nuclei ({time.perf_counter() - started:.2f} s)")

    widget.objects.value = viewer.layers["threshold"]
    widget.image.value = slide_layer
    # the tissue layer is for the whole slide; the nuclei are of one region: the summary
    # is of the region measured (fractions of the objects' area, densities per field)
    widget.tissue.value = None
    widget.regions.value = [v for v in widget.regions.choices if isinstance(v, str)][0]
    assert widget.regions.value == ALL_SHAPES
    started = time.perf_counter()
    widget.run.changed.emit(True)
    _wait(widget)
    print(f"measure dock run: {time.perf_counter() - started:.2f} s with the table "
          f"({widget.status.value})")

    # a few hand-given examples: large nuclei in the tumour, nuclei of the stroma
    df = widget.table
    area = df["area_um2"].to_numpy()
    region = df["region_class"].fillna("").to_numpy()
    tumour = np.flatnonzero((region == "Tumour") & (area > np.quantile(area, 0.6)))[:12]
    stroma = np.flatnonzero((region == "Stroma") & (area < np.quantile(area, 0.5)))[:12]
    widget.select_rows(tumour, centre=False)
    widget.class_name.value = "tumour nucleus"
    widget.assign.changed.emit(True)
    widget.select_rows(stroma, centre=False)
    widget.class_name.value = "stromal nucleus"
    widget.assign.changed.emit(True)
    started = time.perf_counter()
    widget.train.changed.emit(True)
    _wait(widget)
    print(f"train & classify: {time.perf_counter() - started:.2f} s: "
          f"{widget.class_status.value}")

    # explore: area against haematoxylin, one large nucleus selected, the table sorted
    widget.x_feature.value = "area_um2"
    widget.y_feature.value = "hematoxylin_mean"
    widget.hist_feature.value = "eccentricity"
    from qtpy.QtCore import Qt

    widget.view.sortByColumn(widget.model.column_index("area_um2"),
                             Qt.SortOrder.DescendingOrder)
    typical = np.flatnonzero((region == "Tumour") & (area > np.quantile(area, 0.7))
                             & (df["solidity"].to_numpy() > 0.9))
    pick = int(typical[len(typical) // 2])
    widget.select_rows([pick])
    camera.zoom = 1.6 / MPP
    viewer.layers.selection.active = viewer.layers["threshold"]
    viewer.layers["threshold"].opacity = 0.55
    _settle(40)
    image = viewer.screenshot(canvas_only=False, flash=False)
    import cv2

    cv2.imwrite(str(out), cv2.cvtColor(image, cv2.COLOR_RGBA2BGR))
    print(f"wrote {out} {image.shape[1]}x{image.shape[0]}")
    viewer.close()


if __name__ == "__main__":
    main()
