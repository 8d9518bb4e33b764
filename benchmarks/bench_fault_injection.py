"""Fault injection: kill `sepsis prepare` / `sepsis train` at random points, rerun, compare data.

A reference run (generate -> prepare -> train on a small synthetic config) gives the data
hashes of every artifact: each prepared parquet table and each training unit's test
predictions, hashed as data (pandas row hashes), not as file bytes. Then, per trial, a fresh
run folder is started, the command is SIGKILLed after a random delay drawn uniformly over
the reference's wall time, the same command is rerun to completion, and its hashes must
equal the reference's. Also checked after every rerun: no temporary or trash folders remain,
and the run folder's lock was released by the killed process.

    python benchmarks/bench_fault_injection.py [--trials 6] [--seed 0]

Writes docs/benchmarks/fault_injection.md (with this command) and exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks" / "fault_injection.md"

CONFIG = {
    "name": "fault",
    "source": "synthetic",
    "synthetic": {"n_patients": 300, "seed": 4, "signal_strength": 2.0},
    "cohort": {
        "split_seeds": [0],
        "dbsource": "all",
        "split_fractions": [0.5, 0.2, 0.3],
        "min_variable_observations": 10,
        "horizons": [0, 3],
    },
    "train": {"per_horizon": ["logreg", "gbm", "sofa"], "train_once": [], "horizons": [0, 3]},
    "gbm": {"max_iter": 30},
}


def data_hashes(run: Path) -> dict[str, str]:
    """Data fingerprint of every prepared table and every unit's predictions."""
    files = sorted((run / "prepared").glob("*.parquet")) + sorted(
        (run / "models").rglob("predictions.parquet")
    )
    out = {}
    for f in files:
        df = pd.read_parquet(f)
        row_hash = pd.util.hash_pandas_object(df, index=False).to_numpy()
        digest = hashlib.sha256(row_hash.tobytes() + ",".join(df.columns).encode()).hexdigest()
        out[str(f.relative_to(run))] = digest[:16]
    return out


def _write_config(folder: Path, data_dir: Path) -> Path:
    cfg = dict(CONFIG, data_dir=str(data_dir), output_dir=str(folder / "run"))
    path = folder / "fault.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cmd(command: str, config: Path) -> list[str]:
    return [sys.executable, "-m", "sepsis.cli", command, "--config", str(config), "--no-progress"]


def _run(cmd: list[str]) -> float:
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    return time.time() - t0


def leftovers(run: Path) -> list[str]:
    return sorted(
        str(p.relative_to(run)) for p in run.rglob(".*") if p.name.startswith((".tmp", ".trash"))
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=6, help="kills per command (prepare, train)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full", action="store_true", help="accepted for run_all.py; 20 trials")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    trials = 20 if args.full else args.trials
    rng = random.Random(args.seed)
    rows, failures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "db"  # generated once; every trial reads the same database
        ref_dir = tmp / "ref"
        ref_dir.mkdir()
        ref_cfg = _write_config(ref_dir, data)
        walls = {"prepare": _run(_cmd("prepare", ref_cfg))}
        walls["train"] = _run(_cmd("train", ref_cfg))
        reference = data_hashes(ref_dir / "run")
        print(f"reference: {len(reference)} artifacts, walls {walls}", flush=True)
        for command in ("prepare", "train"):
            for trial in range(trials):
                folder = tmp / f"{command}-{trial}"
                folder.mkdir()
                cfg = _write_config(folder, data)
                if command == "train":  # start from a finished prepare, kill the training
                    shutil.copytree(ref_dir / "run" / "prepared", folder / "run" / "prepared")
                delay = rng.uniform(0.5, walls[command])
                proc = subprocess.Popen(
                    _cmd(command, cfg),
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(delay)
                killed = proc.poll() is None
                if killed:
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                _run(_cmd(command, cfg))  # the rerun must finish (no stuck lock) ...
                if command == "prepare":
                    _run(_cmd("train", cfg))
                got = data_hashes(folder / "run")
                left = leftovers(folder / "run")
                ok = got == reference and not left
                rows.append(
                    {
                        "command": command,
                        "trial": trial,
                        "kill_after_s": round(delay, 2),
                        "killed": killed,
                        "artifacts_equal": got == reference,
                        "leftover_tmp": len(left),
                    }
                )
                print(rows[-1], flush=True)
                if not ok:
                    diff = sorted(
                        k for k in set(got) | set(reference) if got.get(k) != reference.get(k)
                    )
                    failures.append(
                        f"{command} trial {trial}: differs {diff[:5]}, leftovers {left[:5]}"
                    )
                shutil.rmtree(folder)
    table = pd.DataFrame(rows)
    lines = [
        "# Fault injection: kill -9 during prepare and train, then rerun",
        "",
        f"Command: `python benchmarks/bench_fault_injection.py --trials {trials} --seed {args.seed}`",
        "",
        f"Reference run (synthetic, {CONFIG['synthetic']['n_patients']} patients; learners "
        f"{', '.join(CONFIG['train']['per_horizon'])} at horizons {CONFIG['train']['horizons']}): "
        f"prepare {walls['prepare']:.1f} s, train {walls['train']:.1f} s (process wall time), "
        f"{len(reference)} artifacts compared as data.",
        "",
        f"Result: {len(rows) - len(failures)} of {len(rows)} killed-and-rerun runs gave artifacts "
        f"equal to the reference, with no temporary folder left; "
        f"{int(table['killed'].sum())} were actually killed mid-command (the others had finished "
        "before the kill time).",
        "",
        "| command | trial | kill after (s) | killed | artifacts equal | leftover tmp |",
        "| --- | ---: | ---: | --- | --- | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['command']} | {r['trial']} | {r['kill_after_s']} | {r['killed']} | "
            f"{r['artifacts_equal']} | {r['leftover_tmp']} |"
        )
    if failures:
        lines += ["", "Failures:", *[f"- {f}" for f in failures]]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-len(rows) - 3 :]))
    print(f"wrote {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
