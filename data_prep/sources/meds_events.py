"""Second pass over a MEDS dataset: stay-level events and admission events.

Per record batch, every row's code is mapped to its class (data_prep.sources.meds_read.
CodeTable: one classification per distinct code) and the rows are handled by role, with
numpy / pyarrow compute only (no Python loop over rows):

* events (measurements): the stay from the stay id column (kept inside the stay's window,
  as the MIMIC-III chart rows: [intime - 24 h, outtime + 1 h]) or, for rows without one
  (labs), by subject and time ([intime - lookback, outtime]); value * scale + offset from
  the unit part of the code; written per batch to ``events/<part>.parquet``.
* rows re-timed to a partner (``pair_with``: the blood-gas specimen type to its pO2),
  vasopressor infusions (START rate + END time paired on the order id, weight at the start)
  and intervals (START and END rows: ventilation from procedureevents) are buffered per shard (MEDS keeps a subject in one shard) and resolved at its end.
* admission events (antibiotics, cultures, sepsis diagnoses) are collected and written
  once, with a missing hadm_id taken from the hospital admission the event falls in.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data_prep import io as dio
from data_prep.sources import meds_mapping as mm
from data_prep.sources.extract_output import US_PER_HOUR, ParquetSink, peak_rss_mb  # noqa: F401
from data_prep.sources.meds_buffered import (  # noqa: F401  (re-exported)
    CHART_AFTER_HOURS,
    CHART_BEFORE_HOURS,
    NULL_ID,
    TS,
    WEIGHT_MAX_KG,
    _Buffered,
    _np_f64,
    _np_i64,
    _str,
)
from data_prep.sources.meds_read import CodeTable, MedsDataError, Shard, batches
from data_prep.sources.stay_index import FirstPerStay, StayIndex


class Pass2(_Buffered):
    """Handles the batches of every shard; `finish` writes what was buffered."""

    def __init__(
        self,
        mapping: mm.Mapping,
        codes: CodeTable,
        stays: pd.DataFrame,
        admissions: pd.DataFrame,
        options,
        out_dir: Path,
        batch_rows: int,
    ):
        self.m, self.codes, self.options, self.out = mapping, codes, options, Path(out_dir)
        self.batch_rows = batch_rows
        self.index = StayIndex(stays)
        self.admissions = admissions
        self.weights = FirstPerStay(self.index)  # charted weights (concept weight)
        self.inf_weights = FirstPerStay(self.index)  # weights at infusion starts
        self.has_chart = np.zeros(len(self.index.ids), bool)
        names = sorted(
            {r.concept for r in mapping.events}
            | {d.concept for d in (mapping.infusions.drugs if mapping.infusions else ())}
            | {r.concept for r in mapping.intervals}
        )
        self.concepts = names
        self.concept_arr = pa.array(names, pa.string())
        self.concept_id = {n: i for i, n in enumerate(names)}
        parts = sorted(
            {r.part for r in mapping.events}
            | ({"infusions"} if mapping.infusions else set())
            | {r.part for r in mapping.intervals}
        )
        (self.out / "events").mkdir(parents=True, exist_ok=True)
        self.sinks = {
            p: ParquetSink(self.out / "events" / f"{p}.parquet", dio.EVENTS) for p in parts
        }
        self.part_id = {p: i for i, p in enumerate(parts)}
        self.counts: dict[str, int] = defaultdict(int)  # concept -> rows written
        self.dropped: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.pairing: dict[str, dict[str, int]] = defaultdict(dict)  # re-timed rows (pair_with)
        from data_prep.sources.meds_resolve import admission_counts

        self.adm_parts: list[pd.DataFrame] = []  # one shard's admission events
        self.adm_sink = ParquetSink(self.out / "admission_events.parquet", dio.ADMISSION_EVENTS)
        self.adm_counts = admission_counts()
        self.shard_subjects: dict[str, np.ndarray] = {}
        self.rows_read = 0
        self._ncls = -1
        c = mapping.columns
        self.cols = ["subject_id", "time", "code", "numeric_value", "text_value"]
        self.cols += [v for v in c.values() if v not in self.cols]
        for r in mapping.admission_rules:
            self.cols += [x for x in r.require_columns if x not in self.cols]

    # ----------------------------------------------------------------- per-class arrays
    def _tables(self) -> None:
        cl = self.codes.classes
        if len(cl) == self._ncls:
            return
        self._ncls = len(cl)
        ev = self.m.events
        self.role_of = np.array([c.role for c in cl] + [-1], np.int8)
        self.rule_of = np.array([c.rule for c in cl] + [-1], np.int32)
        self.scale_of = np.array([c.scale for c in cl] + [1.0])
        self.offset_of = np.array([c.offset for c in cl] + [0.0])
        self.drop_of = np.array([c.drop is not None for c in cl] + [False])
        self.cid_of = np.array([self.concept_id.get(c.concept, -1) for c in cl] + [-1], np.int32)
        self.part_of = np.array(
            [self.part_id[ev[c.rule].part] if c.role == mm.EVENT else -1 for c in cl] + [-1],
            np.int32,
        )
        self.text_of = np.array([c.text for c in cl] + [None], object)
        self.item_of = np.array([c.item for c in cl] + [None], object)

    # ----------------------------------------------------------------- a shard
    def shard(self, shard: Shard) -> None:
        self.shard_name, self.shard_path = shard.name, shard.path
        self.buf_pair: list[pd.DataFrame] = []
        self.buf_targets: list[pd.DataFrame] = []
        self.buf_start: list[pd.DataFrame] = []
        self.buf_end: list[pd.DataFrame] = []
        self.buf_weight: list[pd.DataFrame] = []
        self.buf_iv: list[pd.DataFrame] = []
        subjects = []
        for b in batches(shard, self.cols, self.batch_rows):
            self.rows_read += b.num_rows
            cls = self.codes.rows(b.column("code"))
            self._tables()
            subjects.append(np.unique(_np_i64(b.column("subject_id"))))
            stay_col = self.m.column("stay_id")
            if stay_col:
                self._mark_chart(b.column(stay_col), cls)
            role = self.role_of[cls]
            for r, fn in (
                (mm.EVENT, self._events),
                (mm.INF_START, self._inf_start),
                (mm.INF_END, self._inf_end),
                (mm.INF_WEIGHT, self._inf_weight),
                (mm.ADMISSION_EVENT, self._admission),
                (mm.IV_START, self._interval),
                (mm.IV_END, self._interval),
            ):
                rows = np.flatnonzero(role == r)
                if len(rows):
                    fn(b.take(pa.array(rows)), cls[rows])
        self.shard_subjects[shard.name] = (
            np.unique(np.concatenate(subjects)) if subjects else np.array([], np.int64)
        )
        self._resolve_pairs()
        self._resolve_infusions()
        self._resolve_intervals()
        from data_prep.sources.meds_resolve import flush_admission_events

        flush_admission_events(self)

    def _mark_chart(self, stay: pa.Array, cls: np.ndarray) -> None:
        role = self.role_of[cls]
        s = _np_i64(stay)[(role != mm.STAY_IN) & (role != mm.STAY_OUT)]
        found, pos = self.index.by_id(np.unique(s[s >= 0]))
        self.has_chart[pos[found]] = True

    def _null_time(self, b: pa.RecordBatch, cls: np.ndarray, where: str) -> np.ndarray:
        """Mask of rows with a time; null times raise (on_bad_rows error) or are counted."""
        ok = b.column("time").is_valid().to_numpy(zero_copy_only=False)
        if ok.all():
            return ok
        first = int(np.flatnonzero(~ok)[0])
        c = self.codes.classes[cls[first]]
        if self.options.on_bad_rows == "error":
            code = next(k for k, v in self.codes.ids.items() if v == cls[first])
            raise MedsDataError(
                f"{self.shard_path}: column 'time' is null in {int((~ok).sum())} row(s) of mapped "
                f"code(s), first {code!r} ({self.m.path.name}: {c.key}); a measurement needs a time "
                "(labels.on_bad_rows: skip-and-count skips and counts such rows)"
            )
        self._drop_by_class(cls[~ok], "null_time")
        return ok

    def _drop(self, key: str, reason: str, n: int) -> None:
        if n:
            self.dropped[key][reason] += int(n)

    def _drop_by_class(self, cls: np.ndarray, reason: str | None = None) -> None:
        """Count the rows of `cls` (class ids) as dropped, per class, in one pass; `reason`
        None: each class's own drop reason (its mapping's ``drop``)."""
        if not len(cls):
            return
        n = np.bincount(cls, minlength=len(self.codes.classes))
        for k in np.flatnonzero(n):
            c = self.codes.classes[k]
            self._drop(c.key, c.drop if reason is None else reason, int(n[k]))

    # ----------------------------------------------------------------- events
    def _stays_of(
        self, b: pa.RecordBatch, t: np.ndarray, before_h: float, after_h: float, lookback_h: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(stay id, reason code) per row: 0 ok, 1 unknown stay, 2 outside the stay window,
        3 no stay for subject and time."""
        col = self.m.column("stay_id")
        sid = _np_i64(b.column(col)) if col else np.full(b.num_rows, NULL_ID, np.int64)
        out = np.full(len(t), NULL_ID, np.int64)
        why = np.zeros(len(t), np.int8)
        has = sid >= 0
        if has.any():
            found, pos = self.index.by_id(sid[has])
            inside = found & self.index.in_window(pos, t[has], before_h, after_h)
            out[has] = np.where(inside, sid[has], NULL_ID)
            why[has] = np.where(~found, 1, np.where(inside, 0, 2))
        if (~has).any():
            subj = _np_i64(b.column("subject_id"))[~has]
            s = self.index.by_subject_time(subj, t[~has], lookback_h)
            out[~has] = s
            why[~has] = np.where(s >= 0, 0, 3)
        return out, why

    _WHY = {1: "unknown_stay", 2: "outside_stay", 3: "no_stay_for_subject_time"}

    def _events(self, b: pa.RecordBatch, cls: np.ndarray) -> None:
        drop = self.drop_of[cls]
        self._drop_by_class(cls[drop])
        ok = ~drop & self._null_time(b, cls, "events")
        t = pc.fill_null(b.column("time").cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        stay, why = self._stays_of(
            b, t, CHART_BEFORE_HOURS, CHART_AFTER_HOURS, self.options.lookback_hours
        )
        for w, reason in self._WHY.items():
            self._drop_by_class(cls[ok & (why == w)], reason)
        ok &= why == 0
        if not ok.any():
            return
        if not ok.all():
            rows = np.flatnonzero(ok)
            b, cls, stay, t = b.take(pa.array(rows)), cls[rows], stay[rows], t[rows]
        num = b.column("numeric_value")
        num = (
            pa.nulls(len(b), pa.float64()) if pa.types.is_null(num.type) else num.cast(pa.float64())
        )
        value = pc.add(
            pc.multiply(num, pa.array(self.scale_of[cls])), pa.array(self.offset_of[cls])
        )
        rules = self.rule_of[cls]
        text_in = b.column("text_value")
        text_in = pa.nulls(len(b), pa.string()) if pa.types.is_null(text_in.type) else _str(text_in)
        keep_text = np.zeros(len(b), bool)
        pair = np.zeros(len(b), bool)
        for ri in np.unique(rules):
            r = self.m.events[ri]
            sel = rules == ri
            if r.text:
                keep_text |= sel
            if r.text_codes is not None:
                value = self._code_text(value, text_in, sel, r.text_codes)
            if r.pair_with is not None:
                pair |= sel
        text = pc.if_else(pa.array(keep_text), text_in, pa.scalar(None, pa.string()))
        cid = self.cid_of[cls]
        self._weights(cid, stay, t, value)
        self._targets(cid, stay, t)
        if pair.any():
            v = _np_f64(value)
            self.buf_pair.append(
                pd.DataFrame(
                    {
                        "stay": stay[pair],
                        "t": t[pair],
                        "value": v[pair],
                        "cid": cid[pair],
                        "rule": rules[pair],
                    }
                )
            )
        w = ~pair
        part = self.part_of[cls]
        for p in np.unique(part[w]):
            sel = w & (part == p)
            idx = pa.array(np.flatnonzero(sel))
            self._write(
                list(self.part_id)[p],
                stay[sel],
                t[sel],
                cid[sel],
                value.take(idx),
                None,
                text.take(idx),
            )

    def _code_text(
        self, value: pa.Array, text: pa.Array, sel: np.ndarray, codes: dict[str, int]
    ) -> pa.Array:
        """Coded text (specimen types): upper case, trimmed, trailing '.' removed -> code, 0 otherwise."""
        norm = pc.utf8_rtrim(pc.utf8_trim_whitespace(pc.utf8_upper(text)), characters=".")
        names = list(codes)
        pos = pc.fill_null(pc.index_in(norm, value_set=pa.array(names)), -1).to_numpy(
            zero_copy_only=False
        )
        coded = np.where(
            pos >= 0, np.array([codes[n] for n in names], float)[np.maximum(pos, 0)], 0.0
        )
        return pc.if_else(pa.array(sel), pa.array(coded), value)

    def _weights(self, cid, stay, t, value) -> None:
        wid = self.concept_id.get("weight", -2)
        sel = cid == wid
        if sel.any():
            v = _np_f64(value)[sel]
            ok = (v > 0) & (v <= WEIGHT_MAX_KG)
            self._drop("stays.weight_kg", "implausible_weight", (~ok).sum())
            self.weights.add(stay[sel][ok], t[sel][ok], v[ok])

    def _targets(self, cid, stay, t) -> None:
        want = {self.concept_id[r.pair_with] for r in self.m.events if r.pair_with}
        if want:
            sel = np.isin(cid, list(want))
            if sel.any():
                self.buf_targets.append(
                    pd.DataFrame({"stay": stay[sel], "t": t[sel], "cid": cid[sel]})
                )

    def _write(self, part: str, stay, t, cid, value, end, text) -> None:
        n = len(stay)
        if not n:
            return
        concept = pa.DictionaryArray.from_arrays(pa.array(cid, pa.int32()), self.concept_arr).cast(
            pa.string()
        )
        self.sinks[part].write(
            pa.table(
                {
                    "stay_id": pa.array(stay, pa.int64()),
                    "time": pa.array(t.astype("datetime64[us]"), TS),
                    "concept": concept,
                    "value": value
                    if isinstance(value, (pa.Array, pa.ChunkedArray))
                    else pa.array(value, pa.float64(), from_pandas=True),
                    "end_time": pa.nulls(n, TS) if end is None else end,
                    "text": pa.nulls(n, pa.string()) if text is None else text,
                },
                schema=dio.EVENTS,
            )
        )
        for i, k in zip(*np.unique(cid, return_counts=True), strict=True):
            self.counts[self.concepts[i]] += int(k)

    def _resolve_pairs(self) -> None:
        if not self.buf_pair:
            return
        p = pd.concat(self.buf_pair, ignore_index=True)
        tg = (
            pd.concat(self.buf_targets, ignore_index=True)
            if self.buf_targets
            else pd.DataFrame(
                {
                    "stay": pd.Series(dtype=np.int64),
                    "t": pd.Series(dtype=np.int64),
                    "cid": pd.Series(dtype=np.int32),
                }
            )
        )
        for ri, g in p.groupby("rule", sort=True):
            r = self.m.events[int(ri)]
            target = tg[tg["cid"] == self.concept_id[r.pair_with]][["stay", "t"]].drop_duplicates()
            target = target.assign(t_target=target["t"]).sort_values("t")
            g = g.sort_values("t")
            tol = int(r.pair_minutes * 60_000_000)
            m = (
                pd.merge_asof(g, target, on="t", by="stay", direction="nearest", tolerance=tol)
                if len(target)
                else g.assign(t_target=np.nan)
            )
            paired = m["t_target"].notna().to_numpy()
            n = self.pairing[r.key]
            n[f"moved_to_{r.pair_with}_time"] = n.get(f"moved_to_{r.pair_with}_time", 0) + int(
                paired.sum()
            )
            k = f"no_{r.pair_with}_within_{r.pair_minutes:g}_min_kept_at_own_time"
            n[k] = n.get(k, 0) + int((~paired).sum())
            t = np.where(
                paired, m["t_target"].fillna(0).to_numpy(np.int64), m["t"].to_numpy(np.int64)
            )
            self._write(
                r.part,
                m["stay"].to_numpy(np.int64),
                t,
                m["cid"].to_numpy(np.int32),
                m["value"].to_numpy(float),
                None,
                None,
            )

    # ----------------------------------------------------------------- admission events
    def _admission(self, b: pa.RecordBatch, cls: np.ndarray) -> None:
        from data_prep.sources.meds_resolve import admission_rows

        df = admission_rows(self, b, cls)
        if df is not None and len(df):
            self.adm_parts.append(df)

    # ----------------------------------------------------------------- the end
    def finish(self) -> dict:
        outputs = {}
        for part, sink in self.sinks.items():
            outputs[f"events/{part}.parquet"] = sink.close()
        outputs["admission_events.parquet"] = self.adm_sink.close()
        return {"outputs": outputs, "admission": self.adm_counts}

    def subjects_in_several_shards(self) -> int:
        if len(self.shard_subjects) < 2:
            return 0
        allsub = np.concatenate(list(self.shard_subjects.values()))
        _u, n = np.unique(allsub, return_counts=True)
        return int((n > 1).sum())
