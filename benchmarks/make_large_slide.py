"""Write the realistic large benchmark slide.

Real H&E (a shared slide's level 0) is tiled over a canvas of about 40000 x 30000 px (or
any size given); a smooth random mask leaves about a third of it as glass, in patches
about as large whatever the canvas. Three levels (downsamples about 4 and 16,
non-integer as in real scans), 256-px JPEG tiles, Aperio SVS layout. Written tile by
tile, so memory stays small (a few hundred MB for a 100000 x 100000 slide).

    python benchmarks/make_large_slide.py [--source SLIDE] [--out benchmarks/data/large.svs]
    python benchmarks/make_large_slide.py --width 100000 --height 100000 \\
        --out benchmarks/data/huge.svs       # for bench_export_memory.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from napari_slideseg import open_slide
from napari_slideseg.core.synthetic import pyramid_dimensions, write_aperio_svs

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[1] / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
SIZE = (40003, 30007)  # (w, h): floors give downsamples 4.0002 and 16.003
DOWNSAMPLES = (1, 4, 16)
BAND = 256  # rows per band when a large window is read (a multiple of the glass tile)


def make(source: Path, out: Path, seed: int = 11, quality: int = 80,
         size: tuple[int, int] = SIZE) -> Path:
    with open_slide(source) as slide:
        w, h = slide.dimensions
        texture = slide.read_region((0, 0), 0, (w, h))
    sizes = pyramid_dimensions(*size, DOWNSAMPLES)
    textures = [texture] + [
        cv2.resize(texture, (max(1, round(w / d)), max(1, round(h / d))),
                   interpolation=cv2.INTER_AREA) for d in DOWNSAMPLES[1:]]
    rng = np.random.default_rng(seed)
    # Tissue field on a coarse grid (one cell per ~1000 level-0 px), smoothed.
    W0, H0 = size
    field = cv2.GaussianBlur(rng.random((H0 // 1000 + 1, W0 // 1000 + 1)).astype(np.float32),
                             (0, 0), 2.0)
    threshold = float(np.quantile(field, 1 / 3))  # a third of the slide is glass
    grain = rng.normal(0, 2.0, (256, 256, 3)).astype(np.float32)
    glass = np.clip(np.float32(242) + grain, 0, 255).astype(np.uint8)

    def wrap(start: int, n: int, period: int) -> np.ndarray | slice:
        start %= period
        return slice(start, start + n) if start + n <= period else np.arange(
            start, start + n) % period

    def read_band(level: int, x: int, y: int, tw: int, th: int) -> np.ndarray:
        tex = textures[level]
        lw, lh = sizes[level]
        tile = tex[wrap(y, th, tex.shape[0])][:, wrap(x, tw, tex.shape[1])]
        # field coordinates of each pixel (bilinear lookup of the coarse tissue field)
        fx = ((np.arange(x, x + tw, dtype=np.float32) + 0.5) / lw * field.shape[1] - 0.5)
        fy = ((np.arange(y, y + th, dtype=np.float32) + 0.5) / lh * field.shape[0] - 0.5)
        mapx, mapy = np.meshgrid(fx, fy)
        local = cv2.remap(field, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        tissue = local > threshold
        if tissue.all():
            return tile
        background = np.tile(glass, (th // 256 + 1, tw // 256 + 1, 1))[:th, :tw]
        if not tissue.any():
            return background
        out = background.copy()
        np.copyto(out, tile, where=tissue[..., None])
        return out

    def read(level: int, x: int, y: int, tw: int, th: int) -> np.ndarray:
        if th <= BAND:
            return read_band(level, x, y, tw, th)
        # a whole level (the thumbnail): band by band, so temporaries stay small
        image = np.empty((th, tw, 3), np.uint8)
        for r in range(0, th, BAND):
            n = min(BAND, th - r)
            image[r:r + n] = read_band(level, x, y + r, tw, n)
        return image

    out.parent.mkdir(parents=True, exist_ok=True)
    return write_aperio_svs(out, sizes, read, tile=256, mpp=0.2500, app_mag=40,
                            quality=quality)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=HERE / "data" / "large.svs")
    parser.add_argument("--width", type=int, default=SIZE[0], help="level-0 width (40003)")
    parser.add_argument("--height", type=int, default=SIZE[1], help="level-0 height (30007)")
    args = parser.parse_args()
    start = time.perf_counter()
    path = make(args.source, args.out, size=(args.width, args.height))
    with open_slide(path) as slide:
        print(f"{path}: {slide.level_dimensions}, downsamples "
              f"{[round(d, 4) for d in slide.level_downsamples]}, "
              f"{path.stat().st_size / 2**20:.0f} MiB, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
