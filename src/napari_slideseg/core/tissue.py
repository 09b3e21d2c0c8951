"""Tissue masks for patch selection: what fraction of each patch is tissue.

The mask comes from :func:`napari_slideseg.core.threshold.detect_tissue` (colour
saturation thresholded with Otsu's method at about 8 µm/px: stained tissue is coloured,
glass is grey or white). It is small (megabytes for any slide) and answers "what
fraction of this patch is tissue" for thousands of patches at once through an integral
image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .slide import Slide

__all__ = ["TissueMask", "tissue_mask"]


@dataclass
class TissueMask:
    """A boolean tissue mask of the whole slide and its scale.

    ``mask[r, c]`` covers level-0 pixels ``[c * downsample, (c + 1) * downsample)`` in x
    and the same in y.
    """

    mask: np.ndarray  # (h, w) bool
    downsample: float  # level-0 pixels per mask pixel
    threshold: float  # the saturation threshold used (0-255)

    def fractions(self, x: np.ndarray, y: np.ndarray, w: float, h: float) -> np.ndarray:
        """Tissue fraction of each level-0 box ``[x, x + w) x [y, y + h)``.

        Counted on the mask pixels whose centres fall in the box (at least the one
        under the box's centre, so small boxes still get an answer).
        """
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        integral = np.zeros((self.mask.shape[0] + 1, self.mask.shape[1] + 1), np.int64)
        integral[1:, 1:] = self.mask.cumsum(0).cumsum(1)
        d = self.downsample
        mh, mw = self.mask.shape
        # mask pixel c has its centre at (c + 0.5) d: inside when x <= (c + .5) d < x + w
        c0 = np.clip(np.ceil(x / d - 0.5), 0, mw).astype(np.int64)
        c1 = np.clip(np.ceil((x + w) / d - 0.5), 0, mw).astype(np.int64)
        r0 = np.clip(np.ceil(y / d - 0.5), 0, mh).astype(np.int64)
        r1 = np.clip(np.ceil((y + h) / d - 0.5), 0, mh).astype(np.int64)
        # boxes smaller than a mask pixel: the pixel under the box's centre
        cc = np.clip(((x + w / 2) / d).astype(np.int64), 0, mw - 1)
        rc = np.clip(((y + h / 2) / d).astype(np.int64), 0, mh - 1)
        small_x, small_y = c1 <= c0, r1 <= r0
        c0 = np.where(small_x, cc, c0)
        c1 = np.where(small_x, cc + 1, c1)
        r0 = np.where(small_y, rc, r0)
        r1 = np.where(small_y, rc + 1, r1)
        total = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
        return total / ((r1 - r0) * (c1 - c0))


def tissue_mask(slide: Slide, mpp: float = 8.0) -> TissueMask:
    """The slide's tissue mask from :func:`napari_slideseg.core.threshold.detect_tissue`
    (saturation, Otsu, smoothed and cleaned, at ``mpp`` µm/px)."""
    from .threshold import detect_tissue

    result = detect_tissue(slide, mpp=mpp)
    return TissueMask(result.labels > 0, result.downsample, result.threshold)
