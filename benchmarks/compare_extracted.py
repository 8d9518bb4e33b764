"""Compare an extraction in the events contract with one in the old per-table layout (issue 12).

The old MIMIC-III reader wrote chart, lab, urine, vasopressors, prescriptions, microbiology,
diagnoses and antibiotics_mv parquet files; the new one writes events/ parts and
admission_events.parquet. For each old table this maps its rows by the concept dictionary
(item -> concept, value * scale + offset) and by the source conventions (antibiotic rules,
culture times, sepsis ICD-9 codes), and checks they equal the new rows of the corresponding
concepts, in the same order. stays.parquet must be equal as a whole.

Usage: python benchmarks/compare_extracted.py OLD_EXTRACTED NEW_EXTRACTED
Prints a row count per concept (old mapped / new) and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_prep.concepts.dictionary import concepts  # noqa: E402
from data_prep.concepts.infection import antibiotic_names  # noqa: E402

EVENT_COLS = ["stay_id", "time", "concept", "value", "end_time", "text"]
ADM_COLS = ["patient_id", "hadm_id", "time", "concept", "text", "time_source"]


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def _map_items(old: pd.DataFrame, table: str) -> pd.DataFrame:
    """Old rows (itemid, valuenum) -> concept and value in the concept's unit."""
    items = concepts().items("mimic3", table)
    item = old["itemid"].to_numpy(np.int64)
    unknown = sorted(set(item) - set(items))
    if unknown:
        raise SystemExit(f"{table}: old items without a dictionary concept: {unknown[:10]}")
    concept = np.array([items[i][0] for i in item], object)
    scale = np.array([items[i][1] for i in item], float)
    offset = np.array([items[i][2] for i in item], float)
    value = old["valuenum"].to_numpy(float) * scale + offset
    return pd.DataFrame(
        {
            "stay_id": old["stay_id"].to_numpy(np.int64),
            "time": old["time"].to_numpy("datetime64[us]"),
            "concept": concept,
            "value": value,
            "end_time": pd.NaT,
            "text": old["value"].to_numpy(object) if "value" in old else None,
        }
    )


def _norm(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    out = df[cols].reset_index(drop=True).copy()
    for c in out.columns:
        if c in ("time", "end_time"):
            out[c] = pd.to_datetime(out[c]).astype("datetime64[us]")
        elif c in ("value",):
            out[c] = out[c].astype("float64")
        elif c in ("stay_id", "patient_id", "hadm_id"):
            out[c] = out[c].astype("Int64")
        else:
            out[c] = out[c].astype("object").where(out[c].notna(), None)
    return out


def _same(name: str, old: pd.DataFrame, new: pd.DataFrame, cols: list[str]) -> bool:
    a, b = _norm(old, cols), _norm(new, cols)
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=name)
    except AssertionError as e:
        print(f"DIFFERENT {name}: {str(e)[:2000]}")
        return False
    return True


def _counts(label: str, old: pd.DataFrame, new: pd.DataFrame, ok: bool, rows: list) -> None:
    o = old["concept"].value_counts()
    n = new["concept"].value_counts()
    for c in sorted(set(o.index) | set(n.index)):
        rows.append((label, c, int(o.get(c, 0)), int(n.get(c, 0)), "equal" if ok else "DIFFERENT"))


def old_antibiotic_mask(p: pd.DataFrame) -> np.ndarray:
    """PRESCRIPTIONS rows kept as systemic antibiotics by the rules of the old
    infection.antibiotic_events (before its no-hadm / no-startdate drops), with the
    dictionary's convention lists."""
    (m,) = concepts()["antibiotic"].mappings("mimic3", "prescriptions")
    rules = m.extra
    drug = p["drug"].astype("string").str.lower().fillna("")
    dtype = p["drug_type"].astype("string").str.upper().str.strip()
    route = p["route"].astype("string").str.strip().fillna("")
    keep_type = dtype.isin(rules["drug_types"]).fillna(False).to_numpy(bool)
    pattern = "|".join(re.escape(n) for n in antibiotic_names())
    is_abx = drug.str.contains(pattern, regex=True).fillna(False).to_numpy(bool)
    bad_route = route.str.upper().isin(rules["exclude_routes"]).to_numpy(bool).copy()
    for sub in rules["exclude_route_substrings"]:
        bad_route |= route.str.lower().str.contains(sub, regex=False).fillna(False).to_numpy(bool)
    bad_name = np.zeros(len(p), bool)
    for sub in rules["exclude_name_substrings"]:
        bad_name |= drug.str.contains(sub, regex=False).fillna(False).to_numpy(bool)
    return keep_type & is_abx & ~bad_route & ~bad_name


