"""Lookup of ids in a sorted id array, shared by the readers and the stages."""

from __future__ import annotations

import numpy as np


def locate(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position, found) of each id in the ascending array `sorted_ids`.

    Positions are clipped into range (0 when `sorted_ids` is empty), so they can index
    per-id arrays directly; use them only where `found`.
    """
    if len(sorted_ids) == 0:
        return np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return pos, sorted_ids[pos] == ids
