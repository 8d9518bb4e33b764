"""Long-format observations (stay, hour, variable, value) from a source's extracted events.

Reads the parts of ``events/`` (schema ``io.EVENTS``, docs/CONTRACTS.md) in record batches,
keeps the events whose concept is of kind ``variable`` in the concept dictionary (values are
already in the concept's unit: the source's reader converts them; FiO2 charted in % is
turned into a fraction when the value is > 1), drops values outside the variable's
plausible range (counted per variable), and averages duplicates charted at the same
timestamp for one stay and variable. ``hour`` = hours since the stay's ``intime``
(float64; labs assigned up to 24 h before ICU admission keep their negative hours - the
cohort windows start at hour >= 0 anyway).

``dropped_counts`` (returned) is ``{"out_of_range": {variable: n}, "missing_value":
{variable: n}, "unknown_stay": n, "duplicates_averaged": {variable: n}}``: nothing is
dropped without being counted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from data_prep import io
from data_prep.concepts.dictionary import concepts
from data_prep.ids import locate

logger = logging.getLogger(__name__)

_BATCH_ROWS = 2_000_000
_D = concepts()
# the learner variables, in dictionary order (an observation's code indexes this tuple)
_VARIABLES = _D.of_kind("variable")
VARIABLE_NAMES: tuple[str, ...] = tuple(c.name for c in _VARIABLES)
_LOW = np.array([c.low for c in _VARIABLES], float)
_HIGH = np.array([c.high for c in _VARIABLES], float)
_FIO2_CODE = VARIABLE_NAMES.index("fio2")
# the canonical variable order: the variables of the first source (MIMIC-III) in dictionary
# order, as the cohort, normalisation and datasets have always listed them; the others after
_CANONICAL = tuple(c.name for c in _VARIABLES if c.mappings("mimic3"))
_COLUMNS = ["stay_id", "time", "concept", "value"]


def variable_order(names) -> tuple[str, ...]:
    """Canonical order of variable names: dictionary order first, then the rest sorted."""
    names = set(names)
    known = [v for v in _CANONICAL if v in names]
    return tuple(known + sorted(names - set(known)))


class _Accumulator:
    """Keeps the variable events of record batches as compact arrays until the final
    de-duplication."""

    def __init__(self, stays: pd.DataFrame) -> None:
        self.stay_ids = stays["stay_id"].to_numpy(np.int64)
        self.intime_us = pd.to_datetime(stays["intime"]).to_numpy("datetime64[us]").astype(np.int64)
        order = np.argsort(self.stay_ids)
        self.sorted_ids = self.stay_ids[order]
        self.sorted_intime = self.intime_us[order]
        self.valid_intime = ~pd.isna(stays["intime"]).to_numpy()[order]
        n_var = len(VARIABLE_NAMES)
        self.out_of_range = np.zeros(n_var, np.int64)
        self.missing = np.zeros(n_var, np.int64)
        self.unknown_stay = 0
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._names = pa.array(VARIABLE_NAMES, pa.string())

    def add_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        """One batch of events (stay_id, time, concept, value); other concepts are skipped."""
        code = _index_in(batch.column("concept"), self._names)
        keep = pc.is_valid(code)
        if not pc.any(keep).as_py():
            return
        batch = batch.filter(keep)
        self.add(
            np.asarray(batch.column("stay_id").to_numpy(zero_copy_only=False), np.int64),
            np.asarray(
                batch.column("time").cast(io.TS).to_numpy(zero_copy_only=False), "datetime64[us]"
            ).astype(np.int64),
            np.asarray(pc.filter(code, keep).to_numpy(zero_copy_only=False), np.int16),
            np.asarray(
                pc.fill_null(batch.column("value").cast(pa.float64()), np.nan).to_numpy(
                    zero_copy_only=False
                ),
                float,
            ),
        )

    def add(self, stay: np.ndarray, time_us: np.ndarray, code: np.ndarray, value: np.ndarray):
        # stays: locate intime
        pos_c, found = locate(self.sorted_ids, stay)
        found &= self.valid_intime[pos_c] if len(stay) else found
        self.unknown_stay += int((~found).sum())
        stay, time_us, code, value, pos_c = (a[found] for a in (stay, time_us, code, value, pos_c))
        miss = np.isnan(value)
        np.add.at(self.missing, code[miss], 1)
        stay, time_us, code, value, pos_c = (a[~miss] for a in (stay, time_us, code, value, pos_c))
        value = value.copy()
        # FiO2 is charted both as % and as a fraction
        is_fio2 = (code == _FIO2_CODE) & (value > 1.0)
        value[is_fio2] = value[is_fio2] / 100.0
        bad = (value < _LOW[code]) | (value > _HIGH[code])
        np.add.at(self.out_of_range, code[bad], 1)
        ok = ~bad
        hour = (time_us[ok] - self.sorted_intime[pos_c[ok]]) / 3.6e9
        self.parts.append((stay[ok], hour, code[ok], value[ok]))

    def finish(self) -> tuple[pd.DataFrame, dict]:
        n_var = len(VARIABLE_NAMES)
        if self.parts:
            stay, hour, code, value = (np.concatenate(x) for x in zip(*self.parts, strict=True))
        else:
            stay, hour, code, value = (np.zeros(0, t) for t in (np.int64, float, np.int16, float))
        self.parts = []
        df = pd.DataFrame({"stay_id": stay, "hour": hour, "code": code, "value": value})
        n_before = np.bincount(code, minlength=n_var)
        df = df.groupby(["stay_id", "hour", "code"], sort=True, as_index=False)["value"].mean()
        n_after = np.bincount(df["code"].to_numpy(), minlength=n_var)
        names = np.array(VARIABLE_NAMES, dtype=object)
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


def _index_in(concept: pa.Array, names: pa.Array) -> pa.Array:
    """Position of each concept in `names` (null when absent); a dictionary-encoded column
    (as read from parquet) is looked up once per distinct value."""
    if pa.types.is_dictionary(concept.type):
        codes = pc.index_in(concept.dictionary.cast(pa.string()), value_set=names)
        return pc.take(codes, concept.indices)
    return pc.index_in(concept.cast(pa.string()), value_set=names)


def observations_from_events(
    events: pd.DataFrame, stays: pd.DataFrame
) -> tuple[pd.DataFrame, dict]:
    """Same as `observations_from_extracted` on an in-memory events frame (io.EVENTS columns
    stay_id, time, concept, value; the others are not read)."""
    acc = _Accumulator(stays)
    if len(events):
        ev = events[_COLUMNS].assign(
            time=pd.to_datetime(events["time"]).astype("datetime64[us]"),
            value=pd.to_numeric(events["value"], errors="raise").astype(float),
            concept=events["concept"].astype(object),
        )
        acc.add_batch(pa.Table.from_pandas(ev, preserve_index=False))
    return acc.finish()


def _check_schema(path: Path) -> None:
    """Raise SchemaError naming the file and column when a column read is missing/mistyped."""
    file_schema = pq.read_schema(path)
    for c in _COLUMNS:
        want = io.EVENTS.field(c).type
        if c not in file_schema.names:
            raise io.SchemaError(f"{path}: missing column '{c}' (expected {want})")
        if not io._compatible(file_schema.field(c).type, want):
            raise io.SchemaError(
                f"{path}: column '{c}' has type {file_schema.field(c).type}, expected {want}"
            )


def observations_from_extracted(
    extracted_dir: str | Path,
    stays: pd.DataFrame,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """Observations (long; schema `io.OBSERVATIONS`) and dropped-value counts from the parquet
    parts of `extracted_dir/events/` (read in name order).

    `stays` needs `stay_id` and `intime`. The parts are streamed in record batches, so only
    the kept variable rows are held in memory (as compact arrays).
    """
    folder = Path(extracted_dir) / "events"
    parts = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not parts:
        raise FileNotFoundError(
            f"{folder}: missing extracted events (a folder of io.EVENTS parquet parts; run the "
            "source's reader)"
        )
    acc = _Accumulator(stays)
    for path in parts:
        _check_schema(path)
        pf = pq.ParquetFile(path, read_dictionary=["concept"])
        bar = tqdm(
            total=pf.metadata.num_rows,
            desc=f"observations {path.name}",
            unit="row",
            unit_scale=True,
            disable=not progress,
        )
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=_COLUMNS):
            acc.add_batch(batch)
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
