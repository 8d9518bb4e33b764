"""MIMIC-IV stay-level event tables -> io.EVENTS parts (chartevents, labevents, outputevents,
procedureevents), streamed in record batches.

Each item ID maps to its concept through the dictionary's ``mimic4`` mappings
(`ConceptMap`); values are written in the concept's unit (``convert``, ``negate``), with
the charted text kept for the ``text_ids`` items. Nothing is dropped without a count in the
table's report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data_prep import io as dio
from data_prep.concepts.dictionary import concepts
from data_prep.sources import mimic4_tables as T
from data_prep.sources.csv_stream import (
    I32,
    STR,
    TS,
    US_PER_HOUR,
    Batch,
    ExtractionReport,
    ParquetSink,
    TableReport,
    drop_null,
    ids,
    keep_items,
    times_to_arrow,
    ts_us,
)
from data_prep.sources.stay_index import FirstPerStay, StayIndex, keep_known_stays

# Chart and output rows of a stay are kept inside [intime - 24 h, outtime + 1 h] (as MIMIC-III).
CHART_BEFORE_HOURS = 24.0
CHART_AFTER_HOURS = 1.0
WEIGHT_MAX_KG = 500.0


class ConceptMap:
    """Item ID -> (concept, scale, offset) of one MIMIC-IV table, as vectorised lookups."""

    def __init__(self, table: str):
        d = concepts()
        items = d.items(T.SOURCE, table)
        if not items:
            raise ValueError(f"dictionary: no {T.SOURCE} items for table {table!r}")
        self.ids = np.array(sorted(items), np.int64)
        self.value_set = pa.array(self.ids, I32)
        self.names = sorted({c for c, _, _ in items.values()})
        index = {n: i for i, n in enumerate(self.names)}
        self.concept = np.array([index[items[i][0]] for i in self.ids], np.int32)
        self.scale = np.array([items[i][1] for i in self.ids], np.float64)
        self.offset = np.array([items[i][2] for i in self.ids], np.float64)
        maps = [m for c in d.concepts.values() for m in c.mappings(T.SOURCE, table)]
        self.text_ids = pa.array(
            sorted({int(i) for m in maps for i in m.extra.get("text_ids", [])}), I32
        )
        self.zero_ids = pa.array(
            sorted({i for m in maps if m.extra.get("drop_zero") for i in m.all_ids}), I32
        )
        self.labels: dict[int, str] = {
            int(k): str(v) for m in maps for k, v in (m.extra.get("labels") or {}).items()
        }

    def ids_of(self, *names: str) -> pa.Array:
        """The item IDs of these concepts."""
        want = [self.names.index(n) for n in names if n in self.names]
        return pa.array(self.ids[np.isin(self.concept, want)], I32)

    def pos(self, itemid: pa.Array) -> np.ndarray:
        """Position of each (known) item ID in `ids`."""
        return pc.index_in(itemid, value_set=self.value_set).to_numpy(zero_copy_only=False)

    def concept_array(self, pos: np.ndarray) -> pa.Array:
        return pa.DictionaryArray.from_arrays(
            pa.array(self.concept[pos], pa.int32()), pa.array(self.names, STR)
        )

    def values(self, pos: np.ndarray, valuenum: pa.Array) -> np.ndarray:
        """Values in the concept's unit (NaN where missing)."""
        v = pc.fill_null(valuenum.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)
        return v * self.scale[pos] + self.offset[pos]

    def text(self, itemid: pa.Array, value: pa.Array) -> pa.Array:
        """The charted text of the text items, null elsewhere."""
        return pc.if_else(pc.is_in(itemid, value_set=self.text_ids), value, pa.scalar(None, STR))


def events_table(
    stay: pa.Array | np.ndarray,
    time: pa.Array,
    concept: pa.Array,
    value: np.ndarray,
    end_time: pa.Array | None = None,
    text: pa.Array | None = None,
) -> pa.Table:
    """An io.EVENTS table (missing values: NaN -> null)."""
    n = len(time)
    return pa.table(
        {
            "stay_id": pa.array(stay, pa.int64()) if isinstance(stay, np.ndarray) else stay,
            "time": time,
            "concept": concept,
            "value": pa.array(value, pa.float64(), mask=np.isnan(value)),
            "end_time": end_time if end_time is not None else pa.nulls(n, TS),
            "text": text if text is not None else pa.nulls(n, STR),
        }
    )


def drop_zeros(b: Batch, tr: TableReport, cmap: ConceptMap) -> None:
    """Drop rows of `drop_zero` items whose value is 0 (FiO2 charted as 0 %), counted."""
    if not len(cmap.zero_ids) or not len(b):
        return
    zero = pc.and_(pc.is_in(b["itemid"], value_set=cmap.zero_ids), pc.equal(b["valuenum"], 0.0))
    zero = pc.fill_null(zero, False)
    n = int(pc.sum(zero).as_py() or 0)
    if n:
        b.filter(pc.invert(zero))
        tr.drop("zero_value", n)


