"""Annotation files: Aperio ImageScope XML, ASAP XML, QuPath GeoJSON."""

from __future__ import annotations

import json

import defusedxml.ElementTree as DET
import numpy as np
import pytest

from napari_slideseg import (
    AnnotationLayer,
    AnnotationSet,
    InvalidGeometryError,
    MalformedAnnotationError,
    Region,
    SlideSegError,
    UnsafeAnnotationError,
    read_annotations,
    write_annotations,
)
from napari_slideseg.core.annotations import sniff_format


def sets_equal(a: AnnotationSet, b: AnnotationSet, attributes: bool = True) -> None:
    assert len(a) == len(b)
    assert a.mpp == b.mpp
    for la, lb in zip(a, b, strict=True):
        assert (la.name, la.color) == (lb.name, lb.color)
        if attributes:
            assert la.attributes == lb.attributes
        assert len(la.regions) == len(lb.regions)
        for ra, rb in zip(la.regions, lb.regions, strict=True):
            np.testing.assert_array_equal(ra.vertices, rb.vertices)
            assert (ra.type, ra.negative, ra.text) == (rb.type, rb.negative, rb.text)
            if attributes:
                assert ra.attributes == rb.attributes
            assert len(ra.holes) == len(rb.holes)
            for ha, hb in zip(ra.holes, rb.holes, strict=True):
                np.testing.assert_array_equal(ha, hb)


# -- a synthetic ImageScope file with every trait real files have ----------------------

# the synthetic ImageScope file (conftest.APERIO) has every trait real files have


def test_aperio_model(aperio_file):
    ann = read_annotations(aperio_file)
    assert ann.format == "aperio" and ann.mpp == pytest.approx(0.252)
    assert [la.name for la in ann] == ["Tumour", "", "Stroma & <other>"]
    # COLORREF is R + 256 G + 65536 B: 255 is red, 16711680 blue, 65280 green
    assert [la.color for la in ann] == [(255, 0, 0), (0, 0, 255), (0, 255, 0)]
    tumour = ann[0]
    assert tumour.attributes["Id"] == "1" and tumour.attributes["Vendor"] == "x"
    assert "Name" not in tumour.attributes and "LineColor" not in tumour.attributes
    assert [r.type for r in tumour.regions] == ["polygon", "polygon", "rectangle", "ellipse",
                                               "arrow", "ruler"]
    assert [r.negative for r in tumour.regions] == [False, True, False, False, False, False]
    first = tumour.regions[0]
    assert first.text == "tumour a" and first.id == "1"
    assert first.attributes["GeoShape"] == "Polygon" and first.attributes["Zoom"] == "0.5"
    assert {"Type", "Text", "NegativeROA"}.isdisjoint(first.attributes)
    assert first.vertices.dtype == np.float64 and first.vertices.shape == (6, 2)
    np.testing.assert_array_equal(first.vertices[1:4], [[200.5, 100], [200.5, 100],
                                                        [200.5, 200.25]])
    assert first.area() == pytest.approx(100.5 * 100.25)
    hole = tumour.regions[1]
    assert hole.z is None and len(hole.vertices) == 3  # open ring kept open
    assert not tumour.regions[4].is_area and not tumour.regions[5].is_area
    assert tumour.regions[5].length() == pytest.approx(50.0)
    assert ann[1].regions == []
    stroma = ann[2].regions[0]
    np.testing.assert_array_equal(stroma.z, [0, 1, np.nan])


def test_aperio_round_trip_is_lossless(aperio_file, tmp_path, xml_equal):
    ann = read_annotations(aperio_file)
    out = tmp_path / "out.xml"
    assert write_annotations(ann, out) == []
    xml_equal(aperio_file, out)
    sets_equal(ann, read_annotations(out))


def test_sniffed_from_content_not_suffix(aperio_file, tmp_path):
    odd = tmp_path / "annotations.txt"
    odd.write_bytes(b'\xef\xbb\xbf<?xml version="1.0"?>\n<!-- x -->' + aperio_file.read_bytes())
    assert sniff_format(odd) == "aperio"
    assert len(read_annotations(odd)) == 3
    geo = tmp_path / "looks-like.xml"
    geo.write_text('{"type": "FeatureCollection", "features": []}')
    assert read_annotations(geo).format == "geojson"
    other = tmp_path / "other.xml"
    other.write_text("<svg/>")
    with pytest.raises(MalformedAnnotationError, match="neither Aperio"):
        read_annotations(other)


