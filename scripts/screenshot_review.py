"""Save docs/review-widget.png: predicted regions of the sample slide under review.

Run under a display or ``xvfb-run -a python scripts/screenshot_review.py [OUT.png]``.
Makes predictions as the auto-annotation writes them (without a classifier, so that the
picture does not depend on one): a grid of 64-px tiles over the sample slide, each with
a noisy tumour probability from its overlap with the sample's Tumour annotation, the
connected groups of tiles above 0.5 as convex hulls (one false positive in the
background among them), each region 'pending' with its probability mean/std and tile
count. The Review dock then accepts one region, rejects the false positive, moves one
to a new class, and shows the next pending region with an opinion being typed; the
reviewed file is saved and read back, and the counts printed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import napari
import numpy as np
from qtpy.QtWidgets import QApplication
from scipy import ndimage
from scipy.spatial import ConvexHull

from napari_slideseg._layers import (
    annotation_layers_data,
    slide_layer_data,
    slide_scale,
    slide_units,
)
from napari_slideseg._widgets.review import ReviewWidget
from napari_slideseg.core.annotations import AnnotationLayer, AnnotationSet, Region
from napari_slideseg.core.review import review_counts, set_element_attributes, slide_opinion
from napari_slideseg.core.sample import make_sample_slide
from napari_slideseg.core.slide import open_slide

ROOT = Path(__file__).resolve().parents[1]
TILE = 64  # level-0 px


def _settle(rounds: int = 20) -> None:
    for _ in range(rounds):  # let Qt lay out the docks and draw the canvas
        QApplication.processEvents()


def _truth_mask(annotations: AnnotationSet, name: str, size: tuple[int, int]) -> np.ndarray:
    """Level-0 mask of a class (holes cut out) at 1/4 resolution."""
    w, h = size
    mask = np.zeros((h // 4 + 1, w // 4 + 1), np.uint8)
    for layer in annotations:
        if layer.name != name:
            continue
        for region in layer.regions:
            ring = np.round(region.outline() / 4).astype(np.int32)
            cv2.fillPoly(mask, [ring], 0 if region.negative else 1)
    return mask


def predictions(annotations: AnnotationSet, size: tuple[int, int]) -> AnnotationSet:
    """Pending predicted regions of Tumour and Stroma, as auto-annotation makes them."""
    rng = np.random.default_rng(7)
    w, h = size
    cols, rows = w // TILE, h // TILE
    layers = []
    for name, color, fake in (("Tumour", (220, 30, 30), (2240, 1600, 3, 3)),
                              ("Stroma", (20, 160, 60), None)):
        mask = _truth_mask(annotations, name, size)
        cover = cv2.resize(mask.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
        proba = np.clip(0.12 + 0.8 * cover + rng.normal(0, 0.08, cover.shape), 0, 1)
        if fake is not None:  # a false positive in the background
            x, y, nx, ny = fake
            c0, r0 = x // TILE, y // TILE
            proba[r0:r0 + ny, c0:c0 + nx] = rng.uniform(0.55, 0.7, (ny, nx))
        groups, n = ndimage.label(proba > 0.5)
        regions = []
        for k in range(1, n + 1):
            rr, cc = np.nonzero(groups == k)
            if len(rr) < 4:
                continue
            corners = np.concatenate([np.column_stack([cc + dx, rr + dy])
                                      for dx in (0, 1) for dy in (0, 1)]) * float(TILE)
            hull = corners[ConvexHull(corners).vertices]
            region = Region(hull)
            p = proba[rr, cc]
            set_element_attributes(region, {
                "review_status": "pending", "class": name, "probability_mean": float(p.mean()),
                "probability_std": float(p.std()), "probability_var": float(p.var()),
                "tile_count": len(rr), "cluster": k, "outline": "convex"})
            regions.append(region)
        layers.append(AnnotationLayer(name, color, regions))
    return AnnotationSet(layers, mpp=annotations.mpp)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "review-widget.png"
    sample = make_sample_slide()
    slide = open_slide(sample.slide, tile_errors="fill")
    predicted = predictions(sample.annotation_set, slide.level_dimensions[0])
    print("predicted:", {la.name: len(la.regions) for la in predicted})

    viewer = napari.Viewer(title="napari-slideseg: review predicted regions")
    viewer.window._qt_window.resize(1600, 1000)
    data, kwargs, _ = slide_layer_data(slide, name="sample slide")
    viewer.add_image(data, **kwargs)
    for data, kwargs, _ in annotation_layers_data(predicted, slide_scale(slide),
                                                  slide_units(slide)):
        layer = viewer.add_shapes(data, **kwargs)
        layer.opacity = 0.8
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)  # napari >= 0.9
    (overlays.scale_bar if overlays is not None else viewer.scale_bar).visible = True
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Review annotations", area="right")
    widget.reviewer.value = "A. Pathologist"
    _settle()

    widget.next.changed.emit(True)  # the first pending region
    widget.opinion.value = "Solid sheets of tumour cells; outline right."
    widget.accept.changed.emit(True)
    tumour = viewer.layers["Tumour"]
    fake = int(np.argmin(tumour.features["probability_mean"].to_numpy()))
    tumour.selected_data = {fake}
    widget.opinion.value = "Background debris, no tissue."
    widget.reject.changed.emit(True)
    stroma = viewer.layers["Stroma"]
    if len(stroma.data):
        stroma.selected_data = {0}
        widget.opinion.value = "Dense fibrosis, call it scar."
        widget.set_class("Fibrosis")
    widget.slide_opinion.value = ("Invasive carcinoma, two foci; background debris "
                                  "rejected. Margins clear.")
    target = widget.go_next()
    if target is not None:
        widget.opinion.value = "Tumour edge: hull takes in\nsome stroma"
    viewer.layers.selection.active = target[0] if target is not None else tumour
    viewer.reset_view()  # the whole slide: every region with its status
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.zoom *= 1.25
    _settle(40)

    with tempfile.TemporaryDirectory() as folder:
        from napari_slideseg.core.annotations import read_annotations

        saved = widget.save(Path(folder) / "reviewed.xml")
        back = read_annotations(saved)
        print("saved and read back:", review_counts(back), slide_opinion(back)["opinion"])
    print("dock:", widget.counts.value)
    _settle(10)
    image = viewer.screenshot(canvas_only=False, flash=False)
    cv2.imwrite(str(out), cv2.cvtColor(image, cv2.COLOR_RGBA2BGR))
    print(f"wrote {out} {image.shape[1]}x{image.shape[0]}")
    viewer.close()


if __name__ == "__main__":
    main()
