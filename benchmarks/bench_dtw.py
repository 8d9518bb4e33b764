"""Benchmark: DTW cells/s of the numba lane kernel vs tslearn, dtaidistance and aeon.

Cells = n_query x n_ref x T^2 (full window, univariate, float64). Our kernel runs the whole
problem; the slower references run on a subset of queries (same references) and are
scaled to cells/s, all in one process so the ratios share the machine's load. Also
measures the pruned k-NN search (k=5) against brute force (our kernel on every pair).

    .venv/bin/python benchmarks/bench_dtw.py            # 1000 x 5000 x 48 (a few minutes)
    .venv/bin/python benchmarks/bench_dtw.py --quick    # 200 x 1000 x 48, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numba
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.dtw_knn.dtw import LANES, cdist_dtw  # noqa: E402
from models.dtw_knn.search import knn_bruteforce, knn_search  # noqa: E402


def timed(fn, repeat=1):
    """Best wall time of `repeat` runs, and the last result."""
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def paired(ref_fn, ours_fn, rounds: int = 2):
    """Interleave a reference and our kernel on the same subset; best time of each.

    Under a shared machine the load changes from second to second; alternating the two
    and keeping each one's best keeps their ratio honest.
    """
    t_ref, t_ours, out = np.inf, np.inf, None
    for _ in range(rounds):
        t, _o = timed(ours_fn)
        t_ours = min(t_ours, t)
        t, out = timed(ref_fn)
        t_ref = min(t_ref, t)
    return t_ref, t_ours, out


def make_data(n_q: int, n_r: int, T: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random walks with random offset/scale: continuous values, like z-scored vitals."""
    rng = np.random.default_rng(seed)

    def walks(n):
        x = np.cumsum(rng.normal(0, 0.3, (n, T)), axis=1)
        return x + rng.normal(0, 1, (n, 1))

    return walks(n_q), walks(n_r)


