"""Exact univariate DTW, compiled with numba and vectorised across candidate series.

Definition (tslearn's): local cost ``(q_i - c_j)^2``, accumulated along the best monotone
path from ``(0, 0)`` to ``(n-1, m-1)``, distance = sqrt of the accumulated cost. Series may
have unequal lengths; the optional Sakoe-Chiba band follows tslearn's mask for unequal
lengths: cell ``(i, j)`` is allowed iff ``i + min(0, m-n) - r <= j <= i + max(0, m-n) + r``.

Layout: candidates are packed in blocks of ``LANES`` series stored as ``(T, LANES)``, so the
innermost loop of the dynamic programme runs over the lanes (SIMD) and only two rolling
rows ``(T+1, LANES)`` are kept. Lanes may have different lengths: without a band the cells
of a lane beyond its length never feed the cells before it, so the lane simply reads its
result at its own last column; with a band each lane carries its own band limits.
Everything accumulates squared costs; the square root is taken once at the end.
"""

from __future__ import annotations

import logging
import os

import numba
import numpy as np
from numba import njit, prange
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

#: candidate series per SIMD block (8 AVX-512 float64 vectors)
LANES = 32
#: "no band" marker passed to the kernels
NO_BAND = -1


def series_lengths(X: np.ndarray) -> np.ndarray:
    """Lengths of left-aligned NaN-padded series ``(n, T)``: last non-NaN index + 1.

    Raises ValueError naming the row when a NaN sits inside a series or a row is all NaN.
    """
    X = np.asarray(X)
    ok = ~np.isnan(X)
    n, t = X.shape
    lengths = np.where(ok.any(axis=1), t - np.argmax(ok[:, ::-1], axis=1), 0).astype(np.int64)
    bad = np.flatnonzero(lengths == 0)
    if bad.size:
        raise ValueError(f"series row {bad[0]} is all NaN (length 0); {bad.size} such rows")
    inner = ok.sum(axis=1) != lengths
    if inner.any():
        raise ValueError(f"series row {np.flatnonzero(inner)[0]} has NaN inside its length")
    return lengths


def as_series(X: np.ndarray, lengths: np.ndarray | None = None, dtype="float64"):
    """Normalise univariate series to ``(n, T)`` zero-padded arrays plus lengths.

    Accepts ``(T,)``, ``(n, T)`` or ``(n, T, 1)``, NaN-padded after each length (tslearn's
    convention). Zero padding (not NaN) keeps the SIMD kernels free of NaN arithmetic.
    """
    X = np.asarray(X, dtype=dtype)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim == 3:
        if X.shape[2] != 1:
            raise ValueError(f"univariate series expected, got shape {X.shape}")
        X = X[:, :, 0]
    if X.ndim != 2:
        raise ValueError(f"series array must be (n, T), got shape {X.shape}")
    if lengths is None:
        lengths = series_lengths(X)
    else:
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.shape != (X.shape[0],) or np.any(lengths < 1) or np.any(lengths > X.shape[1]):
            raise ValueError(f"lengths must be (n,) in [1, {X.shape[1]}], got {lengths}")
    Z = np.zeros_like(X)
    cols = np.arange(X.shape[1])[None, :] < lengths[:, None]
    Z[cols] = X[cols]
    if np.isnan(Z).any():
        r = np.flatnonzero(np.isnan(Z).any(axis=1))[0]
        raise ValueError(f"series row {r} has NaN inside its length {lengths[r]}")
    return np.ascontiguousarray(Z), lengths


def n_threads(n_jobs: int | None) -> int:
    """numba thread count for an sklearn-style ``n_jobs`` (-1 / None = all)."""
    top = numba.config.NUMBA_NUM_THREADS
    if n_jobs is None or n_jobs < 0:
        return top
    return max(1, min(int(n_jobs), top))


# --------------------------------------------------------------------------- kernels


