"""Object measurements: shape, position, intensity and stain features, in micrometres.

:func:`measure` takes objects as a label array (numpy, dask or any sliceable array of
any size: 0 is background, every other value is one object, connected or not) or as
annotation regions (an :class:`~napari_slideseg.AnnotationSet`: each positive area
region is one object), and returns one row per object in a pandas DataFrame.

Coordinates
-----------
Label pixel (i, j) of an array with ``downsample`` d and ``origin`` (x0, y0) covers
level-0 [x0 + j d, x0 + (j + 1) d) x [y0 + i d, y0 + (i + 1) d) (the convention of
:func:`~napari_slideseg.labels_to_polygons`). Centroids and bounding boxes are given in
level-0 pixel (x, y); micrometres are level-0 pixels times the pixel size (mx, my).

Estimators
----------
area
    Pixel count times the area of a pixel, ``d**2 * mx * my`` µm².
moments (major and minor axis, eccentricity, orientation)
    Second moments of the union of the object's pixel squares, computed in µm
    coordinates directly: the covariance of the pixel centres plus 1/12 of a pixel's
    width and height squared, with x scaled by ``d * mx`` and y by ``d * my``. Axes are
    those of the ellipse with the same second moments (4 sqrt(eigenvalue)), so a
    W x H rectangle has axes 2W/sqrt(3) and 2H/sqrt(3) exactly, and a non-square pixel
    size changes shapes the way the tissue is, not the way the pixel grid is.
    ``orientation`` is the angle of the major axis from +x towards +y (level-0 axes,
    y down, i.e. clockwise on screen), in degrees in (-90, 90].
perimeter
    Length of the smoothed pixel-edge outline: the midpoints of the object's boundary
    pixel edges, in ring order (outer rings and holes), are averaged over a window of 5
    along the ring (3 for one-pixel rings) and the segments between the averaged
    points are measured in µm (x scaled by ``d * mx``, y by ``d * my``). Averaging
    straightens the pixel staircase of edges of any orientation, so discs of radius
    20 px or more come within 0.5 % of 2 pi r, whatever their sub-pixel position
    (scikit-image's ``perimeter``, weighted boundary pixels, is 3-5 % above it; its
    4-direction ``perimeter_crofton`` is unbiased on average but spreads from -0.5 to
    +1.6 % at r = 20). Convex corners are cut by about a pixel each: a 40 px square
    measures 2.4 % short. The perimeter is never taken
    below that of the disc of the same area (2 sqrt(pi A)), so circularity stays <= 1.
convex hull (solidity)
    Convex hull of the object's pixel squares (their corners), as QuPath measures
    pixel-outlined objects; ``solidity`` = pixel area / hull area (1 for a rectangle).
extent
    Pixel count over the bounding box's pixel count.
intensity
    Mean, standard deviation (population), minimum and maximum of the object's
    pixels, per RGB channel and per stain: haematoxylin, eosin and DAB concentrations
    by colour deconvolution (the values of
    :func:`~napari_slideseg.core.threshold.channel_image`: Ruifrok & Johnston with
    scikit-image's H&E-DAB matrix, in optical density units; evaluated through a
    256-entry optical density table, so three stains cost one lookup and one 3 x 3
    transform per pixel).

Without a pixel size (``mpp`` not given and not known from the slide or annotations),
lengths and areas are given in level-0 pixels, in columns named ``..._px`` and
``..._px2`` instead of ``..._um`` and ``..._um2``.

Whole-slide labels
------------------
Labels are read window by window (``chunk`` x ``chunk`` label pixels plus an 8-pixel
halo), so memory holds a few windows whatever the array's size. Each window
contributes, for the pixels and pixel edges of its core, exact partial sums (pixel
count, coordinate and intensity sums and squares, minima and maxima, perimeter
segments, convex hull vertices); the partials of an object cut by window borders are
merged afterwards, so every object is measured once and whole: the result equals the
one-piece measurement up to floating-point rounding. (The one exception: where an
object's outline touches itself at a pixel corner and the object is cut by a window
border, the smoothed outline may take the corner the other way, changing the perimeter
by a fraction of a pixel.) Polygons are rasterised window by window with the package's
rasteriser (the pixel-centre rule of :mod:`~napari_slideseg.core.raster`, exactly as
:func:`~napari_slideseg.polygons_to_labels`), each region on its own, so overlapping
regions are each measured whole and no slide-sized mask ever exists.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .annotations import AREA_TYPES, AnnotationLayer, AnnotationSet, Region
from .errors import SlideSegError
from .slide import Slide

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["INTENSITY_CHANNELS", "RGB_CHANNELS", "STAIN_CHANNELS", "measure",
           "object_windows", "open_labels"]

RGB_CHANNELS = ("red", "green", "blue")
STAIN_CHANNELS = ("hematoxylin", "eosin", "dab")
INTENSITY_CHANNELS = RGB_CHANNELS + STAIN_CHANNELS

#: Label pixels read around each window's core: the smoothed outline of a core edge
#: reaches 3 edges along its ring, so 8 is ample.
HALO = 8
#: Half-width of the moving average along the outline (window 2 * SMOOTH + 1).
SMOOTH = 2


# -- public API -------------------------------------------------------------------------


def measure(objects: Any, image: Any = None, *, mpp: float | tuple[float, float] | None = None,
            downsample: float = 1.0, origin: tuple[float, float] = (0.0, 0.0),
            regions: AnnotationSet | None = None,
            classes: Mapping[int, str] | str | None = None, chunk: int = 4096,
            intensity: bool = True, stains: bool = True,
            progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Measure every object: position, size, shape, intensity and stains, one row each.

    Parameters
    ----------
    objects : (h, w) integer array, or AnnotationSet
        A label array (numpy, dask, zarr or any array sliceable by rows and columns; 0
        is background, each other value one object, whether connected or not), or
        annotation regions (vertices in level-0 pixel (x, y)): each positive area
        region (polygon, rectangle, ellipse, spline; holes and the negative regions of
        its layer cut out) is one object, numbered 1, 2, ... in file order, layer after
        layer, as :func:`~napari_slideseg.polygons_to_labels` numbers them.
    image : Slide or (h, w, 3) uint8 array, optional
        Pixels for the intensity features: a slide (read at the level whose downsample
        is ``downsample``, or resampled from the next finer level when none is), or an
        RGB (or RGBA) array aligned pixel for pixel with the labels. None: shape
        features only.
    mpp : float or (float, float), optional
        Micrometres per level-0 pixel, (x, y) when they differ. Default: the slide's,
        else the annotations'. Without any, lengths are in level-0 pixels (see Notes).
    downsample : float
        Level-0 pixels per label pixel (the downsample of the level the labels, or the
        rasterised regions, are at).
    origin : (x, y)
        Level-0 pixel coordinates of the top-left corner of label pixel (0, 0).
    regions : AnnotationSet, optional
        Annotation regions (level-0 (x, y)): each object gets the region containing its
        centroid (``region``: the region's text, else its id, else its number in file
        order) and that region's class (``region_class``); where regions overlap, the
        later one wins, and a layer's negative regions are not part of its regions.
    classes : mapping of int -> str, or {'layer', 'text', 'classification'}, optional
        Label -> class name (a ``class`` column); for annotation objects, the source of
        each region's class (default ``'layer'``: its layer's name).
    chunk : int
        Side, in label pixels, of the windows a large array is measured in.
    intensity : bool
        Measure intensities (when ``image`` is given).
    stains : bool
        Include the stain channels (colour deconvolution) in the intensity features.
    progress : callable(done, total), optional
        Called after each window.

    Returns
    -------
    pandas.DataFrame
        One row per object that has at least one pixel, sorted by ``label``. Columns:

        ``label``; ``class`` (with ``classes`` or annotation objects); ``region``,
        ``region_class`` (with ``regions``); ``centroid_x``, ``centroid_y`` (level-0
        px), ``centroid_x_um``, ``centroid_y_um``; ``bbox_x0``, ``bbox_y0``,
        ``bbox_x1``, ``bbox_y1`` (level-0 px, the box's corners: x0 <= x < x1);
        ``pixels`` (pixel count at the labels' resolution); ``area_um2``,
        ``perimeter_um``, ``equivalent_diameter_um``, ``major_axis_um``,
        ``minor_axis_um``; ``eccentricity``, ``orientation`` (degrees), ``solidity``,
        ``extent``, ``circularity`` (4 pi A / P**2); with an image, ``<channel>_mean``,
        ``_std``, ``_min``, ``_max`` for ``red``, ``green``, ``blue`` and (with
        ``stains``) ``hematoxylin``, ``eosin``, ``dab``.

        ``df.attrs`` holds ``downsample``, ``origin`` and ``mpp`` (None when unknown),
        which the exports use to place objects on the slide.

    Notes
    -----
    The estimators (moments in µm coordinates, the smoothed-outline perimeter, the
    convex hull of the pixel squares) and the window-by-window merging are described in
    :mod:`napari_slideseg.core.measure`. Without a pixel size the columns ``*_um`` and
    ``*_um2`` are ``*_px`` and ``*_px2``, in level-0 pixels, and there are no
    ``centroid_*_um`` columns.
    """
    import pandas as pd

    if not (isinstance(chunk, int | np.integer) and chunk >= 16):
        raise SlideSegError(f"chunk must be a whole number of pixels >= 16, not {chunk!r}.")
    ds = float(downsample)
    if not (ds > 0 and math.isfinite(ds)):
        raise SlideSegError(f"downsample must be a positive number, not {downsample!r}.")
    ox, oy = (float(v) for v in origin)
    if isinstance(classes, str):
        from .masks import CLASS_SOURCES

        if not isinstance(objects, AnnotationSet):
            raise SlideSegError(f"classes={classes!r} names where annotation regions take "
                                "their class from; for a label array give a mapping "
                                "label -> class.")
        if classes not in CLASS_SOURCES:
            raise SlideSegError(f"classes={classes!r}: use one of {', '.join(CLASS_SOURCES)} "
                                "or a mapping label -> class.")
    scale = _resolve_mpp(mpp, image, objects, regions)
    use_image = image is not None and intensity
    channels = (RGB_CHANNELS + (STAIN_CHANNELS if stains else ())) if use_image else ()
    # size of a label pixel in output units: µm, or level-0 px without a pixel size
    step = (ds * scale[0], ds * scale[1]) if scale else (ds, ds)

    if isinstance(objects, AnnotationSet):
        objects_list = _area_objects(objects)
        extent = _extent_of(image, None, ds, (ox, oy))
        source = _ImageSource(image, extent, ds, (ox, oy)) if use_image else None
        parts = _measure_regions(objects_list, source, extent, ds, (ox, oy), step,
                                 channels, chunk, progress)
    else:
        labels = _as_labels(objects)
        extent = labels.shape
        source = _ImageSource(image, extent, ds, (ox, oy)) if use_image else None
        parts = _measure_labels(labels, source, step, channels, chunk, progress)

    merged = _merge(parts, len(channels))
    table = _table(merged, ds, (ox, oy), scale, step, channels)
    df = pd.DataFrame(table)
    labels_out = df["label"].to_numpy()
    position = 1
    if isinstance(objects, AnnotationSet):
        source_name = classes if isinstance(classes, str) else "layer"
        class_names = _region_classes(objects_list, source_name)
        if isinstance(classes, Mapping):
            class_names = {k: _class_value(classes, k) or v for k, v in class_names.items()}
        df.insert(position, "class", [class_names.get(int(v)) for v in labels_out])
        position += 1
    elif isinstance(classes, Mapping):
        df.insert(position, "class", [_class_value(classes, int(v)) for v in labels_out])
        position += 1
    if regions is not None:
        region_names, region_classes = _containing_regions(
            regions, df["centroid_x"].to_numpy(), df["centroid_y"].to_numpy())
        df.insert(position, "region", region_names)
        df.insert(position + 1, "region_class", region_classes)
    df.attrs["downsample"] = ds
    df.attrs["origin"] = (ox, oy)
    df.attrs["mpp"] = tuple(scale) if scale else None
    return df


