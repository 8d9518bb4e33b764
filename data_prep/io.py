"""Parquet artifacts: declared pyarrow schemas, atomic writes, schema checks on read.

Every artifact named in docs/CONTRACTS.md has a schema constant here. The API is small:

* ``write_parquet(df, path, schema)`` - cast to the schema (a clear error naming the file
  and column when a column is missing or cannot be cast; non-nullable columns must not
  hold nulls), write to a temporary file next to ``path`` and ``os.replace`` it into
  place, so a crash never leaves half a file under the final name.
* ``read_parquet(path, schema)`` - read and check: every schema column present with a
  compatible type (timestamp units and string/large_string are normalised, nothing
  else is cast), non-nullable columns free of nulls. Extra columns are kept, after the
  schema's columns. Integer columns holding nulls come back as float64 (pandas' default).
* ``atomic_dir(final_path)`` - context manager yielding a temporary directory next to
  ``final_path``; renamed into place only when the block succeeds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_prep.errors import DataError

logger = logging.getLogger(__name__)

TS = pa.timestamp("us")


class SchemaError(DataError):
    """An artifact does not match its declared schema (names the file and column)."""


def _schema(*fields: tuple[str, pa.DataType, bool]) -> pa.Schema:
    return pa.schema([pa.field(n, t, nullable=nl) for n, t, nl in fields])


# ---------------------------------------------------------------- prepare -> prepared/
STAYS = _schema(
    ("stay_id", pa.int64(), False),
    ("patient_id", pa.int64(), False),
    ("hadm_id", pa.int64(), True),
    ("source", pa.string(), False),
    ("intime", TS, True),
    ("outtime", TS, True),
    ("los_hours", pa.float64(), True),
    ("age", pa.float64(), True),
    ("gender", pa.string(), True),
    ("dbsource", pa.string(), True),
    ("unit", pa.string(), True),
    ("died", pa.bool_(), True),
)

_SOFA = ("sofa", "sofa_resp", "sofa_coag", "sofa_liver", "sofa_cardio", "sofa_cns", "sofa_renal")
LABELS_HOURLY = _schema(
    ("stay_id", pa.int64(), False),
    ("hour", pa.int32(), False),
    *[(c, pa.int8(), False) for c in _SOFA],
    ("si_window", pa.bool_(), False),
    ("sepsis", pa.bool_(), False),
)

ONSETS = _schema(
    ("stay_id", pa.int64(), False),
    ("si_time", TS, True),
    ("si_hour", pa.float64(), True),
    ("antibiotic", pa.string(), True),
    ("antibiotic_time", TS, True),
    ("antibiotic_time_source", pa.string(), True),
    ("culture_time", TS, True),
    ("culture_time_source", pa.string(), True),
    ("culture_specimen", pa.string(), True),
    ("onset_hour", pa.float64(), True),
    ("onset_time", TS, True),
    ("sofa_baseline", pa.int8(), True),
    ("sofa_at_onset", pa.int8(), True),
    ("components_rose", pa.string(), True),
    ("sofa_baseline_hour", pa.float64(), True),
    ("components_baseline_to_onset", pa.string(), True),
    ("sofa_inputs_at_onset", pa.string(), True),
)

OBSERVATIONS = _schema(
    ("stay_id", pa.int64(), False),
    ("hour", pa.float64(), False),
    ("variable", pa.string(), False),
    ("value", pa.float64(), False),
)

COHORT = _schema(
    ("stay_id", pa.int64(), False),
    ("patient_id", pa.int64(), False),
    ("label", pa.int8(), False),
    ("onset_hour", pa.float64(), False),
    ("matched_case", pa.int64(), False),
)

SPLITS = _schema(
    ("stay_id", pa.int64(), False),
    ("seed", pa.int32(), False),
    ("split", pa.string(), False),
)

NORMALISATION = _schema(
    ("seed", pa.int32(), False),
    ("variable", pa.string(), False),
    ("mean", pa.float64(), False),
    ("std", pa.float64(), False),
    ("n", pa.int64(), False),
)

# ------------------------------------------------ source extraction -> prepared/extracted/
EXTRACTED_STAYS = pa.schema(
    list(STAYS)
    + [
        pa.field("has_chart", pa.bool_(), nullable=False),
        pa.field("weight_kg", pa.float64(), nullable=True),
    ]
)

# ------------------------------------------ the extracted-events contract (every source)
# A source's reader writes `extracted/`: stays.parquet (EXTRACTED_STAYS), events/ (one or
# more parquet parts, schema EVENTS: stay-level measurements, one row per value, named by
# concept of data_prep/concepts/dictionary.yaml, value in the concept's unit) and
# admission_events.parquet (ADMISSION_EVENTS: antibiotics, cultures and diagnoses, which
# belong to a hospital admission rather than to an ICU stay). The concept layer reads these
# only; no item ID or source table name reaches it.
EVENTS = _schema(
    ("stay_id", pa.int64(), False),
    ("time", TS, False),
    ("concept", pa.string(), False),
    ("value", pa.float64(), True),
    ("end_time", TS, True),  # intervals (vasopressor infusions: [time, end_time))
    ("text", pa.string(), True),  # text values the concepts read (GCS verbal "No Response-ETT")
)

ADMISSION_EVENTS = _schema(
    ("patient_id", pa.int64(), False),
    ("hadm_id", pa.int64(), True),
    ("time", TS, True),  # date-only events: 00:00 of their day (time_source says so)
    ("concept", pa.string(), False),  # antibiotic | culture | sepsis_diagnosis
    ("text", pa.string(), True),  # drug name | culture specimen | diagnosis code
    ("time_source", pa.string(), True),  # antibiotic: order date | administration;
    # culture: charted | date only; diagnosis: null
)

# ---------------------------------------------------------------- evaluate -> reports/
PREDICTIONS = _schema(
    ("learner", pa.string(), False),
    ("horizon", pa.int32(), False),
    ("seed", pa.int32(), False),
    ("stay_id", pa.int64(), False),
    ("y_true", pa.int8(), False),
    ("score", pa.float64(), False),
    ("regime", pa.string(), False),
    ("external", pa.bool_(), False),
)

# file name -> schema, for the prepare stage's folder
PREPARED_FILES: dict[str, pa.Schema] = {
    "stays.parquet": STAYS,
    "labels_hourly.parquet": LABELS_HOURLY,
    "onsets.parquet": ONSETS,
    "observations.parquet": OBSERVATIONS,
    "cohort.parquet": COHORT,
    "splits.parquet": SPLITS,
    "normalisation.parquet": NORMALISATION,
}

# the extracted folder of a source reader: "events" is a folder of parquet parts, one per
# raw source table (MIMIC-III: chartevents, labevents, outputevents, inputevents), each EVENTS
EXTRACTED_FILES: dict[str, pa.Schema] = {
    "stays.parquet": EXTRACTED_STAYS,
    "events": EVENTS,
    "admission_events.parquet": ADMISSION_EVENTS,
}


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Types we accept on read without complaint (normalised by a lossless cast)."""
    if actual == expected:
        return True
    if pa.types.is_timestamp(actual) and pa.types.is_timestamp(expected):
        return True  # unit / tz-naive differences only
    if pa.types.is_string(expected) and (
        pa.types.is_large_string(actual)
        or pa.types.is_string_view(actual)
        or pa.types.is_dictionary(actual)
    ):
        return True
    if pa.types.is_null(actual):
        return True  # an all-null column written without a type
    return False