def make_ffill(n_q: int, n_r: int, T: int, seed: int, p: float = 0.15):
    """Grid-view-like series: sparse observations, forward-filled, 0 before the first."""
    rng = np.random.default_rng(seed)

    def one(n):
        obs = rng.random((n, T)) < p
        vals = rng.normal(0, 1, (n, 1)) + rng.normal(0, 0.5, (n, T))
        idx = np.where(obs, np.arange(T), -1)
        np.maximum.accumulate(idx, axis=1, out=idx)
        out = np.take_along_axis(vals, np.maximum(idx, 0), axis=1)
        return np.where(idx >= 0, out, 0.0)

    return one(n_q), one(n_r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 x 1000 instead of 1000 x 5000")
    ap.add_argument("--n-query", type=int, default=None)
    ap.add_argument("--n-ref", type=int, default=None)
    ap.add_argument("--length", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "dtw.md"))
    args = ap.parse_args()
    n_q = args.n_query or (200 if args.quick else 1000)
    n_r = args.n_ref or (1000 if args.quick else 5000)
    T, th = args.length, args.threads
    numba.set_num_threads(min(th, numba.config.NUMBA_NUM_THREADS))
    Q, R = make_data(n_q, n_r, T, args.seed)
    load0 = os.getloadavg()

    cdist_dtw(Q[:2], R[:40], n_jobs=th)  # compile / load the numba cache outside the timing
    t_ours, D = timed(lambda: cdist_dtw(Q, R, n_jobs=th), repeat=2)
    cells = lambda nq: nq * n_r * T * T  # noqa: E731
    rows = [("numba lane kernel (this repo)", n_q, t_ours, cells(n_q) / t_ours, 0.0)]

    # tslearn: the oracle, ~100x slower -> a few queries
    from tslearn.metrics import cdist_dtw as ts_cdist

    nq_ts = max(2, n_q // 100)
    ts_cdist(Q[:1, :, None], R[:10, :, None])
    t, t_o, Dts = paired(
        lambda: ts_cdist(Q[:nq_ts, :, None], R[:, :, None], n_jobs=th),
        # our side runs more queries: a 0.03 s timing would be dominated by call overhead
        lambda: cdist_dtw(Q[: 10 * nq_ts], R, n_jobs=th),
    )
    rows.append(("tslearn cdist_dtw", nq_ts, t, cells(nq_ts) / t, np.abs(Dts - D[:nq_ts]).max()))
    pair_ratio = {"tslearn cdist_dtw": (10 * nq_ts / t_o) / (nq_ts / t)}  # ratio of cells/s

    # dtaidistance: C library with OpenMP; one matrix over [Q; R], block = the Q x R part
    from dtaidistance import dtw as dd
    from dtaidistance import dtw_cc, dtw_cc_omp  # noqa: F401  (fails if the C build is absent)

    nq_dd = max(2, n_q // 10)
    S = np.vstack([Q[:nq_dd], R]).astype(np.float64)
    blk = ((0, nq_dd), (nq_dd, nq_dd + n_r))
    t, t_o, Mdd = paired(
        lambda: dd.distance_matrix_fast(S, block=blk, parallel=True),
        lambda: cdist_dtw(Q[:nq_dd], R, n_jobs=th),
    )
    pair_ratio["dtaidistance distance_matrix_fast (C, OpenMP)"] = t / t_o
    Ddd = Mdd[:nq_dd, nq_dd:]
    rows.append(
        (
            "dtaidistance distance_matrix_fast (C, OpenMP)",
            nq_dd,
            t,
            cells(nq_dd) / t,
            np.abs(Ddd - D[:nq_dd]).max(),
        )
    )

    # aeon: numba; returns the accumulated squared cost -> sqrt before comparing
    from aeon.distances import dtw_pairwise_distance

    nq_ae = max(2, n_q // 10)
    dtw_pairwise_distance(Q[:2], R[:10], n_jobs=th)
    t, t_o, Dae = paired(
        lambda: dtw_pairwise_distance(Q[:nq_ae], R, n_jobs=th),
        lambda: cdist_dtw(Q[:nq_ae], R, n_jobs=th),
    )
    pair_ratio["aeon dtw_pairwise_distance (sqrt taken)"] = t / t_o
    rows.append(
        (
            "aeon dtw_pairwise_distance (sqrt taken)",
            nq_ae,
            t,
            cells(nq_ae) / t,
            np.abs(np.sqrt(Dae) - D[:nq_ae]).max(),
        )
    )

    # pruned k-NN vs brute force, k = 5, same kernel, on two kinds of data
    k = 5
    knn_search(Q[:2], R[:50], k, n_jobs=th)
    Qf, Rf = make_ffill(n_q, n_r, T, args.seed + 1)
    knn = {}
    for label, (q_, r_) in {"random walks": (Q, R), "forward-filled sparse": (Qf, Rf)}.items():
        t_pr, (dp, ip, st) = timed(lambda q_=q_, r_=r_: knn_search(q_, r_, k, n_jobs=th))
        t_bf, (db, ib) = timed(lambda q_=q_, r_=r_: knn_bruteforce(q_, r_, k, n_jobs=th))
        same = bool((ip == ib).all() and np.array_equal(dp, db))
        knn[label] = (t_bf, t_pr, st, same)
    load1 = os.getloadavg()

    best_ref = max(r[3] for r in rows[2:])
    cmd = (
        "cd "
        + str(ROOT)
        + " && .venv/bin/python benchmarks/"
        + " ".join([Path(sys.argv[0]).name] + sys.argv[1:])
    )
    lines = [
        "# DTW kernel benchmark",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{th} threads for every library, float64, full window (no band), univariate series "
        f"of length {T}, {n_q} queries x {n_r} references (random walks). Lanes: {LANES}.",
        f"Load average before/after: {load0[0]:.2f} / {load1[0]:.2f} (machine shared with "
        "other engineers: absolute numbers are noisy; the ratios were measured in one process).",
        "",
        "| implementation | queries run | seconds | cells/s | ours is x faster (paired) "
        "| max abs diff vs ours |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, nq, t, cps, diff in rows:
        ratio = pair_ratio.get(name, 1.0)
        lines.append(f"| {name} | {nq} | {t:.3f} | {cps:.3g} | {ratio:.1f} | {diff:.2e} |")
    lines += [
        "",
        "Paired ratio: our kernel timed on the same query subset (10x more queries against "
        "tslearn, ratio of cells/s), alternating with the reference (best of 2 each), so "
        "both see the same load. "
        f"Ours vs tslearn: {pair_ratio['tslearn cdist_dtw']:.0f}x; vs the best of "
        f"dtaidistance and aeon: {min(list(pair_ratio.values())[1:]):.1f}x. "
        f"(Unpaired, from the cells/s column: {rows[0][3] / rows[1][3]:.0f}x and "
        f"{rows[0][3] / best_ref:.1f}x.)",
        "",
        "The references ran on the first queries only (all references) and are scaled to "
        "cells/s; their distances are compared with ours on those queries.",
        "Contention: with ~7 engineers on 2 cores the load moves within seconds, and the "
        "references' OpenMP/joblib workers suffer from it more than ours; on the same day the "
        "paired ratio vs the best of dtaidistance/aeon ranged from about 6x (busy) to 15-19x "
        "(quieter) between runs. Rerun on a quiet machine for absolute numbers.",
        "Definitions: tslearn and dtaidistance return sqrt(sum of squared differences along the "
        "best path) — the definition used here; aeon's `dtw_distance` returns the accumulated "
        "squared cost without the root, so its output is square-rooted before the comparison.",
        "",
        f"## Pruned k-NN search (k={k}) vs brute force",
        "",
        "| data | brute force s | pruned s | speed-up | full DTWs pruned | never in kernel "
        "| abandoned in a block | same neighbours as brute force |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        *[
            f"| {lab} | {tb:.3f} | {tp:.3f} | {tb / tp:.1f}x | {100 * st.pruned_fraction:.1f}% "
            f"| {100 * st.skipped_fraction:.1f}% | {100 * st.pairs_abandoned / st.pairs:.1f}% "
            f"| {same} |"
            for lab, (tb, tp, st, same) in knn.items()
        ],
        "",
        f"Brute force = our kernel on all {n_q * n_r} pairs + top-k; pruned = LB_Kim/LB_Keogh "
        "ordering of lane blocks + early abandoning. 'Forward-filled sparse' mimics the grid "
        "view: each hour observed with probability 0.15, forward-filled, 0 before the first "
        "observation; its many equal values make the bounds weaker and tie often.",
        "",
        "```json",
        json.dumps(
            {
                "n_query": n_q,
                "n_ref": n_r,
                "length": T,
                "threads": th,
                "cells_per_s": {r[0]: r[3] for r in rows},
                "paired_speedup_of_ours": pair_ratio,
                "max_abs_diff": {r[0]: float(r[4]) for r in rows},
                "knn_k": k,
                "knn": {
                    lab: {
                        "bruteforce_s": tb,
                        "pruned_s": tp,
                        "pruned_fraction": st.pruned_fraction,
                        "same_neighbours": same,
                    }
                    for lab, (tb, tp, st, same) in knn.items()
                },
                "loadavg_before_after": [load0[0], load1[0]],
            },
            indent=1,
        ),
        "```",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