def count_units(tr: TableReport, cmap: ConceptMap, pos: np.ndarray, uom: pa.Array | None) -> None:
    """Count the rows written per (concept, unit spelling): units:<concept>:<unit>."""
    if uom is None or not len(pos):
        return
    enc = pc.dictionary_encode(uom)
    raw = [*enc.dictionary.to_pylist(), ""]
    code = pc.fill_null(enc.indices, len(raw) - 1).to_numpy(zero_copy_only=False)
    width = len(raw)
    keys, counts = np.unique(cmap.concept[pos].astype(np.int64) * width + code, return_counts=True)
    for k, n in zip(keys, counts, strict=True):
        tr.count_unit(f"unit:{cmap.names[k // width]}:{raw[k % width]}", int(n))


def _sink(out: Path, table: str, params: T.Mimic4Params) -> ParquetSink:
    (out / "events").mkdir(parents=True, exist_ok=True)
    return ParquetSink(out / "events" / f"{table}.parquet", dio.EVENTS, params.batch_rows)


def chartevents(
    data_dir: Path,
    out: Path,
    params: T.Mimic4Params,
    rep: ExtractionReport,
    index: StayIndex,
    progress: bool,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Chart events; returns (has-chart flag per index stay, first charted weight per stay)."""
    scan = T.scan(data_dir, "chartevents", params, rep, progress)
    tr = scan.report
    cmap = ConceptMap("chartevents")
    sink = _sink(out, "chartevents", params)
    weight_ids = cmap.ids_of("weight")
    has_chart = np.zeros(len(index.ids), dtype=bool)
    first_w = FirstPerStay(index)
    implausible = [0]

    def reset() -> None:
        sink.reset()
        has_chart[:] = False
        first_w.clear()
        implausible[0] = 0

    def handle(b: Batch) -> None:
        b.convert("stay_id", "itemid", "valuenum")
        found, pos = index.by_id(ids(pc.unique(b["stay_id"])))
        has_chart[pos[found]] = True
        keep_items(b, tr, cmap.value_set)
        b.convert("charttime")
        drop_null(b, tr, "charttime", "missing_charttime")
        found, pos = index.by_id(ids(b["stay_id"]))
        t = ts_us(b["charttime"], 0)
        inside = index.in_window(pos, t, CHART_BEFORE_HOURS, CHART_AFTER_HOURS)
        tr.drop("unknown_stay", int((~found).sum()))
        tr.drop("outside_stay", int((found & ~inside).sum()))
        b.filter(found & inside)
        drop_zeros(b, tr, cmap)
        if not len(b):
            return
        p = cmap.pos(b["itemid"])
        value = cmap.values(p, b["valuenum"])
        text = cmap.text(b["itemid"], b["value"])
        sink.write(
            events_table(b["stay_id"], b["charttime"], cmap.concept_array(p), value, text=text)
        )
        tr.rows_kept += len(b)
        count_units(tr, cmap, p, b["valueuom"] if b.has("valueuom") else None)
        w = pc.fill_null(pc.is_in(b["itemid"], value_set=weight_ids), False).to_numpy(
            zero_copy_only=False
        )
        if w.any():
            vals = value[w]
            ok = (vals > 0) & (vals <= WEIGHT_MAX_KG)
            implausible[0] += int((~ok).sum())
            stay = ids(b["stay_id"])[w]
            first_w.add(stay[ok], ts_us(b["charttime"], 0)[w][ok], vals[ok])

    scan.run(handle, reset)
    rep.outputs["events/chartevents.parquet"] = sink.close()
    rep.tables.setdefault("stays", TableReport("stays")).drop(
        "implausible_charted_weight", implausible[0]
    )
    return has_chart, first_w.result()


def _specimen_codes(text: pa.Array) -> np.ndarray:
    """Specimen type text ("ART.", "VEN.", ...) -> the blood_gas_specimen codes (0 = other)."""
    codes = concepts()["blood_gas_specimen"].extra["codes"]
    names = list(codes)
    t = pc.utf8_upper(pc.utf8_trim_whitespace(text.cast(STR)))
    t = pc.utf8_trim_whitespace(pc.utf8_rtrim(t, characters="."))
    pos = pc.fill_null(pc.index_in(t, value_set=pa.array(names)), -1).to_numpy(zero_copy_only=False)
    table = np.array([codes[n] for n in names], np.float64)
    return np.where(pos >= 0, table[np.maximum(pos, 0)], 0.0)


def labevents(
    data_dir: Path,
    out: Path,
    params: T.Mimic4Params,
    rep: ExtractionReport,
    index: StayIndex,
    progress: bool,
) -> None:
    """Lab events, assigned to stays by subject and time (intime - lookback .. outtime), as
    MIMIC-III's labs, whether or not the row has a hadm_id. The specimen type (52033) of a
    draw is written as a blood_gas_specimen event at the time and stay of each pO2 of the
    same specimen_id."""
    scan = T.scan(data_dir, "labevents", params, rep, progress)
    tr = scan.report
    cmap = ConceptMap("labevents")
    sink = _sink(out, "labevents", params)
    spec_ids, po2_ids = cmap.ids_of("blood_gas_specimen"), cmap.ids_of("po2")
    spec_parts: list[pd.DataFrame] = []
    po2_parts: list[pd.DataFrame] = []

    def reset() -> None:
        sink.reset()
        spec_parts.clear()
        po2_parts.clear()

    def handle(b: Batch) -> None:
        b.convert("subject_id", "hadm_id", "specimen_id", "itemid", "valuenum")
        keep_items(b, tr, cmap.value_set)
        b.convert("charttime")
        drop_null(b, tr, "charttime", "missing_charttime")
        is_spec = pc.fill_null(pc.is_in(b["itemid"], value_set=spec_ids), False)
        if len(b) and pc.any(is_spec).as_py():
            sid = ids(pc.filter(b["specimen_id"], is_spec))
            code = _specimen_codes(pc.filter(b["value"], is_spec))
            tr.drop("specimen_type_without_specimen_id", int((sid < 0).sum()))
            spec_parts.append(pd.DataFrame({"specimen_id": sid[sid >= 0], "code": code[sid >= 0]}))
            b.filter(pc.invert(is_spec))
        drop_null(b, tr, "valuenum", "missing_valuenum")
        drop_zeros(b, tr, cmap)
        if not len(b):
            return
        t = ts_us(b["charttime"], 0)
        stay = index.by_subject_time(ids(b["subject_id"]), t, params.lab_lookback_hours)
        ok = stay >= 0
        tr.drop("no_stay_for_subject_time", int((~ok).sum()))
        b.filter(ok)
        stay, t = stay[ok], t[ok]
        if not len(b):
            return
        tr.count_unit("kept_without_hadm_id", b["hadm_id"].null_count)
        p = cmap.pos(b["itemid"])
        sink.write(
            events_table(stay, b["charttime"], cmap.concept_array(p), cmap.values(p, b["valuenum"]))
        )
        tr.rows_kept += len(b)
        count_units(tr, cmap, p, b["valueuom"] if b.has("valueuom") else None)
        po2 = pc.fill_null(pc.is_in(b["itemid"], value_set=po2_ids), False).to_numpy(
            zero_copy_only=False
        )
        if po2.any():
            po2_parts.append(
                pd.DataFrame(
                    {"specimen_id": ids(b["specimen_id"])[po2], "stay_id": stay[po2], "t": t[po2]}
                )
            )

    scan.run(handle, reset)
    _write_specimens(sink, tr, spec_parts, po2_parts)
    rep.outputs["events/labevents.parquet"] = sink.close()


def _write_specimens(
    sink: ParquetSink,
    tr: TableReport,
    spec_parts: list[pd.DataFrame],
    po2_parts: list[pd.DataFrame],
) -> None:
    """blood_gas_specimen events: the specimen type of each pO2's specimen_id, at its time."""
    cols = ["specimen_id", "code"]
    spec = pd.concat(spec_parts) if spec_parts else pd.DataFrame(columns=cols)
    po2 = (
        pd.concat(po2_parts, ignore_index=True)
        if po2_parts
        else pd.DataFrame(columns=["specimen_id", "stay_id", "t"])
    )
    arterial = concepts()["blood_gas_specimen"].extra["arterial_code"]
    # several type rows of one specimen: arterial if any says so, else the first
    n_codes = spec.groupby("specimen_id")["code"].nunique()
    tr.count_unit("specimens_with_conflicting_types", int((n_codes > 1).sum()))
    spec = spec.assign(art=spec["code"] == arterial).sort_values(
        "art", ascending=False, kind="stable"
    )
    spec = spec.drop_duplicates("specimen_id")[cols]
    m = po2[po2["specimen_id"] >= 0].merge(spec, on="specimen_id", how="inner")
    tr.count_unit("po2_with_specimen_type", len(m))
    tr.count_unit("po2_without_specimen_type", len(po2) - len(m))
    tr.count_unit(
        "specimen_types_without_po2", int((~spec["specimen_id"].isin(po2["specimen_id"])).sum())
    )
    if not len(m):
        return
    concept = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(len(m), np.int32)), pa.array(["blood_gas_specimen"], STR)
    )
    sink.write(
        events_table(
            m["stay_id"].to_numpy(np.int64),
            times_to_arrow(m["t"].to_numpy(np.int64)),
            concept,
            m["code"].to_numpy(np.float64),
        )
    )