def test_edited_aperio_keeps_ids_and_gets_fresh_ones(aperio_file, tmp_path):
    ann = read_annotations(aperio_file)
    tumour = ann[0]
    tumour.regions[0].vertices = tumour.regions[0].vertices + 5  # moved
    tumour.regions.append(Region([[0, 0], [10, 0], [10, 10], [0, 10]], type="polygon",
                                 text="new"))
    ann.layers.append(AnnotationLayer(name="Necrosis", color=(0, 128, 255), regions=[
        Region([[0, 0], [20, 0], [20, 20]], text="n", holes=[[[5, 5], [8, 5], [8, 8]]])]))
    out = tmp_path / "edited.xml"
    write_annotations(ann, out)
    back = read_annotations(out)
    assert back[0].regions[0].id == "1" and back[0].regions[0].attributes["Zoom"] == "0.5"
    np.testing.assert_array_equal(back[0].regions[0].vertices[0], [105, 105])
    new = back[0].regions[-1]
    ids = [r.id for _, r in back.regions()]
    assert len(set(ids)) == len(ids)
    assert new.text == "new" and int(new.id) == 8  # one past the largest Id in the file
    assert float(new.attributes["Area"]) == 100.0 and float(new.attributes["Length"]) == 40.0
    assert float(new.attributes["AreaMicrons"]) == pytest.approx(100 * 0.252 ** 2)
    necrosis = back[3]
    assert necrosis.name == "Necrosis" and necrosis.color == (0, 128, 255)
    assert necrosis.attributes["Type"] == "4" and necrosis.attributes["Id"] == "4"
    # the hole becomes ImageScope's negative region after its positive
    assert [r.negative for r in necrosis.regions] == [False, True]
    np.testing.assert_array_equal(necrosis.regions[1].vertices, [[5, 5], [8, 5], [8, 8]])


