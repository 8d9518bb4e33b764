"""Compare two `prepared/` folders as data (issue 12: same results before and after).

    python benchmarks/compare_prepared.py BEFORE AFTER [--out report.md]

For stays, labels_hourly, onsets, observations, cohort, splits and normalisation: the
same rows (sorted by their keys), the same columns and values (dtypes normalised: a
string column read back as object and as string compares equal; float columns exactly,
NaN equal to NaN). Exit 1 on any difference, naming the table, column and first row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

KEYS = {
    "stays.parquet": ["stay_id"],
    "labels_hourly.parquet": ["stay_id", "hour"],
    "onsets.parquet": ["stay_id"],
    "observations.parquet": ["stay_id", "hour", "variable", "value"],
    "cohort.parquet": ["stay_id"],
    "splits.parquet": ["seed", "stay_id"],
    "normalisation.parquet": ["seed", "variable"],
}


def _norm(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    df = df.copy()
    for c in df.columns:
        if (
            isinstance(df[c].dtype, pd.CategoricalDtype)
            or df[c].dtype == object
            or str(df[c].dtype) == "string"
        ):
            df[c] = df[c].astype("string").astype(object).where(df[c].notna(), None)
        elif str(df[c].dtype).startswith(("Int", "int", "Float", "float", "boolean", "bool")):
            df[c] = pd.to_numeric(
                df[c].astype("Float64") if str(df[c].dtype) == "boolean" else df[c]
            ).astype(float)
        elif str(df[c].dtype).startswith("datetime"):
            df[c] = pd.to_datetime(df[c]).astype("datetime64[us]")
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def compare(before: Path, after: Path) -> list[str]:
    lines, bad = [], []
    for name, keys in KEYS.items():
        a, b = before / name, after / name
        if not a.exists() or not b.exists():
            bad.append(f"{name}: missing in {'before' if not a.exists() else 'after'}")
            continue
        x, y = _norm(pd.read_parquet(a), keys), _norm(pd.read_parquet(b), keys)
        if list(x.columns) != list(y.columns):
            bad.append(f"{name}: columns differ: {list(x.columns)} vs {list(y.columns)}")
            continue
        if len(x) != len(y):
            bad.append(f"{name}: {len(x)} rows before, {len(y)} after")
            continue
        diff = None
        for c in x.columns:
            xs, ys = x[c], y[c]
            if xs.dtype == float and ys.dtype == float:
                same = (xs.to_numpy() == ys.to_numpy()) | (
                    np.isnan(xs.to_numpy()) & np.isnan(ys.to_numpy())
                )
            else:
                same = (xs.isna() & ys.isna()) | (xs == ys).fillna(False)
                same = same.to_numpy(bool)
            if not same.all():
                r = int(np.flatnonzero(~same)[0])
                diff = f"{name}: column {c!r} differs in {int((~same).sum())} rows, first at key {x.loc[r, keys].tolist()}: {xs.iloc[r]!r} vs {ys.iloc[r]!r}"
                break
        if diff:
            bad.append(diff)
        else:
            lines.append(f"| {name} | {len(x):,} | equal |")
    return ["| table | rows | result |", "| --- | --- | --- |", *lines], bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args(argv)
    table, bad = compare(args.before, args.after)
    print("\n".join(table))
    for b in bad:
        print("DIFFERENT:", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
