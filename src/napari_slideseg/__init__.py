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
from .core.autoannotate import (
    AutoAnnotation,
    auto_annotate,
    predict_tiles,
    read_metrics,
    record_review,
    run_iteration,
    train_tile_classifier,
)
from .core.classify import ObjectClassifier, summarize_classes
from .core.clusters import find_regions
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
    Cancelled,
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
from .core.review import review_counts, review_of, set_review, set_slide_opinion, slide_opinion
from .core.slide import Slide, open_slide
from .core.tables import write_ecotaxa, write_geojson, write_table
from .core.tilemodels import CallableModel, OnnxModel, TileClassifier, TorchScriptModel, load_model
from .core.tiles import TileGrid, TilePredictions, tile_grid
from .core.vector import labels_to_polygons, polygons_to_labels
from .core.weaklabels import export_weak_labels, pseudo_mask, save_pseudo_mask, tile_metrics

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
    "AutoAnnotation",
    "CallableModel",
    "Cancelled",
    "CorruptTileError",
    "EditResult",
    "InvalidGeometryError",
    "LabelEdit",
    "MalformedAnnotationError",
    "ObjectClassifier",
    "OnnxModel",
    "Region",
    "Slide",
    "SlideNotFoundError",
    "SlideSegError",
    "TileClassifier",
    "TileGrid",
    "TilePredictions",
    "TorchScriptModel",
    "UnsafeAnnotationError",
    "UnsupportedSlideError",
    "auto_annotate",
    "cut_labels",
    "export_patches",
    "export_weak_labels",
    "find_regions",
    "labels_to_polygons",
    "load_model",
    "measure",
    "merge_labels",
    "merge_selected",
    "new_label_id",
    "open_labels",
    "open_slide",
    "plan_patches",
    "polygons_to_labels",
    "predict_tiles",
    "pseudo_mask",
    "rasterize",
    "read_annotations",
    "read_metrics",
    "record_review",
    "review_counts",
    "review_of",
    "run_iteration",
    "save_pseudo_mask",
    "set_review",
    "set_slide_opinion",
    "slide_opinion",
    "split_labels",
    "summarize_classes",
    "tile_grid",
    "tile_metrics",
    "train_tile_classifier",
    "write_annotations",
    "write_ecotaxa",
    "write_geojson",
    "write_table",
]
