"""Reading a MEDS dataset: the shard files, their schema, the metadata, batches of rows.

A MEDS root holds ``data/**/*.parquet`` (the shards: subject_id int64, time timestamp[us],
code string, numeric_value float32, optional text_value and any extra columns; MEDS 0.3
and 0.4) and ``metadata/`` (``dataset.json``, ``codes.parquet``; MEDS-Transforms also
writes ``.shards.json``, the shard -> subjects list). Shards are read in record batches
with only the needed columns; the ``code`` column is read dictionary-encoded, so a code is
classified once per batch dictionary, never once per row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_prep.errors import DataError
from data_prep.io import SchemaError, row_group_batches

REQUIRED = ("subject_id", "time", "code")
OPTIONAL = ("numeric_value", "text_value")
MEDS_SCHEMA_TEXT = (
    "MEDS data schema: subject_id int64, time timestamp[us] (null for static rows), "
    "code string, numeric_value float32, optional text_value string"
)


class MedsDataError(DataError):
    """A MEDS folder is incomplete or inconsistent (names the file and what is missing)."""


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_string(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _kind_ok(kind: str, t: pa.DataType) -> bool:
    if pa.types.is_null(t):
        return True  # an all-null column written without a type
    if kind == "int":
        return pa.types.is_integer(t)
    if kind == "time":
        return pa.types.is_timestamp(t)
    if kind == "number":
        return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t)
    if kind == "string":
        return _is_string(t)
    return True


_EXPECTED = {
    "int": "an integer type (int64)",
    "time": "timestamp[us]",
    "number": "float32",
    "string": "string",
    "any": "any type",
}


@dataclass
class Shard:
    path: Path
    name: str  # relative to data/, without .parquet ("train/0")
    rows: int
    columns: dict[str, pa.DataType]
    absent: list[str] = field(default_factory=list)  # wanted optional columns it lacks


@dataclass
class Metadata:
    dataset: dict
    codes: frozenset[str] | None  # codes.parquet's codes (None: no codes.parquet)
    files: list[Path]


def shard_files(data_dir: Path) -> list[Path]:
    """Every ``data/**/*.parquet`` of a MEDS root (sorted); a clear error when there is none."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MedsDataError(f"MEDS folder {data_dir} does not exist")
    data = data_dir / "data"
    if not data.is_dir():
        raise MedsDataError(
            f"{data_dir}: no data/ folder (a MEDS root holds data/**/*.parquet and metadata/)"
        )
    files = sorted(p for p in data.rglob("*.parquet") if p.is_file())
    if not files:
        raise MedsDataError(f"{data}: no parquet shards (expected data/**/*.parquet)")
    return files


def listed_shards(data_dir: Path) -> tuple[Path | None, list[str]]:
    """The shards metadata/.shards.json lists (MEDS-Transforms), or (None, []) without it."""
    f = Path(data_dir) / "metadata" / ".shards.json"
    if not f.is_file():
        return None, []
    try:
        listed = json.loads(f.read_text())
    except (OSError, ValueError) as err:
        raise MedsDataError(f"{f}: not readable JSON ({err})") from None
    if not isinstance(listed, dict):
        raise MedsDataError(f"{f}: expected a mapping shard name -> subject ids")
    return f, sorted(str(k) for k in listed)


def check_listed(data_dir: Path, files: list[Path]) -> list[str]:
    """Every shard of .shards.json must exist; returns warnings for unlisted shard files."""
    f, names = listed_shards(data_dir)
    if f is None:
        return []
    have = {_name(data_dir, p) for p in files}
    missing = [n for n in names if n not in have]
    if missing:
        raise MedsDataError(
            f"{f}: lists shard(s) {missing} but {Path(data_dir) / 'data'} has no "
            f"{', '.join(n + '.parquet' for n in missing[:5])} (an incomplete copy?)"
        )
    extra = sorted(have - set(names))
    return [f"data shards not listed in {f.name}: {extra}"] if extra else []


def _name(data_dir: Path, p: Path) -> str:
    return p.relative_to(Path(data_dir) / "data").with_suffix("").as_posix()


def read_metadata(data_dir: Path) -> Metadata:
    """metadata/dataset.json (required) and the codes of metadata/codes.parquet (optional)."""
    meta = Path(data_dir) / "metadata"
    ds = meta / "dataset.json"
    if not ds.is_file():
        raise MedsDataError(f"{ds}: missing (a MEDS root has metadata/dataset.json)")
    try:
        dataset = json.loads(ds.read_text())
    except (OSError, ValueError) as err:
        raise MedsDataError(f"{ds}: not readable JSON ({err})") from None
    if not isinstance(dataset, dict):
        raise MedsDataError(f"{ds}: expected a JSON object (dataset_name, meds_version, ...)")
    files = [ds]
    codes = None
    cp = meta / "codes.parquet"
    if cp.is_file():
        try:
            schema = pq.read_schema(cp)
        except (pa.ArrowInvalid, OSError) as err:
            raise SchemaError(f"{cp}: not a readable parquet file: {err}") from err
        if "code" not in schema.names or not _is_string(schema.field("code").type):
            raise SchemaError(f"{cp}: expected a string column 'code' (MEDS code metadata schema)")
        col = pq.read_table(cp, columns=["code"]).column("code")
        codes = frozenset(x for x in pc.unique(col).to_pylist() if x is not None)
        files.append(cp)
    shards_json = meta / ".shards.json"
    if shards_json.is_file():
        files.append(shards_json)
    return Metadata(dataset, codes, files)


