"""Expert review of annotations, stored as Aperio ``<Attributes>`` so it survives files.

A region's review (status, reviewer, time, opinion) and its prediction figures (class,
probability mean/std/variance, tile count) are ``<Attribute Name=... Value=...>``
children of the region's ``<Attributes>`` element in ImageScope XML; the slide's overall
opinion is kept the same way in the first annotation layer's ``<Attributes>``. Files
written by ImageScope keep them, and reading the file back gives them again.

A region's review status is one of :data:`STATUSES`:

- ``pending``: predicted, not looked at yet;
- ``accepted`` / ``rejected``: the reviewer kept it as it is / judged it wrong (a rejected
  region stays in the file, marked, so that what the model got wrong is known; it is
  left out of the truth, see :func:`reviewed_annotations`);
- ``edited``: the reviewer reshaped it or changed its class;
- ``added``: the reviewer drew it (a region the prediction missed).

Regions without a status are not predictions (hand-drawn annotations never put up for
review): :func:`review_counts` counts them as ``unreviewed``.
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any

from ._xml import RawElement
from .annotations import AnnotationLayer, AnnotationSet, Region
from .errors import SlideSegError

__all__ = ["STATUSES", "UNREVIEWED", "REVIEW_ATTRIBUTES", "PREDICTION_ATTRIBUTES",
           "element_attributes", "set_element_attributes", "review_of", "status_of",
           "set_review", "set_slide_opinion", "slide_opinion", "review_counts",
           "pending_regions", "reviewed_annotations", "review_time"]

_REGION_DEFAULT = ["\0Vertices"]


def _regions_marker() -> str:
    from ._aperio import REGIONS

    return REGIONS


def _attributes_element(owner: Region | AnnotationLayer, create: bool) -> RawElement | None:
    """The owner's ``<Attributes>`` element in its Aperio layout.

    With ``create`` the element is made when missing, and the owner gets a layout of its
    own with a private copy of the element (copy on write): copies of a region share
    their layout (``_layers._copy`` copies ``extra`` shallowly), and changing a copy
    must not change the original.
    """
    layout = owner.extra.get("aperio_layout")
    if layout is None:
        if not create:
            return None
        if isinstance(owner, Region):
            # what the Aperio writer would have put there: nested attributes (GeoJSON
            # metadata, measurements), one Attribute per leaf
            from ._aperio import _flatten, _split_attributes

            _, nested = _split_attributes(owner.attributes)
            layout = [RawElement("Attributes", children=[
                RawElement("Attribute", {"Name": name, "Id": str(i), "Value": value})
                for i, (name, value) in enumerate(_flatten(nested))]), *_REGION_DEFAULT]
        else:
            layout = [RawElement("Attributes"), _regions_marker(), RawElement("Plots")]
        owner.extra["aperio_layout"] = layout
        return layout[0]
    if not create:
        return next((item for item in layout
                     if isinstance(item, RawElement) and item.tag == "Attributes"), None)
    layout = [copy.deepcopy(item) if isinstance(item, RawElement) and item.tag == "Attributes"
              else item for item in layout]
    owner.extra["aperio_layout"] = layout
    for item in layout:
        if isinstance(item, RawElement) and item.tag == "Attributes":
            return item
    element = RawElement("Attributes")
    layout.insert(0, element)
    return element


def element_attributes(owner: Region | AnnotationLayer) -> dict[str, str]:
    """Name -> Value of the ``<Attribute>`` children of a region's or layer's
    ``<Attributes>`` (file order; empty when it has none)."""
    element = _attributes_element(owner, create=False)
    if element is None:
        return {}
    return {c.attrib.get("Name", ""): c.attrib.get("Value", "")
            for c in element.children if c.tag == "Attribute"}


def set_element_attributes(owner: Region | AnnotationLayer, values: dict[str, Any]) -> None:
    """Set (or, with value None, remove) named ``<Attribute>`` children of a region's or
    layer's ``<Attributes>``; other children are kept as they are, in order."""
    element = _attributes_element(owner, create=True)
    assert element is not None
    by_name = {c.attrib.get("Name"): c for c in element.children if c.tag == "Attribute"}
    for name, value in values.items():
        child = by_name.get(name)
        if value is None:
            if child is not None:
                element.children.remove(child)
            continue
        text = value if isinstance(value, str) else format(value, ".6g") \
            if isinstance(value, float) else str(value)
        if child is None:
            ids = [int(c.attrib["Id"]) for c in element.children
                   if c.attrib.get("Id", "").lstrip("-").isdigit()]
            child = RawElement("Attribute", {"Name": name, "Id": str(max(ids, default=-1) + 1),
                                             "Value": text})
            element.children.append(child)
            by_name[name] = child
        else:
            child.attrib["Value"] = text
    if isinstance(owner, Region):
        owner.extra.pop("aperio_no_attributes", None)


