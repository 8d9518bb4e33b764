"""The per-stay explanations of `compare_mimic4_meds.py`: at the decisive hour of a stay
whose labels differ between the native and the MEDS path, which SOFA component moved and
which input events (with their times on both paths) are behind it."""

from __future__ import annotations

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
from data_prep.sepsis3 import LabelParams  # noqa: E402

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


def _same(a: pd.Series, b: pd.Series) -> pd.Series:
    return (a == b).fillna(False).astype(bool) | (a.isna() & b.isna())


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
