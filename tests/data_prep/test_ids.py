"""The shared sorted-id lookup."""

from __future__ import annotations

import numpy as np

from data_prep.ids import locate


def test_locate_finds_present_ids_and_flags_absent_ones():
    ids = np.array([3, 7, 10], np.int64)
    pos, found = locate(ids, np.array([7, 3, 10, 0, 8, 11, -1], np.int64))
    assert found.tolist() == [True, True, True, False, False, False, False]
    assert pos[found].tolist() == [1, 0, 2]
    assert ((pos >= 0) & (pos < len(ids))).all()  # always a valid index


def test_locate_in_empty_array():
    pos, found = locate(np.zeros(0, np.int64), np.array([1, 2], np.int64))
    assert pos.tolist() == [0, 0] and not found.any()
