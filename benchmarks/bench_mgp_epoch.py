"""One real MGP-TCN training epoch on the PhysioNet 2019 set A cohort (issue 5).

Loads a prepared PhysioNet cohort (`sepsis prepare --config configs/physionet2019.yaml`; the
benchmark runs that first when the folder is absent and the shared data is present), takes
the train and validation splits of split seed 0 at horizon 0 (the train-once regime's
training data) and fits `MGPTCNClassifier` for exactly one epoch, in a fresh child process
per configuration (so peak RSS is that configuration's). Reported: training-pass seconds
and stays/s, the validation pass, the whole epoch, peak RSS. Configurations: the paper's
largest TCN (9 levels, kernel 5, 81 channels) and the default small one, in float32 and with
the TCN under bfloat16 autocast (`mixed_precision: true`; the GP stays float32).
Writes docs/benchmarks/mgp_epoch.md.

Usage: python benchmarks/bench_mgp_epoch.py [--prepared runs/physionet2019/prepared]
       [--configs 9/5/81,4/3/32] [--precisions fp32,bf16] [--threads 2] [--device auto]
On a machine with a GPU, `--device auto` runs the same epoch there (CUDA; bf16 autocast on
the TCN), which is the GPU benchmark issue 5 asks for where a GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks" / "mgp_epoch.md"

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from data_prep.dataset import CohortDataset
from models.mgp_tcn import MGPTCNClassifier
prepared, levels, kernel, hidden, bf16, threads, device = sys.argv[1:8]
torch.set_num_threads(int(threads))
ds = CohortDataset.load(prepared)
X_tr, y_tr = ds.irregular(0, split="train", seed=0)
X_va, y_va = ds.irregular(0, split="val", seed=0)
clf = MGPTCNClassifier(levels=int(levels), kernel_size=int(kernel), hidden=int(hidden),
                       epochs=1, patience=1, mixed_precision=bf16 == "1", progress=True, seed=0,
                       device=device)
dev = clf._torch_device()
dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
t0 = time.time()
clf.fit(X_tr, y_tr, X_val=X_va, y_val=y_va)
h = clf.history_[0]
print(json.dumps({"n_train": len(y_tr), "n_val": len(y_va), "epoch_s": h["seconds"],
                  "train_s": h["train_seconds"], "train_stays_per_s": h["train_stays_per_s"],
                  "val_s": h["seconds"] - h["train_seconds"], "val_auprc": h["val_auprc"],
                  "val_prevalence": float(np.mean(y_va)), "fit_s": time.time() - t0,
                  "device": dev_name,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--prepared", default=str(ROOT / "runs" / "physionet2019" / "prepared"))
    ap.add_argument(
        "--configs", default="9/5/81,4/3/32", help="levels/kernel/hidden, comma-separated"
    )
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda[:k]")
    ap.add_argument("--full", action="store_true", help="accepted for run_all.py")
    args = ap.parse_args()
    prepared = Path(args.prepared)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not (prepared / "manifest.json").exists():
        cfg = ROOT / "configs" / "physionet2019.yaml"
        print(f"{prepared} absent: preparing the PhysioNet cohort ({cfg})", flush=True)
        res = subprocess.run(
            [sys.executable, "-m", "sepsis.cli", "prepare", "--config", str(cfg)], cwd=ROOT, env=env
        )
        if res.returncode or not (prepared / "manifest.json").exists():
            print(
                "SKIPPED: no prepared PhysioNet cohort and it could not be prepared "
                "(is SEPSIS_SHARED_DATA set to the shared data folder?)"
            )
            return 0
    rows = []
    for spec in args.configs.split(","):
        levels, kernel, hidden = spec.split("/")
        for prec in args.precisions.split(","):
            res = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(prepared),
                    levels,
                    kernel,
                    hidden,
                    "1" if prec == "bf16" else "0",
                    str(args.threads),
                    args.device,
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            if res.returncode:
                return res.returncode
            r = json.loads(res.stdout.strip().splitlines()[-1])
            r.update(config=spec, precision=prec)
            rows.append(r)
            print(r, flush=True)
    cmd = "python benchmarks/bench_mgp_epoch.py" + "".join(
        f" --{k} {v}"
        for k, v in (
            ("configs", args.configs),
            ("precisions", args.precisions),
            ("threads", args.threads),
        )
    )
    lines = [
        "# MGP-TCN: one training epoch on the PhysioNet 2019 set A cohort",
        "",
        f"Command: `{cmd}` (prepared cohort: `sepsis prepare --config configs/physionet2019.yaml`)",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {_torch_version()}, "
        f"{args.threads} threads, Python {platform.python_version()}, device {rows[0]['device']}. "
        "Split seed 0, horizon 0 "
        f"(train-once training data): {rows[0]['n_train']:,} training stays, {rows[0]['n_val']:,} "
        "validation stays; 10 MC samples, batch 32, pathwise GP sampling in float32. Each row is "
        "a fresh process (peak RSS is that run's).",
        "",
        "| TCN (levels/kernel/hidden) | TCN precision | training pass s | training stays/s | "
        "validation pass s | epoch s (train + val) | epoch min | val AUPRC after 1 epoch | peak RSS MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['precision']} | {r['train_s']:.0f} | {r['train_stays_per_s']:.1f} | "
            f"{r['val_s']:.0f} | {r['epoch_s']:.0f} | {r['epoch_s'] / 60:.2f} | {r['val_auprc']:.3f} "
            f"(prevalence {r['val_prevalence']:.3f}) | {r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "Target (issue 5): <= 3 min per epoch on 2 cores with the paper's largest configuration "
        "(9/5/81). bf16 = `mixed_precision: true`: the TCN under bfloat16 autocast, the GP in "
        "float32 (Cholesky has no half precision). The validation AUPRC after one epoch is shown "
        "only to confirm the runs learn; it is not a result.",
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    sys.exit(main())