def object_windows(df: pd.DataFrame, margin: int = 0,
                   shape: tuple[int, int] | None = None) -> np.ndarray:
    """Each object's bounding box in label pixels, from a :func:`measure` table.

    Returns an (n, 4) int64 array of (r0, r1, c0, c1): rows r0 <= r < r1 and columns
    c0 <= c < c1 of the label array, grown by ``margin`` pixels and clipped to
    ``shape`` (h, w) when given. Uses ``df.attrs`` (``downsample``, ``origin``).
    """
    ds = float(df.attrs.get("downsample", 1.0))
    ox, oy = df.attrs.get("origin", (0.0, 0.0))
    c0 = np.round((df["bbox_x0"].to_numpy(float) - ox) / ds).astype(np.int64) - margin
    c1 = np.round((df["bbox_x1"].to_numpy(float) - ox) / ds).astype(np.int64) + margin
    r0 = np.round((df["bbox_y0"].to_numpy(float) - oy) / ds).astype(np.int64) - margin
    r1 = np.round((df["bbox_y1"].to_numpy(float) - oy) / ds).astype(np.int64) + margin
    if shape is not None:
        h, w = shape
        r0, r1 = np.clip(r0, 0, h), np.clip(r1, 0, h)
        c0, c1 = np.clip(c0, 0, w), np.clip(c1, 0, w)
    return np.column_stack([r0, r1, c0, c1])


