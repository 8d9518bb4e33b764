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

from data_prep.concepts import sofa as S  # noqa: E402
from data_prep.concepts import sofa_components as SC  # noqa: E402
from data_prep.concepts.dictionary import concepts  # noqa: E402
from data_prep.concepts.sofa_evidence import sofa_inputs  # noqa: E402
from data_prep.sepsis3 import LabelParams, derive_labels  # noqa: E402

CONFIGS = {
    "mimic4": "configs/mimic4-demo.yaml",
    "meds": "configs/mimic4-demo-meds.yaml",
    "official": "configs/mimic4-demo-meds-official.yaml",
}
NAMES = {"mimic4": "MIMIC-IV tables", "meds": "MEDS"}
# the artefacts of `extracted/` that can be swapped: name -> (native files, MEDS files)
FACTORS = {
    "stays": (["stays.parquet"], ["stays.parquet"]),
    "admission events": (["admission_events.parquet"], ["admission_events.parquet"]),
    "chartevents": (["events/chartevents.parquet"], ["events/chartevents.parquet"]),
    "labevents": (["events/labevents.parquet"], ["events/labevents.parquet"]),
    "outputevents": (["events/outputevents.parquet"], ["events/outputevents.parquet"]),
    "vasopressor infusions": (["events/inputevents.parquet"], ["events/infusions.parquet"]),
    "procedureevents": (["events/procedureevents.parquet"], ["events/procedureevents.parquet"]),
}
D = concepts()
COMPONENT_CONCEPTS = {
    "resp": ("po2", "fio2", "fio2_bloodgas", "blood_gas_specimen", *S.VENTILATION),
    "coag": ("platelets",),
    "liver": ("bilirubin",),
    "cardio": ("mbp", *S.VASOPRESSORS),
    "cns": ("gcs_total", "gcs_eye", "gcs_verbal", "gcs_motor"),
    "renal": ("creatinine", "urine_output"),
}
H = pd.Timedelta(hours=1)


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
def _same(a: pd.Series, b: pd.Series) -> pd.Series:
    return (a == b).fillna(False).astype(bool) | (a.isna() & b.isna())


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
def _fmt_t(t) -> str:
    return pd.Timestamp(t).strftime("%H:%M") if pd.notna(t) else "-"


def _fmt_v(v: float) -> str:
    return f"{v:.4g}"


class Stay:
    """Both paths' data of one stay: hourly SOFA with the pre-ICU hours, the events."""

    def __init__(self, s: int, n: dict, m: dict):
        self.s = s
        self.params = LabelParams()
        self.st = n["stays"][n["stays"]["stay_id"] == s]
        self.intime = pd.Timestamp(self.st["intime"].iloc[0])
        self.ev = {k: d["events"][d["events"]["stay_id"] == s] for k, d in (("n", n), ("m", m))}
        self.on = {"n": n["onsets"].loc[s], "m": m["onsets"].loc[s]}
        self.sofa = {}
        for k in ("n", "m"):
            sf, _ = S.hourly_sofa(self.st, self.ev[k], self.params.sofa, self.params.pre_hours)
            self.sofa[k] = sf.set_index("hour")

    def hour(self, t) -> int:
        return int(np.floor((pd.Timestamp(t) - self.intime) / H))

    def window(self, k: str) -> tuple[int, int]:
        si = float(self.on[k]["si_hour"])
        return int(np.floor(si - self.params.si_window_before_hours)), int(
            np.floor(si + self.params.si_window_after_hours)
        )

    def baseline(self, k: str, hour: int) -> tuple[int, int]:
        """(running-min SOFA over the window hours before `hour`, its earliest hour)."""
        first, _ = self.window(k)
        sf = self.sofa[k]["sofa"]
        h = sf.loc[max(first, -self.params.pre_hours) : hour - 1]
        return int(h.min()), int(h.idxmin())

    def comps(self, k: str, hour: int) -> dict[str, int]:
        return {c: int(self.sofa[k].loc[hour, f"sofa_{c}"]) for c in S.COMPONENTS}

    def evidence(self, k: str, hour: int, comp: str) -> str:
        cells = pd.DataFrame({"stay_id": [self.s], "hour": [hour], "components": [comp]})
        txt = sofa_inputs(self.st, self.ev[k], self.params.sofa, cells, self.params.pre_hours)
        return str(txt.iloc[0]) or f"{comp} 0"