@njit(cache=True, nogil=True, boundscheck=False)
def lane_dtw_full(q, n, C, clen, thresh, prev, cur, out):
    """Squared DTW of query ``q[:n]`` against the LANES candidates of block ``C`` (M, LANES).

    No band. ``thresh`` (squared) enables early abandoning: every 4 rows the block stops
    when the row minimum of every lane exceeds it (then ``out`` is +inf for all lanes and
    False is returned). ``prev``/``cur`` are workspaces of shape >= (M+1, LANES).
    """
    M = C.shape[0]
    inf = np.inf
    for j in range(M + 1):
        for ln in range(LANES):
            prev[j, ln] = inf
    for ln in range(LANES):
        prev[0, ln] = 0.0
    check = thresh < inf
    # the left neighbour lives in a small lane array: reading it back from `cur` made
    # every cell wait on a store->load round trip (1.5x slower, measured)
    left = np.empty(LANES, C.dtype)
    for i in range(n):
        qi = q[i]
        for ln in range(LANES):
            cur[0, ln] = inf
            left[ln] = inf
        for j in range(M):
            pj = prev[j]
            pj1 = prev[j + 1]
            cj = C[j]
            cw = cur[j + 1]
            for ln in range(LANES):
                a = pj[ln]
                b = pj1[ln]
                c = left[ln]
                m = a if a < b else b
                m = m if m < c else c
                d = qi - cj[ln]
                v = d * d + m
                left[ln] = v
                cw[ln] = v
        if check and (i & 3) == 3 and i < n - 1:
            # the best path crosses row i, so min(row) lower-bounds the final cost
            alive = False
            for ln in range(LANES):
                rm = inf
                for j in range(clen[ln]):
                    v = cur[j + 1, ln]
                    rm = v if v < rm else rm
                if rm <= thresh:
                    alive = True
                    break
            if not alive:
                for ln in range(LANES):
                    out[ln] = inf
                return False
        prev, cur = cur, prev
    for ln in range(LANES):
        out[ln] = prev[clen[ln], ln]
    return True


@njit(cache=True, nogil=True, boundscheck=False)
def lane_dtw_band(q, n, C, clen, radius, thresh, prev, cur, lo, hi, out):
    """As `lane_dtw_full` with a Sakoe-Chiba band of ``radius`` (tslearn's unequal-length mask).

    ``lo``/``hi`` are float workspaces of LANES: lane ln allows ``lo[ln] <= j - i <= hi[ln]``.
    Only the union of the lanes' bands is swept; cells outside a lane's band are +inf.
    """
    M = C.shape[0]
    inf = np.inf
    dlo = 1 << 30
    dhi = -(1 << 30)
    for ln in range(LANES):
        d = clen[ln] - n
        a = (d if d < 0 else 0) - radius
        b = (d if d > 0 else 0) + radius
        lo[ln] = a
        hi[ln] = b
        dlo = a if a < dlo else dlo
        dhi = b if b > dhi else dhi
    for j in range(M + 1):
        for ln in range(LANES):
            prev[j, ln] = inf
            cur[j, ln] = inf
    for ln in range(LANES):
        prev[0, ln] = 0.0
    check = thresh < inf
    left = np.empty(LANES, C.dtype)
    for i in range(n):
        qi = q[i]
        jlo = i + dlo
        if jlo < 0:
            jlo = 0
        jhi = i + dhi
        if jhi > M - 1:
            jhi = M - 1
        for ln in range(LANES):
            cur[jlo, ln] = inf  # column jlo-1: outside the band for this and later rows
            left[ln] = inf
        for j in range(jlo, jhi + 1):
            k = float(j - i)
            pj = prev[j]
            pj1 = prev[j + 1]
            cj = C[j]
            cw = cur[j + 1]
            for ln in range(LANES):
                a = pj[ln]
                b = pj1[ln]
                c = left[ln]
                m = a if a < b else b
                m = m if m < c else c
                d = qi - cj[ln]
                v = d * d + m
                ok = (k >= lo[ln]) & (k <= hi[ln])
                v = v if ok else inf
                left[ln] = v
                cw[ln] = v
        if jhi + 2 <= M:
            for ln in range(LANES):
                cur[jhi + 2, ln] = inf  # column jhi+1, read by the next row as "above"
        if check and (i & 3) == 3 and i < n - 1:
            alive = False
            for ln in range(LANES):
                rm = inf
                for j in range(jlo, min(jhi + 1, clen[ln])):
                    v = cur[j + 1, ln]
                    rm = v if v < rm else rm
                if rm <= thresh:
                    alive = True
                    break
            if not alive:
                for ln in range(LANES):
                    out[ln] = inf
                return False
        prev, cur = cur, prev
    for ln in range(LANES):
        out[ln] = prev[clen[ln], ln]
    return True


@njit(cache=True, nogil=True)
def dtw_sq_scalar(a, na, b, nb, radius):
    """Plain squared DTW of two series (reference implementation, O(n m) memory)."""
    D = np.full((na + 1, nb + 1), np.inf)
    D[0, 0] = 0.0
    d = nb - na
    lo = (d if d < 0 else 0) - radius
    hi = (d if d > 0 else 0) + radius
    for i in range(na):
        for j in range(nb):
            if radius >= 0 and (j - i < lo or j - i > hi):
                continue
            c = a[i] - b[j]
            D[i + 1, j + 1] = c * c + min(D[i, j], D[i, j + 1], D[i + 1, j])
    return D[na, nb]