def open_labels(path: str | os.PathLike[str]) -> Any:
    """A label image file as a lazy dask array (h, w): a TIFF (level 0 of a pyramid) or
    a zarr array or group (its array ``"0"``, else its first array).

    Nothing is read until the array is sliced, so a whole-slide label image needs no
    more memory than the windows read from it. A TIFF file stays open while an array
    reading from it exists.
    """
    import dask.array as da
    import zarr

    path = Path(path)
    if not path.exists():
        raise SlideSegError(f"{path}: no such label image.")
    suffix = path.suffix.lower()
    tif = None
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            tif = tifffile.TiffFile(path)
            store = tif.series[0].aszarr(level=0)
            # the file closes when nothing reads from it any more (the store is gone)
            weakref.finalize(store, tif.close)
            array = zarr.open_array(store, mode="r")
        elif suffix == ".zarr" or path.is_dir():
            node: Any = zarr.open(str(path), mode="r")
            if isinstance(node, zarr.Group):
                names = sorted(k for k, _ in node.arrays())
                if not names:
                    raise SlideSegError(f"{path}: the zarr group holds no array.")
                node = node["0"] if "0" in names else node[names[0]]
            array = node
        else:
            raise SlideSegError(f"{path}: label images are read from .tif/.tiff or .zarr.")
    except Exception as exc:
        if tif is not None:
            tif.close()
        if isinstance(exc, SlideSegError):
            raise
        raise SlideSegError(f"{path}: cannot read this label image ({exc}).") from None
    shape = tuple(array.shape)
    if len(shape) == 3 and 1 in (shape[0], shape[-1]):
        shape = shape[1:] if shape[0] == 1 else shape[:2]
    problem = None
    if len(shape) != 2:
        problem = f"a label image has one channel (h, w), not shape {tuple(array.shape)}"
    elif np.dtype(array.dtype).kind not in "iub":
        problem = f"labels are integers, not {array.dtype}"
    if problem:
        if tif is not None:
            tif.close()
        raise SlideSegError(f"{path}: {problem}.")
    return da.from_zarr(array).reshape(shape)


# -- inputs -------------------------------------------------------------------------------


def _resolve_mpp(mpp: Any, image: Any, objects: Any,
                 regions: Any) -> tuple[float, float] | None:
    if mpp is not None:
        values = (mpp, mpp) if np.isscalar(mpp) else tuple(mpp)
        if len(values) != 2:
            raise SlideSegError(f"mpp must be a number or (x, y), not {mpp!r}.")
        mx, my = (float(v) for v in values)
        if not (mx > 0 and my > 0 and math.isfinite(mx) and math.isfinite(my)):
            raise SlideSegError(f"mpp must be positive, not {mpp!r}.")
        return (mx, my)
    if isinstance(image, Slide) and image.mpp:
        return (float(image.mpp[0]), float(image.mpp[1]))
    for each in (objects, regions):
        if isinstance(each, AnnotationSet) and each.mpp:
            return (float(each.mpp), float(each.mpp))
    return None


def _as_labels(objects: Any) -> Any:
    data = objects
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = np.asarray(data)
    if len(data.shape) != 2:
        raise SlideSegError(f"labels must be a 2-D (h, w) array, not shape {tuple(data.shape)}.")
    kind = np.dtype(data.dtype).kind
    if kind not in "iub":
        raise SlideSegError(f"labels must be an integer (or bool) array, not {data.dtype}.")
    return data