# -- safety ----------------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<Annotations><Annotation Name="&lol9;"/></Annotations>
"""


def test_billion_laughs_is_refused(tmp_path):
    path = tmp_path / "lol.xml"
    path.write_text(BILLION_LAUGHS)
    with pytest.raises(UnsafeAnnotationError, match="entities"):
        read_annotations(path)


@pytest.mark.parametrize("fmt", ["aperio", "asap"])
def test_external_entity_is_refused(tmp_path, fmt):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    root = "Annotations" if fmt == "aperio" else "ASAP_Annotations"
    path = tmp_path / "xxe.xml"
    path.write_text(f'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
                    f'\n<{root}><Annotation Name="&x;"/></{root}>\n')
    with pytest.raises(UnsafeAnnotationError) as info:
        read_annotations(path)
    assert "TOP-SECRET" not in str(info.value) and str(path) in str(info.value)


def test_malformed_xml_names_line_and_column(tmp_path):
    path = tmp_path / "bad.xml"
    path.write_text('<Annotations>\n  <Annotation Name="a">\n  </Annotatio>\n</Annotations>\n')
    with pytest.raises(MalformedAnnotationError, match=r"bad\.xml: line 3, column 5"):
        read_annotations(path)


@pytest.mark.parametrize("value, message", [("nan", "non-finite"), ("inf", "non-finite"),
                                            ("12px", "not a number")])
def test_bad_coordinates_name_the_region(tmp_path, value, message):
    path = tmp_path / "coords.xml"
    path.write_text('<Annotations><Annotation Name="L"><Regions><Region Id="42">'
                    f'<Vertices><Vertex X="1" Y="2"/><Vertex X="{value}" Y="3"/></Vertices>'
                    '</Region></Regions></Annotation></Annotations>')
    with pytest.raises(InvalidGeometryError, match=f"layer 'L', region Id 42.*vertex 1.*{message}"):
        read_annotations(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(SlideSegError, match="no such annotation file"):
        read_annotations(tmp_path / "nope.xml")
    with pytest.raises(SlideSegError, match="is a folder"):
        read_annotations(tmp_path)


def test_write_is_atomic_and_keeps_a_backup(aperio_file, tmp_path):
    ann = read_annotations(aperio_file)
    out = tmp_path / "keep.xml"
    write_annotations(ann, out)
    first = out.read_bytes()

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("cannot format")

    ann[2].regions[0].attributes["Broken"] = Unprintable()
    with pytest.raises(RuntimeError, match="cannot format"):
        write_annotations(ann, out)
    assert out.read_bytes() == first  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [aperio_file.name, "keep.xml"])  # no temporary file left
    del ann[2].regions[0].attributes["Broken"]
    ann[0].name = "Renamed"
    write_annotations(ann, out)
    assert (tmp_path / "keep.xml~").read_bytes() == first
    assert read_annotations(out)[0].name == "Renamed"
    ann[0].regions[0].vertices[0, 0] = np.nan
    with pytest.raises(InvalidGeometryError, match="non-finite"):
        write_annotations(ann, out)
    assert read_annotations(out)[0].name == "Renamed"


# -- ASAP and GeoJSON ------------------------------------------------------------------

ASAP = """<?xml version="1.0"?>
<ASAP_Annotations>
\t<Annotations>
\t\t<Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="tumor" Color="#F4FA58">
\t\t\t<Coordinates>
\t\t\t\t<Coordinate Order="2" X="30,5" Y="40,25" />
\t\t\t\t<Coordinate Order="0" X="10,5" Y="20" />
\t\t\t\t<Coordinate Order="1" X="30,5" Y="20" />
\t\t\t</Coordinates>
\t\t</Annotation>
\t\t<Annotation Name="dot" Type="Dot" PartOfGroup="None" Color="#000000">
\t\t\t<Coordinates><Coordinate Order="0" X="5" Y="6" /></Coordinates>
\t\t</Annotation>
\t\t<Annotation Name="Annotation 2" Type="Spline" PartOfGroup="tumor" Color="#F4FA58">
\t\t\t<Coordinates><Coordinate Order="0" X="1" Y="1" /><Coordinate Order="1" X="9" Y="1" />
\t\t\t<Coordinate Order="2" X="5" Y="7" /></Coordinates>
\t\t</Annotation>
\t\t<Annotation Name="m" Type="Measurement" PartOfGroup="_2" Color="#00ff00">
\t\t\t<Coordinates><Coordinate Order="0" X="0" Y="0" /><Coordinate Order="1" X="3" Y="4" />
\t\t\t</Coordinates>
\t\t</Annotation>
\t</Annotations>
\t<AnnotationGroups>
\t\t<Group Name="tumor" PartOfGroup="None" Color="#ff0000"><Attributes /></Group>
\t\t<Group Name="_2" PartOfGroup="None" Color="#00ff00"><Attributes /></Group>
\t</AnnotationGroups>
</ASAP_Annotations>
"""


def test_asap_groups_types_and_decimal_commas(tmp_path):
    path = tmp_path / "camelyon.xml"
    path.write_text(ASAP)
    ann = read_annotations(path)
    assert ann.format == "asap"
    assert [(la.name, la.color) for la in ann] == [("tumor", (255, 0, 0)), ("_2", (0, 255, 0)),
                                                   ("None", (0, 0, 0))]
    tumor = ann[0]
    assert [r.type for r in tumor.regions] == ["polygon", "spline"]
    np.testing.assert_array_equal(tumor.regions[0].vertices, [[10.5, 20], [30.5, 20],
                                                              [30.5, 40.25]])
    assert tumor.regions[0].text == "Annotation 0"
    assert ann[1].regions[0].type == "ruler" and ann[2].regions[0].type == "point"
    out = tmp_path / "again.xml"
    assert write_annotations(ann, out, format="asap") == []
    back = read_annotations(out)
    sets_equal(ann, back)
    # annotations keep their file order across groups; commas stay commas
    names = [a.attrib["Name"] for a in DET.parse(out).getroot().iter("Annotation")]
    assert names == ["Annotation 0", "dot", "Annotation 2", "m"]
    assert 'X="10,5"' in out.read_text()


def test_geojson_bare_array_multipolygon_holes_and_top_level_names(tmp_path):
    features = [
        {"type": "Feature", "id": "a1", "geometry": {"type": "MultiPolygon", "coordinates": [
            [[[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]],
             [[10, 10], [20, 10], [20, 20], [10, 10]]],
            [[[200, 200], [300, 200], [300, 300], [200, 200]]]]},
         "properties": {"objectType": "annotation", "isLocked": False,
                        "classification": {"name": "Tumor", "color": [200, 0, 0]},
                        "measurements": {"Area": 9950.0}}},
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[1, 2], [3, 4]]},
         "properties": {"name": "ruler", "color": [0, 0, 255]}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [7, 8]},
         "properties": {"classification": {"name": "Tumor", "color": [200, 0, 0]}}},
    ]
    path = tmp_path / "bare.json"
    path.write_text(json.dumps(features))
    ann = read_annotations(path)
    assert [(la.name, la.color) for la in ann] == [("Tumor", (200, 0, 0)), ("ruler", (0, 0, 255))]
    parts = ann[0].regions
    assert [r.type for r in parts] == ["polygon", "polygon", "point"]
    assert parts[0].group == parts[1].group is not None and parts[2].group is None
    assert len(parts[0].holes) == 1 and parts[0].area() == pytest.approx(10000 - 50)
    assert parts[0].attributes["measurements"] == {"Area": 9950.0}
    assert ann[1].regions[0].type == "line" and ann[1].regions[0].text == "ruler"
    out = tmp_path / "out.geojson"
    assert write_annotations(ann, out) == []
    assert json.loads(out.read_text()) == features  # bare array, same features, same order


def test_aperio_to_geojson_turns_negatives_into_holes(aperio_file, tmp_path):
    ann = read_annotations(aperio_file)
    out = tmp_path / "out.geojson"
    lost = write_annotations(ann, out)
    assert any("ellipse" in m for m in lost) and any("arrow" in m for m in lost)
    doc = json.loads(out.read_text())
    first = doc["features"][0]
    assert first["geometry"]["type"] == "Polygon"
    assert len(first["geometry"]["coordinates"]) == 2  # outer ring + the negative region
    assert first["properties"]["classification"] == {"name": "Tumour", "color": [255, 0, 0]}
    assert first["properties"]["name"] == "tumour a"
    assert first["properties"]["metadata"]["Zoom"] == "0.5"
    back = read_annotations(out)
    assert back[0].regions[0].area() == pytest.approx(
        ann[0].regions[0].area() - ann[0].regions[1].area())


# -- the real files --------------------------------------------------------------------

REAL = {  # file: (layers, regions, vertices, mpp, first colour)
    "aperio/SlideSeg_example.xml": (2, 14, 6331, 0.252, (0, 255, 0)),
    "aperio/S15-77276 - 2016-12-05 18.58.21.xml": (4, 368, 38376, 0.2281, (0, 255, 0)),
    "aperio/V10S14-085_XY01_20-0038.xml": (1, 7, 2401, 0.466667, None),
    "aperio/XMLunittest.xml": (1, 3, 165, 0.499, (255, 255, 0)),
    "aperio/SG_013_0061.xml": (13, 5, 557, 0.4416, None),
    "aperio/NP040-16_pTDP43_RVC_40x.xml": (1, 13, 6079, 0.252, None),
    "aperio/NP015-15-14La-PLP.xml": (3, 3, 1880, 0.5019, (0, 0, 0)),
    "asap/packer-example.xml": (1, 1, 42, None, (0x73, 0xD2, 0x16)),
    "geojson/CMU-1.json": (5, None, None, None, None),
    "geojson/qupath05.geojson": (None, 3, None, None, (255, 0, 0)),
}


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_annotation_files_read_and_round_trip(shared_data, tmp_path, name, xml_equal):
    path = shared_data / "annotations" / name
    layers, regions, vertices, mpp, color = REAL[name]
    ann = read_annotations(path)
    if layers is not None:
        assert len(ann) == layers
    if regions is not None:
        assert ann.region_count == regions
    if vertices is not None:
        assert sum(len(r.vertices) for _, r in ann.regions()) == vertices
    if mpp is not None:
        assert ann.mpp == pytest.approx(mpp)
    if color is not None:
        assert ann[0].color == color
    out = tmp_path / ("out" + path.suffix)
    assert write_annotations(ann, out, format=ann.format) == []
    if ann.format in ("aperio", "asap"):
        xml_equal(path, out)
    else:
        assert json.loads(out.read_text()) == json.loads(path.read_text())
    sets_equal(ann, read_annotations(out))


@pytest.mark.shared
def test_real_negative_regions_and_analysis_layers(shared_data):
    ann = read_annotations(shared_data / "annotations/aperio/NP040-16_pTDP43_RVC_40x.xml")
    assert sum(r.negative for _, r in ann.regions()) == 12
    plp = read_annotations(shared_data / "annotations/aperio/NP015-15-14La-PLP.xml")
    analysis = [la for la in plp if la.attributes.get("Type") == "3"]
    assert len(analysis) == 2 and all(la.attributes["ReadOnly"] == "1" for la in analysis)
    cmu = read_annotations(shared_data / "annotations/geojson/CMU-1.json")
    assert sum(len(r.holes) for _, r in cmu.regions()) == 7
    asap = read_annotations(shared_data / "annotations/asap/packer-example.xml")
    v = asap[0].regions[0].vertices
    assert v[:, 0].min() == pytest.approx(315.2, abs=0.05)
    assert v[:, 0].max() == pytest.approx(543.020264)


def test_single_geojson_feature_round_trips_as_a_feature(tmp_path):
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[0, 0], [4, 0], [4, 3], [0, 0]]]}, "properties": {"objectType": "annotation"}}
    path = tmp_path / "one.geojson"
    path.write_text(json.dumps(feature))
    ann = read_annotations(path)
    assert ann[0].name == "Unclassified" and ann[0].regions[0].area() == 6.0
    out = tmp_path / "again.geojson"
    assert write_annotations(ann, out) == []
    assert json.loads(out.read_text()) == feature
