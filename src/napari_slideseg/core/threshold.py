"""Thresholding and tissue detection, QuPath-style: channel, smoothing, threshold, clean-up.

A threshold turns one channel of an RGB image into objects: the channel (grey,
saturation, optical density, haematoxylin / eosin / DAB by colour deconvolution, or one
of red, green, blue) is smoothed with a Gaussian whose sigma is given in micrometres,
thresholded (Otsu, Li, triangle, Yen, mean, a quantile or a manual value; pixels above
or below), cleaned (opening and closing with radii in micrometres, holes filled, objects
and holes below an area in square micrometres removed) and labelled into connected
components (8-connected).

Everything that takes a length or an area takes it in micrometres, so one setting works
at every resolution; the image's pixel size (``mpp``) converts them. Without a pixel
size lengths are in pixels of the image.

For a whole slide, :func:`detect_tissue` works on one small level (about 8 µm/px by
default): a few megapixels for any slide. :func:`threshold_level` applies a threshold to
a large level lazily, chunk by chunk with overlaps wide enough for the smoothing and
the morphology, after estimating the threshold on a small level, so memory stays
bounded; that path gives a mask (label 1), since connected components and hole
filling need the whole level at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .errors import SlideSegError
from .slide import Slide

__all__ = ["CHANNELS", "METHODS", "ThresholdParams", "ThresholdResult", "channel_image",
           "detect_tissue", "flatten_illumination", "prepare_channel", "read_slide_image",
           "threshold_image", "threshold_level", "threshold_pyramid", "threshold_value"]

CHANNELS = ("grey", "saturation", "od", "hematoxylin", "eosin", "dab", "red", "green",
            "blue")
METHODS = ("otsu", "li", "triangle", "yen", "mean", "quantile", "manual")


@dataclass
class ThresholdParams:
    """A thresholder's settings (lengths in µm, areas in µm²; pixels without an mpp)."""

    channel: str = "saturation"
    sigma_um: float = 0.0
    method: str = "otsu"
    value: float | None = None  # the threshold for method='manual'
    quantile: float = 0.5  # for method='quantile'
    above: bool = True  # objects are the pixels above the threshold
    open_um: float = 0.0
    close_um: float = 0.0
    fill_holes: bool = False
    min_area_um2: float = 0.0
    min_hole_um2: float = 0.0
    flatten_um: float = 0.0  # illumination correction: background sigma (0 = off)

    def check(self) -> None:
        if self.channel not in CHANNELS:
            raise SlideSegError(f"channel {self.channel!r}: use one of {', '.join(CHANNELS)}.")
        if self.method not in METHODS:
            raise SlideSegError(f"method {self.method!r}: use one of {', '.join(METHODS)}.")
        if self.method == "manual" and self.value is None:
            raise SlideSegError("method 'manual' needs a threshold value.")
        if not 0.0 <= self.quantile <= 1.0:
            raise SlideSegError(f"quantile must be in [0, 1], not {self.quantile}.")
        for name in ("sigma_um", "open_um", "close_um", "min_area_um2", "min_hole_um2",
                     "flatten_um"):
            value = getattr(self, name)
            if not (value >= 0 and np.isfinite(value)):
                raise SlideSegError(f"{name} must be 0 or more, not {value}.")


@dataclass
class ThresholdResult:
    """Labels of the objects found, and where they lie on the slide."""

    labels: np.ndarray  # (h, w) int32, 0 = background, 1..n objects
    threshold: float  # the threshold used, in channel units
    downsample: float = 1.0  # level-0 pixels per label pixel
    origin: tuple[float, float] = (0.0, 0.0)  # level-0 (x, y) of the top-left pixel's corner
    mpp: float | None = None  # µm per label pixel
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(self.labels.max(initial=0))

    def fraction(self) -> float:
        """Fraction of the pixels that belong to an object."""
        return float(np.count_nonzero(self.labels)) / max(1, self.labels.size)


