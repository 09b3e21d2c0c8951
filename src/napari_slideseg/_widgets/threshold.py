"""Threshold dock: objects or tissue of a slide, of the current view or of any image layer.

The widget collects the fields of :class:`~napari_slideseg.core.threshold.ThresholdParams`
and an input, and shows the result as the "threshold" Labels layer (connected
components), replaced on each run:

* the current view: the part of the image layer the canvas shows, read at the
  resolution napari shows it (the pyramid level it draws);
* the whole image: a slide at a pyramid level or a pixel size, or any image layer (RGB
  or one channel, from any reader) at one of its levels. A slide level larger than
  :data:`LAZY_PIXELS` is thresholded lazily, chunk by chunk as napari shows it
  (:func:`~napari_slideseg.core.threshold.threshold_pyramid`), as a multiscale mask.

With the 'manual' method the threshold slider re-thresholds the last input live: its
smoothed channel is computed once and kept, so a move costs one comparison, the
clean-up and the labelling. "To polygons" traces the result into a Shapes layer that
saves as an annotation file (Aperio XML, GeoJSON) with the plugin's writer.

Coordinates: results carry the level-0 pixel-corner (x, y) of their first pixel and
their downsample; ``_layers.threshold_labels_data`` turns that into the Labels layer's
scale and translate, so results overlay the image at every level and for any crop.
"""

import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
)
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QSizePolicy

from ._form import align_labels, error_message, level_choices, row
from .slide_info import _slide_of

__all__ = ["LAZY_PIXELS", "RESULT_LAYER", "LevelMasks", "ThresholdInput", "ThresholdWidget",
           "read_image", "read_view", "show_threshold", "threshold_input",
           "threshold_layer", "threshold_slide", "threshold_to_shapes", "threshold_view"]

#: Name of the Labels layer each run replaces.
RESULT_LAYER = "threshold"
#: Whole-slide levels with more pixels than this are thresholded lazily, chunk by chunk.
LAZY_PIXELS = 50_000_000
#: Layer metadata key holding where a result lies and how it was made.
META = "slideseg_threshold"
#: Slider range of each channel before a run has measured it.
CHANNEL_RANGES = {"grey": (0.0, 255.0), "saturation": (0.0, 255.0), "red": (0.0, 255.0),
                  "green": (0.0, 255.0), "blue": (0.0, 255.0), "od": (0.0, 2.5),
                  "hematoxylin": (0.0, 1.5), "eosin": (0.0, 1.5), "dab": (0.0, 1.5)}
#: detect_tissue's settings, set by the "Tissue" button.
TISSUE = {"channel": "saturation", "sigma_um": 16.0, "method": "otsu", "above": True,
          "open_um": 0.0, "close_um": 32.0, "fill_holes": False, "min_area_um2": 50_000.0,
          "min_hole_um2": 50_000.0, "flatten_um": 0.0}
REGIONS = {"current view": "view", "whole image": "whole"}


# -- inputs ------------------------------------------------------------------------------


@dataclass
class ThresholdInput:
    """An image to threshold and where it lies on the image layer it was read from.

    ``image`` pixel (i, j) covers the layer's level-0 pixels x in [x0 + j d, x0 + (j + 1)
    d), y in [y0 + i d, y0 + (i + 1) d), with ``origin`` = (x0, y0) in level-0
    pixel-corner coordinates and ``downsample`` = d. ``scale``, ``translate`` and
    ``units`` are the layer's (row, col) ones, the frame the result is shown in.
    """

    image: np.ndarray  # RGB (h, w, 3) uint8 or one channel (h, w)
    downsample: float
    origin: tuple[float, float]
    mpp: float | None  # µm per image pixel; None: lengths and areas in pixels
    scale: tuple[float, float]
    translate: tuple[float, float]
    units: tuple[str, str]
    mpp0: float | None = None  # µm per level-0 pixel
    description: str = ""


@dataclass
class LevelMasks:
    """A whole-slide result at a large level: lazy 0/1 masks of that level and smaller.

    ``masks[k]`` (dask, uint8) is slide level ``level + k`` at ``downsamples[k]``;
    ``fraction`` is measured on the smallest.
    """

    masks: list[Any]
    threshold: float
    level: int
    downsamples: list[float]
    fraction: float
    params: dict[str, Any] = field(default_factory=dict)


def _layer_frame(layer: Any) -> tuple[tuple[float, float], tuple[float, float],
                                      tuple[str, str]]:
    scale = tuple(float(v) for v in np.asarray(layer.scale, float)[-2:])
    translate = tuple(float(v) for v in np.asarray(layer.translate, float)[-2:])
    units = tuple(str(u) for u in layer.units[-2:])
    return scale, translate, units  # type: ignore[return-value]


def _micrometres(unit: str) -> bool:
    return unit in ("µm", "um", "micrometer", "micron", "micrometre")


def _mpp0(layer: Any) -> float | None:
    """µm per level-0 pixel of an image layer: the slide's, or its scale in µm."""
    slide = _slide_of(layer)
    if slide is not None:
        return float(slide.mpp[0]) if slide.mpp else None
    scale, _, units = _layer_frame(layer)
    return scale[1] if _micrometres(units[1]) else None


