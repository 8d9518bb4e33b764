"""MIMIC-IV icu/inputevents: vasopressor rates (io.EVENTS part ``inputevents.parquet``), the
admission weight per stay (``patientweight``) and the antibiotic administrations (for the
admission events).

Rates are converted to mcg/kg/min: mcg/kg/min as charted, mcg/min divided by the weight
(the row's ``patientweight``, else the stay's first charted weight), mg/... times 1000,
per hour divided by 60. A rate without a unit is taken as mcg/kg/min (counted); an unknown
unit is an error naming file, row and value (or, with ``on_bad_rows: skip-and-count``, a
counted skip).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data_prep.concepts.dictionary import DICTIONARY_FILE, concepts
from data_prep.concepts.rates import RATE_UNITS, normalise_rate_unit
from data_prep.sources import mimic4_tables as T
from data_prep.sources.csv_stream import (
    I32,
    Batch,
    ExtractionReport,
    MalformedRowError,
    TableReport,
    drop_null,
    ids,
    keep_items,
    ts_us,
)
from data_prep.sources.mimic4_events import WEIGHT_MAX_KG, ConceptMap, _sink, events_table
from data_prep.sources.stay_index import FirstPerStay, StayIndex

ADMIN_COLUMNS = ["patient_id", "hadm_id", "stay_id", "time", "text"]


@lru_cache(maxsize=1)
def antibiotic_items() -> dict[int, str]:
    """inputevents antibiotic item -> label (the dictionary's `antibiotic` mimic4 mapping)."""
    (m,) = concepts()["antibiotic"].mappings(T.SOURCE, "inputevents")
    out: dict[int, str] = {}
    if m.extra.get("items"):
        df = pd.read_csv(DICTIONARY_FILE.with_name(m.extra["items"]), comment="#")
        out.update(zip(df["itemid"].astype(int), df["label"].astype(str), strict=True))
    out.update({int(k): str(v) for k, v in (m.extra.get("more_items") or {}).items()})
    return out


def _rates(
    scan,
    tr: TableReport,
    rate: np.ndarray,
    uom: pa.Array,
    weight: np.ndarray,
    rows: np.ndarray,
    items: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(rate in mcg/kg/min, keep mask) of vasopressor rows."""
    enc = pc.dictionary_encode(uom)
    spell = enc.dictionary.to_pylist()
    norm = [normalise_rate_unit(u) for u in spell]
    code = pc.fill_null(enc.indices, len(spell)).to_numpy(zero_copy_only=False)
    spec = [RATE_UNITS.get(u) if u is not None else RATE_UNITS["mcgkgmin"] for u in norm]
    spec.append(RATE_UNITS["mcgkgmin"])  # null unit
    known = np.array([s is not None for s in spec])[code]
    empty = np.array([u is None for u in norm] + [True])[code]
    tr.count_unit("rate_without_unit_taken_as_mcg/kg/min", int((empty & known).sum()))
    if (~known).any():
        i = int(np.flatnonzero(~known)[0])
        if scan.params.on_bad_rows == "error":
            raise MalformedRowError(
                f"{scan.path}: data row {int(rows[i])} (line {int(rows[i]) + 1}), column "
                f"{scan.actual.get('rateuom', 'rateuom')!r}: unknown vasopressor rate unit "
                f"{spell[code[i]]!r} for itemid {int(items[i])} (expected one of mcg/kg/min, "
                f"mcg/min, mg/kg/min, mg/min, ng/kg/min, or per hour; table {scan.table}; set "
                "on_bad_rows: skip-and-count to skip and count such rows)"
            )
        for c, n in zip(*np.unique(code[~known], return_counts=True), strict=True):
            tr.drop(f"unknown_rate_unit:{spell[c]}", int(n))
    ok_spec = [s or (1.0, False, False) for s in spec]
    factor = np.array([s[0] for s in ok_spec])[code]
    per_weight = np.array([s[1] for s in ok_spec])[code]
    per_hr = np.array([s[2] for s in ok_spec])[code]
    no_w = known & per_weight & ~((weight > 0) & (weight <= WEIGHT_MAX_KG))
    tr.drop("no_weight_for_rate_unit", int(no_w.sum()))
    with np.errstate(invalid="ignore", divide="ignore"):
        v = rate * factor
        v = np.where(per_weight, v / weight, v)
        v = np.where(per_hr, v / 60.0, v)
    return v, known & ~no_w


def inputevents(
    data_dir: Path,
    out: Path,
    params: T.Mimic4Params,
    rep: ExtractionReport,
    index: StayIndex,
    stays: pd.DataFrame,
    chart_weights: pd.DataFrame,
    progress: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Vasopressor events; returns (first patientweight per stay, antibiotic administrations
    with columns ADMIN_COLUMNS)."""
    scan = T.scan(data_dir, "inputevents", params, rep, progress)
    tr = scan.report
    cmap = ConceptMap("inputevents")
    sink = _sink(out, "inputevents", params)
    stay_w = chart_weights.set_index("stay_id")["weight_kg"]
    stay_hadm = stays.set_index("stay_id")["hadm_id"]
    stay_subject = stays.set_index("stay_id")["patient_id"]
    abx = antibiotic_items()
    abx_set = pa.array(sorted(abx), I32)
    weights = FirstPerStay(index)
    abx_parts: list[pd.DataFrame] = []

    def reset() -> None:
        sink.reset()
        weights.clear()
        abx_parts.clear()

    def antibiotics(b: Batch) -> None:
        items = pc.fill_null(pc.is_in(b["itemid"], value_set=abx_set), False)
        if not pc.any(items).as_py():
            return
        a = {
            c: pc.filter(b[c], items)
            for c in ("subject_id", "hadm_id", "stay_id", "itemid", "starttime")
        }
        stay = pd.Series(ids(a["stay_id"]))
        hadm = pd.Series(a["hadm_id"].to_pandas(), dtype="Int64")
        subject = pd.Series(a["subject_id"].to_pandas(), dtype="Int64")
        hadm = hadm.fillna(stay.map(stay_hadm).astype("Int64"))
        subject = subject.fillna(stay.map(stay_subject).astype("Int64"))
        ok = subject.notna().to_numpy()
        tr.drop("antibiotic_without_subject", int((~ok).sum()))
        abx_parts.append(
            pd.DataFrame(
                {
                    "patient_id": subject[ok].to_numpy(),
                    "hadm_id": hadm[ok].to_numpy(),
                    "stay_id": stay[ok].to_numpy(),
                    "time": a["starttime"].to_pandas()[ok].to_numpy(),
                    "text": [abx[int(i)] for i in a["itemid"].to_numpy(zero_copy_only=False)[ok]],
                }
            )
        )
        tr.count_unit("antibiotic_administrations", int(ok.sum()))
        b.filter(pc.invert(items))

    def handle(b: Batch) -> None:
        b.convert("subject_id", "hadm_id", "stay_id", "itemid", "rate", "patientweight")
        b.convert("starttime", "endtime")
        if b.has("statusdescription"):
            rewritten = pc.fill_null(
                pc.equal(pc.utf8_lower(b["statusdescription"]), "rewritten"), False
            )
            tr.drop("status_rewritten", int(pc.sum(rewritten).as_py() or 0))
            b.filter(pc.invert(rewritten))
        # admission weight per stay, from every row (the first by starttime wins)
        pw = pc.fill_null(b["patientweight"], np.nan).to_numpy(zero_copy_only=False)
        has_w = (
            (pw > 0)
            & (pw <= WEIGHT_MAX_KG)
            & b["starttime"].is_valid().to_numpy(zero_copy_only=False)
        )
        if has_w.any():
            weights.add(ids(b["stay_id"])[has_w], ts_us(b["starttime"], 0)[has_w], pw[has_w])
        antibiotics(b)
        keep_items(b, tr, cmap.value_set)
        drop_null(b, tr, "starttime", "missing_starttime")
        drop_null(b, tr, "endtime", "missing_endtime")
        drop_null(b, tr, "rate", "missing_rate")
        found, _ = index.by_id(ids(b["stay_id"]))
        tr.drop("unknown_stay", int((~found).sum()))
        b.filter(found)
        if not len(b):
            return
        s, e = ts_us(b["starttime"], 0), ts_us(b["endtime"], 0)
        order = e >= s
        tr.drop("endtime_before_starttime", int((~order).sum()))
        b.filter(order)
        if not len(b):
            return
        stay = ids(b["stay_id"])
        pw = pc.fill_null(b["patientweight"], np.nan).to_numpy(zero_copy_only=False)
        w = np.where(
            (pw > 0) & (pw <= WEIGHT_MAX_KG), pw, pd.Series(stay).map(stay_w).to_numpy(float)
        )
        items = b["itemid"].to_numpy(zero_copy_only=False)
        rate = b["rate"].to_numpy(zero_copy_only=False).astype(np.float64)
        v, keep = _rates(scan, tr, rate, b["rateuom"], w, b.row_numbers(), items)
        b.filter(keep)
        if not len(b):
            return
        p = cmap.pos(b["itemid"])
        sink.write(
            events_table(
                b["stay_id"], b["starttime"], cmap.concept_array(p), v[keep], end_time=b["endtime"]
            )
        )
        tr.rows_kept += len(b)

    scan.run(handle, reset)
    rep.outputs["events/inputevents.parquet"] = sink.close()
    admin = (
        pd.concat(abx_parts, ignore_index=True)
        if abx_parts
        else pd.DataFrame({c: pd.Series(dtype=object) for c in ADMIN_COLUMNS})
    )
    return weights.result(), admin
