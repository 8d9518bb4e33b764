"""Difficulty and cost of the embedded synthetic database (data_prep.sources.synthetic).

For each generator seed: generate -> mimic3.extract -> sepsis3.derive_labels -> observations ->
cohort.prepare_from_tables -> CohortDataset; then
* onset agreement: designed (ground_truth.parquet) vs derived onset hour per septic stay,
  and how many non-septic stays get a derived onset;
* difficulty: GradientBoostingBaseline (window summaries) trained on grid(h, 'train', s) and
  scored on grid(h, 'test', s) for every split seed s, AUPRC and AUROC at h = 0 (and more
  horizons with --horizons), next to the test prevalence.
Also times the default (600-patient) generation and, with --big N, generates N patients in a
child process and reports its peak RSS (bounded-memory check).

Usage: python benchmarks/bench_synthetic.py [--n 3000] [--seeds 0,1,2] [--signal 1.0]
       [--horizons 0] [--big 50000] [--workdir /tmp/bench_synthetic]
Writes docs/benchmarks/synthetic.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_prep import cohort as C  # noqa: E402
from data_prep.dataset import CohortDataset  # noqa: E402
from data_prep.observations import observations_from_extracted  # noqa: E402
from data_prep.sepsis3 import LabelParams, derive_labels  # noqa: E402
from data_prep.sources import mimic3, synthetic  # noqa: E402


def run_one(work: Path, n: int, seed: int, signal: float, horizons: list[int]) -> dict:
    """Generate and prepare one database; return agreement and per-split AUPRC numbers."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from models.baselines import GradientBoostingBaseline

    root = work / f"n{n}_seed{seed}_sig{signal:g}"
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    summary = synthetic.generate(
        root / "raw",
        synthetic.SyntheticParams(n_patients=n, seed=seed, signal_strength=signal),
        progress=False,
    )
    t_gen = time.perf_counter() - t0
    mimic3.extract(root / "raw", root / "ext", mimic3.ReaderParams(), progress=False)
    labels, onsets, _ = derive_labels(root / "ext", LabelParams(), progress=False)
    stays = pd.read_parquet(root / "ext" / "stays.parquet")
    diag = C.sepsis_admissions(root / "ext")
    obs, dropped = observations_from_extracted(root / "ext", stays, progress=False)
    params = C.CohortParams()
    C.prepare_from_tables(
        stays, onsets, labels, diag, obs, params, root / "prepared", dropped_values=dropped
    )
    t_prep = time.perf_counter() - t0

    gt = pd.read_parquet(root / "raw" / "ground_truth.parquet")
    m = gt.merge(onsets[["stay_id", "onset_hour"]], on="stay_id", how="left")
    sep = m[m["group"] == "septic"]
    diff = sep["onset_hour"] - sep["designed_onset_hour"]
    agree = {
        "septic": len(sep),
        "exact": float((diff == 0).mean()),
        "within_2h": float((diff.abs() <= 2).mean()),
        "no_onset": float(diff.isna().mean()),
        **{
            f"{g}_with_onset": float(m.loc[m["group"] == g, "onset_hour"].notna().mean())
            for g in ("infection", "organ", "control")
        },
    }
    ds = CohortDataset.load(root / "prepared")
    res = []
    for h in horizons:
        for s in params.split_seeds:
            Xtr, ytr = ds.grid(h, "train", s)
            Xte, yte = ds.grid(h, "test", s)
            if len(set(yte.tolist())) < 2:
                continue
            model = GradientBoostingBaseline(seed=s)
            model.fit(Xtr, ytr)
            p = model.predict_proba(Xte)[:, 1]
            res.append(
                {
                    "h": h,
                    "split_seed": s,
                    "n_train": len(ytr),
                    "n_test": len(yte),
                    "prevalence": float(np.mean(yte)),
                    "auprc": float(average_precision_score(yte, p)),
                    "auroc": float(roc_auc_score(yte, p)),
                }
            )
    shutil.rmtree(root, ignore_errors=True)
    return {
        "seed": seed,
        "n": n,
        "signal": signal,
        "gen_s": t_gen,
        "prep_s": t_prep,
        "rows": summary["rows"],
        "agreement": agree,
        "results": res,
    }