def _check_nulls(table: pa.Table, schema: pa.Schema, path: Path) -> None:
    for f in schema:
        if not f.nullable:
            col = table.column(f.name)
            if col.null_count:
                row = int(pc.index(col.is_null(), True).as_py())
                raise SchemaError(
                    f"{path}: column '{f.name}' must not be null, found {col.null_count} null(s) "
                    f"(first at row {row})"
                )


def to_table(df: pd.DataFrame, schema: pa.Schema, path: str | os.PathLike = "<table>") -> pa.Table:
    """Cast a DataFrame to `schema` (column order of the schema; extra columns are an error)."""
    path = Path(path)
    missing = [f.name for f in schema if f.name not in df.columns]
    if missing:
        raise SchemaError(f"{path}: missing column(s) {missing}; expected columns {schema.names}")
    extra = [c for c in df.columns if c not in schema.names]
    if extra:
        raise SchemaError(f"{path}: unexpected column(s) {extra}; expected columns {schema.names}")
    arrays = []
    for f in schema:
        s = df[f.name]
        try:
            arr = pa.array(s, from_pandas=True)
            if not arr.type.equals(f.type):
                arr = arr.cast(f.type, safe=not pa.types.is_timestamp(f.type))
        except (
            pa.ArrowInvalid,
            pa.ArrowTypeError,
            pa.ArrowNotImplementedError,
            TypeError,
            ValueError,
        ) as e:
            raise SchemaError(
                f"{path}: column '{f.name}' (dtype {s.dtype}) cannot be stored as {f.type}: {e}"
            ) from e
        arrays.append(arr)
    table = pa.Table.from_arrays(arrays, schema=schema)
    _check_nulls(table, schema, path)
    return table


