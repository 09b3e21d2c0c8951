"""Save docs/threshold-widget.png: the sample slide, tissue thresholded, both docks.

Run under a display or ``xvfb-run -a python scripts/screenshot_threshold.py [OUT.png]``.
Prints how long the tissue threshold took.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_slideseg._sample_data import sample_layers
from napari_slideseg._widgets.edit import EditWidget
from napari_slideseg._widgets.threshold import ThresholdWidget

ROOT = Path(__file__).resolve().parents[1]


def _settle(rounds: int = 20) -> None:
    for _ in range(rounds):  # let Qt lay out the docks and draw the canvas
        QApplication.processEvents()


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "threshold-widget.png"
    viewer = napari.Viewer(title="napari-slideseg: threshold and edit segments")
    viewer.window._qt_window.resize(1600, 1050)
    for data, kwargs, kind in sample_layers():
        if kind == "image":  # the slide only: the annotations would hide the result
            getattr(viewer, f"add_{kind}")(data, **kwargs)
    threshold = ThresholdWidget(viewer)
    edit = EditWidget(viewer)
    viewer.window.add_dock_widget(threshold, name="Threshold", area="right")
    viewer.window.add_dock_widget(edit, name="Edit segments", area="right")
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)  # napari >= 0.9
    (overlays.scale_bar if overlays is not None else viewer.scale_bar).visible = True
    _settle()
    viewer.reset_view()
    threshold.tissue.changed.emit(True)  # tissue settings: whole slide near 8 µm/px
    started = time.perf_counter()
    threshold.run.changed.emit(True)
    while threshold.running:
        QApplication.processEvents()
        time.sleep(0.01)
    _settle()
    print(f"tissue: {threshold.status.value} {threshold.last_error} "
          f"({time.perf_counter() - started:.2f} s with the first draw)")
    threshold.polygons.changed.emit(True)
    _settle()
    print(threshold.status.value)
    viewer.layers.selection.active = viewer.layers["threshold"]
    _settle()
    image = viewer.screenshot(canvas_only=False, flash=False)
    import cv2

    cv2.imwrite(str(out), cv2.cvtColor(image, cv2.COLOR_RGBA2BGR))
    print(f"wrote {out} {image.shape[1]}x{image.shape[0]}")
    viewer.close()


if __name__ == "__main__":
    main()