def _read_labels(labels: Any, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    block = np.asarray(labels[r0:r1, c0:c1])
    if block.dtype == bool:
        block = block.view(np.uint8)
    return np.ascontiguousarray(block)


def _extent_of(image: Any, shape: tuple[int, int] | None, ds: float,
               origin: tuple[float, float]) -> tuple[int, int] | None:
    """(h, w) in label pixels that objects are measured within, or None (unbounded)."""
    if shape is not None:
        return shape
    if isinstance(image, Slide):
        w0, h0 = image.dimensions
        return (max(0, int(math.ceil((h0 - origin[1]) / ds))),
                max(0, int(math.ceil((w0 - origin[0]) / ds))))
    if image is not None and hasattr(image, "shape"):
        return (int(image.shape[0]), int(image.shape[1]))
    return None


class _ImageSource:
    """RGB windows aligned with the label pixels: from a slide level or an array."""

    def __init__(self, image: Any, extent: tuple[int, int] | None, ds: float,
                 origin: tuple[float, float]) -> None:
        self.image = image
        self.ds = ds
        self.origin = origin
        self.level: int | None = None
        if isinstance(image, Slide):
            # a level is read pixel for pixel only when the labels are on its grid: the
            # same downsample, or the level's size with a nominal downsample (4 for
            # 4.0016); anything else is resampled, or it drifts across a large array
            for level, d in enumerate(image.level_downsamples):
                lw, lh = image.level_dimensions[level]
                if abs(d / ds - 1.0) < 1e-6 or (
                        abs(d / ds - 1.0) < 2e-2 and extent is not None
                        and tuple(extent) == (lh, lw) and origin == (0.0, 0.0)):
                    self.level = level
                    break
            if self.level is None and ds < image.level_downsamples[0] * (1 - 1e-2):
                raise SlideSegError(f"{image.path}: labels at downsample {ds:g} are finer "
                                    "than the slide's level 0.")
            return
        if not hasattr(image, "shape") or len(image.shape) != 3 or image.shape[2] not in (3, 4):
            raise SlideSegError("image must be a Slide or an (h, w, 3) RGB array, not "
                                f"shape {getattr(image, 'shape', None)}.")
        if np.dtype(image.dtype) != np.uint8:
            raise SlideSegError(f"image must be 8-bit RGB (uint8), not {image.dtype}.")
        if extent is not None and tuple(image.shape[:2]) != tuple(extent):
            raise SlideSegError(f"the image ({image.shape[0]} x {image.shape[1]} px) and "
                                f"the labels ({extent[0]} x {extent[1]} px) are not "
                                "aligned: they need the same height and width.")

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """RGB (r1 - r0, c1 - c0, 3) uint8 of label rows r0..r1, columns c0..c1."""
        h, w = r1 - r0, c1 - c0
        image = self.image
        if not isinstance(image, Slide):
            return np.ascontiguousarray(np.asarray(image[r0:r1, c0:c1])[..., :3])
        ox, oy = self.origin
        if self.level is not None:
            d = float(image.level_downsamples[self.level])
            x = (round(ox / d) + c0) * d
            y = (round(oy / d) + r0) * d
            return image.read_region((int(round(x)), int(round(y))), self.level, (w, h))
        import cv2

        x, y = ox + c0 * self.ds, oy + r0 * self.ds
        level = image.get_best_level_for_downsample(self.ds)
        d = float(image.level_downsamples[level])
        rw = max(1, int(math.ceil(w * self.ds / d)))
        rh = max(1, int(math.ceil(h * self.ds / d)))
        block = image.read_region((int(round(x)), int(round(y))), level, (rw, rh))
        return cv2.resize(block, (w, h), interpolation=cv2.INTER_AREA)


def _area_objects(annotations: AnnotationSet) -> list[tuple[int, AnnotationLayer, Region,
                                                            list[Region]]]:
    """(label, layer, region, the layer's negative regions) of every positive area
    region, numbered 1, 2, ... in file order as polygons_to_labels numbers them."""
    out = []
    counter = 0
    for layer in annotations:
        negatives = [r for r in layer.regions if r.negative and r.type in AREA_TYPES]
        for region in layer.regions:
            if region.negative or region.type not in AREA_TYPES:
                continue
            counter += 1
            out.append((counter, layer, region, negatives))
    return out


def _region_classes(objects: Sequence[tuple[int, AnnotationLayer, Region, list[Region]]],
                    source: str) -> dict[int, str]:
    from .masks import class_of

    return {label: class_of(layer, region, source) for label, layer, region, _ in objects}


def _class_value(classes: Mapping[Any, Any], label: int) -> Any:
    value = classes.get(label)
    if value is None:
        value = classes.get(str(label))
    return None if value is None else str(value)


# -- windows ----------------------------------------------------------------------------------


def _windows(h: int, w: int, chunk: int,
             r_from: int = 0, c_from: int = 0) -> Iterator[tuple[tuple[int, int, int, int],
                                                                tuple[int, int, int, int]]]:
    """(core, window) boxes (r0, r1, c0, c1) covering rows r_from..h, columns c_from..w:
    cores of ``chunk`` pixels, windows with a halo of HALO pixels (clipped)."""
    if h - r_from <= chunk and w - c_from <= chunk:
        box = (r_from, h, c_from, w)
        yield box, box
        return
    for r0 in range(r_from, h, chunk):
        r1 = min(r0 + chunk, h)
        for c0 in range(c_from, w, chunk):
            c1 = min(c0 + chunk, w)
            yield ((r0, r1, c0, c1),
                   (max(r_from, r0 - HALO), min(h, r1 + HALO), max(c_from, c0 - HALO),
                    min(w, c1 + HALO)))


def _measure_labels(labels: Any, source: _ImageSource | None, step: tuple[float, float],
                    channels: tuple[str, ...], chunk: int,
                    progress: Callable[[int, int], None] | None) -> list[dict[str, Any]]:
    h, w = (int(v) for v in labels.shape)
    boxes = list(_windows(h, w, chunk))
    parts = []
    for i, (core, window) in enumerate(boxes):
        lab = _read_labels(labels, window[0], window[1], window[2], window[3])
        part = _partials(lab, window, core, source, step, channels)
        if part is not None:
            parts.append(part)
        if progress is not None:
            progress(i + 1, len(boxes))
    return parts


def _measure_regions(objects: list[tuple[int, AnnotationLayer, Region, list[Region]]],
                     source: _ImageSource | None, extent: tuple[int, int] | None, ds: float,
                     origin: tuple[float, float], step: tuple[float, float],
                     channels: tuple[str, ...], chunk: int,
                     progress: Callable[[int, int], None] | None) -> list[dict[str, Any]]:
    """Rasterise the regions window by window, each region on its own (overlapping
    regions go to separate label planes), and measure each plane."""
    ox, oy = origin
    boxes = []
    for _, _, region, _ in objects:
        boxes.append(_pixel_box(region, ox, oy, ds))
    if not objects:
        return []
    box = np.array([b if b is not None else (0, 0, 0, 0) for b in boxes], np.int64)
    valid = np.array([b is not None for b in boxes])
    if extent is not None:
        box[:, 0:2] = np.clip(box[:, 0:2], 0, extent[0])
        box[:, 2:4] = np.clip(box[:, 2:4], 0, extent[1])
    valid &= (box[:, 1] > box[:, 0]) & (box[:, 3] > box[:, 2])
    if not valid.any():
        return []
    r_from, h = int(box[valid, 0].min()), int(box[valid, 1].max())
    c_from, w = int(box[valid, 2].min()), int(box[valid, 3].max())
    windows = list(_windows(h, w, chunk, r_from, c_from))
    parts = []
    for i, (core, window) in enumerate(windows):
        wr0, wr1, wc0, wc1 = window
        hit = np.flatnonzero(valid & (box[:, 0] < wr1) & (box[:, 1] > wr0)
                             & (box[:, 2] < wc1) & (box[:, 3] > wc0))
        # a region with no pixel in the core contributes nothing here
        hit = hit[(box[hit, 0] < core[1]) & (box[hit, 1] > core[0])
                  & (box[hit, 2] < core[3]) & (box[hit, 3] > core[2])]
        if len(hit):
            planes = _rasterise_planes([objects[k] for k in hit], box[hit], window, ds,
                                       origin)
            rgb = None
            if source is not None:
                rgb = source.read(core[0], core[1], core[2], core[3])
            for plane in planes:
                part = _partials(plane, window, core, source, step, channels, rgb=rgb)
                if part is not None:
                    parts.append(part)
        if progress is not None:
            progress(i + 1, len(windows))
    return parts


def _pixel_box(region: Region, ox: float, oy: float,
               ds: float) -> tuple[int, int, int, int] | None:
    """(r0, r1, c0, c1): label pixels whose centres the region's rings can hold."""
    outline = region.outline() if region.type == "ellipse" else region.vertices
    if len(outline) < 3:
        return None
    every = np.concatenate([outline, *(r for r in region.holes if len(r) >= 3)])
    (xa, ya), (xb, yb) = every.min(axis=0), every.max(axis=0)
    c0 = int(np.floor((xa - ox) / ds - 0.5))
    r0 = int(np.floor((ya - oy) / ds - 0.5))
    c1 = int(np.ceil((xb - ox) / ds - 0.5)) + 1
    r1 = int(np.ceil((yb - oy) / ds - 0.5)) + 1
    return (r0, r1, c0, c1)


def _rasterise_planes(objects: Sequence[tuple[int, AnnotationLayer, Region, list[Region]]],
                      boxes: np.ndarray, window: tuple[int, int, int, int], ds: float,
                      origin: tuple[float, float]) -> list[np.ndarray]:
    """Label planes of a window: each region filled on its own with the pixel-centre
    rule, into the first plane where it overlaps no region already there."""
    from .raster import region_mask

    wr0, wr1, wc0, wc1 = window
    h, w = wr1 - wr0, wc1 - wc0
    ox, oy = origin
    planes: list[np.ndarray] = []
    negative_boxes: dict[int, tuple[int, int, int, int] | None] = {}

    def rings_in(region: Region, r0: int, c0: int) -> list[np.ndarray]:
        # pixel (i, j) of the sub-window is centred at (j, i)
        offset = np.array([ox + c0 * ds, oy + r0 * ds]) / ds + 0.5
        outline = region.outline() if region.type == "ellipse" else region.vertices
        return [ring / ds - offset for ring in (outline, *region.holes) if len(ring) >= 3]

    for (label, _, region, negatives), (br0, br1, bc0, bc1) in zip(objects, boxes,
                                                                   strict=True):
        r0, r1 = max(br0, wr0), min(br1, wr1)
        c0, c1 = max(bc0, wc0), min(bc1, wc1)
        if r0 >= r1 or c0 >= c1:
            continue
        inside = region_mask(rings_in(region, r0, c0), r1 - r0, c1 - c0)
        for negative in negatives:
            key = id(negative)
            if key not in negative_boxes:
                negative_boxes[key] = _pixel_box(negative, ox, oy, ds)
            nb = negative_boxes[key]
            if nb is not None and nb[0] < r1 and nb[1] > r0 and nb[2] < c1 and nb[3] > c0:
                inside &= ~region_mask(rings_in(negative, r0, c0), r1 - r0, c1 - c0)
        if not inside.any():
            continue
        sub = (slice(r0 - wr0, r1 - wr0), slice(c0 - wc0, c1 - wc0))
        for plane in planes:
            if not plane[sub][inside].any():
                break
        else:
            plane = np.zeros((h, w), np.int32)
            planes.append(plane)
        plane[sub][inside] = label
    return planes


# -- one window -----------------------------------------------------------------------------


def _compact(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and each value's index among them."""
    lo, hi = int(values.min()), int(values.max())
    if lo >= 0 and hi < max(1 << 22, 8 * len(values)):
        present = np.zeros(hi + 1, bool)
        present[values] = True
        ids = np.flatnonzero(present)
        lut = np.empty(hi + 1, np.int64)
        lut[ids] = np.arange(len(ids))
        return ids.astype(np.int64), lut[values]
    ids, inv = np.unique(values, return_inverse=True)
    return ids.astype(np.int64), inv.ravel()


def _partials(lab: np.ndarray, window: tuple[int, int, int, int],
              core: tuple[int, int, int, int], source: _ImageSource | None,
              step: tuple[float, float], channels: tuple[str, ...],
              rgb: np.ndarray | None = None) -> dict[str, Any] | None:
    """Partial sums of every object with pixels in the window's core.

    ``lab`` holds the window's labels (rows wr0..wr1, columns wc0..wc1 of the label
    array); the core (cr0..cr1, cc0..cc1) is the part this window answers for.
    Coordinate sums are about the core's top-left pixel.
    """
    from .vector import _trace

    wr0, _, wc0, _ = window
    cr0, cr1, cc0, cc1 = core
    ro, co = cr0 - wr0, cc0 - wc0
    ch, cw = cr1 - cr0, cc1 - cc0
    inner = np.ascontiguousarray(lab[ro:ro + ch, co:co + cw]).ravel()
    fg = np.flatnonzero(inner)
    if not len(fg):
        return None
    values = inner[fg].astype(np.int64, copy=False)
    ids, inv = _compact(values)
    n_l = len(ids)
    rows, cols = np.divmod(fg, cw)
    count = np.bincount(inv, minlength=n_l).astype(np.float64)
    fr, fc = rows.astype(np.float64), cols.astype(np.float64)
    part: dict[str, Any] = {
        "label": ids,
        "n": count,
        "ox": np.full(n_l, cc0, np.int64), "oy": np.full(n_l, cr0, np.int64),
        "sx": np.bincount(inv, fc, n_l), "sy": np.bincount(inv, fr, n_l),
        "sxx": np.bincount(inv, fc * fc, n_l), "syy": np.bincount(inv, fr * fr, n_l),
        "sxy": np.bincount(inv, fc * fr, n_l),
    }
    # rows come in raster order: an object's first and last pixels hold its row range
    first = np.empty(n_l, np.int64)
    first[inv[::-1]] = np.arange(len(inv) - 1, -1, -1)
    last = np.empty(n_l, np.int64)
    last[inv] = np.arange(len(inv))
    part["rmin"] = rows[first] + cr0
    part["rmax"] = rows[last] + cr0
    cmin = np.full(n_l, np.iinfo(np.int64).max, np.int64)
    cmax = np.full(n_l, -1, np.int64)
    np.minimum.at(cmin, inv, cols)
    np.maximum.at(cmax, inv, cols)
    part["cmin"], part["cmax"] = cmin + cc0, cmax + cc0
    if channels:
        if rgb is None:
            rgb = source.read(cr0, cr1, cc0, cc1)  # type: ignore[union-attr]
        pixels = rgb.reshape(-1, 3)[fg]
        nc = len(channels)
        stain_values = None
        isum, isq = np.empty((n_l, nc)), np.empty((n_l, nc))
        imin, imax = np.empty((n_l, nc)), np.empty((n_l, nc))
        for k in range(nc):
            if k < 3:
                v = pixels[:, k]
                lo = np.full(n_l, 255, np.uint8)
                hi = np.zeros(n_l, np.uint8)
            else:
                if stain_values is None:
                    stain_values = _stains(pixels)
                v = stain_values[:, k - 3]
                lo = np.full(n_l, np.inf)
                hi = np.full(n_l, -np.inf)
            f = v.astype(np.float64)
            isum[:, k] = np.bincount(inv, f, n_l)
            isq[:, k] = np.bincount(inv, f * f, n_l)
            np.minimum.at(lo, inv, v)
            np.maximum.at(hi, inv, v)
            imin[:, k], imax[:, k] = lo, hi
        part.update(isum=isum, isq=isq, imin=imin, imax=imax)
    rings = _trace(lab)
    perimeter = np.zeros(n_l)
    hull_area = np.zeros(n_l)
    hull_n = np.zeros(n_l, np.int64)
    hull_pts = np.empty((0, 2), np.int32)
    if rings is not None:
        slot = np.searchsorted(ids, rings.value)
        slot = np.minimum(slot, n_l - 1)
        known = ids[slot] == rings.value
        perimeter = _outline_lengths(rings, slot, known, (ro, ro + ch, co, co + cw), step,
                                     n_l)
        hull_area, hull_n, hull_pts = _hulls(rings, slot, known & (rings.area2 > 0), n_l,
                                             (wc0, wr0))
    part.update(perim=perimeter, hull_area=hull_area, hull_n=hull_n, hull_pts=hull_pts)
    return part


def _stains(pixels: np.ndarray) -> np.ndarray:
    """Haematoxylin, eosin and DAB of (n, 3) uint8 RGB pixels: (n, 3) float64.

    The values :func:`~napari_slideseg.core.threshold.channel_image` gives, with its
    optical density taken from a 256-entry table that ``channel_image`` itself fills
    (the optical density of grey pixels) and the same stain matrix, so that three
    stains cost one table lookup and one 3 x 3 transform. In float64, so that a pixel's
    value does not depend on where it lies in the array (vectorised float32 code may
    round the last bit differently), and a window-by-window measurement equals the
    one-piece one.
    """
    import cv2
    from skimage.color import hed_from_rgb

    from .threshold import channel_image

    global _OD_TABLE
    if _OD_TABLE is None:
        grey = np.repeat(np.arange(256, dtype=np.uint8), 3).reshape(1, 256, 3)
        _OD_TABLE = np.ascontiguousarray(channel_image(grey, "od")[0], np.float64)
    od = _OD_TABLE[pixels].reshape(-1, 1, 3)
    # cv2.transform computes m @ pixel: the transpose of the row-vector product od @ M
    stains = cv2.transform(od, np.ascontiguousarray(hed_from_rgb.T, np.float64))
    return np.maximum(stains.reshape(-1, 3), 0)


_OD_TABLE: np.ndarray | None = None


def _outline_lengths(rings: Any, slot: np.ndarray, known: np.ndarray,
                     core: tuple[int, int, int, int], step: tuple[float, float],
                     n_l: int) -> np.ndarray:
    """Smoothed outline length per object of the boundary edges whose pixel is in core.

    Rings (turning vertices in window corner coordinates) are expanded into unit pixel
    edges; each edge's midpoint is averaged with its neighbours along the ring and the
    segment to the next averaged point is counted for the edge's own pixel (the pixel
    on the edge's right, as rings are traced), in output units (x by step[0], y by
    step[1]).
    """
    keep = np.flatnonzero(known)
    if not len(keep):
        return np.zeros(n_l)
    starts, stops = rings.start[keep], rings.start[keep + 1]
    nv = stops - starts
    v_idx = np.repeat(starts, nv) + (np.arange(nv.sum()) - np.repeat(np.cumsum(nv) - nv, nv))
    xy = rings.xy[v_idx]
    ring_v = np.repeat(np.arange(len(keep)), nv)
    v_start = np.concatenate([[0], np.cumsum(nv)])
    following = np.arange(1, len(xy) + 1)
    following[v_start[1:] - 1] = v_start[:-1]
    d = xy[following] - xy
    run = np.abs(d).sum(axis=1)
    unit = d // np.maximum(run, 1)[:, None]
    e_v = np.repeat(np.arange(len(xy)), run)
    k = np.arange(len(e_v)) - np.repeat(np.cumsum(run) - run, run)
    u = unit[e_v]
    p = xy[e_v] + u * k[:, None]
    ring_e = ring_v[e_v]
    length = np.bincount(ring_e, minlength=len(keep))
    e_start = np.concatenate([[0], np.cumsum(length)])
    base = e_start[ring_e]
    size = length[ring_e]
    pos = np.arange(len(e_v)) - base
    mid = p + 0.5 * u
    acc = mid.copy()
    for s in (-1, 1):
        acc += mid[base + (pos + s) % size]
    wide = size > 4
    for s in (-SMOOTH, SMOOTH):
        acc[wide] += mid[base[wide] + (pos[wide] + s) % size[wide]]
    acc /= np.where(wide, 2 * SMOOTH + 1, 3)[:, None]
    nxt = base + (pos + 1) % size
    seg = np.hypot((acc[nxt, 0] - acc[:, 0]) * step[0], (acc[nxt, 1] - acc[:, 1]) * step[1])
    # the edge's own pixel: on its right when walking it (y down)
    col = p[:, 0] - ((u[:, 1] > 0) | (u[:, 0] < 0))
    row = p[:, 1] - ((u[:, 0] < 0) | (u[:, 1] < 0))
    r0, r1, c0, c1 = core
    mine = (row >= r0) & (row < r1) & (col >= c0) & (col < c1)
    return np.bincount(slot[keep][ring_e[mine]], seg[mine], n_l)


def _hulls(rings: Any, slot: np.ndarray, outer: np.ndarray, n_l: int,
           offset: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convex hull (area in pixels, vertex count, vertices in label corner
    coordinates) of each object's outer-ring vertices: the hull of its pixel squares."""
    import cv2

    area = np.zeros(n_l)
    count = np.zeros(n_l, np.int64)
    chosen = np.flatnonzero(outer)
    if not len(chosen):
        return area, count, np.empty((0, 2), np.int32)
    chosen = chosen[np.argsort(slot[chosen], kind="stable")]
    starts, stops = rings.start[chosen], rings.start[chosen + 1]
    nv = stops - starts
    v_idx = np.repeat(starts, nv) + (np.arange(nv.sum()) - np.repeat(np.cumsum(nv) - nv, nv))
    pts = (rings.xy[v_idx] + np.asarray(offset)).astype(np.int32)
    owner = np.repeat(slot[chosen], nv)
    bounds = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1], True])
    hulls = []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        hull = cv2.convexHull(pts[a:b]).reshape(-1, 2)
        i = int(owner[a])
        area[i] = cv2.contourArea(hull)
        count[i] = len(hull)
        hulls.append(hull)  # in slot order, as ``chosen`` is sorted by slot
    return area, count, np.concatenate(hulls)