def _check_layer(layer: Any) -> None:
    from ..core.errors import SlideSegError

    if layer is None or getattr(layer, "_type_string", "") != "image":
        raise SlideSegError("choose an image layer to threshold (open a slide, or any "
                            "image).")
    if layer.ndim != 2:
        raise SlideSegError(f"{layer.name!r} has {layer.ndim} dimensions: only 2-D image "
                            "layers (RGB or one channel) can be thresholded.")


def _as_image(data: Any, layer: Any) -> np.ndarray:
    """Pixels of an image layer as RGB uint8 or one channel."""
    image = np.asarray(data)
    if image.ndim == 3:
        image = image[..., :3]
        if image.dtype != np.uint8:  # RGB of another type: its contrast limits to 0-255
            lo, hi = (float(v) for v in layer.contrast_limits)
            scaled = (image.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-12))
            image = np.clip(scaled + 0.5, 0, 255).astype(np.uint8)
    return image


def _level_count(layer: Any) -> int:
    return len(layer.data) if layer.multiscale else 1


def _factors(layer: Any, level: int) -> tuple[float, float]:
    """(row, col) level-0 pixels per pixel of ``level``, as napari places the level."""
    if not layer.multiscale:
        return (1.0, 1.0)
    f = np.asarray(layer.downsample_factors[level], float)[-2:]
    return (float(f[0]), float(f[1]))


def read_view(viewer: Any, layer: Any) -> ThresholdInput:
    """The part of ``layer`` the canvas shows, at the pyramid level napari shows.

    A slide is read with :meth:`~napari_slideseg.Slide.read_region` at that level;
    any other image layer is sliced. The box is widened to whole pixels of the level
    and clipped to the image.
    """
    from ..core.errors import SlideSegError

    _check_layer(layer)
    level = int(layer.data_level) if layer.multiscale else 0
    scene = getattr(viewer, "scene", None)
    camera = scene.camera if scene is not None else viewer.camera
    cy, cx = np.asarray(camera.center, float)[-2:]
    h, w = viewer.canvas.size
    half = np.array([h, w], float) / 2 / camera.zoom
    world = np.array([[cy, cx] - half, [cy, cx] + half])
    # level-0 pixel-corner coordinates: napari centres pixel i on data coordinate i
    corners = np.array([np.asarray(layer.world_to_data(p), float)[-2:] for p in world]) + 0.5
    (y0, x0), (y1, x1) = corners.min(axis=0), corners.max(axis=0)
    slide = _slide_of(layer)
    scale, translate, units = _layer_frame(layer)
    mpp0 = _mpp0(layer)
    if slide is not None:
        ds = float(slide.level_downsamples[level])
        fy = fx = ds
        lw, lh = slide.level_dimensions[level]
    else:
        fy, fx = _factors(layer, level)
        lh, lw = (layer.data[level] if layer.multiscale else layer.data).shape[:2]
    c0, c1 = max(0, int(np.floor(x0 / fx))), min(lw, int(np.ceil(x1 / fx)))
    r0, r1 = max(0, int(np.floor(y0 / fy))), min(lh, int(np.ceil(y1 / fy)))
    if c1 <= c0 or r1 <= r0:
        raise SlideSegError("the current view does not show the image: pan to it, or "
                            "threshold the whole image.")
    if slide is not None:
        image = slide.read_region((round(c0 * fx), round(r0 * fy)), level, (c1 - c0, r1 - r0))
    else:
        data = layer.data[level] if layer.multiscale else layer.data
        image = _as_image(data[r0:r1, c0:c1], layer)
    return ThresholdInput(image, fx, (c0 * fx, r0 * fy), mpp0 * fx if mpp0 else None, scale,
                          translate, units, mpp0,
                          f"view of level {level} ({c1 - c0} x {r1 - r0} px)")


def read_image(layer: Any, *, level: int | None = None,
               mpp: float | None = None) -> ThresholdInput:
    """The whole of ``layer``: a slide at ``level`` or ``mpp`` µm/px (default: its
    smallest level), or any image layer at ``level`` (default 0)."""
    from ..core.errors import SlideSegError
    from ..core.threshold import read_slide_image

    _check_layer(layer)
    slide = _slide_of(layer)
    scale, translate, units = _layer_frame(layer)
    mpp0 = _mpp0(layer)
    if slide is not None:
        if level is None and mpp is None:
            level = slide.level_count - 1
        image, ds = read_slide_image(slide, mpp=mpp, level=level)
        what = f"level {level}" if level is not None else f"{mpp:g} µm/px"
    else:
        if mpp is not None:
            raise SlideSegError(f"{layer.name!r} is not a slide: choose one of its levels.")
        level = level or 0
        if not 0 <= level < _level_count(layer):
            raise SlideSegError(f"{layer.name!r} has no level {level}.")
        image = _as_image(layer.data[level] if layer.multiscale else layer.data, layer)
        ds = _factors(layer, level)[1]
        what = f"level {level}"
    return ThresholdInput(image, float(ds), (0.0, 0.0), mpp0 * ds if mpp0 else None, scale,
                          translate, units, mpp0,
                          f"whole image, {what} ({image.shape[1]} x {image.shape[0]} px)")


