"""Sepsis-3 onset per ICU stay from hourly SOFA and suspected infection, with an audit table.

PIPELINE.md section 1; inputs are the source-neutral `extracted/` artefacts a source's reader
writes (CONTRACTS.md): stays.parquet, events/ (io.EVENTS parts) and admission_events.parquet
(io.ADMISSION_EVENTS), read by concept name. `LabelParams` (YAML section `labels`) composes
the parameters of the concepts below it (`SofaParams`, `InfectionParams`), which never see it.

Onset rule, exactly as implemented:
* SI window hours: hour k (= [k, k+1) after intime) is in the window iff it overlaps the
  closed interval [SI - before, SI + after], i.e. floor(SI - before) <= k <= floor(SI + after).
* Window hours before ICU admission are scored too: the ``pre_icu_hours`` (P, 24) hours
  -P..-1 on the same grid, and the readers keep the pre-ICU data those hours' windows need
  (labs from P + ``sofa_lookback_hours`` before admission: `data_lookback_hours`), so the
  scoring never reaches hours that no data can fill. An SI window reaching before -P is
  cut at -P. With ``baseline_pre_icu="assume_zero"`` (default) a pre-ICU hour without data
  scores 0, following Singer et al. 2016 (Sepsis-3): "the baseline SOFA score should be
  assumed to be zero in patients not known to have preexisting organ dysfunction", while
  pre-ICU lab evidence of dysfunction still raises the baseline; so a patient admitted with
  SI and SOFA >= 2 gets onset at hour 0 instead of never. With ``"observed_only"`` (as
  other implementations do) an hour is a baseline candidate only when some SOFA input lies
  in its window, so the baseline is the lowest SOFA that data show. Until issue 14 the scoring
  reached 72 h back while labs were kept for 24 h: hours -72..-25 were always empty and
  forced a baseline of 0 whatever the ward labs showed.
* onset = the first ICU hour t (0 <= t < n_hours) in the window with
  SOFA(t) - baseline(t) >= threshold. baseline "running_min": min SOFA over the window
  hours before t (so never at the window's first hour); "window_start": SOFA at the
  window's first hour. A criterion met only in pre-ICU hours is counted
  (`criterion_met_before_icu`); the onset is then the first ICU hour that meets it.

`LabelParams` is defined in `data_prep.sepsis3_params`, the onset rule and the labels of
one set of stays in `data_prep.sepsis3_onset`; this module derives them for a whole
`extracted/` folder, chunk by chunk.
"""

from __future__ import annotations

import itertools
import logging
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from data_prep import io
from data_prep.concepts.dictionary import concepts
from data_prep.concepts.infection import suspected_infection
from data_prep.concepts.sofa import COMPONENTS, SOFA_CONCEPTS
from data_prep.errors import DataError
from data_prep.ids import locate
from data_prep.sepsis3_onset import LABEL_COLUMNS, ONSET_COLUMNS, label_stays, onset_from_sofa  # noqa: F401  (re-exported)
from data_prep.sepsis3_params import LabelParams

log = logging.getLogger(__name__)

CHUNK_STAYS = 5000  # stays per chunk: bounds memory on full MIMIC-III


