"""Tissue masks from a slide's overview: where the stain is, as opposed to glass.

A low-resolution image of the whole slide (at most ``max_size`` pixels a side, read
from the smallest level that is large enough) is thresholded on colour saturation with
Otsu's method: stained tissue is coloured, glass and background are grey or white. Very
dark pixels (pen marks' shadows, folds seen as black) and very bright ones are left out.
The result is small (megabytes for any slide) and answers "what fraction of this
patch is tissue" for thousands of patches at once through an integral image.
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


def tissue_mask(slide: Slide, max_size: int = 2048, min_saturation: float = 15.0
                ) -> TissueMask:
    """The slide's tissue mask at most ``max_size`` pixels a side.

    Saturation above Otsu's threshold (and at least ``min_saturation``, so a blank
    slide is not split into "tissue" by noise), brightness between 20 and 245.
    """
    import cv2
    from skimage.filters import threshold_otsu

    rgb = slide.get_thumbnail((max_size, max_size))
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
    saturation, value = hsv[..., 1], hsv[..., 2]
    try:
        otsu = float(threshold_otsu(saturation))
    except ValueError:  # a single-valued image
        otsu = 255.0
    threshold = max(otsu, min_saturation)
    mask = (saturation > threshold) & (value > 20) & (value < 245)
    w0 = slide.dimensions[0]
    return TissueMask(mask, w0 / mask.shape[1], threshold)