def channel_image(rgb: np.ndarray, channel: str) -> np.ndarray:
    """One channel of an RGB uint8 image as float32 (h, w).

    grey: luminance 0-255 (tissue is darker: threshold below); saturation: HSV
    saturation 0-255; od: mean optical density (-log10 of transmitted light, 0 for
    white); hematoxylin / eosin / dab: stain concentrations by colour deconvolution
    (Ruifrok & Johnston, scikit-image's H&E-DAB matrix); red / green / blue: that channel.
    """
    import cv2

    if channel not in CHANNELS:
        raise SlideSegError(f"channel {channel!r}: use one of {', '.join(CHANNELS)}.")
    rgb = np.ascontiguousarray(rgb[..., :3])
    if rgb.dtype != np.uint8:
        raise SlideSegError(f"an RGB uint8 image is needed, not {rgb.dtype}.")
    if channel in ("red", "green", "blue"):
        return rgb[..., ("red", "green", "blue").index(channel)].astype(np.float32)
    if channel == "grey":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    if channel == "saturation":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32)
    od = -np.log10((rgb.astype(np.float32) + 1.0) / 256.0)
    if channel == "od":
        return od.mean(axis=2)
    from skimage.color import hed_from_rgb

    stains = od.reshape(-1, 3) @ hed_from_rgb.astype(np.float32)
    index = ("hematoxylin", "eosin", "dab").index(channel)
    return np.maximum(stains[:, index], 0).reshape(rgb.shape[:2])


def threshold_value(image: np.ndarray, method: str = "otsu", *, value: float | None = None,
                    quantile: float = 0.5) -> float:
    """The threshold ``method`` gives for ``image`` (a float channel)."""
    from skimage import filters

    data = np.asarray(image, np.float32)
    finite = data[np.isfinite(data)]
    if not finite.size:
        raise SlideSegError("the image has no finite values to threshold.")
    if method == "manual":
        if value is None:
            raise SlideSegError("method 'manual' needs a threshold value.")
        return float(value)
    if method == "quantile":
        return float(np.quantile(finite, quantile))
    if method == "mean":
        return float(finite.mean())
    if float(finite.min()) == float(finite.max()):
        return float(finite.min())  # one value: nothing to separate
    if method == "otsu":
        return _otsu(finite)
    functions = {"li": filters.threshold_li,
                 "triangle": filters.threshold_triangle, "yen": filters.threshold_yen}
    if method not in functions:
        raise SlideSegError(f"method {method!r}: use one of {', '.join(METHODS)}.")
    return float(functions[method](finite))


def flatten_illumination(rgb: np.ndarray, sigma_px: float) -> np.ndarray:
    """Illumination (vignetting) correction for tiled brightfield microscope images.

    The background is estimated per channel on a reduced copy: a grey closing (dark
    objects up to ``sigma_px`` across are removed, like a rolling ball) smoothed by a
    Gaussian of ``sigma_px``. Each channel is divided by it and scaled back to its mean,
    so an image darker at its corners comes out evenly lit. RGB uint8 in and out.
    """
    import cv2

    data = np.asarray(rgb, np.float32)
    h, w = data.shape[:2]
    f = max(1.0, sigma_px / 8.0)  # work where sigma is ~8 px: cheap for any sigma
    small = cv2.resize(data, (max(1, round(w / f)), max(1, round(h / f))),
                       interpolation=cv2.INTER_AREA)
    r = max(1, int(round(sigma_px / f)))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    background = cv2.morphologyEx(small, cv2.MORPH_CLOSE, disk, borderType=cv2.BORDER_REFLECT)
    background = cv2.GaussianBlur(background, (0, 0), sigmaX=sigma_px / f,
                                  borderType=cv2.BORDER_REFLECT)
    background = cv2.resize(background, (w, h), interpolation=cv2.INTER_LINEAR)
    if background.ndim == 2:
        background = background[..., None]
    level = background.reshape(-1, data.shape[-1]).mean(axis=0)
    flat = data / np.maximum(background, 1.0) * level
    return np.clip(flat + 0.5, 0, 255).astype(np.uint8)


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold on a 256-bin histogram; where several thresholds separate the
    classes equally well (empty bins between two modes), the middle of them."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist, dtype=np.float64)[:-1]
    w1 = float(hist.sum()) - w0
    s0 = np.cumsum(hist * centres)[:-1]
    m0 = s0 / np.maximum(w0, 1)
    m1 = (float((hist * centres).sum()) - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    best = np.flatnonzero(between >= between.max() * (1 - 1e-12))
    # a threshold after bin i puts bins 0..i below it: the plateau's middle
    return float((edges[best.min() + 1] + edges[best.max() + 1]) / 2)


def _disk(radius_px: float) -> np.ndarray | None:
    import cv2

    r = int(round(radius_px))
    if r < 1:
        return None
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _smooth(channel: np.ndarray, sigma_px: float) -> np.ndarray:
    import cv2

    if sigma_px <= 0:
        return channel
    return cv2.GaussianBlur(channel, (0, 0), sigmaX=sigma_px, sigmaY=sigma_px,
                            borderType=cv2.BORDER_REFLECT)


def _mask(channel: np.ndarray, t: float, params: ThresholdParams,
          px_per_um: float) -> np.ndarray:
    """Smoothing, threshold and opening/closing: all local operations."""
    import cv2

    smooth = _smooth(channel, params.sigma_um * px_per_um)
    mask = (smooth > t) if params.above else (smooth < t)
    mask = mask.astype(np.uint8)
    opening, closing = _disk(params.open_um * px_per_um), _disk(params.close_um * px_per_um)
    if opening is not None:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, opening)
    if closing is not None:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, closing)
    return mask.astype(bool)