# -- merging and the table -------------------------------------------------------------------


_SUMS = ("n", "sx", "sy", "sxx", "syy", "sxy", "perim")


def _merge(parts: list[dict[str, Any]], n_channels: int) -> dict[str, np.ndarray]:
    """Merge the partials of every window into one record per label."""
    import cv2

    if not parts:
        empty: dict[str, np.ndarray] = {k: np.empty(0) for k in _SUMS}
        empty.update(label=np.empty(0, np.int64), rmin=np.empty(0, np.int64),
                     rmax=np.empty(0, np.int64), cmin=np.empty(0, np.int64),
                     cmax=np.empty(0, np.int64), hull_area=np.empty(0))
        if n_channels:
            for k in ("isum", "isq", "imin", "imax"):
                empty[k] = np.empty((0, n_channels))
        return empty

    def cat(key: str) -> np.ndarray:
        return np.concatenate([p[key] for p in parts])

    label = cat("label")
    order = np.argsort(label, kind="stable")
    label = label[order]
    starts = np.flatnonzero(np.r_[True, label[1:] != label[:-1]])
    pieces = np.diff(np.r_[starts, len(label)])
    out: dict[str, np.ndarray] = {"label": label[starts]}
    for key, fn in (("rmin", np.minimum), ("cmin", np.minimum), ("rmax", np.maximum),
                    ("cmax", np.maximum)):
        out[key] = fn.reduceat(cat(key)[order], starts)
    # coordinate sums about each partial's own origin, moved to the object's bbox corner
    group = np.repeat(np.arange(len(starts)), pieces)
    dx = (cat("ox")[order] - out["cmin"][group]).astype(np.float64)
    dy = (cat("oy")[order] - out["rmin"][group]).astype(np.float64)
    n = cat("n")[order]
    sx, sy = cat("sx")[order], cat("sy")[order]
    sxx, syy, sxy = cat("sxx")[order], cat("syy")[order], cat("sxy")[order]
    shifted = {"n": n, "sx": sx + n * dx, "sy": sy + n * dy,
               "sxx": sxx + 2 * dx * sx + n * dx * dx,
               "syy": syy + 2 * dy * sy + n * dy * dy,
               "sxy": sxy + dy * sx + dx * sy + n * dx * dy,
               "perim": cat("perim")[order]}
    for key, values in shifted.items():
        out[key] = np.add.reduceat(values, starts)
    if n_channels:
        out["isum"] = np.add.reduceat(cat("isum")[order], starts, axis=0)
        out["isq"] = np.add.reduceat(cat("isq")[order], starts, axis=0)
        out["imin"] = np.minimum.reduceat(cat("imin")[order], starts, axis=0)
        out["imax"] = np.maximum.reduceat(cat("imax")[order], starts, axis=0)
    hull_area = cat("hull_area")[order]
    out["hull_area"] = hull_area[starts].copy()
    split = np.flatnonzero(pieces > 1)
    if len(split):
        hull_n = cat("hull_n")
        hull_pts = np.concatenate([p["hull_pts"] for p in parts])
        offsets = np.concatenate([[0], np.cumsum(hull_n)])
        for g in split.tolist():
            rows = order[starts[g]:starts[g] + pieces[g]]
            pts = np.concatenate([hull_pts[offsets[r]:offsets[r + 1]] for r in rows.tolist()])
            out["hull_area"][g] = cv2.contourArea(cv2.convexHull(pts)) if len(pts) else 0.0
    return out