# -- computing -----------------------------------------------------------------------------


def _channel(inp: ThresholdInput, params: Any) -> np.ndarray:
    from ..core.threshold import prepare_channel

    return prepare_channel(inp.image, params, mpp=inp.mpp)


def _label(channel: np.ndarray, inp: ThresholdInput, params: Any,
           threshold: float | None = None) -> Any:
    """The result from a prepared channel (see ``prepare_channel``): threshold, clean, label."""
    from ..core.threshold import threshold_image

    result = threshold_image(channel, replace(params, sigma_um=0.0, flatten_um=0.0),
                             mpp=inp.mpp, threshold=threshold, downsample=inp.downsample,
                             origin=inp.origin)
    result.params = asdict(params)
    return result


def threshold_input(inp: ThresholdInput, params: Any = None, **settings: Any) -> Any:
    """:func:`~napari_slideseg.core.threshold.threshold_image` of an input, placed where it
    lies (the result's ``downsample`` and ``origin`` are the input's)."""
    from ..core.threshold import ThresholdParams

    params = params or ThresholdParams(**settings)
    params.check()
    return _label(_channel(inp, params), inp, params)


def _metadata(inp: ThresholdInput, source: Any, threshold: float, params: dict[str, Any],
              downsamples: list[float]) -> dict[str, Any]:
    return {META: {"source": getattr(source, "name", None), "origin": inp.origin,
                   "downsamples": downsamples, "scale": inp.scale,
                   "translate": inp.translate, "units": inp.units, "mpp0": inp.mpp0,
                   "threshold": threshold, "params": params}}


def _replace_layer(viewer: Any, name: str, data: Any, kwargs: dict[str, Any]) -> Any:
    """Put ``data`` in the Labels layer ``name``: in place when its frame is the same
    (fast, for live previews), else as a new layer where the old one was."""
    old = viewer.layers[name] if name in viewer.layers else None
    if old is not None and old._type_string == "labels" and not old.multiscale \
            and not kwargs["multiscale"] and isinstance(old.data, np.ndarray) \
            and old.data.shape == data.shape \
            and np.allclose(old.scale, kwargs["scale"]) \
            and np.allclose(old.translate, kwargs["translate"]):
        old.metadata = kwargs["metadata"]
        old.data = data
        return old
    index = None
    if old is not None:
        index = viewer.layers.index(old)
        viewer.layers.remove(old)
    layer = viewer.add_labels(data, **kwargs)
    if index is not None:
        viewer.layers.move(viewer.layers.index(layer), index)
    return layer


def show_threshold(viewer: Any, result: Any, inp: ThresholdInput, source: Any = None,
                   name: str = RESULT_LAYER) -> Any:
    """Show a result as the Labels layer ``name`` (replaced), over its image layer."""
    from .._layers import threshold_labels_data

    data, kwargs, _ = threshold_labels_data(
        result.labels, result.downsample, result.origin, inp.scale, inp.translate,
        inp.units, name, _metadata(inp, source, result.threshold, result.params,
                                   [result.downsample]))
    return _replace_layer(viewer, name, data, kwargs)


def _show_masks(viewer: Any, masks: LevelMasks, inp: ThresholdInput, source: Any,
                name: str = RESULT_LAYER) -> Any:
    from .._layers import threshold_labels_data

    data, kwargs, _ = threshold_labels_data(
        masks.masks, masks.downsamples[0], (0.0, 0.0), inp.scale, inp.translate, inp.units,
        name, _metadata(inp, source, masks.threshold, masks.params, masks.downsamples))
    return _replace_layer(viewer, name, data, kwargs)


def _lazy_masks(layer: Any, level: int, params: Any) -> LevelMasks:
    from ..core.threshold import threshold_pyramid

    slide = _slide_of(layer)
    masks, t = threshold_pyramid(slide, level, params)
    fraction = float(np.asarray(masks[-1]).mean())
    return LevelMasks(masks, t, level,
                      [float(d) for d in slide.level_downsamples[level:]], fraction,
                      asdict(params))


def _lazy_level(layer: Any, level: int | None, mpp: float | None) -> int | None:
    """The slide level to threshold lazily, or None when the image is small enough."""
    slide = _slide_of(layer)
    if slide is None:
        return None
    if level is None and mpp is None:
        return None
    if level is None:
        ds = max(1.0, mpp / slide.mpp[0]) if slide.mpp else 1.0
        w0, h0 = slide.dimensions
        if (w0 / ds) * (h0 / ds) <= LAZY_PIXELS:
            return None
        return slide.get_best_level_for_downsample(ds + 1e-9)
    w, h = slide.level_dimensions[level]
    return level if w * h > LAZY_PIXELS else None


