"""Throwaway (issue 12): convert an OLD MIMIC-III `extracted/` folder into the events contract.

The old reader wrote per-table files with item IDs (chart.parquet, lab.parquet,
urine.parquet, vasopressors.parquet, prescriptions.parquet, microbiology.parquet,
antibiotics_mv.parquet, diagnoses.parquet; schemas io.CHART, io.LAB, ...). The new concept
layer reads stays.parquet, events/ (io.EVENTS) and admission_events.parquet
(io.ADMISSION_EVENTS) by concept name (/work/notes/events_contract.md). This tool does what
the new reader does, from the old files: items -> concepts with the dictionary's `convert`
(value * scale + offset; urine.parquet is already negated by the old reader), the
antibiotic conventions of `antibiotic.sources.mimic3` (drug types here, the rest through
`infection.antibiotic_filter`), MetaVision administrations, cultures (charted / date only)
and the sepsis diagnosis codes. It exists to show that the concept layer gives the same
labels and observations on the converted folders as the old code on the old ones:

    python benchmarks/events_adapter.py OLD_EXTRACTED NEW_EXTRACTED \
        [--labels DIR_WITH_labels_hourly_AND_onsets] [--observations FULL_OBS.parquet] \
        [--prepared PREPARED_DIR] [--chunk-stays N]

`--labels`: old labels_hourly.parquet / onsets.parquet (all stays) compared with
derive_labels on NEW; `--observations`: the old observations_from_extracted output (all
stays) compared with observations_from_extracted on NEW; `--prepared`: a prepared/ folder
of the old pipeline: its observations (the cohort windows) are compared with the new
observations cut by that folder's cohort and kept variables (cohort.window_mask).
Delete once the events reader (wt-reader) has landed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep import io  # noqa: E402
from data_prep.concepts.dictionary import concepts  # noqa: E402
from data_prep.concepts.infection import (  # noqa: E402
    ABX_ADMINISTRATION,
    ABX_ORDER_DATE,
    CULTURE_CHARTED,
    CULTURE_DATE,
    antibiotic_filter,
)


def _events(stay_id, time, concept, value, end_time=None, text=None) -> pd.DataFrame:
    n = len(stay_id)
    return pd.DataFrame(
        {
            "stay_id": np.asarray(stay_id, np.int64),
            "time": pd.Series(np.asarray(time)).astype("datetime64[us]"),
            "concept": pd.array(np.asarray(concept, object), dtype="string"),
            "value": np.asarray(value, float),
            "end_time": pd.Series(
                np.full(n, np.datetime64("NaT"), "datetime64[us]") if end_time is None else end_time
            ).astype("datetime64[us]"),
            "text": pd.array([None] * n if text is None else text, dtype="string"),
        }
    )


def item_events(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """chart.parquet / lab.parquet rows -> events (row order kept)."""
    items = concepts().items("mimic3", table)
    ids = df["itemid"].to_numpy(np.int64)
    unknown = sorted(set(np.unique(ids)) - set(items))
    if unknown:
        raise ValueError(f"{table}: item(s) without a concept: {unknown[:10]}")
    s = pd.Series(ids)
    concept = s.map({i: c for i, (c, _, _) in items.items()}).to_numpy(object)
    scale = s.map({i: k for i, (_, k, _) in items.items()}).to_numpy(float)
    offset = s.map({i: o for i, (_, _, o) in items.items()}).to_numpy(float)
    value = df["valuenum"].to_numpy(float) * scale + offset
    text = df["value"].astype("string") if "value" in df.columns else None
    return _events(df["stay_id"], df["time"], concept, value, text=text)


def admission_events(old: Path, stays: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    d = concepts()
    rules = d["antibiotic"].mappings("mimic3")[0].extra
    counts: dict = {}
    p = pd.read_parquet(old / "prescriptions.parquet")
    dtype = p["drug_type"].astype("string").str.upper().str.strip()
    main = dtype.isin(rules["drug_types"]).fillna(False).to_numpy(bool)
    counts["prescriptions_rows"] = len(p)
    counts["prescriptions_not_main_or_additive"] = int((~main).sum())
    p = p[main]
    keep, c = antibiotic_filter(p["drug"], p["route"], rules)
    counts.update({f"prescriptions_{k}": v for k, v in c.items()})
    p = p[keep]
    orders = pd.DataFrame(
        {
            "patient_id": p["subject_id"].to_numpy(np.int64),
            "hadm_id": p["hadm_id"].astype("Int64").to_numpy(),
            "time": pd.to_datetime(p["startdate"]).astype("datetime64[us]").to_numpy(),
            "concept": "antibiotic",
            "text": p["drug"].astype("string").to_numpy(),
            "time_source": ABX_ORDER_DATE,
        }
    )
    parts = [orders]
    if (old / "antibiotics_mv.parquet").exists():
        a = pd.read_parquet(old / "antibiotics_mv.parquet")
        a = a.merge(stays[["stay_id", "patient_id", "hadm_id"]], on="stay_id", how="inner")
        parts.append(
            pd.DataFrame(
                {
                    "patient_id": a["patient_id"].to_numpy(np.int64),
                    "hadm_id": a["hadm_id"].astype("Int64").to_numpy(),
                    "time": pd.to_datetime(a["time"]).astype("datetime64[us]").to_numpy(),
                    "concept": "antibiotic",
                    "text": a["drug"].astype("string").to_numpy(),
                    "time_source": ABX_ADMINISTRATION,
                }
            )
        )
    m = pd.read_parquet(old / "microbiology.parquet")
    ct = pd.to_datetime(m["charttime"]).astype("datetime64[us]")
    cd = pd.to_datetime(m["chartdate"]).astype("datetime64[us]").dt.normalize()
    src = np.where(ct.notna(), CULTURE_CHARTED, np.where(cd.notna(), CULTURE_DATE, None))
    parts.append(
        pd.DataFrame(
            {
                "patient_id": m["subject_id"].to_numpy(np.int64),
                "hadm_id": m["hadm_id"].astype("Int64").to_numpy(),
                "time": ct.where(ct.notna(), cd).to_numpy(),
                "concept": "culture",
                "text": m["spec_type_desc"].astype("string").to_numpy(),
                "time_source": pd.array(src, dtype="string"),
            }
        )
    )
    dx = pd.read_parquet(old / "diagnoses.parquet")
    dx = dx.assign(
        code=dx["icd9_code"].astype("string").str.replace(".", "", regex=False).str.strip()
    )
    dx = dx[
        dx["code"].isin(d["sepsis_diagnosis"].mappings("mimic3")[0].extra["icd9"]).fillna(False)
    ]
    patient = stays.dropna(subset=["hadm_id"]).drop_duplicates("hadm_id")
    dx = dx.merge(
        patient[["hadm_id", "patient_id"]].astype({"hadm_id": np.int64}), on="hadm_id", how="inner"
    )
    parts.append(
        pd.DataFrame(
            {
                "patient_id": dx["patient_id"].to_numpy(np.int64),
                "hadm_id": dx["hadm_id"].astype("Int64").to_numpy(),
                "time": pd.Series(pd.NaT, index=dx.index, dtype="datetime64[us]").to_numpy(),
                "concept": "sepsis_diagnosis",
                "text": dx["code"].to_numpy(),
                "time_source": None,
            }
        )
    )
    out = pd.concat(parts, ignore_index=True)
    out["hadm_id"] = out["hadm_id"].astype("Int64")
    out["time"] = out["time"].astype("datetime64[us]")
    for c in ("concept", "text", "time_source"):
        out[c] = out[c].astype("string")
    return out, counts


def convert(old: Path, new: Path) -> dict:
    """Write the contract's three artefacts under `new` from the old files under `old`."""
    new.mkdir(parents=True, exist_ok=True)
    (new / "events").mkdir(exist_ok=True)
    shutil.copy2(old / "stays.parquet", new / "stays.parquet")
    stays = pd.read_parquet(old / "stays.parquet")
    rows = {}
    chart = pd.read_parquet(old / "chart.parquet")
    ev = item_events(chart, "chartevents")
    io.write_parquet(ev, new / "events" / "chartevents.parquet", io.EVENTS)
    rows["chartevents"] = len(ev)
    del chart, ev
    lab = pd.read_parquet(old / "lab.parquet")
    ev = item_events(lab, "labevents")
    io.write_parquet(ev, new / "events" / "labevents.parquet", io.EVENTS)
    rows["labevents"] = len(ev)
    u = pd.read_parquet(old / "urine.parquet")
    ev = _events(u["stay_id"], u["time"], np.full(len(u), "urine_output", object), u["value"])
    io.write_parquet(ev, new / "events" / "outputevents.parquet", io.EVENTS)
    rows["outputevents"] = len(ev)
    v = pd.read_parquet(old / "vasopressors.parquet")
    names = {c.name for c in concepts().of_kind("vasopressor")}
    bad = set(v["drug"].astype(str)) - names
    if bad:
        raise ValueError(f"vasopressors.parquet: drugs without a concept: {sorted(bad)}")
    ev = _events(
        v["stay_id"],
        v["starttime"],
        v["drug"].astype(str).to_numpy(object),
        v["rate"],
        end_time=pd.to_datetime(v["endtime"]),
    )
    io.write_parquet(ev, new / "events" / "inputevents.parquet", io.EVENTS)
    rows["inputevents"] = len(ev)
    adm, counts = admission_events(old, stays)
    io.write_parquet(adm, new / "admission_events.parquet", io.ADMISSION_EVENTS)
    rows["admission_events"] = len(adm)
    rows.update({f"admission_events_{k}": int(n) for k, n in adm["concept"].value_counts().items()})
    return {"rows": rows, "reader_counts": counts}