def _table(m: dict[str, np.ndarray], ds: float, origin: tuple[float, float],
           scale: tuple[float, float] | None, step: tuple[float, float],
           channels: tuple[str, ...]) -> dict[str, np.ndarray]:
    ox, oy = origin
    n = m["n"]
    safe = np.maximum(n, 1)
    mean_c, mean_r = m["sx"] / safe, m["sy"] / safe
    var_c = np.maximum(m["sxx"] / safe - mean_c ** 2, 0) + 1 / 12
    var_r = np.maximum(m["syy"] / safe - mean_r ** 2, 0) + 1 / 12
    cov = m["sxy"] / safe - mean_c * mean_r
    sx, sy = step
    cxx, cyy, cxy = var_c * sx * sx, var_r * sy * sy, cov * sx * sy
    half = np.sqrt(((cxx - cyy) / 2) ** 2 + cxy ** 2)
    l1 = (cxx + cyy) / 2 + half
    l2 = np.maximum((cxx + cyy) / 2 - half, 0)
    unit, unit2 = ("um", "um2") if scale else ("px", "px2")
    area = n * sx * sy
    perimeter = np.maximum(m["perim"], 2 * np.sqrt(np.pi * area))
    cx = ox + (m["cmin"] + mean_c + 0.5) * ds
    cy = oy + (m["rmin"] + mean_r + 0.5) * ds
    box = (m["rmax"] - m["rmin"] + 1) * (m["cmax"] - m["cmin"] + 1)
    table: dict[str, np.ndarray] = {"label": m["label"], "centroid_x": cx, "centroid_y": cy}
    if scale:
        table["centroid_x_um"] = cx * scale[0]
        table["centroid_y_um"] = cy * scale[1]
    table.update({
        "bbox_x0": ox + m["cmin"] * ds, "bbox_y0": oy + m["rmin"] * ds,
        "bbox_x1": ox + (m["cmax"] + 1) * ds, "bbox_y1": oy + (m["rmax"] + 1) * ds,
        "pixels": n.astype(np.int64),
        f"area_{unit2}": area,
        f"perimeter_{unit}": perimeter,
        f"equivalent_diameter_{unit}": 2 * np.sqrt(area / np.pi),
        f"major_axis_{unit}": 4 * np.sqrt(l1),
        f"minor_axis_{unit}": 4 * np.sqrt(l2),
        "eccentricity": np.sqrt(np.clip(1 - l2 / l1, 0, 1)),
        "orientation": _orientation(cxx, cyy, cxy),
        "solidity": np.minimum(n / np.maximum(m["hull_area"], 1e-12), 1.0),
        "extent": n / box,
        "circularity": 4 * np.pi * area / perimeter ** 2,
    })
    if channels:
        mean = m["isum"] / safe[:, None]
        std = np.sqrt(np.maximum(m["isq"] / safe[:, None] - mean ** 2, 0))
        for k, name in enumerate(channels):
            table[f"{name}_mean"] = mean[:, k]
            table[f"{name}_std"] = std[:, k]
            table[f"{name}_min"] = m["imin"][:, k]
            table[f"{name}_max"] = m["imax"][:, k]
    return table


