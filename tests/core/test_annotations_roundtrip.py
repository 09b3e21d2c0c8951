"""Generated polygons with holes round-trip through all three formats."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_slideseg import (
    AnnotationLayer,
    AnnotationSet,
    Region,
    read_annotations,
    write_annotations,
)

coordinate = st.floats(min_value=0, max_value=200_000, allow_nan=False, allow_infinity=False)
label = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)


@st.composite
def star(draw, cx: float, cy: float, r_min: float, r_max: float) -> np.ndarray:
    """A star-shaped (simple) polygon around (cx, cy), radii in [r_min, r_max]."""
    n = draw(st.integers(3, 24))
    radii = draw(st.lists(st.floats(r_min, r_max), min_size=n, max_size=n))
    angles = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.column_stack([cx + np.array(radii) * np.cos(angles),
                            cy + np.array(radii) * np.sin(angles)])


@st.composite
def region_with_holes(draw) -> Region:
    cx, cy = draw(coordinate), draw(coordinate)
    outer = draw(star(cx, cy, 500.0, 1000.0))
    holes = []
    for k in range(draw(st.integers(0, 3))):  # small holes on a ring well inside the outer
        angle = 2 * math.pi * k / 3
        hx, hy = cx + 250 * math.cos(angle), cy + 250 * math.sin(angle)
        holes.append(draw(star(hx, hy, 20.0, 100.0)))
    return Region(outer, type="polygon", text=draw(label), holes=holes)


@st.composite
def annotation_sets(draw) -> AnnotationSet:
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        color = tuple(draw(st.integers(0, 255)) for _ in range(3))
        regions = draw(st.lists(region_with_holes(), min_size=1, max_size=3))
        name = draw(label.filter(lambda s: s.strip() and s != "None"))
        layers.append(AnnotationLayer(name=name, color=color, regions=regions))
    names = [la.name for la in layers]
    if len(set(names)) != len(names):  # GeoJSON and ASAP group by class name
        for i, layer in enumerate(layers):
            layer.name = f"{layer.name} {i}"
    return AnnotationSet(layers, mpp=draw(st.floats(0.1, 2.0)))


def _open(ring: np.ndarray) -> np.ndarray:
    return ring[:-1] if len(ring) > 1 and np.array_equal(ring[0], ring[-1]) else ring


@pytest.mark.parametrize("fmt", ["aperio", "asap", "geojson"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ann=annotation_sets())
def test_polygons_with_holes_round_trip(fmt, ann):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"gen.{'geojson' if fmt == 'geojson' else 'xml'}"
        lost = write_annotations(ann, path, format=fmt)
        back = read_annotations(path)
    assert back.format == fmt
    assert [(la.name, la.color) for la in back] == [(la.name, la.color) for la in ann]
    for original, layer in zip(ann, back, strict=True):
        if fmt == "aperio":  # holes become ImageScope negative regions after their polygon
            expected = [(part.vertices, part.negative, part.text)
                        for r in original.regions
                        for part in [r, *(Region(h, negative=True, text=r.text)
                                          for h in r.holes)]]
            got = [(r.vertices, r.negative, r.text) for r in layer.regions]
            assert len(got) == len(expected)
            for (ev, en, et), (gv, gn, gt) in zip(expected, got, strict=True):
                np.testing.assert_array_equal(gv, ev)  # exact: no rounding on the way
                assert (gn, gt) == (en, et)
            assert back.mpp == pytest.approx(ann.mpp, abs=1e-6)
        elif fmt == "geojson":  # holes stay holes; rings come back closed
            assert len(layer.regions) == len(original.regions)
            for r0, r1 in zip(original.regions, layer.regions, strict=True):
                np.testing.assert_array_equal(_open(r1.vertices), r0.vertices)
                assert len(r1.holes) == len(r0.holes) and r1.text == r0.text
                for h0, h1 in zip(r0.holes, r1.holes, strict=True):
                    np.testing.assert_array_equal(_open(h1), h0)
                assert r1.area() == pytest.approx(r0.area())
        else:  # ASAP has no holes: the outer rings survive, and the loss is reported
            assert len(layer.regions) == len(original.regions)
            for r0, r1 in zip(original.regions, layer.regions, strict=True):
                np.testing.assert_array_equal(r1.vertices, r0.vertices)
                assert r1.text == r0.text
            if any(r.holes for r in original.regions):
                assert any("no holes" in m for m in lost)