def _clean_and_label(mask: np.ndarray, params: ThresholdParams,
                     px_per_um: float) -> np.ndarray:
    """Holes filled or small holes closed, small objects dropped, components labelled."""
    import cv2

    area_px = px_per_um * px_per_um
    if params.fill_holes or params.min_hole_um2 > 0:
        # holes: 4-connected background components (the dual of 8-connected objects)
        # that do not touch the border
        n, holes, stats, _ = cv2.connectedComponentsWithStats(
            (~mask).astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
        x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
        w, h = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
        inner = (x > 0) & (y > 0) & (x + w < mask.shape[1]) & (y + h < mask.shape[0])
        if not params.fill_holes:
            inner &= stats[:, cv2.CC_STAT_AREA] < params.min_hole_um2 * area_px
        inner[0] = False  # the objects themselves
        mask = mask | inner[holes]
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8),
                                                           connectivity=8,
                                                           ltype=cv2.CV_32S)
    if params.min_area_um2 > 0 and n > 1:
        keep = stats[:, cv2.CC_STAT_AREA] >= params.min_area_um2 * area_px
        keep[0] = False
        new_ids = np.zeros(n, np.int32)
        new_ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        labels = new_ids[labels]
    return labels.astype(np.int32, copy=False)


def prepare_channel(image: np.ndarray, params: ThresholdParams, *,
                    mpp: float | None = None) -> np.ndarray:
    """The smoothed channel a threshold is applied to: the part of
    :func:`threshold_image` that does not depend on the threshold.

    Parameters
    ----------
    image : array
        RGB (h, w, 3) uint8 (illumination corrected when ``params.flatten_um`` is set,
        then ``params.channel`` taken) or one channel (h, w), used as it is.
    params : ThresholdParams
        ``channel``, ``flatten_um`` and ``sigma_um`` are used.
    mpp : float, optional
        µm per pixel of ``image`` (lengths in pixels without it).

    Returns
    -------
    (h, w) float32 array
        ``threshold_image(image, params, mpp=mpp)`` equals
        ``threshold_image(channel, replace(params, sigma_um=0, flatten_um=0), mpp=mpp)``
        for this ``channel``, so a threshold moved by hand only needs the cheap second
        step.
    """
    data = np.asarray(image)
    px_per_um = 1.0 / mpp if mpp else 1.0
    if params.flatten_um > 0 and data.ndim == 3:
        data = flatten_illumination(data, params.flatten_um * px_per_um)
    channel = (channel_image(data, params.channel) if data.ndim == 3
               else data.astype(np.float32, copy=False))
    if channel.ndim != 2:
        raise SlideSegError(f"an (h, w, 3) RGB image or an (h, w) channel is needed, not "
                            f"shape {data.shape}.")
    return _smooth(channel, params.sigma_um * px_per_um)


