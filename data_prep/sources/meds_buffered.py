"""The buffered parts of the MEDS second pass (data_prep.sources.meds_events.Pass2):
vasopressor infusions (START rate + END time paired on the order id, weight at the start)
and intervals (START / END rows: ventilation), collected per shard and resolved at its end
by data_prep.sources.meds_resolve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data_prep.sources import meds_mapping as mm

# the windows of the MIMIC-III reader (data_prep.sources.mimic3): rows with a stay id
CHART_BEFORE_HOURS = 24.0
CHART_AFTER_HOURS = 1.0
WEIGHT_MAX_KG = 500.0
NULL_ID = -1
TS = pa.timestamp("us")


def _np_i64(a: pa.Array) -> np.ndarray:
    if pa.types.is_null(a.type):
        return np.full(len(a), NULL_ID, np.int64)
    return pc.fill_null(a.cast(pa.int64()), NULL_ID).to_numpy(zero_copy_only=False)


def _np_f64(a: pa.Array) -> np.ndarray:
    if pa.types.is_null(a.type):
        return np.full(len(a), np.nan)
    return pc.fill_null(a.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)


def _str(a: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(a.type):
        a = a.cast(a.type.value_type)
    return a.cast(pa.string())


class _Buffered:
    """Infusion and interval handlers of Pass2 (a mixin: Pass2 holds the state)."""

    # ----------------------------------------------------------------- infusions
    def _col(self, b, role: str, kind: str = "i64"):
        c = self.m.column(role)
        if c is None:
            return np.full(
                b.num_rows,
                NULL_ID if kind == "i64" else None,
                np.int64 if kind == "i64" else object,
            )
        a = b.column(c)
        if kind == "i64":
            return _np_i64(a)
        return (pa.nulls(len(a), pa.string()) if pa.types.is_null(a.type) else _str(a)).to_numpy(
            zero_copy_only=False
        )

    def _inf_start(self, b: pa.RecordBatch, cls: np.ndarray) -> None:
        ok = self._null_time(b, cls, "infusions")
        t = pc.fill_null(b.column("time").cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        stay, why = self._stays_of(b, t, CHART_BEFORE_HOURS, CHART_AFTER_HOURS, CHART_BEFORE_HOURS)
        for w, reason in self._WHY.items():
            self._drop_by_class(cls[ok & (why == w)], reason)
        ok &= why == 0
        self.buf_start.append(
            pd.DataFrame(
                {
                    "subject": _np_i64(b.column("subject_id")),
                    "stay": stay,
                    "t": t,
                    "drug": self.rule_of[cls],
                    "rate": _np_f64(b.column("numeric_value")),
                    "unit": self._col(b, "unit", "str"),
                    "order": self._col(b, "order_id"),
                    "key": [self.codes.classes[k].key for k in cls],
                }
            )[ok]
        )

    def _inf_end(self, b: pa.RecordBatch, cls: np.ndarray) -> None:
        ok = self._null_time(b, cls, "infusions")
        self.buf_end.append(
            pd.DataFrame(
                {
                    "subject": _np_i64(b.column("subject_id")),
                    "t": pc.fill_null(b.column("time").cast(pa.int64()), 0).to_numpy(
                        zero_copy_only=False
                    ),
                    "drug": self.rule_of[cls],
                    "order": self._col(b, "order_id"),
                    "status": self._col(b, "status", "str"),
                }
            )[ok]
        )

    def _inf_weight(self, b: pa.RecordBatch, cls: np.ndarray) -> None:
        t = pc.fill_null(b.column("time").cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        w = _np_f64(b.column("numeric_value"))
        ok = (
            b.column("time").is_valid().to_numpy(zero_copy_only=False)
            & (w > 0)
            & (w <= WEIGHT_MAX_KG)
        )
        self._drop("infusions.weight", "implausible_or_untimed_weight", (~ok).sum())
        subj = _np_i64(b.column("subject_id"))
        self.buf_weight.append(pd.DataFrame({"subject": subj[ok], "t": t[ok], "w": w[ok]}))
        stay = self.index.by_subject_time(subj[ok], t[ok], CHART_BEFORE_HOURS)
        self.inf_weights.add(stay, t[ok], w[ok])

    def _resolve_infusions(self) -> None:
        from data_prep.sources.meds_resolve import resolve

        if not self.buf_start:
            return
        resolve(
            self,
            pd.concat(self.buf_start, ignore_index=True),
            pd.concat(self.buf_end, ignore_index=True) if self.buf_end else None,
            pd.concat(self.buf_weight, ignore_index=True) if self.buf_weight else None,
        )

    # ----------------------------------------------------------------- intervals
    def _interval(self, b: pa.RecordBatch, cls: np.ndarray) -> None:
        ok = self._null_time(b, cls, "intervals")
        col = self.m.column("stay_id")
        self.buf_iv.append(
            pd.DataFrame(
                {
                    "subject": _np_i64(b.column("subject_id")),
                    "stay": _np_i64(b.column(col)) if col else NULL_ID,
                    "t": pc.fill_null(b.column("time").cast(pa.int64()), 0).to_numpy(
                        zero_copy_only=False
                    ),
                    "start": self.role_of[cls] == mm.IV_START,
                    "rule": self.rule_of[cls],
                    "item": self.item_of[cls],
                    "cls": cls,
                }
            )[ok]
        )

    def _resolve_intervals(self) -> None:
        from data_prep.sources.meds_resolve import resolve_intervals

        if self.buf_iv:
            resolve_intervals(self, pd.concat(self.buf_iv, ignore_index=True))
