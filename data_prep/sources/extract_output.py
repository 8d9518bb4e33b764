"""What a streaming source reader writes: parquet files, per-table reports, array conversions.

Shared by the CSV sources (data_prep.sources.mimic3, and the next ones) through
data_prep.sources.csv_stream, which re-exports these names.
"""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

TS = pa.timestamp("us")
I32, I64, F64, STR, BOOL = pa.int32(), pa.int64(), pa.float64(), pa.string(), pa.bool_()
US_PER_HOUR = 3_600_000_000


@dataclass
class TableReport:
    """Row accounting and speed for one raw table."""

    table: str
    file: str = ""
    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    rows_per_s: float = 0.0
    peak_rss_mb: float = 0.0
    passes: int = 0  # 2 when the fast pass hit a malformed value and the table was re-read
    warnings: list[str] = field(default_factory=list)  # e.g. an optional table without rows
    # value units (concepts/units.csv): "no_unit:<group>" accepted rows without a unit,
    # "converted:<group>:<unit>" rows converted to the group's expected unit
    units: dict[str, int] = field(default_factory=dict)

    def count_unit(self, key: str, n: int) -> None:
        """Count `n` rows under units[key] (zero counts are not recorded)."""
        if n:
            self.units[key] = self.units.get(key, 0) + int(n)

    def drop(self, reason: str, n: int) -> None:
        """Count `n` rows dropped for `reason` (zero counts are not recorded)."""
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(n)


@dataclass
class ExtractionReport:
    """What `extract` read, kept and dropped, per table, with speed and peak memory."""

    data_dir: str
    out_dir: str
    params: dict
    tables: dict[str, TableReport] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)  # parquet file -> rows
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    warnings: list[str] = field(default_factory=list)  # every table's warnings, collected

    def to_dict(self) -> dict:
        """JSON-ready dictionary (the content of extraction_report.json)."""
        return asdict(self)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class ParquetSink:
    """Append tables to one parquet file in row groups of about `group_rows` rows.

    Created even when nothing is written. Snappy, and dictionary encoding only for string
    columns: zstd and dictionary-encoded timestamps/floats cost twice the write time.
    """

    def __init__(self, path: Path, schema: pa.Schema, group_rows: int = 2_000_000):
        self.path, self.schema, self.rows, self.group_rows = path, schema, 0, group_rows
        self._w: pq.ParquetWriter | None = None
        self._buf: list[pa.Table] = []
        self._buf_rows = 0

    def _open(self) -> pq.ParquetWriter:
        if self._w is None:
            strings = [f.name for f in self.schema if pa.types.is_string(f.type)]
            self._w = pq.ParquetWriter(
                self.path, self.schema, compression="snappy", use_dictionary=strings
            )
        return self._w

    def write(self, table: pa.Table) -> None:
        """Append `table` (cast to the declared schema)."""
        if table.num_rows:
            self._buf.append(table.select(self.schema.names).cast(self.schema))
            self._buf_rows += table.num_rows
            self.rows += table.num_rows
            if self._buf_rows >= self.group_rows:
                self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._open().write_table(
                pa.concat_tables(self._buf), row_group_size=max(self._buf_rows, 1)
            )
            self._buf, self._buf_rows = [], 0

    def reset(self) -> None:
        """Discard what was written (the table is being re-read)."""
        self._buf, self._buf_rows = [], 0
        if self._w is not None:
            self._w.close()
            self._w = None
        self.path.unlink(missing_ok=True)
        self.rows = 0

    def close(self) -> int:
        """Finish the file; returns the rows written."""
        self._flush()
        self._open().close()
        return self.rows


def ts_us(arr: pa.Array, fill: int) -> np.ndarray:
    """Timestamp array -> int64 microseconds with nulls replaced by `fill`."""
    return pc.fill_null(arr.cast(I64), fill).to_numpy(zero_copy_only=False)


def ids(arr: pa.Array, fill: int = -1) -> np.ndarray:
    """Integer id array -> int64 with nulls replaced by `fill`."""
    return pc.fill_null(arr.cast(I64), fill).to_numpy(zero_copy_only=False)


def col_us(s: pd.Series, fill: int) -> np.ndarray:
    """Datetime series -> int64 microseconds with missing values replaced by `fill`."""
    v = s.to_numpy(dtype="datetime64[us]").astype(np.int64)
    v[s.isna().to_numpy()] = fill
    return v


def times_to_arrow(us: np.ndarray) -> pa.Array:
    """int64 microseconds -> timestamp[us] array."""
    return pa.array(us.astype("datetime64[us]"), type=TS)
