"""napari-slideseg: whole-slide images in napari and headless.

This module is the public headless API. It imports neither Qt nor napari, so it can be
used on servers and in scripts::

    from napari_slideseg import open_slide

    with open_slide("slide.svs") as slide:
        region = slide.read_region((1000, 2000), 0, (512, 512))  # (512, 512, 3) uint8
"""

from importlib.metadata import PackageNotFoundError, version

from .core.annotations import (
    AnnotationLayer,
    AnnotationSet,
    Region,
    read_annotations,
    write_annotations,
)
from .core.classify import ObjectClassifier, summarize_classes
from .core.edit import (
    EditResult,
    LabelEdit,
    cut_labels,
    merge_labels,
    merge_selected,
    new_label_id,
    split_labels,
)
from .core.errors import (
    AnnotationError,
    AnnotationNotFoundError,
    CorruptTileError,
    InvalidGeometryError,
    MalformedAnnotationError,
    SlideNotFoundError,
    SlideSegError,
    UnsafeAnnotationError,
    UnsupportedSlideError,
)
from .core.masks import AnnotationKey, rasterize
from .core.measure import measure, open_labels
from .core.patches import export_patches, plan_patches
from .core.slide import Slide, open_slide
from .core.tables import write_ecotaxa, write_geojson, write_table
from .core.vector import labels_to_polygons, polygons_to_labels

try:
    __version__ = version("napari-slideseg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "AnnotationError",
    "AnnotationKey",
    "AnnotationLayer",
    "AnnotationNotFoundError",
    "AnnotationSet",
    "CorruptTileError",
    "EditResult",
    "InvalidGeometryError",
    "LabelEdit",
    "MalformedAnnotationError",
    "ObjectClassifier",
    "Region",
    "Slide",
    "SlideNotFoundError",
    "SlideSegError",
    "UnsafeAnnotationError",
    "UnsupportedSlideError",
    "cut_labels",
    "export_patches",
    "labels_to_polygons",
    "measure",
    "merge_labels",
    "merge_selected",
    "new_label_id",
    "open_labels",
    "open_slide",
    "plan_patches",
    "polygons_to_labels",
    "rasterize",
    "read_annotations",
    "split_labels",
    "summarize_classes",
    "write_annotations",
    "write_ecotaxa",
    "write_geojson",
    "write_table",
]
