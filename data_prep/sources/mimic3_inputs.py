"""MIMIC-III infusions: vasopressor rates (MetaVision INPUTEVENTS_MV, CareVue INPUTEVENTS_CV)
-> `events/inputevents.parquet`, the MetaVision admission weights and antibiotic
administrations.

Events: concept = the drug (dictionary concept of the item), value = rate in mcg/kg/min,
time = start, end_time = end. MetaVision rows carry their interval; a CareVue rate holds from
its charttime until the next charting of the same drug in the stay, at most `CV_MAX_HOURS`
(`cv_intervals`).
"""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_prep import io
from data_prep.concepts.dictionary import concepts
from data_prep.concepts.rates import RATE_UNITS, normalise_rate_unit
from data_prep.sources.concept_map import ConceptMap
from data_prep.sources.csv_stream import (
    I32,
    STR,
    US_PER_HOUR,
    Batch,
    ExtractionReport,
    TableReport,
    drop_null,
    ids,
    keep_items,
    times_to_arrow,
    ts_us,
)
from data_prep.sources.mimic3_checks import MalformedRowError
from data_prep.sources.mimic3_tables import SOURCE, WEIGHT_MAX_KG, ReaderParams, scan
from data_prep.sources.stay_index import FirstPerStay, StayIndex, keep_known_stays

CV_MAX_HOURS = 4.0  # a CareVue rate holds until the next charting of the drug, at most this long
INPUT_TABLES = ("inputevents_mv", "inputevents_cv")
ABX_COLUMNS = ["stay_id", "time", "drug"]


@lru_cache(maxsize=1)
def vasopressors() -> ConceptMap:
    """Item -> vasopressor concept of both input tables."""
    return ConceptMap(SOURCE, INPUT_TABLES)


@lru_cache(maxsize=1)
@cache
def default_rate_units() -> dict[int, str]:
    """Unit assumed when `rateuom` is empty (normalised): mcg/kg/min, except the dictionary's
    `empty_rate_unit` items (mimic-code conventions: CareVue norepinephrine 30047 and
    epinephrine 30044 are charted in mcg/min)."""
    out = {i: "mcgkgmin" for i in vasopressors().items}
    for c in concepts().of_kind("vasopressor"):
        for t in INPUT_TABLES:
            for m in c.mappings(SOURCE, t):
                for unit, items in m.extra.get("empty_rate_unit", {}).items():
                    out.update({int(i): normalise_rate_unit(unit) for i in items})
    return out


def _vaso_rates(df: pd.DataFrame, sc, tr: TableReport, weight_col: str) -> pd.DataFrame:
    """Convert `rate`/`rateuom` to mcg/kg/min using `weight_col`; count/raise unknown units."""
    spellings = {u: normalise_rate_unit(u) for u in df["rateuom"].dropna().unique()}
    units = df["rateuom"].map(spellings)  # normalised once per distinct spelling
    units = units.fillna(df["itemid"].map(default_rate_units()))
    known = units.isin(list(RATE_UNITS))
    if (~known).any():
        if sc.params.on_bad_rows == "error":
            i = np.flatnonzero(~known.to_numpy())[0]
            raise MalformedRowError(
                f"{sc.path}: data row {int(df['_row'].iloc[i])} (line {int(df['_row'].iloc[i]) + 1}), column "
                f"{sc.actual.get('rateuom', 'rateuom')!r}: unknown vasopressor rate unit "
                f"{df['rateuom'].iloc[i]!r} for ITEMID {int(df['itemid'].iloc[i])} (expected one of mcg/kg/min, "
                f"mcg/min, mg/kg/min, mg/min, per hour; table {sc.table})"
            )
        tr.drop("unknown_rate_unit", int((~known).sum()))
        df, units = df[known], units[known]
    spec = units.map(RATE_UNITS)
    factor = spec.map(lambda x: x[0]).astype(float)
    per_kg = spec.map(lambda x: x[1]).astype(bool)
    per_hr = spec.map(lambda x: x[2]).astype(bool)
    w = df[weight_col].astype(float)
    no_w = per_kg & ~((w > 0) & (w <= WEIGHT_MAX_KG))
    tr.drop("no_weight_for_rate_unit", int(no_w.sum()))
    rate = df["rate"].astype(float) * factor
    rate = rate.where(~per_kg, rate / w)
    rate = rate.where(~per_hr, rate / 60.0)
    out = df.assign(rate=rate)
    return out[~no_w.to_numpy()]