def _frame_equal(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> str:
    a = a.sort_values(keys).reset_index(drop=True)
    b = b[list(a.columns)].sort_values(keys).reset_index(drop=True)
    strict = a.equals(b)
    try:
        pd.testing.assert_frame_equal(a, b, check_dtype=False, check_categorical=False)
        data = True
    except AssertionError as e:
        data = False
        print(str(e)[:2000])
    return f"rows {len(a)} vs {len(b)}; DataFrame.equals {strict}; equal as data {data}"


def check(new: Path, labels_dir: Path | None, obs_file: Path | None, prepared: Path | None):
    from data_prep.observations import observations_from_extracted
    from data_prep.sepsis3 import LabelParams, derive_labels

    out = {}
    t = time.time()
    labels, onsets, _ = derive_labels(new, LabelParams(), progress=False, spill_dir=new.parent)
    out["derive_labels_s"] = round(time.time() - t, 2)
    stays = pd.read_parquet(new / "stays.parquet")
    t = time.time()
    obs, _ = observations_from_extracted(new, stays, progress=False)
    out["observations_s"] = round(time.time() - t, 2)
    if labels_dir is not None:
        out["labels_hourly"] = _frame_equal(
            pd.read_parquet(labels_dir / "labels_hourly.parquet"), labels, ["stay_id", "hour"]
        )
        out["onsets"] = _frame_equal(
            pd.read_parquet(labels_dir / "onsets.parquet"), onsets, ["stay_id"]
        )
    if obs_file is not None:
        old = pd.read_parquet(obs_file)
        out["observations (all stays)"] = (
            f"rows {len(old)} vs {len(obs)}; same order and values "
            f"{old.reset_index(drop=True).equals(obs.reset_index(drop=True))}"
        )
    if prepared is not None:
        from data_prep.cohort import window_mask

        cohort = pd.read_parquet(prepared / "cohort.parquet")
        params = json.loads((prepared / "manifest.json").read_text())["config"]["cohort"]
        kept = json.loads((prepared / "attrition.json").read_text())["variables"]["kept"]
        w = obs[window_mask(obs, cohort, params["window_hours"], 0)]
        w = w[w["variable"].astype(str).isin(kept)]
        w = w.sort_values(["stay_id", "hour"], kind="stable").reset_index(drop=True)
        old = pd.read_parquet(prepared / "observations.parquet")
        w = w.assign(variable=w["variable"].astype(str))
        old = old.assign(variable=old["variable"].astype(str))
        same = w.equals(old[list(w.columns)]) or _same_data(w, old)
        out["observations (prepared cohort windows)"] = (
            f"rows {len(old)} vs {len(w)}; stays {old['stay_id'].nunique()}; equal as data {same}"
        )
    return out


def _same_data(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    try:
        pd.testing.assert_frame_equal(
            a.reset_index(drop=True), b[list(a.columns)].reset_index(drop=True), check_dtype=False
        )
        return True
    except AssertionError as e:
        print(str(e)[:2000])
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--labels", type=Path)
    ap.add_argument("--observations", type=Path)
    ap.add_argument("--prepared", type=Path)
    ap.add_argument("--chunk-stays", type=int, help="override sepsis3.CHUNK_STAYS")
    a = ap.parse_args(argv)
    if a.chunk_stays:
        import data_prep.sepsis3 as S3

        S3.CHUNK_STAYS = a.chunk_stays
    info = convert(a.old, a.new)
    print(json.dumps(info["rows"]))
    print(
        json.dumps(
            {k: str(v) for k, v in check(a.new, a.labels, a.observations, a.prepared).items()},
            indent=1,
        )
    )
    print(
        "events parts:",
        sorted(p.name for p in (a.new / "events").glob("*.parquet")),
        {p.name: pq.read_metadata(p).num_rows for p in (a.new / "events").glob("*.parquet")},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
