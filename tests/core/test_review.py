"""Review attributes: statuses, reviewers, times and opinions of regions and of the slide,
kept as Aperio ``<Attributes>`` through write/read round trips; review columns of the
Shapes layers (``_layers``) and their way back into regions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from napari_slideseg._layers import (
    META_MOVED,
    META_SLIDE_OPINION,
    REVIEW_COLUMNS,
    REVIEW_DEFAULTS,
    _copy,
    annotation_layers_data,
    shapes_to_annotations,
)
from napari_slideseg.core.annotations import (
    AnnotationLayer,
    AnnotationSet,
    Region,
    read_annotations,
    write_annotations,
)
from napari_slideseg.core.errors import SlideSegError
from napari_slideseg.core.review import (
    STATUSES,
    UNREVIEWED,
    element_attributes,
    pending_regions,
    review_counts,
    review_of,
    review_time,
    reviewed_annotations,
    set_element_attributes,
    set_review,
    set_slide_opinion,
    slide_opinion,
    status_of,
)

OPINION = 'line one\nline two\r\n\ttabbed "quoted" \'single\' <tag> & amp;  two  spaces '
WHEN = datetime(2024, 5, 1, 9, 30, 15, 123456, tzinfo=timezone.utc)


def square(x, y, size=100.0):
    return np.array([[x, y], [x + size, y], [x + size, y + size], [x, y + size]], float)


def predicted(x, y, p=0.8, tiles=9, status="pending"):
    """A predicted region as the auto-annotation writes it."""
    region = Region(square(x, y), type="polygon")
    set_element_attributes(region, {"review_status": status, "probability_mean": p,
                                    "probability_std": 0.05, "probability_var": 0.0025,
                                    "tile_count": tiles, "cluster": 1, "outline": "convex"})
    return region


def predictions() -> AnnotationSet:
    tumour = AnnotationLayer("Tumour", (255, 0, 0), [predicted(0, 0), predicted(200, 0),
                                                      predicted(400, 0)])
    stroma = AnnotationLayer("Stroma", (0, 255, 0), [predicted(0, 300, p=0.7),
                                                      Region(square(300, 300))])
    return AnnotationSet([tumour, stroma], mpp=0.5)


def roundtrip(annotations: AnnotationSet, tmp_path, name="review.xml") -> AnnotationSet:
    path = tmp_path / name
    write_annotations(annotations, path, format="aperio")
    return read_annotations(path)


# -- regions ------------------------------------------------------------------------------


def test_set_review_and_read_it_back():
    region = predicted(0, 0)
    assert review_of(region) == {"status": "pending"}
    set_review(region, "accepted", reviewer="Dr A", opinion="looks right", when=WHEN)
    assert review_of(region) == {"status": "accepted", "reviewer": "Dr A",
                                 "reviewed_at": "2024-05-01T09:30:15Z",
                                 "opinion": "looks right"}
    # prediction figures are kept, in order, with the review's attributes after them
    names = list(element_attributes(region))
    assert names[:7] == ["review_status", "probability_mean", "probability_std",
                         "probability_var", "tile_count", "cluster", "outline"]
    assert element_attributes(region)["probability_mean"] == "0.8"
    # opinion None keeps it; "" removes it; another reviewer replaces the first
    set_review(region, "rejected", reviewer="Dr B", when="2024-05-02T10:00:00Z")
    assert review_of(region)["opinion"] == "looks right"
    assert review_of(region)["reviewer"] == "Dr B"
    assert review_of(region)["reviewed_at"] == "2024-05-02T10:00:00Z"
    set_review(region, "rejected", opinion="", when=WHEN)
    assert "opinion" not in review_of(region) and "reviewer" not in review_of(region)
    # back to pending: not reviewed by anyone
    set_review(region, "pending", reviewer="Dr C")
    assert review_of(region) == {"status": "pending"}


def test_status_is_validated():
    region = Region(square(0, 0))
    for status in STATUSES:
        set_review(region, status)
        assert status_of(region) == status
    set_review(region, " Accepted ")  # case and spaces do not matter
    assert review_of(region)["status"] == "accepted"
    with pytest.raises(SlideSegError, match="unknown review status 'approved': use one of "
                                            "pending, accepted, rejected, edited, added"):
        set_review(region, "approved")
    assert status_of(region) == "accepted"  # unchanged
    set_element_attributes(region, {"review_status": "maybe"})
    assert status_of(region) is None  # not a status this module knows


def test_review_time_is_iso_utc_to_the_second():
    assert review_time(WHEN) == "2024-05-01T09:30:15Z"
    plus2 = WHEN.astimezone(timezone(timedelta(hours=2)))
    assert review_time(plus2) == "2024-05-01T09:30:15Z"
    now = datetime.now(timezone.utc)
    stamp = datetime.strptime(review_time(), "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=timezone.utc)
    assert abs((stamp - now).total_seconds()) < 5


def test_opinion_with_newlines_tabs_quotes_survives_the_file(tmp_path):
    annotations = predictions()
    region = annotations[0].regions[1]
    set_review(region, "edited", reviewer="Ré Viewer <r@x.org>", opinion=OPINION, when=WHEN)
    set_slide_opinion(annotations, "Slide:\n\tgrade 2 & \"clear\" <margins>\r\nend",
                      reviewer="Dr A", when=WHEN)
    text = (tmp_path / "x.xml")
    write_annotations(annotations, text, format="aperio")
    raw = text.read_text(encoding="utf-8")
    assert "&#10;" in raw and "&#9;" in raw and "&#13;" in raw  # as character references
    back = read_annotations(text)
    assert review_of(back[0].regions[1]) == {
        "status": "edited", "reviewer": "Ré Viewer <r@x.org>",
        "reviewed_at": "2024-05-01T09:30:15Z", "opinion": OPINION}
    assert slide_opinion(back) == {"opinion": "Slide:\n\tgrade 2 & \"clear\" <margins>\r\nend",
                                   "reviewer": "Dr A", "reviewed_at": "2024-05-01T09:30:15Z"}
    # a second round trip changes nothing
    again = roundtrip(back, tmp_path, "again.xml")
    assert review_of(again[0].regions[1])["opinion"] == OPINION
    assert (tmp_path / "again.xml").read_bytes() == text.read_bytes()


def test_setting_attributes_on_a_copy_leaves_the_original(tmp_path):
    back = roundtrip(predictions(), tmp_path)
    original = back[0].regions[0]
    copy = _copy(original)
    assert copy.extra["aperio_layout"] is original.extra["aperio_layout"]  # shared at first
    set_review(copy, "rejected", reviewer="me", opinion="no")
    assert review_of(original) == {"status": "pending"}
    assert review_of(copy)["status"] == "rejected"
    layer_copy = AnnotationLayer(back[0].name, extra=dict(back[0].extra))
    set_slide_opinion(AnnotationSet([layer_copy]), "fine")
    assert slide_opinion(back) == {}


# -- the slide ------------------------------------------------------------------------------


def test_slide_opinion_round_trip_and_clearing(tmp_path):
    annotations = predictions()
    assert slide_opinion(annotations) == {}
    set_slide_opinion(annotations, "Invasive carcinoma,\nmargins clear.", reviewer="Dr A",
                      when=WHEN)
    back = roundtrip(annotations, tmp_path)
    assert slide_opinion(back) == {"opinion": "Invasive carcinoma,\nmargins clear.",
                                   "reviewer": "Dr A", "reviewed_at": "2024-05-01T09:30:15Z"}
    assert set(element_attributes(back[0])) == {"slide_opinion", "slide_reviewer",
                                                "slide_reviewed_at"}
    assert element_attributes(back[1]) == {}
    # the layers reordered: the opinion moves to the new first layer, and only there
    back.layers.reverse()
    set_slide_opinion(back, "revised", when=WHEN)
    assert slide_opinion(back) == {"opinion": "revised", "reviewed_at": "2024-05-01T09:30:15Z"}
    assert element_attributes(back[1]) == {}
    set_slide_opinion(back, "")
    assert slide_opinion(back) == {}
    assert slide_opinion(roundtrip(back, tmp_path, "cleared.xml")) == {}


def test_slide_opinion_of_a_set_without_layers(tmp_path):
    empty = AnnotationSet([], mpp=0.25)
    set_slide_opinion(empty, "nothing to annotate", reviewer="Dr A")
    assert len(empty) == 1 and empty[0].regions == []
    back = roundtrip(empty, tmp_path)
    assert slide_opinion(back)["opinion"] == "nothing to annotate"


# -- counts, pending, truth -------------------------------------------------------------------


def test_counts_and_pending_regions():
    annotations = predictions()
    annotations[1].regions.append(Region(square(320, 320, 10), negative=True))  # a hole
    assert pending_regions(annotations) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    set_review(annotations[0].regions[1], "accepted")
    set_review(annotations[0].regions[2], "rejected")
    set_review(annotations[1].regions[0], "edited")
    annotations[1].regions.append(Region(square(600, 600)))
    set_review(annotations[1].regions[-1], "added")
    counts = review_counts(annotations)
    assert counts == {"pending": 1, "accepted": 1, "rejected": 1, "edited": 1, "added": 1,
                      UNREVIEWED: 1}
    assert list(counts)[:5] == list(STATUSES)
    assert pending_regions(annotations) == [(0, 0)]


def test_reviewed_annotations_drop_rejected_and_keep_the_input():
    annotations = predictions()
    set_review(annotations[0].regions[0], "rejected")
    set_review(annotations[0].regions[2], "accepted")
    truth = reviewed_annotations(annotations)
    assert [len(la.regions) for la in truth] == [2, 2]
    assert [status_of(r) for r in truth[0].regions] == ["pending", "accepted"]
    assert [len(la.regions) for la in annotations] == [3, 2]  # the input is unchanged
    assert truth[0].regions[0] is not annotations[0].regions[1]
    set_review(truth[0].regions[0], "rejected")
    assert status_of(annotations[0].regions[1]) == "pending"
    assert [len(la.regions) for la in reviewed_annotations(annotations, drop_rejected=False)] \
        == [3, 2]
    confirmed = reviewed_annotations(annotations, drop_pending=True)
    assert [len(la.regions) for la in confirmed] == [1, 1]  # the accepted, the hand-drawn
    assert confirmed.mpp == 0.5 and [la.name for la in confirmed] == ["Tumour", "Stroma"]


# -- ImageScope's own content ---------------------------------------------------------------


def test_a_reviewed_imagescope_file_keeps_its_own_attributes(aperio_file, tmp_path):
    annotations = read_annotations(aperio_file)
    layer = annotations[0]
    assert element_attributes(layer) == {"Grade": "3"}
    first, second = layer.regions[0], layer.regions[1]  # <Attributes/>, none at all
    set_review(first, "accepted", reviewer="Dr A", opinion="ok\nfine", when=WHEN)
    set_review(second, "rejected", reviewer="Dr A", when=WHEN)
    set_slide_opinion(annotations, "reviewed", reviewer="Dr A", when=WHEN)
    back = roundtrip(annotations, tmp_path)
    assert element_attributes(back[0]) == {"Grade": "3", "slide_opinion": "reviewed",
                                           "slide_reviewer": "Dr A",
                                           "slide_reviewed_at": "2024-05-01T09:30:15Z"}
    raw = (tmp_path / "review.xml").read_text()
    assert '<Attribute Name="Grade" Id="0" Value="3"/>' in raw
    assert '<Attribute Name="slide_opinion" Id="1" Value="reviewed"/>' in raw
    assert review_of(back[0].regions[0]) == {"status": "accepted", "reviewer": "Dr A",
                                             "reviewed_at": "2024-05-01T09:30:15Z",
                                             "opinion": "ok\nfine"}
    assert status_of(back[0].regions[1]) == "rejected"
    # the regions' own attributes, the other regions, the layer's Plots: as they were
    orig = read_annotations(aperio_file)
    for a, b in zip(orig[0].regions, back[0].regions, strict=True):
        assert a.attributes == b.attributes and a.text == b.text
        np.testing.assert_array_equal(a.vertices, b.vertices)
    assert "<Plot Name=\"p\">" in raw and 'AttributeHeader Id="9999"' in raw
    assert [la.name for la in back] == [la.name for la in orig]
    for a, b in zip(orig[1:], back[1:], strict=True):
        assert element_attributes(a) == element_attributes(b)
    assert review_counts(back) == {"pending": 0, "accepted": 1, "rejected": 1, "edited": 0,
                                   "added": 0, UNREVIEWED: 5}


# -- Shapes layers: review columns and back --------------------------------------------------


def layer_pairs(annotations, review=None):
    out = []
    for data, kwargs, _ in annotation_layers_data(annotations, (0.5, 0.5), review=review):
        attrs = dict(kwargs, features={k: list(v) for k, v in kwargs["features"].items()},
                     shape_type=kwargs.get("shape_type", []))
        out.append([list(data), attrs])
    return out


def test_layers_get_review_columns_when_a_region_has_review_attributes():
    annotations = predictions()
    annotations.layers.append(AnnotationLayer("Hand", regions=[Region(square(0, 700))]))
    (_, tumour), (_, stroma), (_, hand) = layer_pairs(annotations)
    for name in REVIEW_COLUMNS:
        assert name in tumour["features"] and name in stroma["features"]
        assert name not in hand["features"]
    assert tumour["features"]["review_status"] == ["pending"] * 3
    assert tumour["features"]["probability_mean"] == [0.8] * 3
    assert tumour["features"]["tile_count"] == [9] * 3
    # a region without the attributes: "" / NaN / -1
    assert stroma["features"]["review_status"] == ["pending", ""]
    assert np.isnan(stroma["features"]["probability_std"][1])
    assert stroma["features"]["tile_count"] == [9, -1]
    defaults = tumour["feature_defaults"]
    assert {k: defaults[k] for k in ("review_status", "reviewer", "tile_count")} == \
        {"review_status": "added", "reviewer": "", "tile_count": -1}
    assert "review_status" not in hand["feature_defaults"]
    _, forced = layer_pairs(annotations, review=True)[2]
    assert forced["features"]["review_status"] == [""]
    assert set(REVIEW_DEFAULTS) == set(REVIEW_COLUMNS)


def test_review_columns_go_back_into_the_regions(tmp_path):
    source = roundtrip(predictions(), tmp_path)
    pairs = layer_pairs(source)
    tumour = pairs[0][1]["features"]
    tumour["review_status"][0] = "accepted"
    tumour["reviewer"][0] = "Dr A"
    tumour["reviewed_at"][0] = "2024-05-01T09:30:15Z"
    tumour["opinion"][0] = "yes\nreally"
    tumour["review_status"][1] = "rejected"
    # shape 2 reshaped: a pending prediction the reviewer corrected becomes 'edited'
    pairs[0][0][2] = pairs[0][0][2] + np.array([5.0, 0.0])
    # a shape drawn by the reviewer: the layer's feature defaults
    pairs[1][0].append(square(700, 700)[:, ::-1])
    pairs[1][1]["shape_type"] = [*pairs[1][1]["shape_type"], "polygon"]
    for name, value in pairs[1][1]["feature_defaults"].items():
        pairs[1][1]["features"][name].append(value)
    pairs[1][1]["features"]["reviewer"][-1] = "Dr A"
    out = shapes_to_annotations([tuple(p) for p in pairs])
    t, s = out[0].regions, out[1].regions
    assert review_of(t[0]) == {"status": "accepted", "reviewer": "Dr A",
                               "reviewed_at": "2024-05-01T09:30:15Z", "opinion": "yes\nreally"}
    assert status_of(t[1]) == "rejected"
    assert status_of(t[2]) == "edited" and "reviewed_at" in review_of(t[2])
    assert t[2].id == source[0].regions[2].id
    # figures the columns do not show are kept
    assert element_attributes(t[2])["cluster"] == "1"
    assert element_attributes(t[2])["probability_var"] == "0.0025"
    # untouched regions are the same objects; the source is not changed
    assert s[0] is source[1].regions[0] and s[1] is source[1].regions[1]
    assert review_of(source[0].regions[0]) == {"status": "pending"}
    assert review_of(s[2]) == {"status": "added", "reviewer": "Dr A"}
    back = roundtrip(out, tmp_path, "after.xml")
    assert [status_of(r) for r in back[0].regions] == ["accepted", "rejected", "edited"]
    assert [status_of(r) for r in back[1].regions] == ["pending", None, "added"]


def test_accepted_and_reshaped_becomes_edited_rejected_stays():
    source = predictions()
    set_review(source[0].regions[0], "accepted", reviewer="Dr A", when=WHEN)
    set_review(source[0].regions[1], "rejected", reviewer="Dr A", when=WHEN)
    pairs = layer_pairs(source)
    for k in range(3):
        pairs[0][0][k] = pairs[0][0][k] * 1.01
    out = shapes_to_annotations([tuple(p) for p in pairs])
    assert [status_of(r) for r in out[0].regions] == ["edited", "rejected", "edited"]
    assert review_of(out[0].regions[0])["reviewer"] == "Dr A"
    assert review_of(out[0].regions[0])["reviewed_at"] != "2024-05-01T09:30:15Z"
    assert review_of(out[0].regions[1])["reviewed_at"] == "2024-05-01T09:30:15Z"


def test_a_region_moved_to_another_layer_keeps_its_id_and_attributes(tmp_path):
    source = roundtrip(predictions(), tmp_path)
    moving = source[0].regions[1]
    pairs = layer_pairs(source)
    # as the review dock moves shape 1 of Tumour into Stroma
    shape = pairs[0][0].pop(1)
    row = {k: v.pop(1) for k, v in pairs[0][1]["features"].items()}
    pairs[0][1]["shape_type"].pop(1)
    pairs[1][0].append(shape)
    pairs[1][1]["shape_type"].append("polygon")
    row.update(region=len(source[1].regions), review_status="edited", reviewer="Dr A",
               reviewed_at="2024-05-01T09:30:15Z")
    for k, v in pairs[1][1]["features"].items():
        v.append(row[k])
    pairs[1][1]["metadata"] = dict(pairs[1][1]["metadata"], **{META_MOVED: [moving]})
    out = shapes_to_annotations([tuple(p) for p in pairs])
    assert len(out[0].regions) == 2 and len(out[1].regions) == 3
    arrived = out[1].regions[2]
    np.testing.assert_array_equal(arrived.vertices, moving.vertices)
    assert element_attributes(arrived)["cluster"] == "1"
    assert review_of(arrived) == {"status": "edited", "reviewer": "Dr A",
                                  "reviewed_at": "2024-05-01T09:30:15Z"}
    ids = [r.id for r in out[1].regions]
    assert len(set(ids)) == 3  # the moved region's id was taken there: a fresh one
    assert arrived.attributes["Zoom"] == moving.attributes["Zoom"]
    back = roundtrip(out, tmp_path, "moved.xml")
    assert [status_of(r) for r in back[1].regions] == ["pending", None, "edited"]


def test_slide_opinion_in_layer_metadata_is_saved(tmp_path):
    source = predictions()
    pairs = layer_pairs(source)
    opinion = {"opinion": "grade 2\nclear margins", "reviewer": "Dr A",
               "reviewed_at": "2024-05-01T09:30:15Z"}
    pairs[1][1]["metadata"] = dict(pairs[1][1]["metadata"], **{META_SLIDE_OPINION: opinion})
    out = shapes_to_annotations([tuple(p) for p in pairs])
    assert slide_opinion(out) == opinion
    assert slide_opinion(source) == {}
    assert slide_opinion(roundtrip(out, tmp_path)) == opinion


def test_review_survives_geojson_and_conversion_back_to_aperio(tmp_path):
    """GeoJSON carries the review and prediction values in each feature's metadata (as
    QuPath keeps string metadata); converting GeoJSON -> Aperio keeps them as
    Attributes, next to the feature's other metadata."""
    import json

    from napari_slideseg.core.annotations import read_annotations, write_annotations
    from napari_slideseg.core.review import element_attributes, set_element_attributes

    first = Region([[0, 0], [100, 0], [100, 80]])
    second = Region([[200, 0], [300, 0], [300, 80]])
    set_element_attributes(first, {"probability_mean": "0.91", "tile_count": "12"})
    set_review(first, "accepted", reviewer="dr x", opinion="solid\nsheets",
               when="2026-11-26T10:00:00Z")
    set_review(second, "rejected", reviewer="dr x")
    ann = AnnotationSet([AnnotationLayer(name="tumour", regions=[first, second])], mpp=0.5)
    gj = tmp_path / "r.geojson"
    write_annotations(ann, gj)
    features = json.loads(gj.read_text())["features"]
    assert features[0]["properties"]["metadata"]["review_status"] == "accepted"
    back = read_annotations(gj)
    a, b = back[0].regions
    assert review_of(a) == review_of(first) and review_of(b) == review_of(second)
    assert element_attributes(a)["probability_mean"] == "0.91"
    # GeoJSON -> GeoJSON: the same features, as data
    again = tmp_path / "again.geojson"
    write_annotations(back, again)
    assert json.loads(again.read_text())["features"] == features
    # a QuPath feature with other metadata too: GeoJSON -> Aperio keeps both
    doc = {"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
            [[0, 0], [50, 0], [50, 50], [0, 0]]]},
        "properties": {"objectType": "annotation",
                       "classification": {"name": "tumour", "color": [200, 0, 0]},
                       "metadata": {"scanner": "S1", "review_status": "edited",
                                    "opinion": "margin moved"}}}]}
    qp = tmp_path / "qupath.geojson"
    qp.write_text(json.dumps(doc))
    region = read_annotations(qp)[0].regions[0]
    assert review_of(region) == {"status": "edited", "opinion": "margin moved"}
    xml = tmp_path / "qupath.xml"
    write_annotations(read_annotations(qp), xml)
    attrs = element_attributes(read_annotations(xml)[0].regions[0])
    assert attrs["metadata.scanner"] == "S1" and attrs["review_status"] == "edited"
    assert attrs["opinion"] == "margin moved"
    # and back to GeoJSON: the original properties
    out = tmp_path / "back.geojson"
    write_annotations(read_annotations(qp), out)
    assert json.loads(out.read_text())["features"][0]["properties"] == \
        doc["features"][0]["properties"]