def _moved(x: Stay, comp: str, hour: int, high: str) -> list[str]:
    """Input events of `comp` inside the SOFA window of `hour` on the `high` path (the one
    scoring the component higher) but not on the other, paired with their counterpart there
    (same concept and value, nearest time)."""
    lo = x.intime + (hour + 1 - x.params.sofa_lookback_hours) * H
    hi = x.intime + (hour + 1) * H
    names = COMPONENT_CONCEPTS[comp]
    out = []
    for c in names:
        a = x.ev["n"][x.ev["n"]["concept"] == c]
        b = x.ev["m"][x.ev["m"]["concept"] == c]
        if a.empty and b.empty:
            continue
        ka = a.assign(v=a["value"].astype("float32").round(3)).sort_values("time")
        kb = b.assign(v=b["value"].astype("float32").round(3)).sort_values("time")
        ka["in_n"] = ka["time"].between(lo, hi, inclusive="left")
        kb["in_m"] = kb["time"].between(lo, hi, inclusive="left")
        ka, kb = ka[ka["v"].notna()], kb[kb["v"].notna()]
        if ka.empty or kb.empty:
            continue
        m = pd.merge_asof(
            ka[["time", "v", "in_n", "part"]],
            kb[["time", "v", "in_m"]].rename(columns={"time": "t_m"}).assign(time=lambda d: d.t_m),
            on="time",
            by="v",
            direction="nearest",
            tolerance=pd.Timedelta(hours=48),
        )
        m["in_m"] = m["in_m"].astype("boolean").fillna(False).astype(bool)
        diff = m[(m["in_n"] != m["in_m"]) & (m["t_m"] != m["time"]) & m[f"in_{high}"]]
        unit = D[c].unit if c in D.concepts else ""
        for r in diff.itertuples():
            lab = r.part == "labevents"
            t1 = f"{'drawn' if lab else 'at'} {r.time:%m-%d %H:%M} (hour {x.hour(r.time)})"
            t2 = (
                f"{'stored' if lab else 'at'} {_fmt_t(r.t_m)} (hour {x.hour(r.t_m)}) in MEDS"
                if pd.notna(r.t_m)
                else "not in MEDS"
            )
            out.append(f"{c} {_fmt_v(r.v)} {unit} {t1}, {t2}".replace("  ", " "))
    return out


def _gases(x: Stay, hour: int) -> list[str]:
    """The PaO2/FiO2 of each arterial gas in the window of `hour` whose P/F differs between
    the paths although the gas is in the window on both: which FiO2 each one took."""
    lo = x.intime + (hour + 1 - x.params.sofa_lookback_hours) * H
    hi = x.intime + (hour + 1) * H
    res = {}
    for k in ("n", "m"):
        grid = S._Grid(x.st, int(x.params.sofa_lookback_hours), x.params.pre_hours)
        ev = S._point_events(S.sofa_rows(x.ev[k]), grid, x.params.sofa, {})
        g = SC._respiration_events(ev, x.params.sofa, {})
        g = g.assign(time=pd.to_datetime(g["t_us"].astype(np.int64), unit="us"))
        po2 = ev[ev["concept"] == "po2"].assign(time=lambda d: pd.to_datetime(d.t_us, unit="us"))
        g = g.merge(po2[["time", "value"]].rename(columns={"value": "po2"}), on="time")
        res[k] = g[(g["time"] >= lo) & (g["time"] < hi)].drop_duplicates("time")
    out = []
    fio2 = x.ev["m"][x.ev["m"]["concept"].isin(["fio2", "fio2_bloodgas"])]
    for r in res["n"].itertuples():
        cand = res["m"][(res["m"]["po2"] == r.po2) & ((res["m"]["time"] - r.time).abs() < 2 * H)]
        if cand.empty:
            continue
        q = cand.iloc[0]
        if abs(q.value - r.value) < 0.05 or int(q.score) == int(r.score):
            continue
        f_n, f_m = r.po2 / r.value, q.po2 / q.value

        def fio(f: float, t) -> str:
            if abs(f - SC.DEFAULT_FIO2) < 1e-6:
                near = fio2[(fio2["time"] >= t - 6 * H) & (fio2["time"] <= t + 2 * H)]
                after = near[near["time"] > t]
                if len(after):
                    d = (after["time"].iloc[0] - t) / pd.Timedelta(minutes=1)
                    return (
                        f"room air assumed: the FiO2 charted {_fmt_t(after['time'].iloc[0])} is "
                        f"{d:.0f} min after, outside the {x.params.fio2_lookahead_hours * 60:.0f}-min "
                        "look-ahead"
                    )
                return "room air assumed (no FiO2 in [gas - 4 h, gas + 30 min])"
            return f"FiO2 {f:.2f}"

        out.append(
            f"PaO2 {_fmt_v(r.po2)} drawn {r.time:%m-%d %H:%M}, stored {_fmt_t(q.time)}: P/F "
            f"{r.value:.0f} ({fio(f_n, r.time)}) in the tables vs {q.value:.0f} "
            f"({fio(f_m, q.time)}) in MEDS"
        )
    return out