def outputevents(
    data_dir: Path,
    out: Path,
    params: T.Mimic4Params,
    rep: ExtractionReport,
    index: StayIndex,
    progress: bool,
) -> None:
    """Urine output (mL); the GU irrigant instilled (227488) is written negated."""
    scan = T.scan(data_dir, "outputevents", params, rep, progress)
    tr = scan.report
    cmap = ConceptMap("outputevents")
    sink = _sink(out, "outputevents", params)

    def handle(b: Batch) -> None:
        b.convert("stay_id", "itemid", "value")
        keep_items(b, tr, cmap.value_set)
        drop_null(b, tr, "value", "missing_value")
        neg = pc.fill_null(pc.less(b["value"], 0.0), False)
        tr.drop("negative_value", int(pc.sum(neg).as_py() or 0))
        b.filter(pc.invert(neg))
        b.convert("charttime")
        drop_null(b, tr, "charttime", "missing_charttime")
        pos = keep_known_stays(b, tr, index, "stay_id")
        ok = index.in_window(pos, ts_us(b["charttime"], 0), CHART_BEFORE_HOURS, CHART_AFTER_HOURS)
        tr.drop("outside_stay", int((~ok).sum()))
        b.filter(ok)
        if not len(b):
            return
        p = cmap.pos(b["itemid"])
        sink.write(
            events_table(
                b["stay_id"], b["charttime"], cmap.concept_array(p), cmap.values(p, b["value"])
            )
        )
        tr.rows_kept += len(b)

    scan.run(handle, sink.reset)
    rep.outputs["events/outputevents.parquet"] = sink.close()


