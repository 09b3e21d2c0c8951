"""Save docs/screenshot.png: napari with the sample slide, its annotations and the dock.

Run under a display or ``xvfb-run -a python scripts/screenshot.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari

from napari_slideseg._sample_data import sample_layers
from napari_slideseg._widgets.slide_info import SlideInfoWidget

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshot.png"
    viewer = napari.Viewer(title="napari-slideseg sample")
    viewer.window._qt_window.resize(1500, 900)
    for data, kwargs, kind in sample_layers():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.window.add_dock_widget(SlideInfoWidget(viewer), name="Slide info", area="right")
    viewer.scale_bar.visible = True
    viewer.reset_view()
    viewer.layers.selection.active = viewer.layers["sample slide"]
    from qtpy.QtWidgets import QApplication

    for _ in range(20):  # let Qt lay out the dock before grabbing the window
        QApplication.processEvents()
    image = viewer.screenshot(canvas_only=False, flash=False)
    import cv2

    cv2.imwrite(str(out), cv2.cvtColor(image, cv2.COLOR_RGBA2BGR))
    print(f"wrote {out} {image.shape[1]}x{image.shape[0]}")
    viewer.close()


if __name__ == "__main__":
    main()