def compare(old_dir: Path, new_dir: Path) -> bool:
    ok_all = True
    rows: list[tuple] = []
    # stays
    so, sn = _read(old_dir / "stays.parquet"), _read(new_dir / "stays.parquet")
    try:
        pd.testing.assert_frame_equal(so, sn, check_exact=True, obj="stays")
        rows.append(("stays", "-", len(so), len(sn), "equal"))
    except AssertionError as e:
        print(f"DIFFERENT stays: {str(e)[:2000]}")
        rows.append(("stays", "-", len(so), len(sn), "DIFFERENT"))
        ok_all = False

    # events
    ev = new_dir / "events"
    for old_name, part, table in (
        ("chart", "chartevents", "chartevents"),
        ("lab", "labevents", "labevents"),
    ):
        old = _map_items(_read(old_dir / f"{old_name}.parquet"), table)
        if old_name == "lab":
            old["text"] = None
        new = _read(ev / f"{part}.parquet")
        ok = _same(f"{old_name} -> events/{part}", old, new, EVENT_COLS)
        _counts(f"{old_name}.parquet", old, new, ok, rows)
        ok_all &= ok
    u = _read(old_dir / "urine.parquet")
    old = pd.DataFrame(
        {
            "stay_id": u["stay_id"],
            "time": u["time"],
            "concept": "urine_output",
            "value": u["value"],
            "end_time": pd.NaT,
            "text": None,
        }
    )
    new = _read(ev / "outputevents.parquet")
    ok = _same("urine -> events/outputevents", old, new, EVENT_COLS)
    _counts("urine.parquet", old, new, ok, rows)
    ok_all &= ok
    v = _read(old_dir / "vasopressors.parquet")
    old = pd.DataFrame(
        {
            "stay_id": v["stay_id"],
            "time": v["starttime"],
            "concept": v["drug"],
            "value": v["rate"],
            "end_time": v["endtime"],
            "text": None,
        }
    )
    new = _read(ev / "inputevents.parquet")
    ok = _same("vasopressors -> events/inputevents", old, new, EVENT_COLS)
    _counts("vasopressors.parquet", old, new, ok, rows)
    ok_all &= ok

    # admission events, in the reader's order: orders, administrations, cultures, diagnoses
    adm = _read(new_dir / "admission_events.parquet")
    p = _read(old_dir / "prescriptions.parquet")
    keep = old_antibiotic_mask(p)
    orders = pd.DataFrame(
        {
            "patient_id": p["subject_id"][keep],
            "hadm_id": p["hadm_id"][keep],
            "time": p["startdate"][keep],
            "concept": "antibiotic",
            "text": p["drug"][keep],
            "time_source": "order date",
        }
    )
    parts = [("prescriptions.parquet (antibiotic orders)", orders, "order date")]
    mv_path = old_dir / "antibiotics_mv.parquet"
    if mv_path.exists():
        a = _read(mv_path).merge(so[["stay_id", "patient_id", "hadm_id"]], on="stay_id", how="left")
        parts.append(
            (
                "antibiotics_mv.parquet (administrations)",
                pd.DataFrame(
                    {
                        "patient_id": a["patient_id"],
                        "hadm_id": a["hadm_id"],
                        "time": a["time"],
                        "concept": "antibiotic",
                        "text": a["drug"],
                        "time_source": "administration",
                    }
                ),
                "administration",
            )
        )
    m = _read(old_dir / "microbiology.parquet")
    ct = pd.to_datetime(m["charttime"])
    cd = pd.to_datetime(m["chartdate"]).dt.normalize()
    src = np.where(ct.notna(), "charted", np.where(cd.notna(), "date only", None))
    cultures = pd.DataFrame(
        {
            "patient_id": m["subject_id"],
            "hadm_id": m["hadm_id"],
            "time": ct.where(ct.notna(), cd),
            "concept": "culture",
            "text": m["spec_type_desc"],
            "time_source": src,
        }
    )
    parts.append(("microbiology.parquet (cultures)", cultures, None))
    d = _read(old_dir / "diagnoses.parquet")
    (dm,) = concepts()["sepsis_diagnosis"].mappings("mimic3", "diagnoses_icd")
    code = d["icd9_code"].astype("string").str.replace(".", "", regex=False).str.strip()
    sel = code.isin(dm.extra["icd9"]).fillna(False).to_numpy(bool)
    diag = pd.DataFrame(
        {"hadm_id": d["hadm_id"][sel], "concept": "sepsis_diagnosis", "text": code[sel]}
    )
    parts.append(("diagnoses.parquet (sepsis codes)", diag, None))

    new_parts = {
        "order date": adm[(adm["concept"] == "antibiotic") & (adm["time_source"] == "order date")],
        "administration": adm[
            (adm["concept"] == "antibiotic") & (adm["time_source"] == "administration")
        ],
    }
    for label, old, key in parts:
        concept = {"cultures": "culture", "sepsis codes": "sepsis_diagnosis"}.get(
            label[label.find("(") + 1 : -1], "antibiotic"
        )
        new = new_parts[key] if key is not None else adm[adm["concept"] == concept]
        cols = ADM_COLS if "patient_id" in old else ["hadm_id", "concept", "text"]
        ok = _same(label, old, new, cols)
        if "patient_id" not in old:  # old diagnoses had no subject_id: check it through stays
            hp = so.dropna(subset=["hadm_id"]).drop_duplicates("hadm_id")
            hp = hp.set_index("hadm_id")["patient_id"]
            known = new["hadm_id"].isin(hp.index)
            ok &= bool(
                (
                    new.loc[known, "patient_id"].to_numpy()
                    == hp.reindex(new.loc[known, "hadm_id"]).to_numpy()
                ).all()
            )
            ok &= bool(new["time"].isna().all())
        rows.append((label, str(concept), len(old), len(new), "equal" if ok else "DIFFERENT"))
        ok_all &= ok
    n_parts = sum(len(o) for _, o, _ in parts)
    if n_parts != len(adm):
        print(f"DIFFERENT admission_events: {len(adm)} rows, the old tables map to {n_parts}")
        ok_all = False

    # the old concept code on the old files, where it still exists, against the new rows
    try:
        from data_prep.concepts.infection import antibiotic_events
    except ImportError:
        antibiotic_events = None
    if antibiotic_events is not None:
        want, _ = antibiotic_events(p)
        got = new_parts["order date"]
        got = got[got["hadm_id"].notna() & got["time"].notna()]
        ok = _same(
            "infection.antibiotic_events(old prescriptions) vs new orders with hadm+time",
            want.rename(columns={"drug": "text"}),
            got,
            ["hadm_id", "time", "text"],
        )
        rows.append(
            (
                "antibiotic_events(old) check",
                "antibiotic",
                len(want),
                len(got),
                "equal" if ok else "DIFFERENT",
            )
        )
        ok_all &= ok

    w = max(len(r[0]) for r in rows)
    print(f"{'old table':<{w}}  {'concept':<24} {'old rows':>10} {'new rows':>10}  result")
    for r in rows:
        print(f"{r[0]:<{w}}  {r[1]:<24} {r[2]:>10,} {r[3]:>10,}  {r[4]}")
    print("ALL EQUAL" if ok_all else "DIFFERENCES FOUND")
    return ok_all


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("old", type=Path, help="extracted folder in the old per-table layout")
    ap.add_argument("new", type=Path, help="extracted folder in the events contract")
    a = ap.parse_args()
    return 0 if compare(a.old, a.new) else 1


if __name__ == "__main__":
    raise SystemExit(main())