def procedureevents(
    data_dir: Path,
    out: Path,
    params: T.Mimic4Params,
    rep: ExtractionReport,
    index: StayIndex,
    progress: bool,
) -> None:
    """Ventilation intervals [starttime, endtime] -> `ventilation` events, one every
    hold_hours from starttime, each with end_time = min(time + hold_hours, endtime): the
    concept layer's hold rule ([t, t + hold_hours)) and the events' end_time both cover the
    interval. A row without endtime gives one event at starttime (no end_time)."""
    scan = T.scan(data_dir, "procedureevents", params, rep, progress)
    tr = scan.report
    cmap = ConceptMap("procedureevents")
    sink = _sink(out, "procedureevents", params)
    hold_us = int(concepts()["ventilation"].extra["hold_hours"] * US_PER_HOUR)

    def handle(b: Batch) -> None:
        b.convert("stay_id", "itemid")
        keep_items(b, tr, cmap.value_set)
        if b.has("statusdescription"):
            rewritten = pc.fill_null(
                pc.equal(pc.utf8_lower(b["statusdescription"]), "rewritten"), False
            )
            tr.drop("status_rewritten", int(pc.sum(rewritten).as_py() or 0))
            b.filter(pc.invert(rewritten))
        b.convert("starttime", "endtime")
        drop_null(b, tr, "starttime", "missing_starttime")
        keep_known_stays(b, tr, index, "stay_id")
        if not len(b):
            return
        s = ts_us(b["starttime"], 0)
        has_end = b["endtime"].is_valid().to_numpy(zero_copy_only=False)
        e = np.where(has_end, ts_us(b["endtime"], 0), s)
        bad = e < s
        tr.drop("endtime_before_starttime", int(bad.sum()))
        tr.count_unit("intervals_without_endtime", int((~has_end & ~bad).sum()))
        keep = ~bad
        s, e, has_end = s[keep], e[keep], has_end[keep]
        stay = ids(b["stay_id"])[keep]
        item = b["itemid"].to_numpy(zero_copy_only=False)[keep].astype(np.int64)
        if not len(s):
            return
        n = np.maximum(1, -(-(e - s) // hold_us))  # ceil((e - s) / hold), at least one
        row = np.repeat(np.arange(len(s)), n)
        k = np.arange(len(row)) - np.repeat(np.cumsum(n) - n, n)
        t = s[row] + k * hold_us
        end = np.minimum(t + hold_us, e[row])
        end_arr = pa.array(end.astype("datetime64[us]"), TS, mask=~has_end[row])
        p = cmap.pos(pa.array(item[row], I32))
        text = pa.array(pd.Series(item[row]).map(cmap.labels), STR, from_pandas=True)
        sink.write(
            events_table(
                stay[row],
                times_to_arrow(t),
                cmap.concept_array(p),
                np.full(len(row), np.nan),
                end_time=end_arr,
                text=text,
            )
        )
        tr.rows_kept += int(keep.sum())
        tr.count_unit("ventilation_events_written", len(row))

    scan.run(handle, sink.reset)
    rep.outputs["events/procedureevents.parquet"] = sink.close()