def _orientation(cxx: np.ndarray, cyy: np.ndarray, cxy: np.ndarray) -> np.ndarray:
    """Angle of the major axis from +x towards +y, degrees in (-90, 90]."""
    angle = np.degrees(0.5 * np.arctan2(2 * cxy, cxx - cyy))
    return np.where(angle <= -90, angle + 180, angle)


# -- regions that contain the objects ------------------------------------------------------------


def _inside(px: np.ndarray, py: np.ndarray, rings: Sequence[np.ndarray]) -> np.ndarray:
    """Even-odd point in polygon for many points: a horizontal ray to the right of each
    point crosses the rings' edges an odd number of times."""
    rings = [np.asarray(r, np.float64) for r in rings if len(r) >= 3]
    if not rings or not len(px):
        return np.zeros(len(px), bool)
    a = np.concatenate(rings)
    b = np.concatenate([np.roll(r, -1, axis=0) for r in rings])
    order = np.argsort(py, kind="stable")
    ys = py[order]
    lo, hi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    i0 = np.searchsorted(ys, lo, side="left")
    i1 = np.searchsorted(ys, hi, side="left")  # points with lo <= y < hi
    n = np.maximum(i1 - i0, 0)
    total = int(n.sum())
    if not total:
        return np.zeros(len(px), bool)
    edge = np.repeat(np.arange(len(a)), n)
    point = order[np.repeat(i0, n) + (np.arange(total) - np.repeat(np.cumsum(n) - n, n))]
    ax, ay, bx, by = a[edge, 0], a[edge, 1], b[edge, 0], b[edge, 1]
    x = ax + (py[point] - ay) * (bx - ax) / (by - ay)
    right = x > px[point]
    return np.bincount(point[right], minlength=len(px)) % 2 == 1