def _frame_only(layer: Any, level: int) -> ThresholdInput:
    """Where a whole slide level lies, without its pixels."""
    slide = _slide_of(layer)
    scale, translate, units = _layer_frame(layer)
    mpp0 = _mpp0(layer)
    ds = float(slide.level_downsamples[level])
    w, h = slide.level_dimensions[level]
    return ThresholdInput(np.empty((0, 0), np.uint8), ds, (0.0, 0.0),
                          mpp0 * ds if mpp0 else None, scale, translate, units, mpp0,
                          f"whole slide, level {level} ({w} x {h} px, lazy)")


def threshold_view(viewer: Any, layer: Any, params: Any = None, *, show: bool = True,
                   **settings: Any) -> Any:
    """Threshold the part of ``layer`` the canvas shows, at the level napari shows.

    Parameters
    ----------
    viewer : napari.Viewer
    layer : napari image layer
        A slide layer, or any 2-D image layer (RGB or one channel).
    params : ThresholdParams, optional
        Or its fields as keywords (``channel='od', method='li', ...``).
    show : bool
        Show the result as the "threshold" Labels layer (replaced).

    Returns
    -------
    ThresholdResult
        Labels of the view; ``downsample`` and ``origin`` (level-0 pixel-corner (x, y))
        say where it lies on the slide.
    """
    inp = read_view(viewer, layer)
    result = threshold_input(inp, params, **settings)
    if show:
        show_threshold(viewer, result, inp, layer)
    return result


def threshold_layer(viewer: Any, layer: Any, params: Any = None, *, level: int = 0,
                    show: bool = True, **settings: Any) -> Any:
    """Threshold a whole image layer of any origin (RGB or one channel) at ``level``."""
    inp = read_image(layer, level=level)
    result = threshold_input(inp, params, **settings)
    if show:
        show_threshold(viewer, result, inp, layer)
    return result


def threshold_slide(viewer: Any, layer: Any, params: Any = None, *, level: int | None = None,
                    mpp: float | None = None, lazy: bool | None = None, show: bool = True,
                    **settings: Any) -> Any:
    """Threshold a whole slide at a pyramid ``level`` or at ``mpp`` µm/px.

    Parameters
    ----------
    viewer : napari.Viewer
    layer : napari image layer
        A slide layer opened by napari-slideseg.
    params : ThresholdParams, optional
        Or its fields as keywords.
    level, mpp
        The resolution: a level, or a pixel size (read from the nearest finer level and
        resized). Default: the smallest level.
    lazy : bool, optional
        Threshold the level chunk by chunk, as napari shows it, into a multiscale 0/1
        mask (:func:`~napari_slideseg.core.threshold.threshold_pyramid`). Default: for
        images over :data:`LAZY_PIXELS` pixels. At ``mpp`` the nearest finer level is
        used.
    show : bool
        Show the result as the "threshold" Labels layer (replaced).

    Returns
    -------
    ThresholdResult or LevelMasks
    """
    from ..core.errors import SlideSegError
    from ..core.threshold import ThresholdParams

    slide = _slide_of(layer)
    if slide is None:
        raise SlideSegError(f"{getattr(layer, 'name', layer)!r} is not a slide opened by "
                            "napari-slideseg: use threshold_layer.")
    params = params or ThresholdParams(**settings)
    params.check()
    if lazy is None:
        big = _lazy_level(layer, level, mpp)
    elif lazy:
        big = level
        if big is None:
            ds = max(1.0, mpp / slide.mpp[0]) if mpp is not None and slide.mpp else None
            big = (slide.get_best_level_for_downsample(ds + 1e-9) if ds is not None
                   else slide.level_count - 1)
    else:
        big = None
    if big is not None:
        masks = _lazy_masks(layer, big, params)
        if show:
            _show_masks(viewer, masks, _frame_only(layer, big), layer)
        return masks
    inp = read_image(layer, level=level, mpp=mpp)
    result = threshold_input(inp, params)
    if show:
        show_threshold(viewer, result, inp, layer)
    return result