def open_shard(data_dir: Path, path: Path, wanted: dict[str, str]) -> Shard:
    """Check a shard's schema: the MEDS columns and `wanted` extra columns (name -> kind:
    int | string | number | time | any). Missing MEDS columns or a wrong type are errors
    naming the file and the column; a missing extra column is recorded in `absent`."""
    try:
        f = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise SchemaError(f"{path}: not a readable parquet file: {err}") from err
    schema = f.schema_arrow
    types = {n: schema.field(n).type for n in schema.names}
    for col, kind in (("subject_id", "int"), ("time", "time"), ("code", "string")):
        if col not in types:
            hint = ""
            if col == "subject_id" and "patient_id" in types:
                hint = " (patient_id is MEDS < 0.3: rename it subject_id, MEDS 0.3 / 0.4 are read)"
            raise SchemaError(
                f"{path}: missing column '{col}'{hint} ({MEDS_SCHEMA_TEXT}); file has {schema.names}"
            )
        if not _kind_ok(kind, types[col]):
            raise SchemaError(
                f"{path}: column '{col}' has type {types[col]}, expected {_EXPECTED[kind]}"
            )
    absent = []
    for col, kind in {"numeric_value": "number", "text_value": "string", **wanted}.items():
        if col not in types:
            absent.append(col)
        elif not _kind_ok(kind, types[col]):
            raise SchemaError(
                f"{path}: column '{col}' has type {types[col]}, expected {_EXPECTED[kind]}"
            )
    return Shard(path, _name(data_dir, path), f.metadata.num_rows, types, absent)


def batches(shard: Shard, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of `columns` (those the shard has; the others come as null columns),
    `code` dictionary-encoded, `time` as timestamp[us]."""
    have = [c for c in columns if c in shard.columns]
    f = pq.ParquetFile(shard.path, read_dictionary=["code"])
    for b in row_group_batches(f, have, batch_rows):
        arrays, names = [], []
        for c in columns:
            if c in shard.columns:
                a = b.column(c)
                if c == "time" and a.type != pa.timestamp("us"):
                    a = a.cast(pa.timestamp("us"))
                if c == "code" and not pa.types.is_dictionary(a.type):
                    a = pc.dictionary_encode(a)
            else:
                a = pa.nulls(b.num_rows)
            arrays.append(a)
            names.append(c)
        yield pa.RecordBatch.from_arrays(arrays, names=names)


class CodeTable:
    """Codes -> class ids (index into `classes`), each distinct code classified once."""

    def __init__(self, classify, known: frozenset[str] | None):
        self.classify = classify
        self.known = known
        self.ids: dict[str, int] = {}
        self.classes: list = []
        self.not_in_metadata: dict[str, int] = {}  # code -> rows
        self.unmapped_rows = 0
        self.null_code_rows = 0
        self._last: tuple | None = None  # (dictionary, values, lut) of the last batch

    def rows(self, code: pa.DictionaryArray, count: bool = True) -> np.ndarray:
        """Class id per row (-1: unmapped or null code)."""
        if isinstance(code, pa.ChunkedArray):
            code = code.combine_chunks()
        if self._last is not None and self._last[0].equals(code.dictionary):
            values, lut = self._last[1], self._last[2]  # the same row group's dictionary
        else:
            values, lut = self._lut(code.dictionary)
            self._last = (code.dictionary, values, lut)
        idx = pc.fill_null(code.indices, len(values)).to_numpy(zero_copy_only=False)
        out = lut[idx]
        if count:
            n = np.bincount(idx, minlength=len(values) + 1)
            self.null_code_rows += int(n[-1])
            self.unmapped_rows += int(n[:-1][lut[:-1] < 0].sum())
            if self.known is not None:
                for i in np.flatnonzero(n[:-1]):
                    v = values[i]
                    if v is not None and v not in self.known:
                        self.not_in_metadata[v] = self.not_in_metadata.get(v, 0) + int(n[i])
        return out

    def _lut(self, dictionary: pa.Array) -> tuple[list, np.ndarray]:
        """(the dictionary's values, class id per value and -1 appended for null)."""
        values = dictionary.to_pylist()
        lut = np.empty(len(values) + 1, np.int32)
        for i, v in enumerate(values):
            j = self.ids.get(v) if v is not None else -1
            if j is None:
                c = self.classify(v)
                if c is None:
                    j = -1
                else:
                    j = len(self.classes)
                    self.classes.append(c)
                self.ids[v] = j
            lut[i] = j
        lut[-1] = -1
        return values, lut