def _containing_regions(annotations: AnnotationSet, x: np.ndarray,
                        y: np.ndarray) -> tuple[list[str | None], list[str | None]]:
    """Name and class of the area region containing each point (level-0 (x, y))."""
    which = np.full(len(x), -1, np.int64)
    names: list[str] = []
    classes: list[str] = []
    number = 0
    for layer in annotations:
        negatives = [r for r in layer.regions if r.negative and r.type in AREA_TYPES]
        for region in layer.regions:
            if region.negative or region.type not in AREA_TYPES:
                continue
            number += 1
            names.append(region.text.strip() or region.id or str(number))
            classes.append(layer.class_name)
            outline = region.outline() if region.type == "ellipse" else region.vertices
            if len(outline) < 3:
                continue
            (xa, ya), (xb, yb) = outline.min(axis=0), outline.max(axis=0)
            cand = np.flatnonzero((x >= xa) & (x <= xb) & (y >= ya) & (y <= yb))
            if not len(cand):
                continue
            inside = _inside(x[cand], y[cand], [outline, *region.holes])
            for negative in negatives:
                ring = negative.outline() if negative.type == "ellipse" else negative.vertices
                inside &= ~_inside(x[cand], y[cand], [ring, *negative.holes])
            which[cand[inside]] = len(names) - 1
    out_names = [names[i] if i >= 0 else None for i in which.tolist()]
    out_classes = [classes[i] if i >= 0 else None for i in which.tolist()]
    return out_names, out_classes