def explain_sofa(x: Stay) -> tuple[str, str]:
    """(category, reason) of an onset difference that the stay-level events make."""
    on_n, on_m = x.on["n"]["onset_hour"], x.on["m"]["onset_hour"]
    if pd.isna(on_n) and pd.isna(on_m):
        return "none", "same onset"
    # the earlier onset: hour where one path (A) meets the criterion and the other (B) not
    a = "n" if pd.isna(on_m) or (pd.notna(on_n) and on_n < on_m) else "m"
    b = "m" if a == "n" else "n"
    hour = int(on_n if a == "n" else on_m)
    sa, sb = int(x.sofa[a].loc[hour, "sofa"]), int(x.sofa[b].loc[hour, "sofa"])
    (ba, bha), (bb, bhb) = x.baseline(a, hour), x.baseline(b, hour)
    name = {"n": "tables", "m": "MEDS"}
    focus = []  # (hour, why)
    if sa > sb:
        focus.append((hour, f"SOFA at hour {hour}: {sa} ({name[a]}) vs {sb} ({name[b]})"))
    if ba < bb:
        focus.append(
            (bha, f"baseline {ba} at hour {bha} ({name[a]}) vs {bb} at hour {bhb} ({name[b]})")
        )
    parts, cats = [], set()
    for h, why in focus:
        ca, cb = x.comps(a, h), x.comps(b, h)
        diff = [c for c in S.COMPONENTS if ca[c] != cb[c]]
        for c in diff:
            moved = _moved(x, c, h, a if ca[c] > cb[c] else b)
            gases = _gases(x, h) if c == "resp" else []
            ev_a, ev_b = x.evidence(a, h, c), x.evidence(b, h, c)
            detail = "; ".join(moved + gases) or "inputs differ"
            parts.append(
                f"{why}: {c} {ca[c]} ({name[a]}: {ev_a}) vs {cb[c]} ({name[b]}: {ev_b}) "
                f"because {detail}"
            )
            if gases:
                cats.add("PaO2 at storetime takes another FiO2 (30-min look-ahead)")
            elif any(" stored " in t for t in moved):
                cats.add(
                    "lab at storetime: baseline hour scores lower"
                    if h != hour
                    else "lab at storetime: component rises later"
                    if a == "n"
                    else "lab at storetime: component rises earlier"
                )
            elif moved:
                cats.add(f"{c} inputs timed differently")
            else:
                cats.add(f"{c} inputs differ")
    if not parts:
        parts.append(f"SOFA {sa} vs {sb}, baseline {ba} vs {bb} at hour {hour}")
        cats.add("other")
    fmt = lambda v: "none" if pd.isna(v) else f"{int(v)}"  # noqa: E731
    reason = f"onset {fmt(on_n)} (tables) vs {fmt(on_m)} (MEDS): " + " | ".join(parts)
    return "; ".join(sorted(cats)), reason


def explain_si(s: int, n: dict, m: dict) -> tuple[str, str]:
    """(category, reason) of an SI difference: which event of the pair differs and why."""
    a, b = n["onsets"].loc[s], m["onsets"].loc[s]
    hadm = n["stays"].set_index("stay_id").loc[s, "hadm_id"]
    bits = []
    for what, col in (("culture", "culture_time"), ("antibiotic", "antibiotic_time")):
        if _same(pd.Series([a[col]]), pd.Series([b[col]])).iloc[0]:
            continue
        t = a[col]
        if pd.notna(t):
            ad = m["adm"]
            hit = ad[(ad["concept"] == what) & (ad["time"] == t)]
            hit = hit[hit["patient_id"] == n["stays"].set_index("stay_id").loc[s, "patient_id"]]
            if hit.empty:
                bits.append(f"the tables' {what} at {t} is not in MEDS")
            elif hit["hadm_id"].isna().all():
                bits.append(f"the tables' {what} at {t} has no hadm_id in MEDS (admission {hadm})")
            else:
                bits.append(f"{what} {t} (tables) vs {b[col]} (MEDS)")
        else:
            bits.append(f"no {what} pair in the tables, {b[col]} in MEDS")
    return "suspected infection differs", "; ".join(bits) or "SI differs"


