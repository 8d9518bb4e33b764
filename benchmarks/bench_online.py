"""Benchmark: online windows per second (every hour of every stay), per learner.

A synthetic hourly cohort (`--stays` stays of 20-60 ICU hours, 8 variables, each observed
with probability 0.7 per hour), learners fitted on one window per stay (the h0 protocol),
then every hour of every stay is scored as `sepsis evaluate --online` does: window building
(irregular, grid) and predict_proba in batches of 2048 windows.

    .venv/bin/python benchmarks/bench_online.py            # 60 stays (about a minute)
    .venv/bin/python benchmarks/bench_online.py --full     # 400 stays
Writes docs/benchmarks/online.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_prep.online_windows import OnlineWindows, batches  # noqa: E402

VARS = ("heart_rate", "resp_rate", "mbp", "sbp", "dbp", "temperature", "spo2", "glucose")


def cohort(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(observations, stays with last_hour and label); positives drift upward near the end."""
    rng = np.random.default_rng(seed)
    last = rng.integers(20, 61, n)
    label = (rng.random(n) < 0.3).astype(np.int64)
    rows = []
    for s in range(n):
        h = np.arange(1, last[s] + 1)
        hh, vv = np.meshgrid(h, np.arange(len(VARS)), indexing="ij")
        keep = rng.random(hh.shape) < 0.7
        drift = label[s] * np.clip(hh[keep] - last[s] + 12, 0, None) / 6
        rows.append(
            pd.DataFrame(
                {
                    "stay_id": s,
                    "hour": hh[keep] - rng.random(keep.sum()) * 0.9,
                    "variable": np.array(VARS)[vv[keep]],
                    "value": rng.normal(0, 1, keep.sum()) + drift,
                }
            )
        )
    stays = pd.DataFrame({"stay_id": np.arange(n), "last_hour": last, "label": label})
    return pd.concat(rows, ignore_index=True), stays


def learners(progress: bool = False):
    from models.baselines import GradientBoostingBaseline, LogisticRegressionBaseline
    from models.dtw_knn import DTWKNNClassifier
    from models.mgp_tcn import MGPTCNClassifier

    return {
        "logreg": LogisticRegressionBaseline(),
        "gbm": GradientBoostingBaseline(),
        "dtw_knn": DTWKNNClassifier(k_grid=(5,), variables=list(VARS[:4]), progress=progress),
        "mgp_tcn": MGPTCNClassifier(epochs=1, n_mc_samples=10, progress=progress),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--full", action="store_true", help="400 stays instead of 60")
    ap.add_argument("--stays", type=int, default=None)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "online.md"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    n = args.stays or (400 if args.full else 60)
    obs, stays = cohort(n)
    mean, std = np.zeros(len(VARS)), np.ones(len(VARS))
    ow = OnlineWindows(obs, VARS, 48)
    sid = np.repeat(stays["stay_id"].to_numpy(), stays["last_hour"].to_numpy())
    hour = np.concatenate([np.arange(1, h + 1) for h in stays["last_hour"]]).astype(float)
    tr_sid, tr_t = stays["stay_id"].to_numpy(), stays["last_hour"].to_numpy(float)
    y = stays["label"].to_numpy()
    rows = []
    for view in ("irregular", "grid"):
        cut = ow.irregular if view == "irregular" else ow.grid
        t0 = time.perf_counter()
        for sl in batches(len(sid), args.batch):
            cut(sid[sl], hour[sl], mean, std)
        dt = time.perf_counter() - t0
        rows.append((f"build {view} windows", len(sid), dt))
    for name, model in learners().items():
        cut = ow.irregular if model.view == "irregular" else ow.grid
        model.fit(cut(tr_sid, tr_t, mean, std), y)
        t0 = time.perf_counter()
        for sl in batches(len(sid), args.batch):
            model.predict_proba(cut(sid[sl], hour[sl], mean, std))
        dt = time.perf_counter() - t0
        rows.append((f"{name} (build + predict)", len(sid), dt))
        print(f"{name}: {len(sid) / dt:.0f} windows/s", flush=True)
    cmd = "python benchmarks/bench_online.py" + (" --full" if args.full else "")
    lines = [
        "# Online evaluation: windows per second",
        "",
        f"Command: `{cmd}` ({n} stays, {len(sid)} hourly windows, 8 variables, W = 48 h, "
        f"batches of {args.batch}; learners fitted on one window per stay, {len(sid)} scored).",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"{args.threads} torch threads; shared with other work, so treat as an order of magnitude.",
        "",
        "| step | windows | seconds | windows/s |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {r} | {w} | {s:.2f} | {w / s:.0f} |" for r, w, s in rows]
    lines += [
        "",
        "DTW-KNN's cost grows with its training set (every query against every reference) and "
        "MGP-TCN's with observations per window; `online.max_stays` caps the validation and "
        "test stays each one scores (a seeded subsample, reported as such in metrics.csv).",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
