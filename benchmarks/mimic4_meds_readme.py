"""The README that `compare_mimic4_meds.py` writes into its output folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from mimic4_meds_explain import FACTORS, _same  # noqa: E402

NAMES = {"mimic4": "MIMIC-IV tables", "meds": "MEDS"}


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