def _existing(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing extracted table (run the source's reader)")
    return path


EVENTS_DIR = "events"
ADMISSION_EVENTS_FILE = "admission_events.parquet"
EVENT_COLUMNS = ["stay_id", "time", "concept", "value", "end_time", "text"]


def event_parts(d: Path) -> list[Path]:
    """The parquet parts of `d/events/` in name order (the order their rows are read)."""
    folder = Path(d) / EVENTS_DIR
    parts = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not parts:
        raise FileNotFoundError(
            f"{folder}: missing extracted events (a folder of io.EVENTS parquet parts; run the "
            "source's reader)"
        )
    return parts


def _check_columns(path: Path, schema: pa.Schema, columns: list[str]) -> None:
    """SchemaError naming the file and column when a column is missing or of another type."""
    file_schema = pq.read_schema(_existing(path))
    for c in columns:
        want = schema.field(c).type
        if c not in file_schema.names:
            raise io.SchemaError(f"{path}: missing column '{c}' (expected {want})")
        if not io._compatible(file_schema.field(c).type, want):
            raise io.SchemaError(
                f"{path}: column '{c}' has type {file_schema.field(c).type}, expected {want}"
            )


def _read(path: Path, columns: list[str], schema: pa.Schema) -> pd.DataFrame:
    """Read `columns` of a parquet artefact, checked against `schema`."""
    return io.read_parquet(_existing(path), schema, columns=columns)


_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


def _concept_mask(concept: pa.Array, wanted: pa.Array, known: pa.Array) -> pa.Array:
    """Rows whose concept is wanted, or unknown to the dictionary (null: unknown); a
    dictionary-encoded column (as read from parquet) is decided once per distinct value."""

    def mask(values: pa.Array) -> pa.Array:
        values = values.cast(pa.string())
        keep = pc.or_(
            pc.is_in(values, value_set=wanted), pc.invert(pc.is_in(values, value_set=known))
        )
        return pc.fill_null(keep, True)

    if pa.types.is_dictionary(concept.type):
        return pc.fill_null(pc.take(mask(concept.dictionary), concept.indices), True)
    return mask(concept)


def _stays_of(batch) -> tuple[np.ndarray, np.ndarray]:
    """(stay_id with -1 for null, not-null mask) of a batch or table's stay_id column."""
    sid = batch.column("stay_id")
    valid = ~np.asarray(sid.is_null().to_numpy(zero_copy_only=False), bool)
    return np.asarray(sid.fill_null(-1).to_numpy(zero_copy_only=False), np.int64), valid


class _StayChunks:
    """The SOFA inputs of each chunk of `CHUNK_STAYS` stays, with ONE pass over each table.

    Filtering every table once per chunk re-reads the whole file n_chunks times (quadratic
    in the database size; the extracted tables are in source order, not sorted by stay).
    Instead each table (the parts of events/) is streamed once in record batches, filtered
    to the concepts wanted, and rows are routed to their chunk by the stay's rank. Up to
    `IN_MEMORY_ROWS` kept rows the table stays in memory and each chunk's rows are taken
    from it; past that, each chunk's rows are spilled to a temporary Arrow IPC file (lz4)
    in a spill folder (removed afterwards), so peak memory is bounded whatever the
    database size. With a single chunk the tables are read directly (filtered). Rows
    keep their order (parts in name order, rows in file order), which the concepts rely on
    (e.g. GCS keeps the last of duplicated components). Rows whose stay_id is null or not
    in stays go to chunk 0, where SOFA's row checks report or count them (`on_bad_rows`)
    as they would without chunking.

    `tables`: name -> (parquet paths, columns, schema, concept filter), the filter being
    (wanted concepts, known concepts): a row is kept when its concept is wanted or unknown
    (so that SOFA reports it), or None for every row.
    """

    BATCH_ROWS = 1 << 21
    # Up to this many rows (after the concept filter; ~50 bytes a row in Arrow, i.e. <= ~0.5
    # GB) a table is kept in memory and each chunk's rows taken from it, which saves the
    # spill's write and re-read (10,000 synthetic stays: 0.3-0.4 s to read and route in
    # memory, 0.8-1.6 s with the spill, single noisy runs). Past it the table spills, from
    # where it is, so peak memory stays bounded at any database size.
    IN_MEMORY_ROWS = 10_000_000

    def __init__(self, spill: Path, d: Path, tables: dict, stay_ids: np.ndarray):
        self.spill, self.d, self.tables = spill, d, tables
        if len(stay_ids) > 1 and not (np.diff(stay_ids) > 0).all():
            raise ValueError("stays must be sorted by unique stay_id")
        self.order = stay_ids  # chunk k holds stays order[k * CHUNK_STAYS : (k + 1) * CHUNK_STAYS]
        self.n_chunks = max(1, math.ceil(len(stay_ids) / CHUNK_STAYS))
        self.tmp: tempfile.TemporaryDirectory | None = None
        self.mem: dict[str, tuple[pa.Table, np.ndarray]] = {}  # name -> (table, chunk of each row)

    def __enter__(self) -> _StayChunks:
        if self.n_chunks > 1:
            for name in self.tables:
                batches = self._batches(name)
                held: list[pa.RecordBatch] = []
                rows = 0
                for batch in batches:
                    held.append(batch)
                    rows += batch.num_rows
                    if rows > self.IN_MEMORY_ROWS:
                        break
                else:
                    self.mem[name] = self._partition(name, held)
                    continue
                if self.tmp is None:
                    self.tmp = tempfile.TemporaryDirectory(dir=self.spill, prefix=".labels-chunks-")
                self._spill(name, itertools.chain(held, batches))
        return self

    def __exit__(self, *exc) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()

    def _chunk_of(self, stay: np.ndarray, valid: np.ndarray) -> np.ndarray:
        pos, found = locate(self.order, stay)
        return np.where(valid & found, pos // CHUNK_STAYS, 0)

    def _batches(self, name: str):
        """The table's record batches (every part in order), filtered, as `schema` types."""
        paths, columns, schema, concept_filter = self.tables[name]
        target = pa.schema([schema.field(c) for c in columns])
        if concept_filter is not None:
            wanted = pa.array(sorted(concept_filter[0]), pa.string())
            known = pa.array(sorted(concept_filter[1]), pa.string())
        for path in paths:
            _check_columns(path, schema, columns)
            pf = pq.ParquetFile(path, read_dictionary=["concept"] if concept_filter else None)
            for batch in io.row_group_batches(pf, columns, self.BATCH_ROWS):
                if concept_filter is not None:
                    batch = batch.filter(_concept_mask(batch.column("concept"), wanted, known))
                if batch.num_rows:
                    yield pa.RecordBatch.from_arrays(
                        [batch.column(c).cast(target.field(c).type) for c in columns],
                        schema=target,
                    )

    def _route(self, batch) -> tuple[np.ndarray, np.ndarray]:
        """(stable permutation grouping the rows by chunk, the chunk of each sorted row)."""
        chunk = self._chunk_of(*_stays_of(batch))
        perm = np.argsort(chunk, kind="stable")
        return perm, chunk[perm]

    def _partition(self, name: str, batches: list) -> tuple[pa.Table, np.ndarray]:
        """The whole (filtered) table, as read, and the chunk of each of its rows (chunk k's
        rows, in table order, are taken when it is read: no sort, no second copy)."""
        _, columns, schema, _ = self.tables[name]
        target = pa.schema([schema.field(c) for c in columns])
        chunk = [self._chunk_of(*_stays_of(b)) for b in batches]
        table = pa.Table.from_batches(batches, schema=target)
        return table, (np.concatenate(chunk) if chunk else np.zeros(0, np.int64))

    def _spill(self, name: str, batches) -> None:
        writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
        try:
            for batch in batches:
                perm, sorted_chunk = self._route(batch)
                batch = batch.take(pa.array(perm))
                bounds = np.flatnonzero(np.diff(sorted_chunk)) + 1
                starts = np.concatenate([[0], bounds])
                ends = np.concatenate([bounds, [len(perm)]])
                for a, b in zip(starts, ends, strict=True):
                    k = int(sorted_chunk[a])
                    if k not in writers:
                        writers[k] = pa.ipc.new_file(
                            self._part(name, k), batch.schema, options=_IPC_OPTIONS
                        )
                    writers[k].write_batch(batch.slice(a, b - a))
        finally:
            for w in writers.values():
                w.close()

    def _part(self, name: str, k: int) -> Path:
        assert self.tmp is not None
        return Path(self.tmp.name) / f"{name}-{k}.arrow"

    def _empty(self, name: str) -> pd.DataFrame:
        _, columns, schema, _ = self.tables[name]
        return pa.schema([schema.field(c) for c in columns]).empty_table().to_pandas()

    def read(self, k: int) -> dict[str, pd.DataFrame]:
        out = {}
        for name in self.tables:
            if name in self.mem:
                table, chunk_of_row = self.mem[name]
                rows = np.flatnonzero(chunk_of_row == k)
                part = table.take(pa.array(rows)).combine_chunks()  # one chunk per column
                out[name] = part.to_pandas() if len(rows) else self._empty(name)
            elif self.tmp is None:
                batches = list(self._batches(name))
                out[name] = (
                    pa.Table.from_batches(batches).to_pandas() if batches else self._empty(name)
                )
            elif self._part(name, k).exists():
                with pa.memory_map(str(self._part(name, k))) as src:
                    out[name] = pa.ipc.open_file(src).read_all().to_pandas()
            else:
                out[name] = self._empty(name)
        return out


def derive_labels(
    extracted_dir: Path,
    params: LabelParams,
    progress: bool = True,
    spill_dir: Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Build (labels_hourly, onsets, attrition counts) from a source's `extracted/` folder:
    stays.parquet, events/ (only the `SOFA_CONCEPTS` are read) and admission_events.parquet.

    `spill_dir` holds the temporary chunk files of large databases (default: the extracted
    folder); the pipeline passes its stage's temporary folder, so a killed run leaves
    nothing inside `extracted/` (a stale stage folder is removed as a whole).
    """
    params.validate()
    d = Path(extracted_dir)
    stays = _read(
        d / "stays.parquet", ["stay_id", "hadm_id", "intime", "outtime"], io.EXTRACTED_STAYS
    )
    stays = stays.sort_values("stay_id").reset_index(drop=True)
    adm = _read(
        d / ADMISSION_EVENTS_FILE,
        ["patient_id", "hadm_id", "time", "concept", "text", "time_source"],
        io.ADMISSION_EVENTS,
    )
    concept_col = adm["concept"].astype("string")
    n_cultures = int(concept_col.eq("culture").sum())
    n_abx = int(concept_col.eq("antibiotic").sum())
    if params.suspected_infection == "paired" and n_cultures == 0 and n_abx > 0:
        raise DataError(
            f"{d / ADMISSION_EVENTS_FILE}: no culture events ({n_abx} antibiotic events); "
            "suspected infection (Seymour 2016) needs antibiotics AND cultures, and this "
            "dataset has no cultures (the official MIMIC-IV MEDS release, for one, has no "
            "microbiology). To label it with the antibiotic-only rule that peers use for such "
            "data (an antibiotic with another within 24 h; ricu si_mode 'abx'), set "
            "labels.suspected_infection=antibiotics_only; every report will say so"
        )
    si, counts = suspected_infection(adm, stays, params.infection)
    counts["suspected_infection_rule"] = params.suspected_infection
    del adm
    tables = {
        "events": (
            event_parts(d),
            EVENT_COLUMNS,
            io.EVENTS,
            (SOFA_CONCEPTS, tuple(concepts().concepts)),
        ),
    }
    labels, onsets = [], []
    bar = tqdm(total=len(stays), desc="sepsis-3 labels", unit="stay", disable=not progress)
    with _StayChunks(
        Path(spill_dir) if spill_dir is not None else d,
        d,
        tables,
        stays["stay_id"].to_numpy(np.int64),
    ) as chunks:
        for k in range(chunks.n_chunks):
            chunk = stays.iloc[k * CHUNK_STAYS : (k + 1) * CHUNK_STAYS]
            if chunk.empty:
                break
            t = chunks.read(k)
            ids = chunk["stay_id"]
            lh, on, c = label_stays(chunk, si[si["stay_id"].isin(ids)], t["events"], params)
            labels.append(lh)
            onsets.append(on)
            for key, v in c.items():
                counts[key] = counts.get(key, 0) + v
            bar.update(len(chunk))
    bar.close()
    labels_hourly = (
        pd.concat(labels, ignore_index=True) if labels else pd.DataFrame(columns=LABEL_COLUMNS)
    )
    onsets_df = (
        pd.concat(onsets, ignore_index=True) if onsets else pd.DataFrame(columns=ONSET_COLUMNS)
    )
    has_si = onsets_df["si_time"].notna()
    has_on = onsets_df["onset_hour"].notna()
    counts.update(
        {
            "stays_total": len(stays),
            "stays_no_si": int((~has_si).sum()),
            "stays_si_no_onset": int((has_si & ~has_on).sum()),
            "stays_with_onset": int(has_on.sum()),
            "onsets_at_hour_0": int((onsets_df["onset_hour"] == 0).sum()),
            "labels_hours": len(labels_hourly),
        }
    )
    rose = onsets_df.loc[has_on, "components_rose"].fillna("")
    for comp in COMPONENTS:
        counts[f"onsets_with_{comp}_rise"] = (
            int(rose.str.split(",").apply(lambda x, c=comp: c in x).sum()) if len(rose) else 0
        )
    log.info(
        "sepsis-3: %d stays, %d with SI, %d with onset",
        len(stays),
        int(has_si.sum()),
        int(has_on.sum()),
    )
    return labels_hourly, onsets_df, counts
