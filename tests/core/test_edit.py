"""Segment editing: merge, split, cut; only the targeted objects change; undo records."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.draw import disk
from skimage.measure import label as label_pieces

from napari_slideseg import (
    EditResult,
    LabelEdit,
    cut_labels,
    merge_labels,
    merge_selected,
    new_label_id,
    split_labels,
)
from napari_slideseg.core.edit import _stroke


def two_touching_discs(dtype=np.int32):
    """Two radius-20 discs of one id overlapping in a narrow lens, and a bystander."""
    labels = np.zeros((80, 120), dtype)
    a = np.zeros(labels.shape, bool)
    b = np.zeros(labels.shape, bool)
    a[disk((40, 38), 20, shape=labels.shape)] = True
    b[disk((40, 74), 20, shape=labels.shape)] = True
    labels[a | b] = 5
    labels[2:8, 100:110] = 9  # not targeted
    return labels, a, b


def three_pieces():
    """A bar cut in three by two background columns, ids 3, 4, 2, and a bystander."""
    labels = np.zeros((30, 70), np.int32)
    labels[10:20, 5:25] = 3
    labels[10:20, 26:45] = 4
    labels[10:20, 46:65] = 2
    labels[24:28, 30:40] = 8  # not targeted
    return labels


def outside(labels, *masks):
    keep = np.ones(labels.shape, bool)
    for m in masks:
        keep &= ~m
    return keep


def assert_record(before, result):
    """The record lists exactly the changed pixels, with their old and new values."""
    edit = result.edit
    changed = before != result.labels
    assert len(edit) == changed.sum()
    rows, cols = edit.indices
    assert changed[rows, cols].all()
    np.testing.assert_array_equal(edit.old_values, before[rows, cols])
    np.testing.assert_array_equal(edit.new_values, result.labels[rows, cols])
    again = before.copy()
    edit.apply(again)
    np.testing.assert_array_equal(again, result.labels)
    edit.revert(again)
    np.testing.assert_array_equal(again, before)


# -- split -----------------------------------------------------------------------------


def test_split_two_touching_discs_by_two_markers():
    labels, a, b = two_touching_discs()
    before = labels.copy()
    result = split_labels(labels, [[40, 38], [40, 74]])
    np.testing.assert_array_equal(labels, before)  # a copy by default
    out = result.labels
    assert set(np.unique(out)) == {0, 5, 9, 10}  # the new id is max + 1
    only_a, only_b = a & ~b, b & ~a
    # each disc (outside the shared lens) is one id: the first marker keeps the old one
    assert (out[only_a] == 5).mean() == 1.0
    assert (out[only_b] == 10).mean() == 1.0
    # the lens both discs share (43 px, 3.5 % of a disc) is cut at the neck: each lens
    # pixel goes to the nearer centre; only the middle column (17 px) is a tie
    lens = a & b
    assert lens.sum() == 43
    cols = np.nonzero(lens)[1]
    assert set(np.unique(out[lens][cols < 56])) == {5}
    assert set(np.unique(out[lens][cols > 56])) == {10}
    # each new object is connected; nothing else changed, byte for byte
    assert label_pieces(out == 5, connectivity=1).max() == 1
    assert label_pieces(out == 10, connectivity=1).max() == 1
    keep = outside(labels, a | b)
    assert out[keep].tobytes() == before[keep].tobytes()
    assert_record(before, result)


def test_split_three_markers_in_one_object_and_markers_on_another():
    labels, a, b = two_touching_discs()
    before = labels.copy()
    # three markers on the discs, one marker alone on the bystander (unchanged)
    result = split_labels(labels, [[40, 30], [40, 74], [40, 46], [4, 104]])
    out = result.labels
    assert set(np.unique(out[a | b])) == {5, 10, 11}
    assert out[40, 30] == 5 and out[40, 74] == 10 and out[40, 46] == 11
    assert (out[2:8, 100:110] == 9).all()
    assert_record(before, result)


def test_split_ignores_background_outside_and_repeated_markers():
    labels, _, _ = two_touching_discs()
    before = labels.copy()
    for markers in ([[40, 38]], [[40, 38], [40.2, 37.9]], [[40, 38], [0, 0]],
                    [[40, 38], [500, 500]], np.empty((0, 2))):
        result = split_labels(labels, markers)
        assert len(result.edit) == 0 and not result.edit
        np.testing.assert_array_equal(result.labels, before)


def test_split_needs_a_free_id_in_the_dtype():
    labels, _, _ = two_touching_discs(np.uint8)
    labels[0, 0] = 255
    with pytest.raises(ValueError, match="no free label id"):
        split_labels(labels, [[40, 38], [40, 74]])


def test_split_in_place_edits_the_given_array():
    labels, _, _ = two_touching_discs()
    result = split_labels(labels, [[40, 38], [40, 74]], in_place=True)
    assert result.labels is labels and labels[40, 74] == 10


# -- merge -----------------------------------------------------------------------------


def test_merge_three_pieces_with_one_line_fills_the_gaps():
    labels = three_pieces()
    before = labels.copy()
    result = merge_labels(labels, [[15, 2], [15, 67]])
    out = result.labels
    bar = before[10:20] != 0
    assert (out[10:20][bar] == 2).all()  # the lowest id
    assert label_pieces(out == 2, connectivity=1).max() == 1  # connected
    # only the two gap pixels under the line were background and are filled
    gap = (before == 0) & (out == 2)
    assert sorted(zip(*np.nonzero(gap), strict=True)) == [(15, 25), (15, 45)]
    # the line's ends beyond the bar stay background; nothing else changed
    assert out[15, 2] == 0 and out[15, 66] == 0
    keep = ~((before != 0) & (np.arange(30)[:, None] < 24)) & ~gap
    assert out[keep].tobytes() == before[keep].tobytes()
    assert (out[24:28, 30:40] == 8).all()
    assert_record(before, result)


def test_merge_without_fill_gap_and_with_a_wider_line():
    labels = three_pieces()
    before = labels.copy()
    out = merge_labels(labels, [[15, 2], [15, 67]], fill_gap=False).labels
    assert set(np.unique(out)) == {0, 2, 8}
    assert label_pieces(out == 2, connectivity=1).max() == 3
    np.testing.assert_array_equal(out == 0, before == 0)
    wide = merge_labels(labels, [[15, 2], [15, 67]], width=3)
    filled = (before == 0) & (wide.labels == 2)
    assert filled.sum() == 6  # 3 rows x 1 column at each of the two gaps
    assert_record(before, wide)


def test_merge_touches_only_the_objects_under_the_line():
    labels = three_pieces()
    before = labels.copy()
    result = merge_labels(labels, [[12, 10], [12, 30]])  # crosses ids 3 and 4 only
    out = result.labels
    assert (out[before == 3] == 3).all() and (out[before == 4] == 3).all()
    assert (out[before == 2] == 2).all() and (out[before == 8] == 8).all()
    assert out[12, 25] == 3 and out[15, 25] == 0  # gap filled only under the line
    assert_record(before, result)


def test_merge_follows_objects_beyond_the_first_crop():
    # a long snake reaching far from the line, and a piece of the same id elsewhere
    labels = np.zeros((300, 400), np.int32)
    labels[10, 10:390] = 6
    labels[10:290, 389] = 6
    labels[289, 10:390] = 6
    labels[100:110, 20:30] = 7
    labels[200:210, 20:30] = 6  # another piece of id 6, not connected, not touched
    before = labels.copy()
    result = merge_labels(labels, [[10, 25], [105, 25]])
    out = result.labels
    assert (out[before == 7] == 6).all()
    assert out[289, 10] == 6 and (out[200:210, 20:30] == 6).all()
    # merging into the higher id: the snake becomes 5, its far end too
    labels[100:110, 20:30] = 5
    out = merge_labels(labels, [[10, 25], [105, 25]]).labels
    assert out[289, 10] == 5 and out[150, 389] == 5
    assert (out[200:210, 20:30] == 6).all()  # the untouched piece keeps its id


def test_merge_single_point_and_empty_line_change_nothing():
    labels = three_pieces()
    for line in ([[15, 10]], [[0, 0], [5, 0]], np.empty((0, 2)), [[-9, -9], [-1, -30]]):
        result = merge_labels(labels, line)
        assert not result.edit
        np.testing.assert_array_equal(result.labels, labels)


def test_merge_line_cannot_slip_between_diagonal_pixels():
    labels = np.zeros((10, 10), np.int32)
    idx = np.arange(10)
    labels[idx, 9 - idx] = 4  # an anti-diagonal one pixel thin
    labels[0, 0] = 2
    out = merge_labels(labels, [[0, 0], [9, 9]]).labels
    assert (out[idx, 9 - idx] == 2).all()


def test_merge_selected_merges_whole_ids():
    labels = three_pieces()
    before = labels.copy()
    result = merge_selected(labels, [4, 3, 0, 99])
    assert (result.labels[before == 4] == 3).all()
    assert (result.labels[before == 2] == 2).all()
    assert_record(before, result)
    assert not merge_selected(labels, [3]).edit


# -- cut -------------------------------------------------------------------------------


def test_cut_separates_along_the_line_and_keeps_every_pixel():
    labels = np.zeros((40, 50), np.int32)
    labels[5:35, 5:45] = 3
    labels[0:3, 0:3] = 1  # not targeted
    before = labels.copy()
    result = cut_labels(labels, [[0, 30], [39, 30]])
    out = result.labels
    np.testing.assert_array_equal(out == 0, before == 0)  # no pixel lost
    assert set(np.unique(out)) == {0, 1, 3, 4}
    assert (out[5:35, 5:30] == 3).all()  # the largest piece keeps the id
    assert (out[5:35, 31:45] == 4).all()
    assert (out[0:3, 0:3] == 1).all()
    assert_record(before, result)


def test_cut_in_three_by_a_polyline_and_a_partial_cut_is_a_no_op():
    labels = np.zeros((40, 60), np.int32)
    labels[5:35, 5:55] = 2
    before = labels.copy()
    # a polyline down through the object, along below it and up again: three pieces,
    # the middle one (the largest) keeps the id, the others follow in raster order
    out = cut_labels(labels, [[0, 20], [39, 20], [39, 40], [0, 40]]).labels
    assert set(np.unique(out)) == {0, 2, 3, 4}
    assert out[20, 30] == 2 and out[20, 10] == 3 and out[20, 50] == 4
    for v in (2, 3, 4):
        assert label_pieces(out == v, connectivity=2).max() == 1
    sizes = [(out == v).sum() for v in (2, 3, 4)]
    assert sizes[0] == max(sizes) and sum(sizes) == (before == 2).sum()
    # a line that ends inside the object does not separate it
    partial = cut_labels(labels, [[0, 30], [20, 30]])
    assert not partial.edit


def test_cut_with_width():
    labels = np.zeros((20, 31), np.int32)
    labels[2:18, 2:29] = 7
    result = cut_labels(labels, [[0, 15], [19, 15]], width=3)
    left, right = result.labels[10, 2:14], result.labels[10, 17:29]
    assert len(set(left)) == 1 and len(set(right)) == 1 and left[0] != right[0]


# -- ids and records -------------------------------------------------------------------


def test_new_label_id():
    assert new_label_id(np.zeros((0, 3), np.int32)) == 1
    assert new_label_id(np.zeros((3, 3), np.uint8)) == 1
    labels = np.zeros((3, 3), np.int64)
    labels[1, 1] = 41
    assert new_label_id(labels) == 42


def test_label_edit_record_shifts_and_is_napari_history_form():
    labels, _, _ = two_touching_discs()
    window = labels[10:70, 10:100].copy()
    result = split_labels(window, [[30, 28], [30, 66]])
    assert isinstance(result, EditResult) and isinstance(result.edit, LabelEdit)
    edit = result.edit.shifted((10, 10))
    whole = labels.copy()
    edit.apply(whole)
    np.testing.assert_array_equal(whole[10:70, 10:100], result.labels)
    np.testing.assert_array_equal(whole[:10], labels[:10])
    indices, old, new = edit.history_atom()
    assert len(indices) == 2 and indices[0].dtype == np.intp
    assert old.dtype == new.dtype == labels.dtype
    rows, cols = edit.bbox
    assert rows.start >= 10 and cols.stop <= 100
    assert list(edit.new_ids) == [6]  # the window holds ids up to 5


def test_inputs_are_checked():
    with pytest.raises(TypeError, match="integer"):
        merge_labels(np.zeros((3, 3), np.float32), [[0, 0]])
    with pytest.raises(ValueError, match="2-D"):
        split_labels(np.zeros((2, 3, 3), np.int32), [[0, 0]])
    with pytest.raises(ValueError, match="width"):
        cut_labels(np.zeros((3, 3), np.int32), [[0, 0]], width=0)


# -- only the targeted objects change --------------------------------------------------


def random_cells(seed, size=64, n=25):
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    rng = np.random.default_rng(seed)
    markers = np.zeros((size, size), np.int32)
    markers[rng.integers(0, size, n), rng.integers(0, size, n)] = rng.permutation(n) + 1
    dist = ndi.distance_transform_edt(markers == 0)
    return watershed(dist, markers, mask=dist < 7).astype(np.int32), rng


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10**6), gesture=st.sampled_from(["merge", "split", "cut"]),
       width=st.integers(1, 3))
def test_only_targeted_objects_change(seed, gesture, width):
    labels, rng = random_cells(seed)
    before = labels.copy()
    pieces = label_pieces(labels, background=0, connectivity=2)
    points = rng.uniform(-5, 69, (int(rng.integers(1, 5)), 2))
    if gesture == "merge":
        result = merge_labels(labels, points, width=width)
    elif gesture == "split":
        result = split_labels(labels, points)
    else:
        result = cut_labels(labels, points, width=width)
    np.testing.assert_array_equal(labels, before)
    changed = before != result.labels
    assert_record(before, result)
    # the objects under the line (or the markers) are the only ones that change
    if gesture == "split":
        rc = np.floor(points + 0.5).astype(int)
        rc = rc[(rc >= 0).all(axis=1) & (rc < 64).all(axis=1)]
    else:
        stroke, inside = _stroke(labels.shape, points, width)
        rc = stroke[inside]
    targeted = np.unique(pieces[rc[:, 0], rc[:, 1]]) if len(rc) else np.empty(0, int)
    targeted = targeted[targeted != 0]
    in_targets = np.isin(pieces, targeted)
    assert result.labels[~in_targets & (before != 0)].tobytes() == \
        before[~in_targets & (before != 0)].tobytes()
    if gesture == "merge":
        # ... all take the lowest of their ids; only background under the line is added
        if len(targeted):
            assert (result.labels[in_targets] == before[in_targets].min()).all()
        added = changed & (before == 0)
        line = np.zeros(labels.shape, bool)
        line[rc[:, 0], rc[:, 1]] = True
        assert not (added & ~line).any()
    else:
        assert not (changed & (before == 0)).any()
        assert not (changed & (result.labels == 0)).any()