# ------------------------------------------------------------------ concept table
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


def part_diffs(n: dict, m: dict) -> dict[str, tuple[int, int, int]]:
    """For the non-lab parts: (rows, rows only in the tables' part, rows only in MEDS') as
    multisets of (stay, time, concept, value as float32, end_time, text)."""
    out = {}
    for f, (pn, pm) in FACTORS.items():
        if not pn[0].startswith("events/") or f == "labevents":
            continue
        a = n["events"][n["events"]["part"] == Path(pn[0]).stem]
        b = m["events"][m["events"]["part"] == Path(pm[0]).stem]

        def key(e: pd.DataFrame) -> pd.Series:
            v = e["value"].astype("float32").round(3).astype(str)
            return (
                e["stay_id"].astype(str)
                + "|"
                + e["time"].astype(str)
                + "|"
                + e["concept"]
                + "|"
                + v
                + "|"
                + e["end_time"].astype(str).fillna("-")
                + "|"
                + e["text"].astype(object).fillna("-").astype(str)
            )

        ca, cb = key(a).value_counts(), key(b).value_counts()
        d = ca.sub(cb, fill_value=0)
        out[f] = (len(a), int(d[d > 0].sum()), int(-d[d < 0].sum()))
    return out


# ------------------------------------------------------------------ statistics
def onset_stats(on: pd.DataFrame) -> dict:
    h = on["onset_hour"].dropna()
    return {
        "stays": len(on),
        "with SI": int(on["si_time"].notna().sum()),
        "septic (onset)": len(h),
        "onset hour median [IQR]": f"{h.median():.0f} [{h.quantile(0.25):.0f}-{h.quantile(0.75):.0f}]"
        if len(h)
        else "-",
        "onsets at hour 0": f"{int((h == 0).sum())} ({100 * (h == 0).mean():.0f} %)"
        if len(h)
        else "-",
    }


def attrition_table(paths: dict[str, dict]) -> list[str]:
    steps: list[str] = []
    rows: dict[str, dict[str, dict]] = {}
    for key, att in paths.items():
        prev = -1
        for s in att["steps"]:
            if s["step"] not in steps:
                steps.insert(prev + 1, s["step"])
            prev = steps.index(s["step"])
            rows.setdefault(s["step"], {})[key] = s
    head = "| step | " + " | ".join(
        f"{NAMES.get(k, k)}: removed / remaining (cases, controls)" for k in paths
    )
    lines = [head + " |", "| --- |" + " ---: |" * len(paths)]
    for st in steps:
        cells = []
        for k in paths:
            s = rows[st].get(k)
            cells.append(
                f"{s['removed']} / {s['remaining']} ({s['cases']}, {s['controls']})"
                if s
                else "(no step)"
            )
        lines.append(f"| {st} | " + " | ".join(cells) + " |")
    return lines


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


def _md_table(df: pd.DataFrame) -> list[str]:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in df.itertuples(index=False):
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v) for v in r) + " |")
    return lines


def _short(text: str) -> str:
    shared = os.environ.get("SEPSIS_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    return text.replace(str(Path(shared).resolve()), "$SEPSIS_SHARED_DATA").replace(
        shared, "$SEPSIS_SHARED_DATA"
    )