def write_parquet(df: pd.DataFrame, path: str | os.PathLike, schema: pa.Schema) -> Path:
    """Write `df` as `path` with `schema`, atomically (temp file in the same folder + os.replace)."""
    path = Path(path)
    table = to_table(df, schema, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    logger.debug("wrote %s (%d rows)", path, table.num_rows)
    return path


def read_parquet(
    path: str | os.PathLike, schema: pa.Schema, columns: list[str] | None = None
) -> pd.DataFrame:
    """Read `path` and check it against `schema`; raise SchemaError naming file and column.

    `columns` restricts the read to these schema columns (checked the same way).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: artifact not found")
    try:
        file_schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaError(f"{path}: not a readable parquet file: {e}") from e
    want = schema if columns is None else pa.schema([schema.field(c) for c in columns])
    for f in want:
        idx = file_schema.get_field_index(f.name)
        if idx < 0:
            raise SchemaError(
                f"{path}: missing column '{f.name}' (expected {f.type}); file has {file_schema.names}"
            )
        actual = file_schema.field(idx).type
        if not _compatible(actual, f.type):
            raise SchemaError(f"{path}: column '{f.name}' has type {actual}, expected {f.type}")
    read_cols = None if columns is None else list(columns)
    table = pq.read_table(path, columns=read_cols)
    # normalise accepted variants (timestamp unit, large_string, null) to the declared type
    for f in want:
        i = table.schema.get_field_index(f.name)
        if not table.schema.field(i).type.equals(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(f.type))
    _check_nulls(table, want, path)
    order = want.names + [c for c in table.column_names if c not in want.names]
    return table.select(order).to_pandas()


def row_group_batches(
    f: pq.ParquetFile, columns: list[str], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """The file's rows in order, in batches of at most `batch_rows`: a row group of up to
    four batches is decoded at once by pyarrow's threads (iter_batches decodes serially;
    measured ~2x faster on the labels' events), a larger one is streamed."""
    for i in range(f.num_row_groups):
        if f.metadata.row_group(i).num_rows > 4 * batch_rows:
            yield from f.iter_batches(batch_size=batch_rows, row_groups=[i], columns=columns)
            continue
        table = f.read_row_group(i, columns=columns, use_threads=True)
        yield from table.to_batches(max_chunksize=batch_rows)


@contextlib.contextmanager
def atomic_dir(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to `final_path`; move it into place only on success.

    An existing `final_path` is replaced (moved aside first, removed after the rename).
    On an exception the temporary directory is removed and `final_path` is untouched.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old.{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically (temp file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, default=_json_default)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()  # numpy scalars
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)