def threshold_image(image: np.ndarray, params: ThresholdParams | None = None, *,
                    mpp: float | None = None, threshold: float | None = None,
                    downsample: float = 1.0, origin: tuple[float, float] = (0.0, 0.0),
                    **settings: Any) -> ThresholdResult:
    """Threshold an RGB (h, w, 3) uint8 image or a single channel (h, w) into objects.

    Parameters
    ----------
    image : array
        RGB uint8 (the channel is taken from ``params.channel``) or one channel.
    params : ThresholdParams, optional
        Or give its fields as keywords (``channel='od', method='li', ...``).
    mpp : float, optional
        µm per pixel of ``image``: converts the µm lengths and µm² areas to pixels.
    threshold : float, optional
        Use this value instead of estimating it (e.g. one found on a smaller level).
    downsample, origin : float, (x, y)
        Where the image lies on the slide, copied into the result.

    Returns
    -------
    ThresholdResult
    """
    params = params or ThresholdParams(**settings)
    params.check()
    px_per_um = 1.0 / mpp if mpp else 1.0
    smooth = prepare_channel(image, params, mpp=mpp)  # smoothed once, for both steps
    if threshold is None:
        threshold = threshold_value(smooth, params.method, value=params.value,
                                    quantile=params.quantile)
    mask = _mask(smooth, threshold, replace(params, sigma_um=0.0), px_per_um)
    labels = _clean_and_label(mask, params, px_per_um)
    return ThresholdResult(labels, float(threshold), downsample, origin, mpp, asdict(params))


def read_slide_image(slide: Slide, *, mpp: float | None = None, level: int | None = None
                     ) -> tuple[np.ndarray, float]:
    """The whole slide as one RGB (h, w, 3) uint8 image, at ``level`` or at ``mpp`` µm/px.

    At ``mpp`` the nearest finer level is read and resized (area interpolation).
    Returns ``(image, downsample)``: level-0 pixels per image pixel, so image pixel
    (i, j) covers level-0 x in [j d, (j + 1) d) and y in [i d, (i + 1) d).
    """
    return _level_image(slide, mpp, level)


def _level_image(slide: Slide, mpp: float | None, level: int | None
                 ) -> tuple[np.ndarray, float]:
    """The whole slide as RGB at ``mpp`` (read from the nearest finer level and resized)
    or at ``level``; returns (image, level-0 pixels per image pixel)."""
    import cv2

    if level is not None:
        if not 0 <= level < slide.level_count:
            raise SlideSegError(f"{slide.path}: level {level} does not exist (the slide has "
                                f"{slide.level_count}).")
        lw, lh = slide.level_dimensions[level]
        return slide.pyramid[level].compute(), float(slide.level_downsamples[level])
    if mpp is None or not mpp > 0:
        raise SlideSegError(f"give a level or a positive mpp, not {mpp}.")
    if not slide.mpp:
        raise SlideSegError(f"{slide.path}: the pixel size is unknown; give a level.")
    ds = max(1.0, mpp / slide.mpp[0])
    read = slide.get_best_level_for_downsample(ds + 1e-9)
    image = slide.pyramid[read].compute()
    w0, h0 = slide.dimensions
    size = (max(1, round(w0 / ds)), max(1, round(h0 / ds)))
    if (image.shape[1], image.shape[0]) != size:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image, w0 / size[0]


def detect_tissue(slide: Slide, *, mpp: float | None = 8.0, level: int | None = None,
                  params: ThresholdParams | None = None, **settings: Any) -> ThresholdResult:
    """Tissue (or any thresholded objects) of the whole slide at a small scale.

    Defaults suit H&E on glass: saturation, sigma 16 µm, Otsu, above, closing 32 µm,
    holes below 0.05 mm² closed, objects below 0.05 mm² dropped. The slide is read at
    ``mpp`` µm/px (default 8; or at ``level``). Without a pixel size the slide is read
    at its smallest level and lengths are in its pixels.
    """
    if params is None:
        defaults = {"channel": "saturation", "sigma_um": 16.0, "method": "otsu",
                    "above": True, "close_um": 32.0, "min_hole_um2": 50_000.0,
                    "min_area_um2": 50_000.0}
        params = ThresholdParams(**{**defaults, **settings})
    if level is None and not slide.mpp:
        level = slide.level_count - 1
    image, ds = _level_image(slide, mpp, level)
    image_mpp = slide.mpp[0] * ds if slide.mpp else None
    return threshold_image(image, params, mpp=image_mpp, downsample=ds)