#: Attribute names of a region's review.
STATUS, REVIEWER, REVIEWED_AT, OPINION = ("review_status", "reviewer", "reviewed_at",
                                          "opinion")
REVIEW_ATTRIBUTES = (STATUS, REVIEWER, REVIEWED_AT, OPINION)
#: Attribute names of a predicted region's figures.
PREDICTION_ATTRIBUTES = ("class", "probability_mean", "probability_std", "probability_var",
                         "tile_count", "cluster", "outline")
#: Attribute names of the slide's opinion (on the first annotation layer).
SLIDE_OPINION, SLIDE_REVIEWER, SLIDE_REVIEWED_AT = ("slide_opinion", "slide_reviewer",
                                                    "slide_reviewed_at")
#: Review statuses, in the order they are shown.
STATUSES = ("pending", "accepted", "rejected", "edited", "added")
#: The key of :func:`review_counts` for regions without a status.
UNREVIEWED = "unreviewed"


def carried_attributes(region: Region) -> dict[str, str]:
    """The review and prediction attributes of a region (what other formats carry in a
    feature's ``metadata``)."""
    names = (*REVIEW_ATTRIBUTES, *PREDICTION_ATTRIBUTES)
    return {k: v for k, v in element_attributes(region).items() if k in names}


def adopt_carried_attributes(region: Region) -> None:
    """Move review and prediction values found in a region's ``metadata`` attribute (as
    a GeoJSON feature carries them) into its Attributes."""
    meta = region.attributes.get("metadata")
    if not isinstance(meta, dict):
        return
    names = (*REVIEW_ATTRIBUTES, *PREDICTION_ATTRIBUTES)
    found = {k: v for k, v in meta.items() if k in names}
    if found:
        region.attributes["metadata"] = {k: v for k, v in meta.items() if k not in found}
        set_element_attributes(region, {k: "" if v is None else str(v)
                                        for k, v in found.items()})


def review_time(when: datetime | str | None = None) -> str:
    """ISO 8601 UTC time to the second (``2024-05-01T09:30:00Z``): now, or ``when``.

    A naive datetime is taken as local time; a string is kept as it is.
    """
    if isinstance(when, str):
        return when
    moment = datetime.now(timezone.utc) if when is None else when.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def review_of(region: Region) -> dict[str, str]:
    """A region's review: {'status', 'reviewer', 'reviewed_at', 'opinion'} (those set)."""
    attrs = element_attributes(region)
    names = {STATUS: "status", REVIEWER: "reviewer", REVIEWED_AT: "reviewed_at",
             OPINION: "opinion"}
    return {short: attrs[name] for name, short in names.items() if name in attrs}


def status_of(region: Region) -> str | None:
    """A region's review status (one of :data:`STATUSES`, case and spaces ignored), or
    None when it has none (or one this module does not know)."""
    value = element_attributes(region).get(STATUS)
    if value is None:
        return None
    value = value.strip().lower()
    return value if value in STATUSES else None


def _check_status(status: str) -> str:
    value = str(status).strip().lower()
    if value not in STATUSES:
        raise SlideSegError(f"unknown review status {status!r}: use one of "
                            f"{', '.join(STATUSES)}.")
    return value


