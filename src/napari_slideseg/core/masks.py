"""Annotation keys (class -> pixel value) and label masks of any slide region.

An :class:`AnnotationKey` says which class each region belongs to (its layer's name by
default, its ``Text`` as SlideSeg does, or its GeoJSON classification), which pixel
value and colour each class gets (background is 0), and which class wins where classes
overlap. :func:`rasterize` fills the polygons of exactly one region of the slide, at any
downsample, so no full-resolution mask ever exists.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .annotations import AnnotationLayer, AnnotationSet, Region
from .errors import AnnotationError
from .raster import RegionIndex, label_pyramid, rasterize_window

__all__ = ["CLASS_SOURCES", "AnnotationKey", "class_of", "mask_pyramid", "rasterize",
           "region_index", "save_mask"]

#: Where a region's class comes from.
CLASS_SOURCES = ("layer", "text", "classification")


def class_of(layer: AnnotationLayer, region: Region, source: str = "layer") -> str:
    """A region's class name: its layer's name (or Id), its text, or its classification."""
    if source == "text":
        return region.text.strip()
    if source == "classification":
        cls = region.extra.get("geojson_classification")
        if isinstance(cls, dict) and cls.get("name"):
            return str(cls["name"])
        if isinstance(cls, str) and cls:
            return cls
        return layer.class_name
    if source != "layer":
        raise ValueError(f"class source must be one of {CLASS_SOURCES}, not {source!r}")
    return layer.class_name


@dataclass
class AnnotationKey:
    """Class name -> pixel value (1, 2, ...; background 0), colour and overlap priority.

    Parameters
    ----------
    values : dict of str -> int
        Pixel value of each class; values are unique and at least 1.
    colors : dict of str -> (r, g, b), optional
    priority : list of str, optional
        Fill order where classes overlap: a class later in the list is drawn over the
        ones before it. Default: ascending pixel value (the highest value wins).
    class_from : {'layer', 'text', 'classification'}
        Where each region's class comes from (see :func:`class_of`).
    """

    values: dict[str, int]
    colors: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    priority: list[str] = field(default_factory=list)
    class_from: str = "layer"

    def __post_init__(self) -> None:
        if self.class_from not in CLASS_SOURCES:
            raise ValueError(f"class_from must be one of {CLASS_SOURCES}, "
                             f"not {self.class_from!r}")
        seen: dict[int, str] = {}
        for name, value in self.values.items():
            if int(value) < 1:
                raise ValueError(f"class {name!r}: value {value} (0 is the background)")
            if int(value) in seen:
                raise ValueError(f"classes {seen[int(value)]!r} and {name!r} share value "
                                 f"{value}")
            seen[int(value)] = name
        unknown = [c for c in self.priority if c not in self.values]
        if unknown:
            raise ValueError(f"priority names classes the key does not have: {unknown}")
        if not self.priority:
            self.priority = sorted(self.values, key=self.values.__getitem__)
        else:  # classes the priority list leaves out are drawn first, by value
            rest = sorted((c for c in self.values if c not in self.priority),
                          key=self.values.__getitem__)
            self.priority = rest + list(self.priority)

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return np.uint8 if max(self.values.values(), default=0) < 256 else np.uint16

    @classmethod
    def from_annotations(cls, annotation_sets: Iterable[AnnotationSet],
                         class_from: str = "layer") -> AnnotationKey:
        """The classes of area regions across ``annotation_sets``, sorted by name: the same
        folder of files always gives the same key."""
        colors: dict[str, tuple[int, int, int]] = {}
        for each in annotation_sets:
            for layer, region in each.regions():
                if region.is_area and not region.negative:
                    name = class_of(layer, region, class_from)
                    if name:
                        colors.setdefault(name, layer.color)
        names = sorted(colors)
        return cls({n: i + 1 for i, n in enumerate(names)}, colors, class_from=class_from)

    # -- files ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the key as JSON (``.json``) or TSV (``.tsv``), atomically."""
        path = Path(path)
        rows = [(n, self.values[n], self.colors.get(n)) for n in
                sorted(self.values, key=self.values.__getitem__)]
        if path.suffix.lower() == ".tsv":
            lines = ["# class_from\t" + self.class_from,
                     "# priority\t" + "\t".join(self.priority),
                     "class\tvalue\tcolor"]
            lines += [f"{n}\t{v}\t{'' if c is None else _hex(c)}" for n, v, c in rows]
            text = "\n".join(lines) + "\n"
        else:
            text = json.dumps({"class_from": self.class_from, "background": 0,
                               "classes": [{"name": n, "value": v,
                                            "color": None if c is None else list(c)}
                                           for n, v, c in rows],
                               "priority": self.priority}, indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AnnotationKey:
        """Read a key written by :meth:`save` (JSON or TSV)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise AnnotationError(f"{path}: cannot read the annotation key ({exc}).") from None
        try:
            if path.suffix.lower() == ".tsv":
                return cls._from_tsv(text)
            doc = json.loads(text)
            values = {str(c["name"]): int(c["value"]) for c in doc["classes"]}
            colors = {str(c["name"]): tuple(int(v) for v in c["color"])  # type: ignore[misc]
                      for c in doc["classes"] if c.get("color")}
            return cls(values, colors, list(doc.get("priority") or []),
                       doc.get("class_from", "layer"))
        except (ValueError, KeyError, TypeError) as exc:
            raise AnnotationError(f"{path}: not a valid annotation key ({exc}).") from None

    @classmethod
    def _from_tsv(cls, text: str) -> AnnotationKey:
        class_from, priority = "layer", []
        body = []
        for line in text.splitlines():
            if line.startswith("# class_from\t"):
                class_from = line.split("\t", 1)[1].strip()
            elif line.startswith("# priority\t"):
                priority = [p for p in line.split("\t")[1:] if p]
            elif line.strip() and not line.startswith("#"):
                body.append(line)
        values, colors = {}, {}
        for row in csv.DictReader(body, delimiter="\t"):
            values[row["class"]] = int(row["value"])
            color = (row.get("color") or "").lstrip("#")
            if len(color) == 6:
                colors[row["class"]] = (int(color[:2], 16), int(color[2:4], 16),
                                        int(color[4:], 16))
        return cls(values, colors, priority, class_from)


def _hex(color: tuple[int, int, int]) -> str:
    r, g, b = color
    return f"#{r:02x}{g:02x}{b:02x}"


def rasterize(annotations: AnnotationSet, key: AnnotationKey,
              region: tuple[float, float, int, int], downsample: float = 1.0) -> np.ndarray:
    """The label mask of one slide region, filled from the polygons themselves.

    Parameters
    ----------
    annotations : AnnotationSet
        Vertices in level-0 pixel (x, y).
    key : AnnotationKey
        Class -> value; regions whose class the key lacks are not filled.
    region : (x, y, w, h)
        Top-left corner in level-0 pixels, size in pixels of the output (the level
        with ``downsample``).
    downsample : float
        Level-0 pixels per output pixel (a pyramid level's downsample).

    Returns
    -------
    (h, w) uint8 (uint16 for keys with values above 255) array: 0 for background.

    Notes
    -----
    A pixel takes a class when its centre lies inside (or on the outline of) one of that
    class's regions and outside (and off the outline of) its holes and the negative
    regions of the same annotation layer, as scikit-image's ``draw.polygon`` decides;
    where classes overlap the later one in ``key.priority`` wins; arrows, rulers, lines
    and points are never filled. Labels are never interpolated: at a reduced level each
    output pixel is decided by its own centre, as if sampled from level 0 with nearest
    neighbour.
    """
    x, y, w, h = region
    return rasterize_window(region_index(annotations, key), x, y, int(w), int(h), downsample,
                            key.dtype)


def region_index(annotations: AnnotationSet, key: AnnotationKey) -> RegionIndex:
    """The regions of ``annotations`` indexed with the key's values and priority."""
    rank = {key.values[name]: i for i, name in enumerate(key.priority)}

    def label_for(layer: AnnotationLayer, reg: Region) -> int | None:
        return key.values.get(class_of(layer, reg, key.class_from))

    return RegionIndex.from_annotations(annotations, label_for, rank)


def mask_pyramid(annotations: AnnotationSet, key: AnnotationKey,
                 level_dimensions: list[tuple[int, int]], level_downsamples: list[float],
                 chunk: int = 1024) -> list[Any]:
    """The whole-slide label mask as lazy dask arrays, one per level (largest first).

    ``level_dimensions`` ((w, h) per level) and ``level_downsamples`` are the slide's,
    so level k of the mask lines up pixel for pixel with level k of the slide. Chunks are
    filled from the polygons when read: a 100k x 80k mask never exists in memory.
    """
    return label_pyramid(region_index(annotations, key), level_dimensions, level_downsamples,
                         chunk=chunk, dtype=key.dtype)


def save_mask(levels: list[Any], path: str | os.PathLike[str], mpp: float | None = None,
              tile: int = 256) -> Path:
    """Write a mask pyramid as a tiled pyramidal TIFF (``.tif``) or a zarr group (``.zarr``).

    Lossless (zlib in TIFF), written a band of tiles at a time (memory stays bounded)
    and atomically: into a temporary name beside ``path``, renamed when complete.
    """
    import shutil

    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    if tmp.exists():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    suffix = path.suffix.lower()
    try:
        if suffix == ".zarr":
            for i, level in enumerate(levels):
                level.to_zarr(str(tmp), component=str(i), overwrite=True)
        elif suffix in (".tif", ".tiff"):
            _save_tiff(levels, tmp, mpp, tile)
        else:
            raise AnnotationError(f"{path}: save masks as .tif/.tiff or .zarr.")
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        raise
    return path


def _save_tiff(levels: list[Any], path: Path, mpp: float | None, tile: int) -> None:
    import tifffile

    def tiles(level: Any) -> Any:
        h, w = level.shape
        for r in range(0, h, tile):
            band = np.asarray(level[r:r + tile])
            for c in range(0, w, tile):
                block = band[:, c:c + tile]
                if block.shape != (tile, tile):
                    block = np.pad(block, ((0, tile - block.shape[0]),
                                           (0, tile - block.shape[1])))
                yield block

    resolution = None
    if mpp:
        resolution = (1e4 / mpp, 1e4 / mpp)  # pixels per cm
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for i, level in enumerate(levels):
            kwargs: dict[str, Any] = {"subfiletype": 1} if i else {"subifds": len(levels) - 1}
            scale = 1.0 if not i else levels[0].shape[1] / level.shape[1]
            tif.write(tiles(level), shape=level.shape, dtype=level.dtype, tile=(tile, tile),
                      compression="zlib", photometric="minisblack", metadata=None,
                      resolution=(resolution[0] / scale, resolution[1] / scale)
                      if resolution else None,
                      resolutionunit="CENTIMETER" if resolution else None, **kwargs)
