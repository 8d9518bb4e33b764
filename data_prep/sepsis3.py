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
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from data_prep import io
from data_prep.concepts.dictionary import concepts
from data_prep.concepts.infection import InfectionParams, suspected_infection
from data_prep.concepts.sofa import COMPONENTS, SOFA_CONCEPTS, SofaParams, hourly_sofa
from data_prep.concepts.sofa_evidence import sofa_inputs
from data_prep.errors import DataError
from data_prep.ids import locate

log = logging.getLogger(__name__)

LABEL_COLUMNS = (
    ["stay_id", "hour", "sofa"] + [f"sofa_{c}" for c in COMPONENTS] + ["si_window", "sepsis"]
)
ONSET_COLUMNS = [
    "stay_id",
    "si_time",
    "si_hour",
    "antibiotic",
    "antibiotic_time",
    "antibiotic_time_source",
    "culture_time",
    "culture_time_source",
    "culture_specimen",
    "onset_hour",
    "onset_time",
    "sofa_baseline",
    "sofa_at_onset",
    "components_rose",
    "sofa_baseline_hour",
    "components_baseline_to_onset",
    "sofa_inputs_at_onset",
]
CHUNK_STAYS = 5000  # stays per chunk: bounds memory on full MIMIC-III


@dataclass(frozen=True)
class LabelParams:
    """YAML section `labels`: suspected infection, SOFA and onset options."""

    si_time: str = "earlier"  # "earlier" (Seymour 2016) | "culture" (reference code)
    culture_then_abx_hours: float = 72.0
    abx_then_culture_hours: float = 24.0
    si_window_before_hours: float = 48.0
    si_window_after_hours: float = 24.0
    sofa_threshold: int = 2
    baseline: str = "running_min"  # "running_min" | "window_start"
    sofa_lookback_hours: float = 24.0
    pre_icu_hours: int = 24  # pre-ICU hours scored; data kept from pre + lookback before
    baseline_pre_icu: str = "assume_zero"  # "assume_zero" (Singer 2016) | "observed_only"
    fio2_lookback_hours: float = 4.0
    fio2_lookahead_hours: float = 0.5  # FiO2 charted up to this long after the gas counts
    # suspected infection: "paired" (antibiotics + cultures) | "antibiotics_only" (data without
    # cultures; see data_prep.concepts.infection.InfectionParams); reports say which
    suspected_infection: str = "paired"
    abx_min_count: int = 2  # antibiotics_only: antibiotic events within the window below
    abx_count_window_hours: float = 24.0
    on_bad_rows: str = "error"  # "error" | "skip-and-count"

    def validate(self) -> None:
        """Raise ValueError("labels.<key>: ...") for impossible values."""
        if self.si_time not in ("earlier", "culture"):
            raise ValueError("labels.si_time: expected 'earlier' or 'culture'")
        if self.baseline not in ("running_min", "window_start"):
            raise ValueError("labels.baseline: expected 'running_min' or 'window_start'")
        if self.baseline_pre_icu not in ("assume_zero", "observed_only"):
            raise ValueError("labels.baseline_pre_icu: expected 'assume_zero' or 'observed_only'")
        if not (isinstance(self.pre_icu_hours, int) and 0 <= self.pre_icu_hours <= 168):
            raise ValueError(
                f"labels.pre_icu_hours: expected an integer 0..168, got {self.pre_icu_hours!r}"
            )
        if self.on_bad_rows not in ("error", "skip-and-count"):
            raise ValueError("labels.on_bad_rows: expected 'error' or 'skip-and-count'")
        if self.suspected_infection not in ("paired", "antibiotics_only"):
            raise ValueError(
                "labels.suspected_infection: expected 'paired' or 'antibiotics_only', got "
                f"{self.suspected_infection!r}"
            )
        if not (isinstance(self.abx_min_count, int) and 1 <= self.abx_min_count <= 20):
            raise ValueError(
                f"labels.abx_min_count: expected an integer 1..20, got {self.abx_min_count!r}"
            )
        for key in (
            "culture_then_abx_hours",
            "abx_then_culture_hours",
            "si_window_before_hours",
            "si_window_after_hours",
            "fio2_lookback_hours",
            "fio2_lookahead_hours",
            "abx_count_window_hours",
        ):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"labels.{key}: expected a finite number >= 0, got {v!r}")
        lb = self.sofa_lookback_hours
        if not (isinstance(lb, (int, float)) and lb >= 1 and float(lb).is_integer()):
            raise ValueError(
                f"labels.sofa_lookback_hours: expected a whole number >= 1, got {lb!r}"
            )
        if not (isinstance(self.sofa_threshold, int) and 1 <= self.sofa_threshold <= 24):
            raise ValueError(
                f"labels.sofa_threshold: expected an integer 1..24, got {self.sofa_threshold!r}"
            )

    @property
    def sofa(self) -> SofaParams:
        """The SOFA concept's parameters (`data_prep.concepts.sofa`)."""
        return SofaParams(
            sofa_lookback_hours=self.sofa_lookback_hours,
            fio2_lookback_hours=self.fio2_lookback_hours,
            fio2_lookahead_hours=self.fio2_lookahead_hours,
            on_bad_rows=self.on_bad_rows,
        )

    @property
    def infection(self) -> InfectionParams:
        """The suspected-infection concept's parameters (`data_prep.concepts.infection`)."""
        return InfectionParams(
            si_time=self.si_time,
            culture_then_abx_hours=self.culture_then_abx_hours,
            abx_then_culture_hours=self.abx_then_culture_hours,
            si_window_before_hours=self.si_window_before_hours,
            si_window_after_hours=self.si_window_after_hours,
            rule=self.suspected_infection,
            abx_min_count=self.abx_min_count,
            abx_count_window_hours=self.abx_count_window_hours,
        )

    @property
    def pre_hours(self) -> int:
        """Pre-ICU hours scored (no more than any SI window overlapping the stay can reach)."""
        reach = int(math.ceil(self.si_window_before_hours + self.si_window_after_hours))
        return min(self.pre_icu_hours, reach)

    @property
    def data_lookback_hours(self) -> float:
        """How long before ICU admission the readers keep data: the windows of the scored
        pre-ICU hours reach this far (one pre-ICU lookback for scoring and data)."""
        return float(self.pre_hours + self.sofa_lookback_hours)


