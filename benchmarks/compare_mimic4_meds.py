"""The MIMIC-IV demo read natively and through MEDS: the same labels per ICU stay? (issue 13)

    python benchmarks/compare_mimic4_meds.py WORK [--out docs/results/mimic4-demo] [--no-prepare]

1. `sepsis prepare` for configs/mimic4-demo.yaml (source mimic4, the raw hosp/ + icu/ tables)
   and configs/mimic4-demo-meds.yaml (source meds, the demo converted by the official MEDS
   ETL plus microbiology and prescriptions), output_dir WORK/mimic4 and WORK/meds; and
   configs/mimic4-demo-meds-official.yaml (no cultures) twice into WORK/meds-official:
   as configured (it must stop with the no-cultures error) and with
   labels.suspected_infection=antibiotics_only. `--no-prepare` reads the folders as they are.
2. Per ICU stay (the MEDS reader takes the stay id from the ETL's icustay_id column, which
   is the raw stay_id; checked): septic or not, onset hour, SI time and events per concept.
3. Every stay whose septic call, onset hour or SI time differs is attributed and explained:
   derive_labels is rerun on hybrid `extracted/` folders (the native one with one artefact
   of the MEDS one swapped in: stays, admission events or one events part, and the reverse),
   so the artefact that makes the difference is found, not guessed; then the SOFA hours of
   both paths are compared at the decisive hour (the earlier onset, or the baseline hour
   behind it) and the input events behind the differing component are named, with their
   times on both paths (labs: charttime in the raw tables, storetime in MEDS).
4. Writes OUT/README.md, OUT/per_stay.csv (one row per stay) and
   OUT/per_stay_concept_counts.csv (events per stay and concept on both paths).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_prep.sepsis3 import LabelParams, derive_labels  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from mimic4_meds_explain import FACTORS, D, H, Stay, _same, explain_si, explain_sofa  # noqa: E402
from mimic4_meds_readme import write_readme  # noqa: E402

CONFIGS = {
    "mimic4": "configs/mimic4-demo.yaml",
    "meds": "configs/mimic4-demo-meds.yaml",
    "official": "configs/mimic4-demo-meds-official.yaml",
}


# ------------------------------------------------------------------ running prepare
def prepare(work: Path) -> dict:
    """Run the four prepares; returns what the official runs printed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.setdefault("SEPSIS_SHARED_DATA", str(ROOT.parent / "shared" / "data"))

    def run(config: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "sepsis.cli", "prepare", "-c", config, "--no-progress"]
        cmd += [f"output_dir={out}", *extra]
        print("$", " ".join(cmd[1:]), flush=True)
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)

    for key in ("mimic4", "meds"):
        r = run(CONFIGS[key], work / key)
        if r.returncode:
            sys.exit(f"prepare {CONFIGS[key]} failed:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
    paired = run(CONFIGS["official"], work / "meds-official")
    abx = run(
        CONFIGS["official"], work / "meds-official", "labels.suspected_infection=antibiotics_only"
    )
    if abx.returncode:
        sys.exit(f"antibiotics_only prepare failed:\n{abx.stderr[-3000:]}")
    out = {"paired_rc": paired.returncode, "paired_error": _error_line(paired)}
    (work / "official_runs.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def _error_line(r: subprocess.CompletedProcess) -> str:
    lines = [x for x in (r.stderr + r.stdout).splitlines() if "culture" in x]
    return lines[-1].strip() if lines else (r.stderr.strip().splitlines() or [""])[-1]


# ------------------------------------------------------------------ loading
def _events(ext: Path) -> pd.DataFrame:
    parts = []
    for p in sorted((ext / "events").glob("*.parquet")):
        e = pd.read_parquet(p)
        parts.append(e.assign(part=p.stem))
    ev = pd.concat(parts, ignore_index=True)
    ev["concept"] = ev["concept"].astype(str)
    return ev


def load(run: Path) -> dict:
    ext, prep = run / "extracted", run / "prepared"
    return {
        "dir": run,
        "stays": pd.read_parquet(ext / "stays.parquet"),
        "events": _events(ext),
        "adm": pd.read_parquet(ext / "admission_events.parquet"),
        "report": json.loads((ext / "extraction_report.json").read_text()),
        "onsets": pd.read_parquet(prep / "onsets.parquet").set_index("stay_id"),
        "cohort": pd.read_parquet(prep / "cohort.parquet").set_index("stay_id"),
        "attrition": json.loads((prep / "attrition.json").read_text()),
    }


# ------------------------------------------------------------------ per stay
def per_stay(n: dict, m: dict) -> pd.DataFrame:
    on, om = n["onsets"], m["onsets"].reindex(n["onsets"].index)
    st = n["stays"].set_index("stay_id").loc[on.index]

    def cohort(c: pd.DataFrame, ids) -> pd.Series:
        lab = c["label"].reindex(ids)
        return lab.map({1: "case", 0: "control"}).fillna("excluded")

    df = pd.DataFrame(
        {
            "patient_id": st["patient_id"],
            "hadm_id": st["hadm_id"],
            "intime": st["intime"],
            "septic_mimic4": on["onset_hour"].notna(),
            "septic_meds": om["onset_hour"].notna(),
            "onset_hour_mimic4": on["onset_hour"],
            "onset_hour_meds": om["onset_hour"],
            "onset_diff_h": om["onset_hour"] - on["onset_hour"],
            "si_time_mimic4": on["si_time"],
            "si_time_meds": om["si_time"],
            "si_diff_h": (om["si_time"] - on["si_time"]) / H,
            "cohort_mimic4": cohort(n["cohort"], on.index),
            "cohort_meds": cohort(m["cohort"], on.index),
        }
    )
    df["agree"] = (
        (df["septic_mimic4"] == df["septic_meds"])
        & _same(df["onset_hour_mimic4"], df["onset_hour_meds"])
        & _same(df["si_time_mimic4"], df["si_time_meds"])
    )
    return df


def concept_counts(n: dict, m: dict) -> pd.DataFrame:
    """Events per stay and concept on both paths (rows; non-null values)."""
    out = []
    for key, d in (("mimic4", n), ("meds", m)):
        e = d["events"]
        g = e.groupby(["stay_id", "concept"]).agg(rows=("value", "size"), values=("value", "count"))
        out.append(g.add_suffix(f"_{key}"))
    c = pd.concat(out, axis=1).fillna(0).astype(int).reset_index()
    return c


# ------------------------------------------------------------------ attribution
def _hybrid(base: Path, other: Path, base_side: int, factor: str, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(base, dst, ignore=shutil.ignore_patterns("manifest.json", "*.tmp"))
    files = FACTORS[factor]
    for f in files[base_side]:
        (dst / f).unlink(missing_ok=True)
    for f in files[1 - base_side]:
        if (other / f).exists():
            shutil.copy(other / f, dst / f)
    return dst


def _result(ext: Path) -> pd.DataFrame:
    _l, on, _c = derive_labels(ext, LabelParams(), progress=False)
    return on.set_index("stay_id")[["onset_hour", "si_time"]]


def _key(o: pd.DataFrame) -> pd.Series:
    return o["onset_hour"].fillna(-999).astype(str) + "|" + o["si_time"].astype(str).fillna("-")


def attribute(n: dict, m: dict, work: Path, stays: list[int]) -> dict[int, list[str]]:
    """Per differing stay: the artefacts whose swap alone turns the native result into the
    MEDS one (else: whose swap back alone restores the native one; else all that change it)."""
    ne, me = n["dir"] / "extracted", m["dir"] / "extracted"
    kn, km = _key(_result(ne)), _key(_result(me))
    tmp = work / "hybrids"
    swap, back = {}, {}
    for f in FACTORS:
        swap[f] = _key(_result(_hybrid(ne, me, 0, f, tmp / "h")))
        back[f] = _key(_result(_hybrid(me, ne, 1, f, tmp / "h")))
    shutil.rmtree(tmp, ignore_errors=True)
    out = {}
    for s in stays:
        alone = [f for f in FACTORS if swap[f].get(s) == km.get(s)]
        restore = [f for f in FACTORS if back[f].get(s) == kn.get(s)]
        changes = [f for f in FACTORS if swap[f].get(s) != kn.get(s)]
        out[s] = alone or restore or [" + ".join(changes)]
    return out


# ------------------------------------------------------------------ explaining one stay
def lab_count_notes(n: dict, m: dict) -> dict[str, str]:
    """Why lab concept counts differ: rows MEDS writes with a null value, and rows whose
    storetime puts them in another stay (or in none) than their charttime (raw labevents)."""
    data = Path(n["report"]["data_dir"])
    lab = pd.read_csv(
        data / "hosp" / "labevents.csv.gz",
        usecols=["subject_id", "itemid", "charttime", "storetime", "valuenum"],
        parse_dates=["charttime", "storetime"],
    )
    items = D.items("mimic4", "labevents")
    lab = lab[lab["itemid"].isin(list(items))]
    lab["concept"] = lab["itemid"].map({i: c for i, (c, _s, _o) in items.items()})
    from data_prep.sources.stay_index import StayIndex

    idx = StayIndex(n["stays"])
    lb = LabelParams().data_lookback_hours
    subj = lab["subject_id"].to_numpy(np.int64)

    def stay_at(col: str) -> np.ndarray:
        t = lab[col].to_numpy("datetime64[us]").astype(np.int64)
        ok = lab[col].notna().to_numpy()
        return np.where(ok, idx.by_subject_time(subj, np.where(ok, t, 0), lb), -2)

    lab["stay_chart"], lab["stay_store"] = stay_at("charttime"), stay_at("storetime")
    out = {}
    for c, g in lab.groupby("concept"):
        has_v = g["valuenum"].notna()
        moved_out = int((has_v & (g.stay_chart >= 0) & (g.stay_store != g.stay_chart)).sum())
        moved_in = int((has_v & (g.stay_store >= 0) & (g.stay_chart != g.stay_store)).sum())
        nulls = int((~has_v & (g.stay_store >= 0)).sum())
        bits = []
        if nulls:
            bits.append(f"{nulls} null-valued rows written by MEDS (the tables' reader drops them)")
        if moved_out or moved_in:
            bits.append(
                f"storetime vs charttime changes the stay of {moved_out} row(s) away from and "
                f"{moved_in} into a stay window"
            )
        no_store = int((has_v & g["storetime"].isna() & (g.stay_chart >= 0)).sum())
        if no_store:
            bits.append(f"{no_store} row(s) without storetime (no MEDS time)")
        out[c] = "; ".join(bits)
    return out


def concept_table(n: dict, m: dict, counts: pd.DataFrame) -> pd.DataFrame:
    t = counts.drop(columns="stay_id").groupby("concept").sum()
    t["stays_differing"] = (
        counts.assign(d=counts["rows_mimic4"] != counts["rows_meds"]).groupby("concept")["d"].sum()
    )
    notes = lab_count_notes(n, m)
    rn, rm = n["report"], m["report"]
    lab_units = rn["tables"]["labevents"]["units"]
    pair = rm["pairing"].get("events.labevents[38] (blood_gas_specimen)", {})
    spec_note = (
        f"the tables write a type only for a pO2 of the same specimen_id "
        f"({lab_units.get('po2_with_specimen_type', 0)}; "
        f"{lab_units.get('specimen_types_without_po2', 0)} types without a pO2 dropped); MEDS has "
        f"no specimen_id and moves each type to the nearest pO2 within 10 min "
        f"({pair.get('moved_to_po2_time', 0)}) and keeps the other "
        f"{pair.get('no_po2_within_10_min_kept_at_own_time', 0)} at their own time (no pO2 at "
        "that instant: no effect on SOFA)"
    )
    chart_zero = rn["tables"]["chartevents"]["dropped"].get("zero_value", 0)
    t["note"] = [
        spec_note
        if c == "blood_gas_specimen"
        else f"FiO2 charted 0 %: dropped by the tables' reader ({chart_zero}), written by MEDS "
        "(outside the valid range, dropped by SOFA)"
        if c == "fio2" and t.loc[c, "rows_meds"] != t.loc[c, "rows_mimic4"]
        else notes.get(c, "")
        if t.loc[c, "stays_differing"]
        else ""
        for c in t.index
    ]
    return t.reset_index()


# ------------------------------------------------------------------ statistics
# ------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("work", type=Path, help="folder for the prepare outputs (output_dir per path)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "mimic4-demo")
    ap.add_argument("--no-prepare", action="store_true", help="read WORK/* as they are")
    args = ap.parse_args()
    work = args.work.resolve()
    official = (
        json.loads((work / "official_runs.json").read_text()) if args.no_prepare else prepare(work)
    )
    official["paired_error"] = official["paired_error"].replace(str(work), "WORK")
    n, m = load(work / "mimic4"), load(work / "meds")
    # the MEDS reader's stay id is the ETL's icustay_id: the raw stay_id, with the same times
    sn, sm = n["stays"].set_index("stay_id"), m["stays"].set_index("stay_id")
    assert set(sn.index) == set(sm.index), "stay ids differ between the paths"
    sm = sm.loc[sn.index]
    same_times = bool(
        (sn["intime"] == sm["intime"]).all()
        and (sn["outtime"] == sm["outtime"]).all()
        and (sn["hadm_id"] == sm["hadm_id"]).all()
        and (sn["patient_id"] == sm["patient_id"]).all()
    )
    ps = per_stay(n, m)
    counts = concept_counts(n, m)
    dc = counts[counts["rows_mimic4"] != counts["rows_meds"]]
    ps["concepts_differing"] = (
        dc.assign(
            t=dc["concept"]
            + " "
            + dc["rows_mimic4"].astype(str)
            + "/"
            + dc["rows_meds"].astype(str)
        )
        .groupby("stay_id")["t"]
        .agg("; ".join)
        .reindex(ps.index)
        .fillna("")
    )
    ps["events_mimic4"] = (
        counts.groupby("stay_id")["rows_mimic4"].sum().reindex(ps.index).fillna(0).astype(int)
    )
    ps["events_meds"] = (
        counts.groupby("stay_id")["rows_meds"].sum().reindex(ps.index).fillna(0).astype(int)
    )
    differing = [int(s) for s in ps.index[~ps["agree"]]]
    cause = attribute(n, m, work, differing)
    ps["cause"], ps["category"], ps["reason"] = "", "", ""
    for s in differing:
        fac = cause[s]
        if "admission events" in fac:
            cat, why = explain_si(s, n, m)
        else:
            cat, why = explain_sofa(Stay(s, n, m))
        ps.loc[s, ["cause", "category", "reason"]] = [", ".join(fac), cat, why]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    ps.reset_index().to_csv(out / "per_stay.csv", index=False)
    counts.to_csv(out / "per_stay_concept_counts.csv", index=False)
    ct = concept_table(n, m, counts)
    off = work / "meds-official"
    off_on = pd.read_parquet(off / "prepared" / "onsets.parquet")
    off_att = json.loads((off / "prepared" / "attrition.json").read_text())
    off_rep = json.loads((off / "extracted" / "extraction_report.json").read_text())
    write_readme(out, args, n, m, ps, ct, same_times, official, off_on, off_att, off_rep)
    print(f"{int(ps['agree'].sum())} of {len(ps)} stays agree; {len(differing)} differ")
    print(ps.loc[differing, ["onset_hour_mimic4", "onset_hour_meds", "category"]].to_string())
    print(f"wrote {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
