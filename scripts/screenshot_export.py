"""Save docs/export-widget.png: the sample slide with the Export patches dock and a preview.

Run under a display or ``xvfb-run -a python scripts/screenshot_export.py [OUT.png]``.
Prints how long the preview took (planning, layer and first draw).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_slideseg._sample_data import sample_layers
from napari_slideseg._widgets.export import ExportWidget

ROOT = Path(__file__).resolve().parents[1]


def _settle(rounds: int = 20) -> None:
    for _ in range(rounds):  # let Qt lay out the dock and draw the canvas
        QApplication.processEvents()


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "export-widget.png"
    viewer = napari.Viewer(title="napari-slideseg: export patches")
    viewer.window._qt_window.resize(1500, 1000)
    for data, kwargs, kind in sample_layers():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Export patches", area="right")
    widget.size.value = 128
    widget.out.value = Path.home() / "slideseg-patches"
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)  # napari >= 0.9
    (overlays.scale_bar if overlays is not None else viewer.scale_bar).visible = True
    _settle()
    viewer.reset_view()
    started = time.perf_counter()
    widget.preview.changed.emit(True)
    while widget.running:
        QApplication.processEvents()
        time.sleep(0.01)
    _settle()
    print(f"preview: {widget.count.value} {widget.last_error} "
          f"({time.perf_counter() - started:.2f} s with the first draw)")
    # centre on the tumour annotations (their extent is in world units, µm)
    (top, left), (bottom, right) = viewer.layers["Tumour"].extent.world[:, -2:]
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = ((top + bottom) / 2, (left + right) / 2)
    camera.zoom *= 1.5
    viewer.layers.selection.active = viewer.layers["sample slide"]
    _settle()
    image = viewer.screenshot(canvas_only=False, flash=False)
    import cv2

    cv2.imwrite(str(out), cv2.cvtColor(image, cv2.COLOR_RGBA2BGR))
    print(f"wrote {out} {image.shape[1]}x{image.shape[0]}")
    viewer.close()


if __name__ == "__main__":
    main()