def threshold_level(slide: Slide, level: int, params: ThresholdParams | None = None, *,
                    threshold: float | None = None, estimate_mpp: float = 8.0,
                    chunk: int = 2048, **settings: Any) -> tuple[Any, float]:
    """A lazy dask mask (h, w) uint8 of one level, 1 where the threshold holds.

    The threshold is estimated on the slide at ``estimate_mpp`` (or given), then
    smoothing, threshold and opening/closing run chunk by chunk with an overlap as wide
    as they reach, so the mask equals the one-piece computation and memory stays at a
    few chunks. Returns (mask, threshold).
    """
    import dask.array as da

    params = params or ThresholdParams(**settings)
    params.check()
    ds = float(slide.level_downsamples[level])
    mpp = slide.mpp[0] * ds if slide.mpp else None
    px_per_um = 1.0 / mpp if mpp else 1.0
    if threshold is None:
        small, small_ds = _level_image(slide, estimate_mpp if slide.mpp else None,
                                       None if slide.mpp else slide.level_count - 1)
        small_mpp = slide.mpp[0] * small_ds if slide.mpp else None
        channel = _smooth(channel_image(small, params.channel),
                          params.sigma_um / small_mpp if small_mpp else params.sigma_um)
        threshold = threshold_value(channel, params.method, value=params.value,
                                    quantile=params.quantile)
    reach = int(np.ceil(4 * params.sigma_um * px_per_um)) + 2 * int(
        round(params.open_um * px_per_um)) + 2 * int(round(params.close_um * px_per_um)) + 2
    lw, lh = slide.level_dimensions[level]
    # a last row or column of chunks narrower than the overlap joins its neighbour
    rgb = slide.pyramid[level].rechunk((_axis_chunks(lh, chunk, reach),
                                        _axis_chunks(lw, chunk, reach), (3,)))
    if reach >= min(min(rgb.chunks[0]), min(rgb.chunks[1])):
        raise SlideSegError(f"smoothing and morphology reach {reach} px, more than the "
                            f"chunks of level {level}: use a larger chunk or level.")
    t = float(threshold)
    padded = da.overlap.overlap(rgb, depth={0: reach, 1: reach, 2: 0},
                                boundary={0: "reflect", 1: "reflect", 2: "none"})

    def block(tile: np.ndarray) -> np.ndarray:
        mask = _mask(channel_image(tile, params.channel), t, params, px_per_um)
        return mask[reach:-reach, reach:-reach].astype(np.uint8)

    mask = padded.map_blocks(block, drop_axis=2, dtype=np.uint8, chunks=rgb.chunks[:2])
    return mask, t


def _axis_chunks(n: int, chunk: int, reach: int) -> tuple[int, ...]:
    """Chunk sizes along an axis of ``n`` pixels: ``chunk`` each, the last one merged
    into the one before when it is not wider than ``reach``."""
    sizes = [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])
    if len(sizes) > 1 and sizes[-1] <= reach:
        last = sizes.pop()
        sizes[-1] += last
    return tuple(sizes)


def threshold_pyramid(slide: Slide, level: int, params: ThresholdParams | None = None, *,
                      threshold: float | None = None, estimate_mpp: float = 8.0,
                      chunk: int = 2048, **settings: Any) -> tuple[list[Any], float]:
    """Lazy masks of ``level`` and of every smaller level, with one threshold.

    Level ``level`` is :func:`threshold_level`; each smaller level of the slide is
    thresholded the same way from its own pixels (lengths in µm converted at its pixel
    size), so a viewer showing the slide zoomed out computes a few small chunks instead
    of the whole large level. Small levels that chunks cannot cover are one lazy piece.

    Returns
    -------
    (masks, threshold)
        ``masks[k]`` is a dask (h, w) uint8 array, 1 where the threshold holds, of slide
        level ``level + k`` (its shape is ``slide.level_dimensions[level + k][::-1]``).
        Illumination correction (``flatten_um``), hole filling and the minimum areas are
        not applied: they need a level whole.
    """
    import dask
    import dask.array as da

    params = params or ThresholdParams(**settings)
    first, t = threshold_level(slide, level, params, threshold=threshold,
                               estimate_mpp=estimate_mpp, chunk=chunk)
    masks = [first]
    for k in range(level + 1, slide.level_count):
        try:
            mask, _ = threshold_level(slide, k, params, threshold=t, chunk=chunk)
        except SlideSegError:  # smaller than the smoothing reaches: one piece
            lw, lh = slide.level_dimensions[k]
            ds = float(slide.level_downsamples[k])
            px_per_um = 1.0 / (slide.mpp[0] * ds) if slide.mpp else 1.0

            def whole(k: int = k, px_per_um: float = px_per_um) -> np.ndarray:
                rgb = slide.pyramid[k].compute()
                return _mask(channel_image(rgb, params.channel), t, params,
                             px_per_um).astype(np.uint8)

            mask = da.from_delayed(dask.delayed(whole)(), (lh, lw), dtype=np.uint8)
        masks.append(mask)
    return masks, t