def onset_from_sofa(sofa: pd.DataFrame, si: pd.DataFrame, params: LabelParams) -> pd.DataFrame:
    """Onset per stay with SI.

    ``sofa``: hourly SOFA from `hourly_sofa(..., pre_hours=params.pre_hours)` (hours
    -pre .. n-1 contiguous per stay). ``si``: stay_id, si_hour (hours since intime).
    Returns one row per row of ``si``: stay_id, window_first, window_last, onset_hour
    (NaN if none), sofa_baseline, sofa_at_onset, components_rose, criterion_met_before_icu.
    """
    pre = params.pre_hours
    s = sofa.sort_values(["stay_id", "hour"]).reset_index(drop=True)
    sid = s["stay_id"].to_numpy(np.int64)
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]]) if len(sid) else np.array([], int)
    ustay = sid[starts]
    ends = np.r_[starts[1:], len(sid)]
    n_hours = (ends - starts) - pre
    si = si.reset_index(drop=True)
    m = len(si)
    pos = np.searchsorted(ustay, si["stay_id"].to_numpy(np.int64))
    pos = np.minimum(pos, max(len(ustay) - 1, 0))
    found = (ustay[pos] == si["stay_id"].to_numpy(np.int64)) if len(ustay) else np.zeros(m, bool)
    si_h = si["si_hour"].to_numpy(float)
    first = np.floor(si_h - params.si_window_before_hours).astype(np.int64)
    last = np.floor(si_h + params.si_window_after_hours).astype(np.int64)
    W = int(max((last - first).max() + 1, 1)) if m else 1
    j = np.arange(W)
    k = first[:, None] + j[None, :]  # hour of each window cell
    nh = n_hours[pos][:, None]
    valid = found[:, None] & (k <= last[:, None]) & (k >= -pre) & (k < nh)
    row = np.where(valid, starts[pos][:, None] + k + pre, 0)
    val = np.where(valid, s["sofa"].to_numpy(np.int64)[row] if len(s) else 0, 0)
    BIG = np.int64(1) << 40
    enc = np.where(valid, val * W + j, BIG)  # min -> lowest SOFA, earliest hour
    base_src = enc
    if params.baseline_pre_icu == "observed_only" and "observed" in s.columns:
        # an hour without any SOFA input in its window is no evidence of the baseline
        seen = s["observed"].to_numpy(bool)[row] if len(s) else np.zeros_like(valid)
        base_src = np.where(seen, enc, BIG)
    if params.baseline == "running_min":
        cum = np.minimum.accumulate(base_src, axis=1)
        base_enc = np.concatenate([np.full((m, 1), BIG), cum[:, :-1]], axis=1)
    else:
        base_enc = np.repeat(base_src[:, :1], W, axis=1)
        base_enc[:, 0] = BIG
    has_base = base_enc < BIG
    base_val = np.where(has_base, base_enc // W, 0)
    base_j = np.where(has_base, base_enc % W, 0)
    meets = valid & has_base & (val - base_val >= params.sofa_threshold)
    icu = meets & (k >= 0)
    any_on = icu.any(axis=1)
    jon = icu.argmax(axis=1)
    r = np.arange(m)
    out = pd.DataFrame(
        {
            "stay_id": si["stay_id"].to_numpy(np.int64),
            "window_first": first,
            "window_last": last,
            "onset_hour": np.where(any_on, k[r, jon], np.nan).astype(float),
            "sofa_baseline": pd.array(np.where(any_on, base_val[r, jon], 0), dtype="Int8"),
            "sofa_at_onset": pd.array(np.where(any_on, val[r, jon], 0), dtype="Int8"),
            "criterion_met_before_icu": (meets & (k < 0)).any(axis=1),
        }
    )
    out.loc[~any_on, ["sofa_baseline", "sofa_at_onset"]] = pd.NA
    rose = np.full(m, None, object)
    detail = np.full(m, None, object)
    base_hour = np.full(m, np.nan)
    if any_on.any():
        on_row = row[r, jon][any_on]
        b_row = row[r, base_j[r, jon]][any_on]
        at_on = np.stack([s[f"sofa_{c}"].to_numpy()[on_row] for c in COMPONENTS], axis=1)
        at_base = np.stack([s[f"sofa_{c}"].to_numpy()[b_row] for c in COMPONENTS], axis=1)
        names = np.array(COMPONENTS)
        rose[any_on] = [",".join(names[u]) for u in at_on > at_base]
        # every component's score at the baseline hour and at the onset hour, e.g.
        # "resp 0->2, coag 1->1, ..." (the audit of which organ systems formed the onset)
        detail[any_on] = [
            ", ".join(f"{n} {b}->{o}" for n, b, o in zip(names, bb, oo, strict=True))
            for bb, oo in zip(at_base, at_on, strict=True)
        ]
        base_hour[any_on] = k[r, base_j[r, jon]][any_on]
    out["components_rose"] = pd.array(rose, dtype="string")
    out["sofa_baseline_hour"] = base_hour
    out["components_baseline_to_onset"] = pd.array(detail, dtype="string")
    return out


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


def label_stays(
    stays: pd.DataFrame,
    si: pd.DataFrame,
    events: pd.DataFrame,
    params: LabelParams,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Labels and onsets for a set of stays (in memory); `si` from `suspected_infection`,
    `events` (io.EVENTS) of these stays.

    Returns (labels_hourly rows for hours >= 0, onsets rows for every stay, counts).
    """
    sofa, counts = hourly_sofa(stays, events, params.sofa, pre_hours=params.pre_hours)
    st = stays[["stay_id", "intime"]].copy()
    st["intime"] = pd.to_datetime(st["intime"]).astype("datetime64[us]")
    si = si.merge(st, on="stay_id", how="inner")
    si["si_hour"] = (si["si_time"] - si["intime"]) / pd.Timedelta(hours=1)
    on = onset_from_sofa(sofa, si[["stay_id", "si_hour"]], params)
    counts["criterion_met_before_icu"] = int(on["criterion_met_before_icu"].sum())
    lab_h = sofa[sofa["hour"] >= 0].reset_index(drop=True)
    w = lab_h[["stay_id"]].merge(
        on[["stay_id", "window_first", "window_last", "onset_hour"]], on="stay_id", how="left"
    )
    h = lab_h["hour"].to_numpy()
    lab_h["si_window"] = (h >= w["window_first"].to_numpy(float)) & (
        h <= w["window_last"].to_numpy(float)
    )
    lab_h["sepsis"] = h >= w["onset_hour"].to_numpy(float)  # NaN compares False
    onsets = stays[["stay_id", "intime"]].merge(si.drop(columns="intime"), on="stay_id", how="left")
    onsets = onsets.merge(
        on.drop(columns=["window_first", "window_last", "criterion_met_before_icu"]),
        on="stay_id",
        how="left",
    )
    onsets["onset_time"] = pd.to_datetime(onsets["intime"]).astype(
        "datetime64[us]"
    ) + pd.to_timedelta(onsets["onset_hour"], unit="h")
    # the audit: which measurements formed each component that rose at the onset
    has = onsets["onset_hour"].notna()
    cells = pd.DataFrame(
        {
            "stay_id": onsets.loc[has, "stay_id"],
            "hour": onsets.loc[has, "onset_hour"].astype(int),
            "components": onsets.loc[has, "components_rose"],
        }
    )
    onsets["sofa_inputs_at_onset"] = pd.Series(pd.NA, index=onsets.index, dtype="string")
    onsets.loc[has, "sofa_inputs_at_onset"] = sofa_inputs(
        stays, events, params.sofa, cells, pre_hours=params.pre_hours
    )
    return lab_h[LABEL_COLUMNS], _onset_dtypes(onsets[ONSET_COLUMNS]), counts


def _onset_dtypes(o: pd.DataFrame) -> pd.DataFrame:
    o = o.copy()
    o["stay_id"] = o["stay_id"].astype(np.int64)
    for c in ("si_time", "antibiotic_time", "culture_time", "onset_time"):
        o[c] = pd.to_datetime(o[c]).astype("datetime64[us]")
    for c in ("si_hour", "onset_hour", "sofa_baseline_hour"):
        o[c] = o[c].astype(float)
    for c in (
        "antibiotic",
        "antibiotic_time_source",
        "culture_time_source",
        "culture_specimen",
        "components_rose",
        "components_baseline_to_onset",
        "sofa_inputs_at_onset",
    ):
        o[c] = o[c].astype("string")
    for c in ("sofa_baseline", "sofa_at_onset"):
        o[c] = o[c].astype("Int8")
    return o


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


class _StayChunks:
    """The SOFA inputs of each chunk of `CHUNK_STAYS` stays, with ONE pass over each table.

    Filtering every table once per chunk re-reads the whole file n_chunks times (quadratic
    in the database size; the extracted tables are in source order, not sorted by stay).
    Instead each table (the parts of events/) is streamed once in record batches, filtered
    to the concepts wanted, rows are routed to their chunk by the stay's rank, and each
    chunk's rows are spilled to a temporary Arrow IPC file (lz4) in a spill folder (removed
    afterwards). Peak memory is one record batch plus one chunk, whatever the database
    size. With a single chunk the tables are read directly (in batches, filtered). Rows
    keep their order (parts in name order, rows in file order), which the concepts rely on
    (e.g. GCS keeps the last of duplicated components). Rows whose stay_id is null or not
    in stays go to chunk 0, where SOFA's row checks report or count them (`on_bad_rows`)
    as they would without chunking.

    `tables`: name -> (parquet paths, columns, schema, concept filter), the filter being
    (wanted concepts, known concepts): a row is kept when its concept is wanted or unknown
    (so that SOFA reports it), or None for every row.
    """

    BATCH_ROWS = 1 << 21

    def __init__(self, spill: Path, d: Path, tables: dict, stay_ids: np.ndarray):
        self.spill, self.d, self.tables = spill, d, tables
        if len(stay_ids) > 1 and not (np.diff(stay_ids) > 0).all():
            raise ValueError("stays must be sorted by unique stay_id")
        self.order = stay_ids  # chunk k holds stays order[k * CHUNK_STAYS : (k + 1) * CHUNK_STAYS]
        self.n_chunks = max(1, math.ceil(len(stay_ids) / CHUNK_STAYS))
        self.tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> _StayChunks:
        if self.n_chunks > 1:
            self.tmp = tempfile.TemporaryDirectory(dir=self.spill, prefix=".labels-chunks-")
            for name in self.tables:
                self._spill(name)
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
            for batch in pf.iter_batches(batch_size=self.BATCH_ROWS, columns=columns):
                if concept_filter is not None:
                    batch = batch.filter(_concept_mask(batch.column("concept"), wanted, known))
                if batch.num_rows:
                    yield pa.RecordBatch.from_arrays(
                        [batch.column(c).cast(target.field(c).type) for c in columns],
                        schema=target,
                    )

    def _spill(self, name: str) -> None:
        writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
        try:
            for batch in self._batches(name):
                sid = batch.column("stay_id")
                valid = ~np.asarray(sid.is_null().to_numpy(zero_copy_only=False), bool)
                stay = np.asarray(sid.fill_null(-1).to_numpy(zero_copy_only=False), np.int64)
                chunk = self._chunk_of(stay, valid)
                perm = np.argsort(chunk, kind="stable")
                sorted_chunk = chunk[perm]
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
            if self.tmp is None:
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
