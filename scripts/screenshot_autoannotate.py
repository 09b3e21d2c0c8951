"""Save docs/autoannotate-widget.png: the Auto-annotate dock after two review rounds.

Run under a display or ``xvfb-run -a python scripts/screenshot_autoannotate.py [OUT.png]``.
Opens the sample slide with its annotations, trains the built-in tile classifier on
them (64-px tiles), predicts, shows the tumour heatmap and the predicted regions; an
expert review is simulated (the largest region accepted, the others rejected), the dock
retrains from it, and the second round is reviewed the same way, so that the plot shows
Dice across iterations. Prints what each round found.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import cv2
import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_slideseg._widgets.autoannotate import AutoAnnotateWidget
from napari_slideseg.core.sample import make_sample_slide

ROOT = Path(__file__).resolve().parents[1]


def _settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        QApplication.processEvents()


def _wait(widget: AutoAnnotateWidget, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while widget.running and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)
    if widget.last_error:
        raise SystemExit(f"auto-annotate failed: {widget.last_error}")


def _review(widget: AutoAnnotateWidget) -> None:
    """Accept the largest predicted region of each class, reject the rest."""
    for layer in widget.predicted_layers():
        if not len(layer.data):
            continue
        tiles = np.asarray(layer.features["tile_count"], float)
        status = ["rejected"] * len(tiles)
        status[int(np.argmax(tiles))] = "accepted"
        layer.features["review_status"] = status


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "autoannotate-widget.png"
    sample = make_sample_slide()
    viewer = napari.Viewer(title="napari-slideseg: auto-annotation")
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open(str(sample.slide), plugin="napari-slideseg")
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)  # napari >= 0.9
    (overlays.scale_bar if overlays is not None else viewer.scale_bar).visible = True
    widget = AutoAnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Auto-annotate", area="right")
    with tempfile.TemporaryDirectory() as work:
        widget.size.value = 64
        widget.min_samples.value = 2
        widget.workdir.value = Path(work)
        print("training layers:", [la.name for la in widget.layers.value])
        for round_ in (1, 2):
            widget.start_run() if round_ == 1 else widget.start_retrain()
            _wait(widget)
            print(f"round {round_}:", widget.status.value)
            _review(widget)
        widget.start_retrain()
        _wait(widget)
        print("round 3:", widget.status.value)
        for layer in viewer.layers:
            if layer._type_string == "shapes" and "slideseg_predicted" not in layer.metadata:
                layer.visible = False  # the training annotations: hidden, for a clear view
        widget.opacity.value = 0.55
        viewer.reset_view()
        _settle(40)
        image = viewer.screenshot(canvas_only=False, flash=False)
    cv2.imwrite(str(out), cv2.cvtColor(image, cv2.COLOR_RGBA2BGR))
    print(f"wrote {out} {image.shape[1]}x{image.shape[0]}")
    viewer.close()


if __name__ == "__main__":
    main()