def threshold_to_shapes(viewer: Any, labels: Any = None, *, tolerance_um: float = 0.0,
                        min_area_um2: float = 0.0, name: str | None = None) -> list[Any]:
    """Outline a result Labels layer (holes kept) as a Shapes annotation layer.

    Parameters
    ----------
    viewer : napari.Viewer
    labels : Labels layer, optional
        A result of this dock (default: the "threshold" layer), edited or not. Of a
        multiscale result, the largest level with at most :data:`LAZY_PIXELS` pixels is
        traced.
    tolerance_um : float
        Simplification tolerance in µm (in level-0 pixels for an image without a pixel
        size); 0 keeps the exact pixel outlines.
    min_area_um2 : float
        Objects smaller than this (µm², or level-0 pixels²) are left out.
    name : str, optional
        Name of the Shapes layer (default: "<labels name> outlines").

    Returns
    -------
    list of Shapes layers
        Empty when there is no object. Saving them with the plugin's writer gives
        Aperio XML or GeoJSON in the slide's level-0 pixels.
    """
    from .._layers import outline_layers_data
    from ..core.errors import SlideSegError
    from ..core.vector import labels_to_polygons

    if labels is None:
        if RESULT_LAYER not in viewer.layers:
            raise SlideSegError("no result to outline: run a threshold first.")
        labels = viewer.layers[RESULT_LAYER]
    meta = labels.metadata.get(META)
    if meta is None:
        raise SlideSegError(f"{labels.name!r} is not a threshold result.")
    k = 0
    if labels.multiscale:
        sizes = [int(np.prod(d.shape)) for d in labels.data]
        fitting = [i for i, s in enumerate(sizes) if s <= LAZY_PIXELS]
        k = fitting[0] if fitting else len(sizes) - 1
        array = np.asarray(labels.data[k])
    else:
        array = np.asarray(labels.data)
    d = float(meta["downsamples"][k])
    unit = meta["mpp0"] or 1.0
    ann = labels_to_polygons(array, downsample=d, origin=tuple(meta["origin"]),
                             tolerance=tolerance_um / unit, min_area=min_area_um2 / unit ** 2)
    if not len(ann) or not ann.region_count:
        return []
    outline = ann.layers[0]
    outline.name = name or f"{labels.name} outlines"
    outline.color = (255, 200, 0)
    ann.mpp = meta["mpp0"]
    added = []
    for data, kwargs, _ in outline_layers_data(ann, tuple(meta["scale"]),
                                               tuple(meta["translate"]),
                                               tuple(meta["units"]), mpp=meta["mpp0"]):
        added.append(viewer.add_shapes(data, **kwargs))
    return added


# -- the dock --------------------------------------------------------------------------------






@dataclass
class _Cache:
    """The last input and its prepared channel, for live re-thresholding."""

    key: tuple[Any, ...]
    inp: ThresholdInput
    channel: np.ndarray
    source: Any


