"""Long-format observations (stay, hour, variable, value) from the MIMIC-III extraction.

Reads ``chart.parquet`` and ``lab.parquet`` (schemas in docs/CONTRACTS.md, "MIMIC-III
extraction") in record batches, keeps the ITEMIDs of the variable dictionary
(`data_prep.concepts.variables.VARIABLES`), converts units (`Variable.convert`; FiO2
charted in % is turned into a fraction when the value is > 1), drops values outside the
variable's plausible range (counted per variable), and averages duplicates charted at
the same timestamp for one stay and variable. ``hour`` = hours since the stay's
``intime`` (float64; labs assigned up to 24 h before ICU admission keep their negative
hours - the cohort windows start at hour >= 0 anyway).

``dropped_counts`` (returned) is ``{"out_of_range": {variable: n}, "missing_value":
{variable: n}, "unknown_stay": n, "duplicates_averaged": {variable: n}}``: nothing is
dropped without being counted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from data_prep import io
from data_prep.concepts.variables import VARIABLES, Variable, itemid_to_variable
from data_prep.ids import locate

logger = logging.getLogger(__name__)

_BATCH_ROWS = 2_000_000


def variable_order(names) -> tuple[str, ...]:
    """Canonical order of variable names: dictionary order first, then the rest sorted."""
    names = set(names)
    known = [v.name for v in VARIABLES if v.name in names]
    return tuple(known + sorted(names - set(known)))


def _item_tables(
    table: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[Variable]]:
    """Lookup arrays over ITEMIDs: variable code, scale, offset, low, high (code -1 = not a variable)."""
    mapping = itemid_to_variable(table)
    variables = [v for v in VARIABLES if v.table == table]
    code_of = {v.name: i for i, v in enumerate(VARIABLES)}
    max_id = max(mapping) + 1 if mapping else 1
    code = np.full(max_id, -1, np.int16)
    scale = np.ones(max_id)
    offset = np.zeros(max_id)
    for item, var in mapping.items():
        code[item] = code_of[var.name]
        if item in var.convert:
            scale[item], offset[item] = var.convert[item]
    low = np.array([v.low for v in VARIABLES], float)
    high = np.array([v.high for v in VARIABLES], float)
    return code, scale, offset, low, high, variables


class _Accumulator:
    """Converts record batches and keeps compact arrays until the final de-duplication."""

    def __init__(self, stays: pd.DataFrame) -> None:
        self.stay_ids = stays["stay_id"].to_numpy(np.int64)
        self.intime_us = pd.to_datetime(stays["intime"]).to_numpy("datetime64[us]").astype(np.int64)
        order = np.argsort(self.stay_ids)
        self.sorted_ids = self.stay_ids[order]
        self.sorted_intime = self.intime_us[order]
        self.valid_intime = ~pd.isna(stays["intime"]).to_numpy()[order]
        n_var = len(VARIABLES)
        self.out_of_range = np.zeros(n_var, np.int64)
        self.missing = np.zeros(n_var, np.int64)
        self.unknown_stay = 0
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.fio2_code = next(i for i, v in enumerate(VARIABLES) if v.name == "fio2")

    def add(
        self,
        stay: np.ndarray,
        time_us: np.ndarray,
        itemid: np.ndarray,
        valuenum: np.ndarray,
        tables: tuple,
    ) -> None:
        code_t, scale_t, offset_t, low, high, _ = tables
        inrange = (itemid >= 0) & (itemid < len(code_t))
        code = np.full(len(itemid), -1, np.int16)
        code[inrange] = code_t[itemid[inrange]]
        keep = code >= 0
        stay, time_us, itemid, valuenum, code = (
            stay[keep],
            time_us[keep],
            itemid[keep],
            valuenum[keep],
            code[keep],
        )
        # stays: locate intime
        pos_c, found = locate(self.sorted_ids, stay)
        found &= self.valid_intime[pos_c] if len(stay) else found
        self.unknown_stay += int((~found).sum())
        stay, time_us, itemid, valuenum, code, pos_c = (
            a[found] for a in (stay, time_us, itemid, valuenum, code, pos_c)
        )
        miss = np.isnan(valuenum)
        np.add.at(self.missing, code[miss], 1)
        stay, time_us, itemid, valuenum, code, pos_c = (
            a[~miss] for a in (stay, time_us, itemid, valuenum, code, pos_c)
        )
        value = valuenum * scale_t[itemid] + offset_t[itemid]
        # FiO2 is charted both as % and as a fraction
        is_fio2 = (code == self.fio2_code) & (value > 1.0)
        value[is_fio2] = value[is_fio2] / 100.0
        bad = (value < low[code]) | (value > high[code])
        np.add.at(self.out_of_range, code[bad], 1)
        ok = ~bad
        hour = (time_us[ok] - self.sorted_intime[pos_c[ok]]) / 3.6e9
        self.parts.append((stay[ok], hour, code[ok], value[ok]))

    def finish(self) -> tuple[pd.DataFrame, dict]:
        if self.parts:
            stay, hour, code, value = (np.concatenate(x) for x in zip(*self.parts, strict=True))
        else:
            stay, hour, code, value = (np.zeros(0, t) for t in (np.int64, float, np.int16, float))
        self.parts = []
        df = pd.DataFrame({"stay_id": stay, "hour": hour, "code": code, "value": value})
        n_before = np.bincount(code, minlength=len(VARIABLES))
        df = df.groupby(["stay_id", "hour", "code"], sort=True, as_index=False)["value"].mean()
        n_after = np.bincount(df["code"].to_numpy(), minlength=len(VARIABLES))
        names = np.array([v.name for v in VARIABLES], dtype=object)
        present = variable_order(names[np.unique(df["code"].to_numpy())]) if len(df) else ()
        df["variable"] = pd.Categorical.from_codes(df["code"].to_numpy(), categories=list(names))
        df["variable"] = df["variable"].cat.set_categories(list(present) or [])
        obs = df[["stay_id", "hour", "variable", "value"]].reset_index(drop=True)

        def per_var(a: np.ndarray) -> dict[str, int]:
            return {names[i]: int(a[i]) for i in np.flatnonzero(a)}

        dropped = {
            "out_of_range": per_var(self.out_of_range),
            "missing_value": per_var(self.missing),
            "unknown_stay": int(self.unknown_stay),
            "duplicates_averaged": per_var(n_before - n_after),
        }
        return obs, dropped


def observations_from_frames(
    chart: pd.DataFrame, lab: pd.DataFrame, stays: pd.DataFrame
) -> tuple[pd.DataFrame, dict]:
    """Same as `observations_from_extracted` on in-memory chart/lab frames (CONTRACTS schemas)."""
    acc = _Accumulator(stays)
    for frame, table in ((chart, "chartevents"), (lab, "labevents")):
        if len(frame):
            acc.add(*_columns(frame), tables=_item_tables(table))
    return acc.finish()


def _columns(frame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    stay = np.asarray(frame["stay_id"], dtype=np.int64)
    time_us = pd.to_datetime(pd.Series(frame["time"])).to_numpy("datetime64[us]").astype(np.int64)
    itemid = np.asarray(frame["itemid"], dtype=np.int64)
    valuenum = pd.to_numeric(pd.Series(frame["valuenum"]), errors="raise").to_numpy(
        float, na_value=np.nan
    )
    return stay, time_us, itemid, valuenum


def observations_from_extracted(
    extracted_dir: str | Path,
    stays: pd.DataFrame,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """Observations (long; schema `io.OBSERVATIONS`) and dropped-value counts from chart/lab parquet.

    `stays` needs `stay_id` and `intime`. The files are streamed in record batches, so only
    the kept variable rows are held in memory (as compact arrays).
    """
    extracted_dir = Path(extracted_dir)
    acc = _Accumulator(stays)
    for name, table, schema in (
        ("chart.parquet", "chartevents", io.CHART),
        ("lab.parquet", "labevents", io.LAB),
    ):
        path = extracted_dir / name
        cols = ["stay_id", "time", "itemid", "valuenum"]
        # checks names/types of the columns we use (raises SchemaError naming file + column)
        file_schema = pq.read_schema(path)
        for c in cols:
            if c not in file_schema.names:
                raise io.SchemaError(
                    f"{path}: missing column '{c}' (expected {schema.field(c).type})"
                )
            if not io._compatible(file_schema.field(c).type, schema.field(c).type):
                raise io.SchemaError(
                    f"{path}: column '{c}' has type {file_schema.field(c).type}, "
                    f"expected {schema.field(c).type}"
                )
        pf = pq.ParquetFile(path)
        tables = _item_tables(table)
        bar = tqdm(
            total=pf.metadata.num_rows,
            desc=f"observations {name}",
            unit="row",
            unit_scale=True,
            disable=not progress,
        )
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=cols):
            df = batch.to_pandas()
            acc.add(*_columns(df), tables=tables)
            bar.update(batch.num_rows)
        bar.close()
    obs, dropped = acc.finish()
    logger.info(
        "observations: %d rows; dropped out of range %d, missing %d, unknown stay %d",
        len(obs),
        sum(dropped["out_of_range"].values()),
        sum(dropped["missing_value"].values()),
        dropped["unknown_stay"],
    )
    return obs, dropped
