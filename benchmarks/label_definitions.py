"""How much the Sepsis-3 definition moves the cohort: prepare one source under several label
definitions and tabulate SI, onsets, baselines, onset hours and the matched cohort.

    python benchmarks/label_definitions.py --config configs/mimic3-demo.yaml \
        [--before runs/mimic3-demo-before] [--out docs/results/mimic3-demo/label_definitions.md]

Definitions (each a `sepsis prepare` with overrides, output in runs/<name>-<definition>/):
  ours            the defaults: SI = earlier of antibiotic and culture, 24 pre-ICU hours,
                  baseline_pre_icu assume_zero (Singer 2016)
  observed_only   ours, but the baseline is the lowest SOFA of hours whose window has data
  reference       the paper's reference-code rules (configs/*-reference.yaml): SI = culture
                  time, no pre-ICU hours
`--before RUN_DIR` adds a row for a run prepared by an earlier version of the code (its
prepared/ folder is read as it is; say in the report which commit made it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DEFINITIONS = {
    "ours": [],
    "observed_only": ["labels.baseline_pre_icu=observed_only"],
    "reference": ["labels.si_time=culture", "labels.pre_icu_hours=0"],
}
HOUR_BINS = [-np.inf, 0.5, 7, 24, 72, np.inf]
HOUR_LABELS = ["0", "1-6", "7-23", "24-71", ">=72"]


def summarise(prepared: Path) -> dict:
    """Label and cohort statistics of one prepared folder."""
    onsets = pd.read_parquet(prepared / "onsets.parquet")
    cohort = pd.read_parquet(prepared / "cohort.parquet")
    att = json.loads((prepared / "attrition.json").read_text())
    on = onsets[onsets["onset_hour"].notna()]
    hours = pd.cut(on["onset_hour"], HOUR_BINS, labels=HOUR_LABELS, right=False)
    row = {
        "stays": len(onsets),
        "SI": int(onsets["si_time"].notna().sum()),
        "onsets": len(on),
        "baseline 0": int((on["sofa_baseline"] == 0).sum()),
        **{f"onset h {k}": int(v) for k, v in hours.value_counts().reindex(HOUR_LABELS).items()},
        "cases": int((cohort["label"] == 1).sum()),
        "controls": int((cohort["label"] == 0).sum()),
    }
    steps = {s["step"]: s.get("removed") for s in att.get("steps", []) if isinstance(s, dict)}
    row["removed: early onset"] = steps.get("early onset")
    row["removed: not matched"] = steps.get("not matched")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="configs/mimic3-demo.yaml")
    ap.add_argument("--before", default=None, help="run folder prepared by earlier code")
    ap.add_argument("--before-label", default="before issue 14")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    name = Path(args.config).stem
    rows, commands = {}, []
    if args.before:
        rows[args.before_label] = summarise(Path(args.before) / "prepared")
    for definition, overrides in DEFINITIONS.items():
        out_dir = ROOT / "runs" / f"{name}-{definition}"
        cmd = [
            sys.executable,
            "-m",
            "sepsis.cli",
            "prepare",
            "--config",
            args.config,
            "--no-progress",
            f"output_dir={out_dir.relative_to(ROOT)}",
            *overrides,
        ]
        commands.append(" ".join(["sepsis", *cmd[3:]]))
        print(commands[-1], flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        rows[definition] = summarise(out_dir / "prepared")
    table = pd.DataFrame(rows)
    lines = [
        f"# Sepsis-3 label definitions on `{args.config}`",
        "",
        f"Command: `python benchmarks/label_definitions.py --config {args.config}"
        + (f" --before {args.before} --before-label '{args.before_label}'" if args.before else "")
        + "`, which ran:",
        "",
        *[f"    {c}" for c in commands],
        "",
        "Onset hours are ICU hours (0 = the first ICU hour); baseline 0 counts onsets whose "
        "SOFA baseline was 0; cases and controls are the matched cohort after every exclusion "
        "(onset before hour 7 excluded).",
        "",
        *(
            [
                f"`{args.before}` was prepared by the code before issue 14 ({args.before_label}): "
                f"`sepsis prepare --config {args.config} output_dir={args.before}` at that commit.",
                "",
            ]
            if args.before
            else []
        ),
        "| | " + " | ".join(table.columns) + " |",
        "| --- |" + " ---: |" * len(table.columns),
        *[
            f"| {idx} | " + " | ".join("" if pd.isna(v) else str(v) for v in r) + " |"
            for idx, r in table.iterrows()
        ],
        "",
    ]
    spot = [286072, 283181, 292910]  # the stays of issue 14's report
    lines += ["Stays named in issue 14 (onset hour; NaN = none):", ""]
    for definition in DEFINITIONS:
        o = pd.read_parquet(ROOT / "runs" / f"{name}-{definition}" / "prepared" / "onsets.parquet")
        o = o.set_index("stay_id").reindex(spot)
        lines.append(
            f"- {definition}: "
            + ", ".join(f"{s} {o.loc[s, 'onset_hour']}" for s in spot if s in o.index)
        )
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