class ThresholdWidget(Container):
    """Threshold the current view, a whole slide or any image layer into labels."""

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        self._worker: Any = None
        self._busy = False
        self._cancelled = threading.Event()
        self._cache: _Cache | None = None
        self._setting = False  # the slider is being set by the widget, not the user
        self._pending_preview = False
        self._closed = False  # the dock was closed: late worker results are dropped
        self.last_result: Any = None
        self.last_error = ""
        self.last_update_seconds = 0.0  # the last live update: re-threshold and redraw

        self.image = ComboBox(label="Image", choices=self._image_choices,
                              tooltip="Image layer to threshold: a slide opened by "
                                      "napari-slideseg, or any 2-D image (RGB or one "
                                      "channel)")
        self.region = ComboBox(label="Input", value="current view", choices=list(REGIONS),
                               tooltip="current view: what the canvas shows, at the "
                                       "resolution on screen; whole image: the whole slide "
                                       "at the level or pixel size below (levels over "
                                       f"{LAZY_PIXELS // 1_000_000} MP are thresholded "
                                       "chunk by chunk as you look)")
        self.scale_by = ComboBox(value="level", choices=[("level", "level"),
                                                         ("µm/px", "mpp")],
                                 tooltip="Resolution of the whole image: a pyramid level, "
                                         "or a pixel size (slides only; read from the "
                                         "nearest finer level and resized)")
        self.level = ComboBox(choices=self._level_choices,
                              tooltip="Pyramid level, with its pixel size")
        self.mpp = FloatSpinBox(value=8.0, min=0.01, max=1000.0, step=0.5,
                                tooltip="Micrometres per pixel of the thresholded image")
        self.channel = ComboBox(label="Channel", value="saturation",
                                choices=["grey", "saturation", "od", "hematoxylin",
                                         "eosin", "dab", "red", "green", "blue"],
                                tooltip="grey: luminance (tissue is darker: objects "
                                        "below); saturation: colour vs grey glass; od: "
                                        "optical density; hematoxylin / eosin / dab: stain "
                                        "by colour deconvolution; red / green / blue: one "
                                        "channel. Single-channel images are used as they are")
        self.sigma_um = FloatSpinBox(label="Smoothing σ", value=0.0, min=0.0, max=10000.0,
                                     step=0.5, tooltip="Gaussian smoothing before the "
                                     "threshold, σ in µm (in pixels for an image without a "
                                     "pixel size)")
        self.method = ComboBox(label="Method", value="otsu",
                               choices=["otsu", "li", "triangle", "yen", "mean", "quantile",
                                        "manual"],
                               tooltip="How the threshold is found; 'manual' takes the "
                                       "slider's value and updates the result live as it "
                                       "moves")
        self.quantile = FloatSpinBox(value=0.5, min=0.0, max=1.0, step=0.05,
                                     tooltip="The quantile of the channel used as threshold")
        self.value = FloatSlider(label="Threshold", value=128.0, min=0.0, max=255.0,
                                 readout=True, enabled=False,
                                 tooltip="The threshold in channel units: found by the "
                                         "method, or set here with 'manual' (the result "
                                         "follows live; the last input is re-thresholded, "
                                         "Run reads a new one)")
        self.side = ComboBox(value="above", choices=["above", "below"],
                             tooltip="Objects are the pixels above or below the threshold")
        self.open_um = FloatSpinBox(value=0.0, min=0.0, max=10000.0, step=0.5,
                                    tooltip="Opening radius in µm: removes specks and "
                                            "thin bridges")
        self.close_um = FloatSpinBox(value=0.0, min=0.0, max=10000.0, step=0.5,
                                     tooltip="Closing radius in µm: bridges small gaps")
        self.fill_holes = CheckBox(label="Fill holes", value=False,
                                   tooltip="Fill every hole of the objects")
        self.min_area_um2 = FloatSpinBox(value=0.0, min=0.0, max=1e12, step=10.0,
                                         tooltip="Objects smaller than this (µm²) are "
                                                 "dropped; also the smallest outline 'To "
                                                 "polygons' keeps")
        self.min_hole_um2 = FloatSpinBox(value=0.0, min=0.0, max=1e12, step=10.0,
                                         tooltip="Holes smaller than this (µm²) are filled")
        self.flatten_um = FloatSpinBox(value=0.0, min=0.0, max=100000.0, step=10.0,
                                       tooltip="Illumination (vignetting) correction: σ in "
                                               "µm of the background divided out; 0 = off. "
                                               "Not applied to levels thresholded chunk by "
                                               "chunk")
        self.tissue = PushButton(text="Tissue settings",
                                 tooltip="Settings for tissue on glass (as the tissue "
                                         "command): saturation, σ 16 µm, Otsu, closing 32 "
                                         "µm, objects and holes below 0.05 mm² removed; "
                                         "the whole slide at about 8 µm/px")
        self.run = PushButton(text="Run", tooltip="Threshold the input with these settings; "
                                                  f"the result replaces the '{RESULT_LAYER}' "
                                                  "layer")
        self.cancel = PushButton(text="Cancel", enabled=False,
                                 tooltip="Stop waiting for the run under way (its result is "
                                         "dropped)")
        self.bar = ProgressBar(value=0, min=0, max=0, visible=False,
                               tooltip="Thresholding...")
        self.status = Label(value="", tooltip="Objects, area fraction and threshold of the "
                                              "last result")
        self.tolerance_um = FloatSpinBox(value=1.0, min=0.0, max=10000.0, step=0.5,
                                         tooltip="Simplification tolerance of the outlines "
                                                 "in µm (0: exact pixel outlines)")
        self.polygons = PushButton(text="To polygons",
                                   tooltip="Outline the result (holes kept) as a Shapes "
                                           "layer; File > Save Selected Layers writes it as "
                                           "Aperio XML or GeoJSON")
        self.status.native.setWordWrap(True)
        self.status.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.status.native.setSizePolicy(QSizePolicy.Policy.Expanding,
                                         QSizePolicy.Policy.Preferred)
        for spin in (self.mpp, self.sigma_um, self.quantile, self.open_um, self.close_um,
                     self.min_area_um2, self.min_hole_um2, self.flatten_um,
                     self.tolerance_um):
            spin.native.setMaximumWidth(96)
        for spin in (self.min_area_um2, self.min_hole_um2):
            spin.native.setDecimals(0)
            spin.native.setMaximumWidth(120)
        for combo in (self.image, self.region, self.scale_by, self.level, self.channel,
                      self.method, self.side):
            combo.native.setSizeAdjustPolicy(
                combo.native.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.native.setMinimumContentsLength(4)
        self.resolution = row("Resolution", self.scale_by, self.level, self.mpp)
        super().__init__(widgets=[
            self.image, self.region, self.resolution, self.channel,
            row("Smoothing σ µm", self.sigma_um, stretch=True),
            row("Method", self.method, self.quantile), self.value,
            row("Objects", self.side, "the threshold", stretch=True),
            row("Open µm", self.open_um, "close µm", self.close_um),
            self.fill_holes,
            row("Min area µm²", self.min_area_um2, "hole", self.min_hole_um2),
            row("Illumination σ", self.flatten_um, "µm (0 = off)", stretch=True),
            row("", self.tissue, self.run, self.cancel), self.bar, self.status,
            row("Outlines", self.tolerance_um, "µm", self.polygons)])
        align_labels(self)

        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(10)  # coalesce slider moves: only the latest is computed
        self._timer.timeout.connect(self._on_timer)
        self.image.changed.connect(self._on_image)
        for widget in (self.region, self.scale_by, self.method):
            widget.changed.connect(self._on_form)
        self.channel.changed.connect(self._on_channel)
        self.value.changed.connect(self._on_value)
        self.tissue.changed.connect(self._on_tissue)
        self.run.changed.connect(self._on_run)
        self.cancel.changed.connect(self._on_cancel)
        self.polygons.changed.connect(self._on_polygons)
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self.native.destroyed.connect(self._on_closed)
        self.image.reset_choices()
        self._on_image()
        self._on_channel()

    # -- choices --------------------------------------------------------------------------
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        layers = [la for la in self.viewer.layers if la._type_string == "image"]
        # slides first, then other images, top of the layer list first
        layers = sorted(reversed(layers), key=lambda la: _slide_of(la) is None)
        return [(la.name, la) for la in layers]

    def _level_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        layer = self.image.value if hasattr(self, "image") else None
        if layer is None:
            return []
        if _slide_of(layer) is not None:
            return level_choices(layer)
        shapes = [d.shape for d in layer.data] if layer.multiscale else [layer.data.shape]
        return [(f"{k} ({s[1]} x {s[0]})", k) for k, s in enumerate(shapes)]

    def reset_choices(self, *_: Any) -> None:
        """Refresh the layer and level choices (napari calls this on layer events)."""
        if not hasattr(self, "_timer"):
            super().reset_choices()
            return
        self._on_layers_changed()

    # -- callbacks --------------------------------------------------------------------------
    def _on_layers_changed(self, _event: Any = None) -> None:
        before = self.image.value
        self.image.reset_choices()
        if self.image.value is not before:
            self._on_image()

    def _on_image(self, _value: Any = None) -> None:
        self.level.reset_choices()
        if len(self.level.choices):
            self.level.value = self.level.choices[-1]  # the smallest level: quick
        self._on_form()

    def _on_form(self, _value: Any = None) -> None:
        """Show the fields the current choices use."""
        layer = self.image.value
        whole = REGIONS[self.region.value] == "whole"
        is_slide = layer is not None and _slide_of(layer) is not None
        self.resolution.visible = whole
        if not is_slide and self.scale_by.value == "mpp":
            self.scale_by.value = "level"
        self.scale_by.enabled = is_slide
        self.level.visible = self.scale_by.value == "level"
        self.mpp.visible = self.scale_by.value == "mpp"
        self.quantile.visible = self.method.value == "quantile"
        self.value.enabled = self.method.value == "manual"

    def _on_channel(self, _value: Any = None) -> None:
        self._set_range(*CHANNEL_RANGES[self.channel.value])

    def _set_range(self, lo: float, hi: float, value: float | None = None) -> None:
        self._setting = True
        try:
            if hi <= lo:
                hi = lo + 1.0
            self.value.min, self.value.max = float(lo), float(hi)
            self.value.step = (hi - lo) / 1000 if hi - lo < 10 else 0.1
            target = self.value.value if value is None else value
            self.value.value = float(min(max(target, lo), hi))
        finally:
            self._setting = False

    def _on_tissue(self, _value: Any = None) -> None:
        for name, value in TISSUE.items():
            if name == "above":
                self.side.value = "above" if value else "below"
            elif name != "method" and name != "channel":
                getattr(self, name).value = value
        self.channel.value = TISSUE["channel"]
        self.method.value = TISSUE["method"]
        self.region.value = "whole image"
        layer = self.image.value
        slide = _slide_of(layer) if layer is not None else None
        if slide is not None and slide.mpp:
            # the level nearest 8 µm/px
            self.scale_by.value = "level"
            ds = np.asarray(slide.level_downsamples, float)
            self.level.value = int(np.argmin(np.abs(np.log(ds * slide.mpp[0] / 8.0))))

    # -- parameters -----------------------------------------------------------------------
    def params(self) -> Any:
        """The :class:`~napari_slideseg.core.threshold.ThresholdParams` set here."""
        from ..core.threshold import ThresholdParams

        return ThresholdParams(
            channel=self.channel.value, sigma_um=float(self.sigma_um.value),
            method=self.method.value,
            value=float(self.value.value) if self.method.value == "manual" else None,
            quantile=float(self.quantile.value), above=self.side.value == "above",
            open_um=float(self.open_um.value), close_um=float(self.close_um.value),
            fill_holes=bool(self.fill_holes.value),
            min_area_um2=float(self.min_area_um2.value),
            min_hole_um2=float(self.min_hole_um2.value),
            flatten_um=float(self.flatten_um.value))

    def _channel_key(self) -> tuple[Any, ...]:
        """What the prepared channel depends on (the view box aside: the slider
        re-thresholds the last input, Run reads a new one)."""
        layer = self.image.value
        whole = REGIONS[self.region.value] == "whole"
        return (id(layer), self.region.value,
                (self.scale_by.value, self.level.value, float(self.mpp.value)) if whole
                else None, self.channel.value, float(self.sigma_um.value),
                float(self.flatten_um.value))

    # -- running ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a run is under way."""
        return self._busy

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.run.enabled = self.tissue.enabled = self.polygons.enabled = not busy
        self.cancel.enabled = busy
        self.bar.visible = busy

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.last_error = message
        self.status.value = f"Error: {message}"
        show_error(f"Threshold: {message}")

    def _on_run(self, _value: Any = None) -> None:
        from napari.qt.threading import create_worker

        if self._busy:
            return
        try:
            layer = self.image.value
            _check_layer(layer)
            params = self.params()
            params.check()
            whole = REGIONS[self.region.value] == "whole"
            level = int(self.level.value) if self.scale_by.value == "level" and \
                self.level.value is not None else None
            mpp = float(self.mpp.value) if self.scale_by.value == "mpp" else None
            # the view is read now: the canvas may move while the worker runs
            inp = read_view(self.viewer, layer) if not whole else None
            lazy = _lazy_level(layer, level, mpp) if whole else None
        except Exception as exc:
            self._fail(error_message(exc))
            return
        self.last_error = ""
        self._cancelled.clear()
        key = self._channel_key()
        started = time.perf_counter()

        def work() -> Any:
            if lazy is not None:
                return _lazy_masks(layer, lazy, params), None
            read = inp if inp is not None else read_image(layer, level=level, mpp=mpp)
            channel = _channel(read, params)
            return _label(channel, read, params), _Cache(key, read, channel, layer)

        def done(value: Any) -> None:
            if self._closed:
                return
            if self._cancelled.is_set():
                self.status.value = "Cancelled."
                return
            result, cache = value
            seconds = time.perf_counter() - started
            self._cache = cache
            self.last_result = result
            if cache is None:
                _show_masks(self.viewer, result, _frame_only(layer, lazy), layer)
                self._show_value(result.threshold)
                self.status.value = self._lazy_report(result, seconds)
                return
            show_threshold(self.viewer, result, cache.inp, layer)
            finite = cache.channel[np.isfinite(cache.channel)]
            if finite.size:
                self._set_range(float(finite.min()), float(finite.max()))
            self._show_value(result.threshold)
            self.status.value = self._report(result, cache.inp, seconds)

        self.status.value = "Thresholding..."
        self._worker = create_worker(work, _start_thread=False, _connect={
            "returned": done,
            "errored": lambda exc: None if self._closed else self._fail(error_message(exc)),
            "finished": self._on_finished})
        self._set_busy(True)
        self._worker.start()

    def _show_value(self, threshold: float) -> None:
        self._set_range(min(self.value.min, threshold), max(self.value.max, threshold),
                        threshold)

    def _on_closed(self, *_: Any) -> None:
        self._closed = True
        self._cancelled.set()
        try:
            self._timer.stop()
        except RuntimeError:  # deleted with the dock already
            pass
        self.viewer.layers.events.inserted.disconnect(self._on_layers_changed)
        self.viewer.layers.events.removed.disconnect(self._on_layers_changed)

    def _on_finished(self) -> None:
        self._worker = None
        if self._closed:
            return
        self._set_busy(False)
        if self._pending_preview:
            self._pending_preview = False
            self._timer.start()

    def _on_cancel(self, _value: Any = None) -> None:
        self._cancelled.set()
        self.cancel.enabled = False
        self.status.value = "Cancelling..."

    @staticmethod
    def _report(result: Any, inp: ThresholdInput, seconds: float) -> str:
        n = result.count
        return (f"{n} object{'s' if n != 1 else ''}, {100 * result.fraction():.1f} % of the "
                f"area, threshold {result.threshold:.4g}. Input: {inp.description} at "
                f"{result.downsample:.3g}x ({seconds:.2f} s).")

    @staticmethod
    def _lazy_report(masks: LevelMasks, seconds: float) -> str:
        h, w = masks.masks[0].shape
        return (f"Mask of level {masks.level} ({w} x {h} px, computed as napari shows "
                f"it): about {100 * masks.fraction:.1f} % of the slide, threshold "
                f"{masks.threshold:.4g} ({seconds:.2f} s). Objects are not counted at "
                "this size; hole filling and minimum areas apply to smaller levels.")

    # -- live threshold ---------------------------------------------------------------------
    def _on_value(self, _value: Any = None) -> None:
        if self._setting or self.method.value != "manual":
            return
        self._timer.start()  # restarts: a burst of moves computes once, the last value

    def _on_timer(self) -> None:
        if self._busy:
            self._pending_preview = True
            return
        cache = self._cache
        if cache is not None and cache.key == self._channel_key():
            self.preview()
        else:  # nothing to re-threshold yet (or another input): a full run
            self._on_run()

    def preview(self) -> Any:
        """Re-threshold the last input with the current settings (no reading, no
        smoothing) and update the result layer; returns the result."""
        cache = self._cache
        if cache is None:
            return None
        started = time.perf_counter()
        try:
            params = self.params()
            params.check()
            result = _label(cache.channel, cache.inp, params)
        except Exception as exc:
            self._fail(error_message(exc))
            return None
        show_threshold(self.viewer, result, cache.inp, cache.source)
        self.last_result = result
        self.last_update_seconds = time.perf_counter() - started
        self.status.value = self._report(result, cache.inp, self.last_update_seconds)
        return result

    # -- outlines ---------------------------------------------------------------------------
    def _on_polygons(self, _value: Any = None) -> None:
        try:
            added = threshold_to_shapes(self.viewer, tolerance_um=float(self.tolerance_um.value),
                                        min_area_um2=float(self.min_area_um2.value))
        except Exception as exc:
            self._fail(error_message(exc))
            return
        if not added:
            self.status.value = "No object to outline."
            return
        n = sum(len(la.data) for la in added)
        self.status.value = (f"{n} outline{'s' if n != 1 else ''} in the Shapes layer "
                             f"'{added[0].name}' (save it as .xml or .geojson).")