def write_readme(out, args, n, m, ps, ct, same_times, official, off_on, off_att, off_rep) -> None:
    rel = os.path.relpath(out, ROOT)
    agree = int(ps["agree"].sum())
    d = ps[~ps["agree"]]
    stats = pd.DataFrame(
        {NAMES["mimic4"]: onset_stats(n["onsets"]), NAMES["meds"]: onset_stats(m["onsets"])}
    )
    cats = d["category"].value_counts()
    pdiff = part_diffs(n, m)
    same_parts = ", ".join(
        f"{f} ({r:,} rows"
        + (f"; {x} only in the tables, {y} only in MEDS)" if x or y else ", identical)")
        for f, (r, x, y) in pdiff.items()
    )
    od = d["onset_diff_h"].dropna()
    later, earlier = od[od > 0], od[od < 0]
    storetime_only = len(d) and d["category"].str.contains("storetime").all()
    filled_n = n["report"]["tables"]["admission_events"]["units"].get(
        "hadm_id_from_subject_and_time"
    )
    filled_m = m["report"]["admission_events"]["hadm_id_filled_from_admission_time"]
    vent_n = n["report"]["tables"]["procedureevents"]["units"].get("ventilation_events_written")
    vent_m = m["report"]["pairing"].get("intervals[0] (ventilation)", {}).get("events_written")
    L = [
        "# MIMIC-IV demo: raw tables vs MEDS, per ICU stay (issue 13)",
        "",
        "The MIMIC-IV Clinical Database Demo v2.2 (100 patients, 140 ICU stays) labelled twice by "
        "the same concept layer (`data_prep/sepsis3.derive_labels`): from the raw `hosp/` + `icu/` "
        "tables (source `mimic4`, configs/mimic4-demo.yaml) and from the same data converted to "
        "MEDS by the official MIMIC-IV MEDS ETL plus its microbiology and prescriptions blocks "
        "(source `meds`, configs/mimic4-demo-meds.yaml; shared/data/mimic4-demo-meds/README.md).",
        "",
        "Produced by (seconds on 2 cores):",
        "",
        "```",
        f"SEPSIS_SHARED_DATA=../shared/data python benchmarks/compare_mimic4_meds.py WORK --out {rel}",
        "```",
        "",
        "which runs `sepsis prepare -c configs/mimic4-demo.yaml output_dir=WORK/mimic4`, the same "
        "for configs/mimic4-demo-meds.yaml (`WORK/meds`) and configs/mimic4-demo-meds-official.yaml "
        "(below), then compares the prepared folders. Files: `per_stay.csv` (one row per stay: septic "
        "call, onset hour, SI time, cohort role, events, cause and reason of a difference), "
        "`per_stay_concept_counts.csv` (events per stay and concept, rows and non-null values).",
        "",
        "Stay ids: the MEDS reader takes the ICU stay id from the ETL's `icustay_id` column of the "
        "`ICU_ADMISSION` / `ICU_DISCHARGE` rows, which is the raw `stay_id`: the 140 stays are the "
        f"same on both paths{' with the same intime, outtime, hadm_id and subject' if same_times else ''}.",
        "",
        "## Result",
        "",
        f"**{agree} of {len(ps)} stays agree** (same septic call, onset hour and SI time); "
        f"**{len(d)} differ**: "
        + ", ".join(f"{v} {k}" for k, v in cats.items())
        + ". Septic calls: "
        f"{int((ps.septic_mimic4 != ps.septic_meds).sum())} differ; SI times: "
        f"{int((~_same(ps.si_time_mimic4, ps.si_time_meds)).sum())} differ; onset hours (both septic): "
        f"{int(((ps.onset_hour_mimic4 != ps.onset_hour_meds) & ps.septic_mimic4 & ps.septic_meds).sum())} differ "
        f"(MEDS later in {len(later)}: +{', +'.join(f'{v:.0f}' for v in sorted(later))} h; earlier in "
        f"{len(earlier)}: {', '.join(f'{v:.0f}' for v in sorted(earlier))} h).",
        "",
        ("Every difference is a storetime effect the MEDS data impose: " if storetime_only else "")
        + "MEDS times lab results at "
        "`storetime` (the draw, `LAB//SPECIMEN_COLLECTED`, has no link to its result), the raw tables "
        "at `charttime`. A lab a SOFA component rises on then counts one or more hours later, a lab "
        "behind a pre-ICU baseline hour leaves that hour, and a PaO2 stored a few minutes after it was "
        "drawn can reach a FiO2 charted 29-30 min later that the draw time misses (the FiO2 look-ahead is "
        "30 min), so its P/F is scored with that FiO2 instead of room air.",
        "",
        "Two differences were reader gaps, fixed before this comparison (commit "
        '"meds: ED registrations and ventilation intervals", tests in tests/data_prep/test_meds.py): '
        "(1) events without `hadm_id` (a third of the cultures, ED antibiotic doses) joined their "
        "admission from `admittime` in MEDS but from `min(edregtime, admittime)` in the tables: the MEDS "
        "reader now links `ED_REGISTRATION` rows to their admission (31 stays had a later SI time, 3 a "
        "different septic call); (2) procedureevents ventilation intervals (`PROCEDURE//START|END//225792`) "
        f"were not mapped (1 stay's onset an hour later). hadm_ids filled by subject and time: "
        f"{filled_n} (tables) and {filled_m} (MEDS); ventilation events from procedureevents: {vent_n} and "
        f"{vent_m}.",
        "",
        "## Onsets",
        "",
        *_md_table(stats.reset_index().rename(columns={"index": ""})),
        "",
        "## Attrition (cohort stage)",
        "",
        *attrition_table({"mimic4": n["attrition"], "meds": m["attrition"]}),
        "",
        "The MEDS config keeps the default `cohort.dbsource` (a step that removes nothing: MIMIC-IV has "
        "no CareVue/MetaVision split); the cohort differs through the onsets above and through "
        "matching (controls are matched to cases by onset hour).",
        "",
        "## Every differing stay",
        "",
        "`cause`: the `extracted/` artefact whose swap from the MEDS run into the tables' run alone "
        "reproduces the MEDS result for the stay (derive_labels on hybrid folders). Hours are "
        "since ICU admission (hour k = [k, k+1)); SOFA at hour k uses the data of [k-23, k+1).",
        "",
    ]
    t = d.reset_index()[
        [
            "stay_id",
            "septic_mimic4",
            "septic_meds",
            "onset_hour_mimic4",
            "onset_hour_meds",
            "cause",
            "category",
            "reason",
        ]
    ].copy()
    for c in ("onset_hour_mimic4", "onset_hour_meds"):
        t[c] = t[c].map(lambda v: "-" if pd.isna(v) else f"{v:.0f}")
    t.columns = [
        "stay",
        "septic (tables)",
        "septic (MEDS)",
        "onset (tables)",
        "onset (MEDS)",
        "cause",
        "category",
        "reason",
    ]
    L += _md_table(t)
    L += [
        "",
        "## Events per concept (all stays)",
        "",
        "Rows written to `extracted/events/` and non-null values; `stays` = stays whose row count "
        "differs. The other parts compared row for row (stay, time, concept, value, end_time, text): "
        f"{same_parts}.",
        "",
    ]
    ctab = ct[
        [
            "concept",
            "rows_mimic4",
            "rows_meds",
            "values_mimic4",
            "values_meds",
            "stays_differing",
            "note",
        ]
    ]
    ctab.columns = [
        "concept",
        "rows (tables)",
        "rows (MEDS)",
        "values (tables)",
        "values (MEDS)",
        "stays",
        "why they differ",
    ]
    L += _md_table(ctab)
    L += [
        "",
        "Admission events: antibiotics "
        f"{int((n['adm'].concept == 'antibiotic').sum())} (tables) vs {int((m['adm'].concept == 'antibiotic').sum())} (MEDS), "
        f"cultures {int((n['adm'].concept == 'culture').sum())} vs {int((m['adm'].concept == 'culture').sum())}, "
        f"sepsis codes {int((n['adm'].concept == 'sepsis_diagnosis').sum())} vs {int((m['adm'].concept == 'sepsis_diagnosis').sum())}; "
        f"without hadm_id after the fill: {int(n['adm'].hadm_id.isna().sum())} vs {int(m['adm'].hadm_id.isna().sum())}. "
        "The 2 extra MEDS antibiotics are eMAR doses of a topical Neomycin-Polymyxin-Bacitracin and of "
        "moxifloxacin eye drops: the tables' reader drops an administration whose prescription "
        "(`pharmacy_id`) was dropped for its route; MEDS eMAR rows carry neither route nor "
        "pharmacy_id. They change no SI time.",
        "",
        "## The official MIMIC-IV MEDS release (no cultures): configs/mimic4-demo-meds-official.yaml",
        "",
        "```",
        "sepsis prepare -c configs/mimic4-demo-meds-official.yaml output_dir=WORK/meds-official",
        "```",
        "",
        f"stops (exit {official['paired_rc']}) after the extraction (report: `cultures: {off_rep['cultures']}`, "
        f"`antibiotics: {off_rep['antibiotics']}`) with:",
        "",
        "> " + _short(official["paired_error"]),
        "",
        "```",
        "sepsis prepare -c configs/mimic4-demo-meds-official.yaml output_dir=WORK/meds-official \\",
        "    labels.suspected_infection=antibiotics_only",
        "```",
        "",
        "labels it with the **antibiotic-only rule** (an antibiotic with another within 24 h; ricu "
        "si_mode 'abx'). **These numbers are not comparable with the Sepsis-3 labels above** (no "
        "cultures: suspected infection is a different, broader definition):",
        "",
        *_md_table(
            pd.DataFrame(
                {"antibiotic-only rule (not comparable)": onset_stats(off_on.set_index("stay_id"))}
            )
            .reset_index()
            .rename(columns={"index": ""})
        ),
        "",
        *attrition_table({"official, antibiotic-only": off_att}),
        "",
    ]
    (out / "README.md").write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    sys.exit(main())
