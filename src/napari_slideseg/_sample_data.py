"""npe2 sample data: the generated sample slide with its annotations."""

from __future__ import annotations

from typing import Any

__all__ = ["sample_slide", "sample_layers"]


def sample_slide() -> list[Any]:
    """The sample slide (generated on first use) and its annotation layers."""
    return sample_layers()


def sample_layers(folder: Any = None) -> list[Any]:
    """Layer data of the sample written to ``folder`` (default: the user cache)."""
    from ._layers import annotation_layers_data, slide_layer_data, slide_scale, slide_units
    from .core.sample import make_sample_slide
    from .core.slide import open_slide

    sample = make_sample_slide(folder)
    slide = open_slide(sample.slide, tile_errors="fill")
    layers = [slide_layer_data(slide, name="sample slide")]
    layers += annotation_layers_data(sample.annotation_set, slide_scale(slide),
                                     slide_units(slide))
    return layers
