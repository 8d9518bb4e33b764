"""Exact k-nearest-neighbour search under DTW with lower bounds and early abandoning.

UCR-suite ideas (Rakthanmanon et al., KDD 2012) kept in the SIMD lane layout of `dtw`:

1. one pass bounds every (query, candidate) pair with a bound valid for unequal lengths:
   ``LB = (q_0-c_0)^2 + (q_{n-1}-c_{m-1})^2 + max(rows, cols)`` where ``rows`` sums, over
   query rows ``1..n-2``, the squared distance of ``q_i`` to the envelope of the candidate
   values its band allows (LB_Keogh; the first/last terms are LB_Kim's corner cells, which
   lie in rows 0 and n-1 and so never double count), and ``cols`` is the same with the
   roles swapped (full window only: the query envelope is then just its min/max);
2. candidates are sorted by bound and fed to the lane kernel LANES at a time; the search
   stops when the next block's smallest bound exceeds the current k-th best;
3. inside a block the kernel abandons once every lane's running row minimum exceeds the
   k-th best.

Neighbours are ranked by (distance, index), so the result is exactly the brute-force one
(`knn_bruteforce`), ties included. Everything is in squared units until the end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange
from tqdm.auto import tqdm

from models.dtw_knn.dtw import (
    LANES,
    NO_BAND,
    as_series,
    cdist_dtw,
    lane_dtw_band,
    lane_dtw_full,
    n_threads,
)

logger = logging.getLogger(__name__)

# bounds and DTW sum the same costs in different orders; shrink bounds by far more than the
# accumulated rounding (~T ulps) so rounding can never prune a candidate that ties the k-th
_SAFE = {"float64": 1.0 - 1e-12, "float32": 1.0 - 1e-4}

#: process-wide counters (tests use them to prove cache hits skip the kernels)
STATS = {"searches": 0, "pairs": 0, "pairs_in_kernel": 0, "pairs_abandoned": 0}


@dataclass
class SearchStats:
    """What a search did: pairs bounded, pairs run through the DTW kernel, abandoned."""

    pairs: int = 0
    pairs_in_kernel: int = 0
    pairs_abandoned: int = 0

    @property
    def pruned_fraction(self) -> float:
        """Fraction of pairs whose full DTW was never computed (skipped or abandoned)."""
        if self.pairs == 0:
            return 0.0
        return 1.0 - (self.pairs_in_kernel - self.pairs_abandoned) / self.pairs

    @property
    def skipped_fraction(self) -> float:
        """Fraction of pairs never entered into the kernel (lower bound alone)."""
        return 0.0 if self.pairs == 0 else 1.0 - self.pairs_in_kernel / self.pairs


@njit(cache=True, parallel=True)
def candidate_envelopes(Rt, rlen, n, radius):
    """Envelope ``(lo, up)``, each ``(n, n_ref)``, of every candidate for a query of length n.

    Row i holds min/max of the candidate values the band allows in query row i:
    ``j in [i + min(0, m-n) - r, i + max(0, m-n) + r]`` clipped to ``[0, m-1]``.
    """
    nr = Rt.shape[1]
    lo = np.empty((n, nr), Rt.dtype)
    up = np.empty((n, nr), Rt.dtype)
    for r in prange(nr):
        m = rlen[r]
        if radius < 0:
            a = Rt[0, r]
            b = Rt[0, r]
            for j in range(1, m):
                v = Rt[j, r]
                a = v if v < a else a
                b = v if v > b else b
            for i in range(n):
                lo[i, r] = a
                up[i, r] = b
        else:
            d = m - n
            dl = (d if d < 0 else 0) - radius
            dh = (d if d > 0 else 0) + radius
            for i in range(n):
                j0 = max(0, i + dl)
                j1 = min(m - 1, i + dh)
                a = np.inf
                b = -np.inf
                for j in range(j0, j1 + 1):
                    v = Rt[j, r]
                    a = v if v < a else a
                    b = v if v > b else b
                lo[i, r] = a
                up[i, r] = b
    return lo, up


@njit(cache=True, nogil=True, boundscheck=False)
def lower_bounds(q, n, Rt, rlen, elo, eup, radius, safe, out):
    """Squared lower bound of DTW(q[:n], candidate) for every candidate (layout (T, n_ref))."""
    nr = Rt.shape[1]
    for r in range(nr):
        a = q[0] - Rt[0, r]
        b = q[n - 1] - Rt[rlen[r] - 1, r]
        out[r] = a * a
        if n > 1 or rlen[r] > 1:
            out[r] += b * b
    rows = np.zeros(nr, out.dtype)
    # full window: every row's envelope is the candidate's min/max, so read row 0 only
    # (streaming the whole (n, n_ref) envelope per query cost more than the pruned DTWs)
    er = n if radius >= 0 else 1
    for i in range(1, n - 1):
        qi = q[i]
        ei = i if i < er else 0
        for r in range(nr):
            u = qi - eup[ei, r]
            w = elo[ei, r] - qi
            v = u if u > w else w
            v = v if v > 0.0 else 0.0
            rows[r] += v * v
    if radius < 0:
        qmin = q[0]
        qmax = q[0]
        for i in range(1, n):
            qmin = q[i] if q[i] < qmin else qmin
            qmax = q[i] if q[i] > qmax else qmax
        cols = np.zeros(nr, out.dtype)
        T = Rt.shape[0]
        for j in range(1, T - 1):
            for r in range(nr):
                c = Rt[j, r]
                u = c - qmax
                w = qmin - c
                v = u if u > w else w
                v = v if v > 0.0 else 0.0
                cols[r] += v * v if j < rlen[r] - 1 else 0.0
        for r in range(nr):
            rows[r] = rows[r] if rows[r] > cols[r] else cols[r]
    for r in range(nr):
        out[r] = (out[r] + rows[r]) * safe


@njit(cache=True, nogil=True)
def _insert(bd, bi, k, d, idx):
    """Insert (d, idx) into the sorted top-k lists if it ranks before the k-th."""
    if d == np.inf:
        return
    if d > bd[k - 1] or (d == bd[k - 1] and idx > bi[k - 1]):
        return
    p = k - 1
    while p > 0 and (bd[p - 1] > d or (bd[p - 1] == d and bi[p - 1] > idx)):
        bd[p] = bd[p - 1]
        bi[p] = bi[p - 1]
        p -= 1
    bd[p] = d
    bi[p] = idx


@njit(cache=True, parallel=True, boundscheck=False)
def _search_chunk(Q, n, Rt, rlen, elo, eup, radius, safe, k, out_d, out_i, stats):
    """Pruned k-NN for queries Q (all of length n); stats[s] = (in kernel, abandoned)."""
    nq = Q.shape[0]
    T = Rt.shape[0]
    nr = Rt.shape[1]
    for s in prange(nq):
        q = Q[s]
        bounds = np.empty(nr, Q.dtype)
        lower_bounds(q, n, Rt, rlen, elo, eup, radius, safe, bounds)
        order = np.argsort(bounds, kind="mergesort")  # quicksort degrades on many tied bounds
        C = np.zeros((T, LANES), Q.dtype)
        cl = np.ones(LANES, np.int64)
        ci = np.full(LANES, -1, np.int64)
        prev = np.empty((T + 1, LANES), Q.dtype)
        cur = np.empty((T + 1, LANES), Q.dtype)
        lo = np.empty(LANES, Q.dtype)
        hi = np.empty(LANES, Q.dtype)
        res = np.empty(LANES, Q.dtype)
        bd = np.full(k, np.inf, Q.dtype)
        bi = np.full(k, nr + 1, np.int64)
        in_kernel = 0
        abandoned = 0
        for p0 in range(0, nr, LANES):
            if bounds[order[p0]] > bd[k - 1]:
                break
            mx = 1
            for ln in range(LANES):
                p = p0 + ln
                if p < nr:
                    r = order[p]
                    m = rlen[r]
                    for t in range(m):
                        C[t, ln] = Rt[t, r]
                    cl[ln] = m
                    ci[ln] = r
                    mx = m if m > mx else mx
                else:
                    C[0, ln] = 0.0
                    cl[ln] = 1
                    ci[ln] = -1
            live = min(LANES, nr - p0)
            in_kernel += live
            if radius < 0:
                done = lane_dtw_full(q, n, C[:mx], cl, bd[k - 1], prev, cur, res)
            else:
                done = lane_dtw_band(q, n, C[:mx], cl, radius, bd[k - 1], prev, cur, lo, hi, res)
            if not done:
                abandoned += live
                continue
            for ln in range(live):
                _insert(bd, bi, k, res[ln], ci[ln])
        for j in range(k):
            out_d[s, j] = np.sqrt(bd[j])
            out_i[s, j] = bi[j]
        stats[s, 0] = in_kernel
        stats[s, 1] = abandoned


def knn_search(
    Q: np.ndarray,
    R: np.ndarray,
    k: int,
    sakoe_chiba_radius: int | None = None,
    lengths_q: np.ndarray | None = None,
    lengths_r: np.ndarray | None = None,
    n_jobs: int | None = -1,
    dtype: str = "float64",
    chunk: int = 128,
    progress: bool = False,
    desc: str = "DTW k-NN",
) -> tuple[np.ndarray, np.ndarray, SearchStats]:
    """Exact DTW k-NN of each query among the reference series, with pruning.

    Returns ``dist`` ``(n_q, k)`` ascending, ``idx`` ``(n_q, k)`` (ties broken by the lower
    reference index) and a `SearchStats`. Memory: the references, their envelopes for one
    query length, and O(n_ref + T * LANES) per thread; queries run ``chunk`` at a time.
    """
    Qz, lq = as_series(Q, lengths_q, dtype)
    Rz, lr = as_series(R, lengths_r, dtype)
    nr = Rz.shape[0]
    if not 1 <= k <= nr:
        raise ValueError(f"k must be in [1, {nr}] (number of reference series), got {k}")
    radius = NO_BAND if sakoe_chiba_radius is None else int(sakoe_chiba_radius)
    if radius < NO_BAND:
        raise ValueError(f"sakoe_chiba_radius must be None or >= 0, got {sakoe_chiba_radius}")
    Rt = np.ascontiguousarray(Rz.T)
    safe = _SAFE[np.dtype(dtype).name]
    nq = Qz.shape[0]
    dist = np.empty((nq, k), Qz.dtype)
    idx = np.empty((nq, k), np.int64)
    stats = np.zeros((nq, 2), np.int64)
    old = numba.get_num_threads()
    numba.set_num_threads(n_threads(n_jobs))
    try:
        with tqdm(
            total=nq * nr, unit="pair", unit_scale=True, disable=not progress, desc=desc
        ) as bar:
            # envelopes depend on the query length (band geometry), so group queries by it
            for n in np.unique(lq):
                rows = np.flatnonzero(lq == n)
                elo, eup = candidate_envelopes(Rt, lr, int(n), radius)
                for s in range(0, rows.size, chunk):
                    sel = rows[s : s + chunk]
                    d = np.empty((sel.size, k), Qz.dtype)
                    i = np.empty((sel.size, k), np.int64)
                    st = np.zeros((sel.size, 2), np.int64)
                    _search_chunk(
                        np.ascontiguousarray(Qz[sel]),
                        int(n),
                        Rt,
                        lr,
                        elo,
                        eup,
                        radius,
                        safe,
                        k,
                        d,
                        i,
                        st,
                    )
                    dist[sel], idx[sel], stats[sel] = d, i, st
                    bar.update(sel.size * nr)
    finally:
        numba.set_num_threads(old)
    out = SearchStats(nq * nr, int(stats[:, 0].sum()), int(stats[:, 1].sum()))
    STATS["searches"] += 1
    STATS["pairs"] += out.pairs
    STATS["pairs_in_kernel"] += out.pairs_in_kernel
    STATS["pairs_abandoned"] += out.pairs_abandoned
    logger.debug("DTW k-NN: %d pairs, %.1f%% pruned", out.pairs, 100 * out.pruned_fraction)
    return dist, idx, out


def knn_bruteforce(
    Q: np.ndarray,
    R: np.ndarray,
    k: int,
    sakoe_chiba_radius: int | None = None,
    lengths_q: np.ndarray | None = None,
    lengths_r: np.ndarray | None = None,
    n_jobs: int | None = -1,
    dtype: str = "float64",
    chunk: int = 256,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """k-NN from the full distance matrix (chunked), ranked by (distance, index)."""
    Qz, lq = as_series(Q, lengths_q, dtype)
    Rz, lr = as_series(R, lengths_r, dtype)
    nr = Rz.shape[0]
    if not 1 <= k <= nr:
        raise ValueError(f"k must be in [1, {nr}], got {k}")
    dist = np.empty((Qz.shape[0], k), Qz.dtype)
    idx = np.empty((Qz.shape[0], k), np.int64)
    ar = np.arange(nr)
    for s in range(0, Qz.shape[0], chunk):
        e = min(s + chunk, Qz.shape[0])
        D = cdist_dtw(
            Qz[s:e], Rz, sakoe_chiba_radius, lq[s:e], lr, n_jobs, dtype, progress=progress
        )
        for t in range(e - s):
            o = np.lexsort((ar, D[t]))[:k]
            dist[s + t], idx[s + t] = D[t, o], o
    return dist, idx
