"""Streaming CSV engine shared by the raw-table sources (MIMIC-III now, MIMIC-IV next).

A source declares each table it reads as a `TableSpec` (columns with their kinds, which may be
absent, whether the table must have rows) and hands each record batch of a `Scan` to its own
handler, which filters it (`Batch.filter`, `drop_null`, `keep_items`), converts the columns it
keeps (`Batch.convert`) and appends them to a `ParquetSink`; row accounting goes to a
`TableReport`.

Files are `.csv` or `.csv.gz`, upper- or lower-case file and column names. Decompression runs
in a background thread with at most two chunks read ahead, and each chunk is parsed by the
multithreaded pyarrow CSV decoder, so peak memory depends on the batch size, not on the table
size.

Malformed values are found in two passes: the fast pass lets the CSV decoder type the numeric
and timestamp columns; if it fails, the table is re-read with every column as a string and
converted batch by batch, which can name the data row, column and value (or skip and count the
row under `on_bad_rows = "skip-and-count"`). Nothing is dropped without being counted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm.auto import tqdm

from data_prep.sources.csv_files import (  # noqa: F401  (re-exported: one import for a source)
    STREAM_ERRORS,
    CorruptFileError,
    EmptyTableError,
    MalformedRowError,
    MissingTableError,
    ScanParams,
    TableSpec,
    disk_full,
    find_table,
    header_and_row_bytes,
    open_gzip_binary,
    open_text,
    resolve_columns,
    stream_error,
    utf8_error,
)
from data_prep.sources.extract_output import (  # noqa: F401  (re-exported: one import for a source)
    BOOL,
    F64,
    I32,
    I64,
    STR,
    TS,
    US_PER_HOUR,
    ExtractionReport,
    ParquetSink,
    TableReport,
    col_us,
    ids,
    peak_rss_mb,
    times_to_arrow,
    ts_us,
)

log = logging.getLogger(__name__)

# Column kinds: "i32", "i64", "f64" are numeric (typed by the CSV decoder in the fast pass and
# validated on every row); "ts" and "str" are read as strings, "ts" parsed after the filters.
KIND_TYPE = {"i32": I32, "i64": I64, "f64": F64, "ts": TS, "str": STR}
NUMERIC = ("i32", "i64", "f64")
MAX_BLOCK_BYTES = 32 << 20  # decompressed bytes per chunk handed to the CSV parser


# --------------------------------------------------------------------------------------
# Streaming scan with malformed-row handling
# --------------------------------------------------------------------------------------


class _Restart(Exception):
    """The fast pass met a value the CSV decoder could not type: re-read as strings."""


class Batch:
    """One record batch as named columns, with the data row numbers of its rows."""

    def __init__(self, scan: Scan, rb: pa.RecordBatch, first_row: int):
        self.scan = scan
        self.cols: dict[str, pa.Array] = {name: rb.column(i) for i, name in enumerate(scan.logical)}
        self.first_row = first_row  # data row number (1-based, header excluded) of rb row 0
        self.idx: np.ndarray | None = None  # positions in rb of the rows still here (None = all)
        self.n = rb.num_rows

    def __getitem__(self, name: str) -> pa.Array:
        return self.cols[name]

    def has(self, name: str) -> bool:
        """Whether the (optional) column is present in the file."""
        return name in self.cols

    def row_numbers(self) -> np.ndarray:
        """Data row numbers (1-based) of the rows still in the batch."""
        pos = np.arange(self.n) if self.idx is None else self.idx
        return self.first_row + pos

    def filter(self, mask) -> None:
        """Keep rows where `mask` (pyarrow or numpy boolean; null = False) is true."""
        if isinstance(mask, np.ndarray):
            np_mask = mask
            mask = pa.array(mask)
        else:
            mask = pc.fill_null(mask, False)
            np_mask = mask.to_numpy(zero_copy_only=False)
        if np_mask.all():  # nothing dropped (the common case for most filters): no copies
            return
        self.cols = {k: pc.filter(v, mask) for k, v in self.cols.items()}
        pos = np.arange(self.n) if self.idx is None else self.idx
        self.idx = pos[np_mask]

    def __len__(self) -> int:
        return self.n if self.idx is None else len(self.idx)

    def convert(self, *names: str) -> None:
        """Convert string columns to their declared type; malformed values raise or are skipped."""
        for name in names:
            if name not in self.cols:
                continue
            kind = self.scan.kinds[name]
            target = KIND_TYPE[kind]
            while self.cols[name].type != target:
                arr = self.cols[name]
                try:
                    self.cols[name] = pc.cast(arr, target)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    bad = locate_bad(
                        arr, target, first_only=self.scan.params.on_bad_rows == "error"
                    )
                    rows = self.row_numbers()
                    if not len(bad):  # whole column fails but no single value does: not expected
                        raise MalformedRowError(
                            f"{self.scan.path}: column {name!r} cannot be read as {target} "
                            f"in data rows {rows[0]}-{rows[-1]}"
                        ) from None
                    if self.scan.params.on_bad_rows == "error":
                        i = int(bad[0])
                        raise MalformedRowError(
                            bad_message(self.scan, int(rows[i]), name, arr[i].as_py(), kind)
                        ) from None
                    self.scan.report.drop(f"malformed_{name}", len(bad))
                    keep = np.ones(len(arr), dtype=bool)
                    keep[bad] = False
                    self.filter(keep)


def bad_message(scan: Scan, row: int, column: str, value, kind: str) -> str:
    expected = {
        "i32": "an integer",
        "i64": "an integer",
        "f64": "a number",
        "ts": "a timestamp YYYY-MM-DD[ HH:MM:SS]",
    }.get(kind, kind)
    return (
        f"{scan.path}: data row {row} (line {row + 1}), column {scan.actual.get(column, column)!r}: "
        f"cannot read {value!r} as {expected} (table {scan.table}; set on_bad_rows: skip-and-count "
        f"to skip and count such rows)"
    )


def locate_bad(arr: pa.Array, target: pa.DataType, first_only: bool) -> np.ndarray:
    """Positions of the values that do not cast to `target` (slow path, only after a failure)."""
    bad: list[int] = []
    step = 4096
    for start in range(0, len(arr), step):
        part = arr.slice(start, step)
        try:
            pc.cast(part, target)
            continue
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        for j in range(len(part)):
            try:
                pc.cast(part.slice(j, 1), target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                bad.append(start + j)
                if first_only:
                    return np.array(bad, dtype=np.int64)
    return np.array(bad, dtype=np.int64)


class Scan:
    """Stream one raw table in record batches and hand each batch to a handler."""

    def __init__(
        self,
        data_dir: Path,
        spec: TableSpec,
        params: ScanParams,
        report: TableReport,
        progress: bool,
    ):
        self.spec = spec
        self.table = spec.name
        self.path = find_table(data_dir, spec.name, spec.source)
        self.actual, self.row_bytes, self.names = resolve_columns(self.path, spec, data_dir)
        self.logical = list(self.actual)
        self.kinds = {c: spec.columns[c] for c in self.logical}
        self.params = params
        self.report = report
        self.progress = progress
        report.file = str(self.path)

    def run(self, handler: Callable[[Batch], None], reset: Callable[[], None]) -> None:
        """Feed all batches to `handler`; on a typing failure in the fast pass, reset and re-read."""
        t0 = time.perf_counter()
        try:
            self.report.passes = 1
            self._run(handler, typed=True)
        except _Restart as exc:
            log.info(
                "%s: %s; re-reading the table with string columns to locate it", self.path, exc
            )
            reset()
            self.report.rows_read = self.report.rows_kept = 0
            self.report.dropped.clear()
            self.report.units.clear()
            self.report.passes = 2
            self._run(handler, typed=False)
        self._check_not_empty()
        self.report.seconds = time.perf_counter() - t0
        self.report.rows_per_s = self.report.rows_read / max(self.report.seconds, 1e-9)
        self.report.peak_rss_mb = peak_rss_mb()

    def _check_not_empty(self) -> None:
        """A required table without data rows is an error; an optional one a report warning."""
        if self.report.rows_read or self.report.dropped.get("malformed_row"):
            return
        if self.spec.required is not None:
            raise EmptyTableError(
                f"{self.path}: has a header but no data rows; expected one row per "
                f"{self.spec.required} (table {self.table} is required)"
            )
        msg = f"{self.path}: has a header but no data rows (optional table, read as empty)"
        log.warning("%s", msg)
        self.report.warnings.append(msg)

    def _chunks(self, stop: threading.Event) -> Iterator[tuple[bytes, int] | BaseException]:
        """Decompressed text in chunks of whole lines, read ahead by a background thread.

        pyarrow's own streaming reader (open_csv) reads ahead without bound when the consumer
        is slower than gunzip: its memory grew ~40 MB/s on CHARTEVENTS. Here at most two chunks
        wait in the queue, while decompression (which releases the GIL) still overlaps parsing.
        Yields (data, position in the raw file) pairs; data starts after the header line.
        """
        chunk_bytes = int(
            min(max(self.params.batch_rows * self.row_bytes, 1 << 16), MAX_BLOCK_BYTES)
        )
        q: queue.Queue = queue.Queue(maxsize=2)

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                with open(self.path, "rb") as raw:
                    gz = self.path.name.lower().endswith(".gz")
                    stream = open_gzip_binary(raw) if gz else raw
                    leftover, header_done = b"", False
                    while not stop.is_set():
                        buf = stream.read(chunk_bytes)
                        if not buf:
                            if header_done and leftover.strip():
                                put((leftover + b"\n", raw.tell()))
                            break
                        data = leftover + buf if leftover else buf
                        if not header_done:
                            i = data.find(b"\n")
                            if i < 0:
                                leftover = data
                                continue
                            data, header_done = data[i + 1 :], True
                        j = data.rfind(b"\n")
                        if j < 0:
                            leftover = data
                            continue
                        leftover = data[j + 1 :]
                        if not put((data[: j + 1], raw.tell())):
                            return
            except BaseException as exc:  # handed to the consumer, raised there
                put(exc)
            finally:
                put(None)

        thread = threading.Thread(target=produce, name=f"gunzip-{self.table}", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                yield item
        finally:
            stop.set()
            thread.join(timeout=5)

    def _batches(self, typed: bool) -> Iterator[tuple[pa.RecordBatch, int, int]]:
        """(record batch, data row number of its first row, raw file position) of the table.

        Three stages overlap: the gunzip thread (`_chunks`), a parse thread decoding chunk
        k + 1 (pyarrow's parser releases the GIL) and the caller's handler on chunk k. Batches
        come in file order; an error is raised when its chunk's turn comes.
        """
        # Fast pass: numeric AND timestamp columns are typed by the multithreaded CSV decoder.
        # Measured on CHARTEVENTS, parsing timestamps there costs less than carrying them as
        # strings through the ITEMID filter and casting afterwards (the string copy dominates).
        # The string pass (after a failure) parses timestamps only for the rows kept.
        types = {
            self.actual[c]: (KIND_TYPE[k] if typed and k != "str" else STR)
            for c, k in self.kinds.items()
        }
        convert = pacsv.ConvertOptions(
            include_columns=[self.actual[c] for c in self.logical],
            column_types=types,
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        )
        skip = self.params.on_bad_rows == "skip-and-count"

        def parse(data: bytes) -> tuple[pa.Table | None, dict, BaseException | None]:
            state: dict = {"skipped": 0, "bad_row": {}}  # this chunk's, not shared

            def on_invalid(row) -> str:
                if skip:
                    state["skipped"] += 1
                    return "skip"
                state["bad_row"].update(
                    number=row.number,
                    text=row.text,
                    expected=row.expected_columns,
                    actual=row.actual_columns,
                )
                return "error"

            # Blocks of a quarter chunk: both cores parse one chunk in parallel.
            opts = pacsv.ReadOptions(
                column_names=self.names,
                use_threads=True,
                block_size=max(len(data) // 4 + 1, 1 << 16),
            )
            parse_opts = pacsv.ParseOptions(
                invalid_row_handler=on_invalid, newlines_in_values=False
            )
            try:
                table = pacsv.read_csv(
                    pa.py_buffer(data),
                    read_options=opts,
                    parse_options=parse_opts,
                    convert_options=convert,
                )
            except pa.ArrowInvalid as exc:
                return None, state, exc
            return table, state, None

        first_row = [1]

        def emit(future, data: bytes, pos: int) -> Iterator[tuple[pa.RecordBatch, int, int]]:
            table, state, exc = future.result()
            if exc is not None:
                self._raise_parse_error(exc, state["bad_row"], data, first_row[0], typed)
            if state["skipped"]:
                self.report.drop("malformed_row", state["skipped"])
            row = first_row[0]
            for rb in table.to_batches():
                yield rb, row, pos
                row += rb.num_rows
            # data rows = parsed + skipped (blank lines would shift later numbers: none in MIMIC)
            first_row[0] += table.num_rows + state["skipped"]

        stop = threading.Event()
        pending = None  # (future of the parse, data, pos) of the chunk before the newest
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"csv-{self.table}") as pool:
            try:
                for item in self._chunks(stop):
                    if isinstance(item, BaseException):
                        if pending is not None:  # the rows before the failure come first
                            yield from emit(*pending)
                            pending = None
                        if isinstance(item, STREAM_ERRORS):
                            raise stream_error(self.path, item, first_row[0] - 1) from item
                        raise item
                    data, pos = item
                    nxt = (pool.submit(parse, data), data, pos)
                    if pending is not None:
                        yield from emit(*pending)
                    pending = nxt
                if pending is not None:
                    yield from emit(*pending)
                    pending = None
            finally:
                stop.set()
                if pending is not None:
                    pending[0].cancel()

    def _raise_parse_error(
        self, exc: BaseException, bad_row: dict, data: bytes, first_row: int, typed: bool
    ) -> None:
        if bad_row:
            # the parser knows no row number when multithreaded: find the row's text
            at = data.find(bad_row["text"].encode())
            n = first_row + data.count(b"\n", 0, at) if at >= 0 else None
            where = f"data row {n} (line {n + 1})" if n is not None else "a row"
            raise MalformedRowError(
                f"{self.path}: {where} has {bad_row['actual']} fields, expected {bad_row['expected']} "
                f"(table {self.table}): {bad_row['text'][:200]!r}"
            ) from None
        if "invalid utf8" in str(exc).lower():
            raise utf8_error(self.path, data, first_row) from None
        if typed and "conversion error" in str(exc).lower():
            raise _Restart(str(exc).splitlines()[0]) from None
        raise MalformedRowError(f"{self.path} (table {self.table}): {exc}") from None

    def _run(self, handler: Callable[[Batch], None], typed: bool) -> None:
        size = self.path.stat().st_size
        bar = tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=self.table,
            disable=not self.progress,
            leave=False,
        )
        rows = 0
        seen = 0
        t0 = time.perf_counter()
        try:
            for rb, first_row, pos in self._batches(typed):
                batch = Batch(self, rb, first_row)
                rows += rb.num_rows
                self.report.rows_read += rb.num_rows
                handler(batch)
                bar.update(max(pos - seen, 0))
                seen = pos
                bar.set_postfix(
                    rows=f"{rows:,}", rows_s=f"{rows / max(time.perf_counter() - t0, 1e-9):,.0f}"
                )
        finally:
            bar.close()


# --------------------------------------------------------------------------------------
# Output helpers


# --------------------------------------------------------------------------------------
# Generic handlers
# --------------------------------------------------------------------------------------


def read_small(
    data_dir: Path, spec: TableSpec, params: ScanParams, rep: ExtractionReport, progress: bool
) -> pa.Table:
    """Read a small table fully (all rows), converting every declared column."""
    tr = rep.tables.setdefault(spec.name, TableReport(spec.name))
    scan = Scan(data_dir, spec, params, tr, progress)
    parts: list[pa.Table] = []

    def handle(b: Batch) -> None:
        b.convert(*scan.logical)
        parts.append(pa.table(b.cols))
        tr.rows_kept += len(b)

    scan.run(handle, parts.clear)
    if parts:
        return pa.concat_tables(parts)
    return pa.table({c: pa.array([], KIND_TYPE[k]) for c, k in scan.kinds.items()})


def drop_null(b: Batch, tr: TableReport, col: str, reason: str) -> None:
    """Drop the rows where `col` is null, counted under `reason`."""
    nulls = b[col].null_count
    if nulls:
        b.filter(pc.is_valid(b[col]))
        tr.drop(reason, nulls)


def keep_items(b: Batch, tr: TableReport, wanted: pa.Array) -> None:
    """Keep the rows whose ITEMID is in `wanted`; the rest are counted as not needed."""
    n = len(b)
    b.filter(pc.is_in(b["itemid"], value_set=wanted))
    tr.drop("itemid_not_needed", n - len(b))