@njit(cache=True)
def pack_blocks(R, rlen, order):
    """Pack reference rows ``R[order]`` into lane blocks ``(n_blocks, T, LANES)``.

    Returns the blocks, per-lane lengths ``(n_blocks, LANES)`` and indices (-1 for the
    padding lanes of the last block, whose series are zeros of length 1).
    """
    nr = order.shape[0]
    T = R.shape[1]
    nb = (nr + LANES - 1) // LANES
    B = np.zeros((nb, T, LANES), R.dtype)
    L = np.ones((nb, LANES), np.int64)
    IDX = np.full((nb, LANES), -1, np.int64)
    for p in range(nr):
        b = p // LANES
        ln = p % LANES
        r = order[p]
        for t in range(rlen[r]):
            B[b, t, ln] = R[r, t]
        L[b, ln] = rlen[r]
        IDX[b, ln] = r
    return B, L, IDX


@njit(cache=True, parallel=True, boundscheck=False)
def _cdist_chunk(Q, qlen, B, BL, BI, bmax, radius, out):
    """Squared DTW of every query against every packed block (parallel over queries)."""
    nq = Q.shape[0]
    nb = B.shape[0]
    T = B.shape[1]
    for s in prange(nq):
        prev = np.empty((T + 1, LANES), Q.dtype)
        cur = np.empty((T + 1, LANES), Q.dtype)
        lo = np.empty(LANES, Q.dtype)
        hi = np.empty(LANES, Q.dtype)
        res = np.empty(LANES, Q.dtype)
        q = Q[s]
        n = qlen[s]
        for b in range(nb):
            C = B[b, : bmax[b]]
            if radius < 0:
                lane_dtw_full(q, n, C, BL[b], np.inf, prev, cur, res)
            else:
                lane_dtw_band(q, n, C, BL[b], radius, np.inf, prev, cur, lo, hi, res)
            for ln in range(LANES):
                r = BI[b, ln]
                if r >= 0:
                    out[s, r] = res[ln]


def cdist_dtw(
    A: np.ndarray,
    B: np.ndarray | None = None,
    sakoe_chiba_radius: int | None = None,
    lengths_a: np.ndarray | None = None,
    lengths_b: np.ndarray | None = None,
    n_jobs: int | None = -1,
    dtype: str = "float64",
    chunk: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """All-pairs DTW distances ``(len(A), len(B))``, equal to tslearn's ``cdist_dtw``.

    ``A``/``B``: univariate series ``(n, T)`` or ``(n, T, 1)``, NaN-padded after each length
    (or pass the lengths). Queries are processed in chunks of ``chunk`` rows so memory stays
    at the output plus O(T * LANES) per thread.
    """
    Qa, la = as_series(A, lengths_a, dtype)
    if B is None:
        Rb, lb = Qa, la
    else:
        Rb, lb = as_series(B, lengths_b, dtype)
    radius = NO_BAND if sakoe_chiba_radius is None else int(sakoe_chiba_radius)
    if radius < NO_BAND:
        raise ValueError(f"sakoe_chiba_radius must be None or >= 0, got {sakoe_chiba_radius}")
    # longest first so each block's swept width (its longest lane) wastes little
    order = np.argsort(-lb, kind="stable")
    blocks, bl, bi = pack_blocks(Rb, lb, order)
    bmax = bl.max(axis=1)
    out = np.empty((Qa.shape[0], Rb.shape[0]), Qa.dtype)
    old = numba.get_num_threads()
    numba.set_num_threads(n_threads(n_jobs))
    try:
        with tqdm(
            total=Qa.shape[0] * Rb.shape[0],
            unit="pair",
            unit_scale=True,
            disable=not progress,
            desc="DTW",
        ) as bar:
            for s in range(0, Qa.shape[0], chunk):
                e = min(s + chunk, Qa.shape[0])
                _cdist_chunk(Qa[s:e], la[s:e], blocks, bl, bi, bmax, radius, out[s:e])
                bar.update((e - s) * Rb.shape[0])
    finally:
        numba.set_num_threads(old)
    np.sqrt(out, out=out)
    return out


def dtw(a: np.ndarray, b: np.ndarray, sakoe_chiba_radius: int | None = None) -> float:
    """DTW distance of two univariate (NaN-padded) series; scalar reference kernel."""
    (qa, la), (qb, lb) = as_series(np.ravel(a)), as_series(np.ravel(b))
    r = NO_BAND if sakoe_chiba_radius is None else int(sakoe_chiba_radius)
    return float(np.sqrt(dtw_sq_scalar(qa[0], la[0], qb[0], lb[0], r)))


if os.environ.get("DTW_KNN_DEBUG"):  # pragma: no cover
    logger.setLevel(logging.DEBUG)