def set_review(region: Region, status: str, *, reviewer: str = "",
               opinion: str | None = None, when: datetime | str | None = None) -> None:
    """Record a review of ``region`` in its ``<Attributes>``.

    Parameters
    ----------
    region : Region
        Changed in place (its other attributes are kept).
    status : str
        One of :data:`STATUSES`. ``pending`` puts the region back up for review: its
        reviewer and time are removed.
    reviewer : str
        Who reviewed it; empty removes a reviewer stored before (the new review is not
        theirs).
    opinion : str, optional
        Free text (newlines, tabs and any character survive the file); None keeps the
        opinion stored, "" removes it.
    when : datetime or str, optional
        Time of the review (default now), stored as ISO 8601 UTC to the second.

    Raises
    ------
    SlideSegError
        ``status`` is not one of :data:`STATUSES`.
    """
    status = _check_status(status)
    values: dict[str, Any] = {STATUS: status}
    if status == "pending":
        values.update({REVIEWER: None, REVIEWED_AT: None})
    else:
        values.update({REVIEWER: reviewer or None, REVIEWED_AT: review_time(when)})
    if opinion is not None:
        values[OPINION] = opinion or None
    set_element_attributes(region, values)


def set_slide_opinion(annotations: AnnotationSet, text: str | None, reviewer: str = "",
                      when: datetime | str | None = None) -> None:
    """Store the overall opinion on the slide in the first layer's ``<Attributes>``.

    The attributes are ``slide_opinion``, ``slide_reviewer`` and ``slide_reviewed_at``
    (ISO 8601 UTC). A set without layers gets an empty, unnamed one to hold them; other
    layers lose an opinion stored on them before (so there is one). An empty ``text``
    (or None) removes all three.
    """
    if not len(annotations):
        annotations.layers.append(AnnotationLayer(name=""))
    layer = annotations[0]
    names = (SLIDE_OPINION, SLIDE_REVIEWER, SLIDE_REVIEWED_AT)
    for other in annotations[1:]:  # an opinion stored before on a layer now not first
        if any(n in element_attributes(other) for n in names):
            set_element_attributes(other, dict.fromkeys(names))
    if not text:
        set_element_attributes(layer, {SLIDE_OPINION: None, SLIDE_REVIEWER: None,
                                       SLIDE_REVIEWED_AT: None})
        return
    set_element_attributes(layer, {SLIDE_OPINION: text, SLIDE_REVIEWER: reviewer or None,
                                   SLIDE_REVIEWED_AT: review_time(when)})


def slide_opinion(annotations: AnnotationSet) -> dict[str, str]:
    """The slide's opinion: {'opinion', 'reviewer', 'reviewed_at'} (those set; empty
    when there is none)."""
    if not len(annotations):
        return {}
    attrs = element_attributes(annotations[0])
    names = {SLIDE_OPINION: "opinion", SLIDE_REVIEWER: "reviewer",
             SLIDE_REVIEWED_AT: "reviewed_at"}
    return {short: attrs[name] for name, short in names.items() if name in attrs}


def review_counts(annotations: AnnotationSet) -> dict[str, int]:
    """Regions per review status: every key of :data:`STATUSES` (0 included), and
    :data:`UNREVIEWED` for regions without a (known) status.

    Negative regions without a status (holes and exclusions, parts of other regions)
    are not counted.
    """
    counts = dict.fromkeys((*STATUSES, UNREVIEWED), 0)
    for _, region in annotations.regions():
        status = status_of(region)
        if status is None and region.negative:
            continue
        counts[status or UNREVIEWED] += 1
    return counts


def pending_regions(annotations: AnnotationSet) -> list[tuple[int, int]]:
    """(layer index, region index) of every region waiting for review, in file order."""
    return [(i, j) for i, layer in enumerate(annotations)
            for j, region in enumerate(layer.regions) if status_of(region) == "pending"]


def reviewed_annotations(annotations: AnnotationSet, drop_rejected: bool = True,
                         drop_pending: bool = False) -> AnnotationSet:
    """A copy of a reviewed set, for use as truth (training, metrics).

    With ``drop_rejected`` the regions the reviewer rejected are left out, with
    ``drop_pending`` those nobody reviewed yet; every other region (accepted, edited,
    added, and those without a status) is kept, in its layer (its class). The input is
    not changed.
    """
    drop = {s for s, d in (("rejected", drop_rejected), ("pending", drop_pending)) if d}
    out = copy.deepcopy(annotations)
    if drop:
        for layer in out:
            layer.regions = [r for r in layer.regions if status_of(r) not in drop]
    return out
