"""Thresholds for the viewer: the prepared channel, narrow last chunks, level pyramids."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_slideseg import open_slide
from napari_slideseg.core.threshold import (
    ThresholdParams,
    prepare_channel,
    read_slide_image,
    threshold_image,
    threshold_level,
    threshold_pyramid,
)


@pytest.mark.parametrize("params", [
    ThresholdParams(channel="od", sigma_um=2.0, method="li", open_um=1.0),
    ThresholdParams(channel="saturation", sigma_um=8.0, flatten_um=50.0, fill_holes=True),
    ThresholdParams(channel="grey", method="manual", value=180.0, above=False,
                    min_area_um2=30.0),
])
def test_prepared_channel_gives_the_same_result(svs, params):
    rgb = svs.levels[1]
    mpp = 0.2527 * 4
    whole = threshold_image(rgb, params, mpp=mpp)
    channel = prepare_channel(rgb, params, mpp=mpp)
    assert channel.dtype == np.float32 and channel.shape == rgb.shape[:2]
    again = threshold_image(channel, replace(params, sigma_um=0.0, flatten_um=0.0), mpp=mpp)
    assert again.threshold == pytest.approx(whole.threshold)
    np.testing.assert_array_equal(again.labels, whole.labels)


def test_a_last_chunk_narrower_than_the_overlap_joins_its_neighbour(svs):
    # 1803 rows in chunks of 256: the last is 11 rows, less than the 98 px reach
    params = ThresholdParams(channel="saturation", sigma_um=4.0, close_um=4.0)
    with open_slide(svs.path) as slide:
        mask, t = threshold_level(slide, 0, params, chunk=256)
        assert mask.chunks[0] == (256,) * 6 + (267,)
        assert mask.chunks[1] == (256,) * 9 + (197,)  # wider than the reach: kept
        whole = threshold_image(slide.pyramid[0].compute(), params, mpp=slide.mpp[0],
                                threshold=t)
        np.testing.assert_array_equal(mask.compute(), (whole.labels > 0).astype(np.uint8))


def test_pyramid_has_every_smaller_level_with_one_threshold(svs):
    params = ThresholdParams(channel="od", sigma_um=4.0, close_um=4.0)
    with open_slide(svs.path) as slide:
        masks, t = threshold_pyramid(slide, 0, params, chunk=512)
        assert [m.shape for m in masks] == [d[::-1] for d in slide.level_dimensions]
        for k, mask in enumerate(masks):
            ds = slide.level_downsamples[k]
            expected = threshold_image(slide.pyramid[k].compute(), params,
                                       mpp=slide.mpp[0] * ds, threshold=t)
            np.testing.assert_array_equal(np.asarray(mask), expected.labels > 0)
        image, ds = read_slide_image(slide, level=2)
        assert image.shape == (*slide.level_dimensions[2][::-1], 3)
        assert ds == slide.level_downsamples[2]