def big_run(work: Path, n: int) -> dict:
    """Generate `n` patients in a fresh child process; its wall time and its own peak RSS.

    Peak RSS is the child's VmHWM read from /proc/self/status at the end (reset by exec),
    not ru_maxrss from wait4, which on Linux also counts the forked parent image before exec.
    """
    out = work / f"big{n}"
    shutil.rmtree(out, ignore_errors=True)
    code = (
        "import json; from pathlib import Path; from data_prep.sources import synthetic as S; "
        f"S.generate(Path({str(out)!r}), S.SyntheticParams(n_patients={n}), progress=False); "
        "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0].split()[1]; "
        "print(json.dumps({'vmhwm_kb': int(hwm)}))"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"generation of {n} patients failed: {proc.stderr[-2000:]}")
    hwm = json.loads(proc.stdout.strip().splitlines()[-1])["vmhwm_kb"]
    size = sum(p.stat().st_size for p in out.iterdir())
    shutil.rmtree(out, ignore_errors=True)
    return {"n": n, "seconds": wall, "peak_rss_mb": hwm / 1024.0, "bytes": size}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--signal", type=float, default=1.0)
    ap.add_argument("--horizons", default="0")
    ap.add_argument(
        "--big", type=int, default=0, help="also generate this many patients (peak RSS check)"
    )
    ap.add_argument("--workdir", default="/tmp/bench_synthetic")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "synthetic.md"))
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    horizons = [int(h) for h in args.horizons.split(",")]

    t0 = time.perf_counter()
    synthetic.generate(work / "default", synthetic.SyntheticParams(), progress=False)
    t_default = time.perf_counter() - t0
    shutil.rmtree(work / "default", ignore_errors=True)

    big = big_run(work, args.big) if args.big else None
    runs = [run_one(work, args.n, s, args.signal, horizons) for s in seeds]

    res = pd.DataFrame([{**r, "gen_seed": run["seed"]} for run in runs for r in run["results"]])
    lines = [
        "# Synthetic database: difficulty and cost",
        "",
        f"`python benchmarks/bench_synthetic.py --n {args.n} --seeds {args.seeds} --signal {args.signal:g} "
        f"--horizons {args.horizons}" + (f" --big {args.big}" if args.big else "") + "`",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs (shared). Python {platform.python_version()}.",
        "",
        "## Designed vs derived Sepsis-3 onset (mimic3.extract -> sepsis3.derive_labels)",
        "",
        "| generator seed | septic stays | exact hour | within +-2 h | no onset | infection-only with onset "
        "| organ-only with onset | controls with onset |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        a = run["agreement"]
        lines.append(
            f"| {run['seed']} | {a['septic']} | {a['exact']:.3f} | {a['within_2h']:.3f} | "
            f"{a['no_onset']:.3f} | {a['infection_with_onset']:.3f} | {a['organ_with_onset']:.3f} | "
            f"{a['control_with_onset']:.3f} |"
        )
    lines += [
        "",
        "## Boosted trees on window summaries (GradientBoostingBaseline), test split",
        "",
        "Default cohort parameters (MetaVision stays, onset >= 7 h, control ratio floor(#controls/#cases)); "
        "one model per (generator seed, split seed).",
        "",
        "| h | runs | prevalence | AUPRC mean (min-max) | AUROC mean | n_test (mean) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for h, g in res.groupby("h"):
        lines.append(
            f"| {h} | {len(g)} | {g.prevalence.mean():.3f} | {g.auprc.mean():.3f} "
            f"({g.auprc.min():.3f}-{g.auprc.max():.3f}) | {g.auroc.mean():.3f} | {g.n_test.mean():.0f} |"
        )
    lines += [
        "",
        "Per run:",
        "",
        "| gen seed | split seed | h | n_train | n_test | prevalence | AUPRC | AUROC |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in res.itertuples():
        lines.append(
            f"| {r.gen_seed} | {r.split_seed} | {r.h} | {r.n_train} | {r.n_test} | {r.prevalence:.3f} | "
            f"{r.auprc:.3f} | {r.auroc:.3f} |"
        )
    lines += [
        "",
        "## Cost",
        "",
        f"* default database (600 patients): {t_default:.1f} s to generate",
        *[
            f"* {r['n']} patients (seed {r['seed']}): generate {r['gen_s']:.1f} s, generate+extract+labels+"
            f"cohort {r['prep_s']:.1f} s; CHARTEVENTS {r['rows']['CHARTEVENTS']} rows, LABEVENTS "
            f"{r['rows']['LABEVENTS']} rows"
            for r in runs
        ],
    ]
    if big:
        lines.append(
            f"* {big['n']} patients: {big['seconds']:.0f} s, peak RSS {big['peak_rss_mb']:.0f} MiB "
            f"(VmHWM of the generating process), {big['bytes'] / 2**20:.0f} MiB of .csv.gz"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    (work / "bench_synthetic.json").write_text(
        json.dumps({"runs": runs, "big": big}, indent=1, default=str)
    )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