def _rewritten(b: Batch) -> pa.Array:
    return pc.fill_null(pc.equal(pc.utf8_lower(b["statusdescription"]), "rewritten"), False)


def mv_antibiotic_items() -> dict[int, str]:
    """MetaVision antibiotic ITEMID -> label: the file the dictionary names under
    `antibiotic.sources.mimic3` (table inputevents_mv, `items`)."""
    d = concepts()
    (m,) = d["antibiotic"].mappings(SOURCE, "inputevents_mv")
    return _read_items(Path(d.path).with_name(m.extra["items"]))


@lru_cache(maxsize=4)
def _read_items(path: Path) -> dict[int, str]:
    df = pd.read_csv(path, comment="#")
    if list(df.columns) != ["itemid", "label"] or df["itemid"].duplicated().any():
        raise ValueError(f"{path}: expected unique itemid,label rows")
    return dict(zip(df["itemid"].astype(int), df["label"].astype(str), strict=True))


def inputevents_mv(
    data_dir: Path,
    params: ReaderParams,
    rep: ExtractionReport,
    index: StayIndex,
    chart_weights: pd.DataFrame,
    progress: bool,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(MetaVision vasopressor rates, first admission weight per stay, antibiotic
    administrations (stay_id, time, drug))."""
    tr = rep.tables.setdefault("INPUTEVENTS_MV", TableReport("INPUTEVENTS_MV"))
    sc = scan(data_dir, "INPUTEVENTS_MV", params, tr, progress)
    wanted = pa.array(sorted(concepts().items(SOURCE, "inputevents_mv")), I32)
    stay_w = chart_weights.set_index("stay_id")["weight_kg"]
    parts: list[pd.DataFrame] = []
    weights = FirstPerStay(index)
    abx_items = mv_antibiotic_items()
    abx_wanted = pa.array(sorted(abx_items), I32)
    abx_parts: list[pd.DataFrame] = []

    def reset() -> None:
        parts.clear()
        weights.clear()
        abx_parts.clear()

    def antibiotics(b: Batch) -> None:
        """Take the antibiotic rows out of the batch: their administration times (issue 14,
        defect 2) are kept, rewritten (superseded) rows and rows without a start or a known
        stay are dropped and counted."""
        items = pc.fill_null(pc.is_in(b["itemid"], value_set=abx_wanted), False)
        if not pc.any(items).as_py():
            return
        sel = items
        if b.has("statusdescription"):
            rewritten = _rewritten(b)
            tr.drop("status_rewritten", int(pc.sum(pc.and_(items, rewritten)).as_py() or 0))
            sel = pc.and_(items, pc.invert(rewritten))
        try:
            t = ts_us(pc.cast(pc.filter(b["starttime"], sel), io.TS), -1)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            t = np.full(int(pc.sum(sel).as_py() or 0), -1, np.int64)
        sid = ids(pc.filter(b["icustay_id"], sel))
        item = pc.filter(b["itemid"], sel).to_numpy(zero_copy_only=False)
        keep = (t >= 0) & np.isin(sid, index.ids)
        tr.drop("antibiotic_without_start_or_known_stay", int((~keep).sum()))
        tr.rows_kept += int(keep.sum())
        abx_parts.append(
            pd.DataFrame(
                {
                    "stay_id": sid[keep],
                    "time": t[keep].astype("datetime64[us]"),
                    "drug": [abx_items[int(i)] for i in item[keep]],
                }
            )
        )
        b.filter(pc.invert(items))

    def handle(b: Batch) -> None:
        b.convert("icustay_id", "itemid", "rate", "patientweight")
        # admission weight per stay, from every row (the first by starttime wins later)
        pw = b["patientweight"]
        has_w = pc.and_(pc.is_valid(b["icustay_id"]), pc.greater(pc.fill_null(pw, 0.0), 0.0))
        if pc.any(has_w).as_py():
            try:  # best effort: a malformed start time of a non-vasopressor row only loses its weight
                st = pc.cast(pc.filter(b["starttime"], has_w), io.TS)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                st = None
            if st is not None:
                w = pc.filter(pw, has_w).to_numpy(zero_copy_only=False)
                ok = w <= WEIGHT_MAX_KG
                weights.add(
                    ids(pc.filter(b["icustay_id"], has_w))[ok],
                    ts_us(st, np.iinfo(np.int64).max)[ok],
                    w[ok],
                )
        antibiotics(b)
        keep_items(b, tr, wanted)
        if b.has("statusdescription"):
            rewritten = _rewritten(b)
            tr.drop("status_rewritten", int(pc.sum(rewritten).as_py() or 0))
            b.filter(pc.invert(rewritten))
        b.convert("starttime", "endtime")
        drop_null(b, tr, "starttime", "missing_starttime")
        drop_null(b, tr, "endtime", "missing_endtime")
        drop_null(b, tr, "rate", "missing_rate")
        keep_known_stays(b, tr, index, "icustay_id")
        if not len(b):
            return
        df = pd.DataFrame(
            {
                "stay_id": ids(b["icustay_id"]),
                "itemid": b["itemid"].to_numpy(zero_copy_only=False),
                "starttime": ts_us(b["starttime"], 0),
                "endtime": ts_us(b["endtime"], 0),
                "rate": b["rate"].to_numpy(zero_copy_only=False),
                "rateuom": b["rateuom"].to_pandas(),
                "patientweight": pc.fill_null(b["patientweight"], np.nan).to_numpy(
                    zero_copy_only=False
                ),
                "_row": b.row_numbers(),
            }
        )
        bad_order = df["endtime"] < df["starttime"]
        tr.drop("endtime_before_starttime", int(bad_order.sum()))
        df = df[~bad_order]
        pwt = df["patientweight"]
        df["weight"] = pwt.where((pwt > 0) & (pwt <= WEIGHT_MAX_KG), df["stay_id"].map(stay_w))
        df = _vaso_rates(df, sc, tr, "weight")
        tr.rows_kept += len(df)
        parts.append(df)

    sc.run(handle, reset)
    cols = ["stay_id", "itemid", "starttime", "endtime", "rate"]
    vaso = pd.concat(parts)[cols] if parts else pd.DataFrame(columns=cols)
    abx = (
        pd.concat(abx_parts, ignore_index=True)
        if abx_parts
        else pd.DataFrame({"stay_id": [], "time": pd.Series(dtype="datetime64[us]"), "drug": []})
    )
    return vaso, weights.result(), abx[ABX_COLUMNS]


def inputevents_cv(
    data_dir: Path,
    out: Path,
    params: ReaderParams,
    rep: ExtractionReport,
    index: StayIndex,
    stays: pd.DataFrame,
    mv_vaso: pd.DataFrame,
    progress: bool,
) -> None:
    """CareVue vasopressor rates -> intervals; written with the MetaVision rows as the
    events part `inputevents.parquet` in `out`, sorted by stay and start."""
    tr = rep.tables.setdefault("INPUTEVENTS_CV", TableReport("INPUTEVENTS_CV"))
    sc = scan(data_dir, "INPUTEVENTS_CV", params, tr, progress)
    wanted = pa.array(sorted(concepts().items(SOURCE, "inputevents_cv")), I32)
    stay_w = stays.set_index("stay_id")["weight_kg"]
    parts: list[pd.DataFrame] = []

    def handle(b: Batch) -> None:
        b.convert("icustay_id", "itemid", "rate")
        keep_items(b, tr, wanted)
        b.convert("charttime")
        drop_null(b, tr, "charttime", "missing_charttime")
        drop_null(b, tr, "rate", "missing_rate")
        keep_known_stays(b, tr, index, "icustay_id")
        if not len(b):
            return
        df = pd.DataFrame(
            {
                "stay_id": ids(b["icustay_id"]),
                "itemid": b["itemid"].to_numpy(zero_copy_only=False),
                "starttime": ts_us(b["charttime"], 0),
                "rate": b["rate"].to_numpy(zero_copy_only=False),
                "rateuom": b["rateuom"].to_pandas(),
                "_row": b.row_numbers(),
            }
        )
        df["weight"] = df["stay_id"].map(stay_w)
        df = _vaso_rates(df, sc, tr, "weight")
        tr.rows_kept += len(df)
        parts.append(df)

    sc.run(handle, parts.clear)
    cv = (
        pd.concat(parts)
        if parts
        else pd.DataFrame(columns=["stay_id", "itemid", "starttime", "rate"])
    )
    cv = cv_intervals(cv)
    frames = [f for f in (mv_vaso, cv) if len(f)]
    vaso = (
        pd.concat(frames)
        if frames
        else pd.DataFrame(columns=["stay_id", "itemid", "starttime", "endtime", "rate"])
    )
    item = vaso["itemid"].to_numpy(np.int64)
    table = pa.table(
        {
            "stay_id": pa.array(vaso["stay_id"].to_numpy(np.int64)),
            "time": times_to_arrow(vaso["starttime"].to_numpy(np.int64)),
            "concept": vasopressors().concept(item),
            "value": pa.array(vaso["rate"].to_numpy(np.float64)),
            "end_time": times_to_arrow(vaso["endtime"].to_numpy(np.int64)),
            "text": pa.nulls(len(vaso), STR),
        },
        schema=io.EVENTS,
    )
    table = table.sort_by([("stay_id", "ascending"), ("time", "ascending")])
    pq.write_table(table, out / "inputevents.parquet", compression="zstd")
    rep.outputs["events/inputevents.parquet"] = table.num_rows


def cv_intervals(cv: pd.DataFrame, max_hours: float = CV_MAX_HOURS) -> pd.DataFrame:
    """CareVue rates (stay_id, itemid, starttime us, rate) -> rows with an `endtime` (us).

    A rate holds from its charttime until the next (strictly later) charting of the same drug
    in the same stay, at most `max_hours`.
    """
    if not len(cv):
        return cv.assign(endtime=pd.Series(dtype=np.int64))
    item = cv["itemid"].to_numpy(np.int64)
    cv = cv.assign(drug=vasopressors().concept(item).to_numpy(zero_copy_only=False))
    cv = cv.sort_values(["stay_id", "drug", "starttime"], kind="stable").reset_index(drop=True)
    group = cv.groupby(["stay_id", "drug"], sort=False).ngroup().to_numpy(np.int64)
    t = cv["starttime"].to_numpy(np.int64)
    # rows are sorted by (group, time): the first row strictly after (g, t) is the next charting
    keys = np.rec.fromarrays([group, t])
    nxt = np.searchsorted(keys, keys, side="right")
    nxt_c = np.minimum(nxt, len(t) - 1)
    has_next = (nxt < len(t)) & (group[nxt_c] == group)
    cap = t + int(max_hours * US_PER_HOUR)
    end = np.where(has_next, np.minimum(t[nxt_c], cap), cap)
    return cv.assign(endtime=end).drop(columns="drug")
