"""PhysioNet/CinC Challenge 2019 reader: `.psv` files (zip or folder) -> the prepared tables.

One pipe-separated file per ICU stay (``pNNNNNN.psv``), one row per ICU hour, 41 columns:
34 time-varying variables (HR ... Platelets), static Age, Gender (0 = female, 1 = male),
Unit1 (MICU) / Unit2 (SICU), HospAdmTime, ICULOS (hours since ICU admission, 1-based) and
SepsisLabel (the challenge shifted it 6 h early: true onset = first labelled hour + 6).

Output (docs/CONTRACTS.md schemas, hour scale = ICULOS; row ICULOS r summarises the hour
ending at r):

* ``stays``: stay_id = patient_id = the number in the file name; ``intime`` a fixed
  synthetic epoch (``EPOCH``, only hours matter), ``outtime = intime + los_hours``,
  ``los_hours`` = max ICULOS, hadm_id/dbsource/died null, source ``physionet2019``, gender
  "M"/"F", unit "MICU"/"SICU"/null. One extra column ``positive_at_start`` (bool; dropped by
  ``prepare_from_tables`` when it writes ``stays.parquet``).
* ``onsets``: onset_hour = first ICULOS with SepsisLabel 1, plus 6 (NaN if never). Stays
  whose SepsisLabel is 1 already on their first row have an onset at or before the first
  data hour + 6 whose exact hour is unknown: they keep ``onset_hour = ONSET_BEFORE_DATA``
  (-1.0, before ICU hour 0), so the cohort's "onset outside stay" step excludes them as
  cases (they are never controls), and their count is in ``source_attrition``. Every other
  column is null (the challenge gives no SI / SOFA audit).
* ``labels_hourly``: one row per ICULOS row, hour = ICULOS, ``sepsis = hour >= onset_hour``,
  ``si_window`` False and the SOFA columns ``SOFA_UNKNOWN`` (-1): the io schema declares them
  non-nullable int8 and the challenge publishes no SOFA.
* ``observations``: one row per non-missing value of a mapped column, hour = ICULOS, in the
  units of ``data_prep.concepts.variables`` (the challenge's units already match: Temp degC,
  FiO2 a fraction - the two values > 1 in set A are treated as % per the dictionary rule and
  then fall outside the range; TroponinI is stored under ``troponin_t`` as the dictionary
  maps it, although it is troponin I). Values outside [low, high] are dropped and counted
  per variable in ``dropped_values``. ``PHYSIONET_EXTRA`` columns keep their own names.
* ``diagnoses``: empty (hadm_id): the challenge publishes no diagnosis codes.

Speed: members are read straight from the zip, their bodies concatenated (header checked
per file) and parsed by one ``pyarrow.csv`` call; only when that parse fails are the files
re-parsed in chunks, then one by one, then line by line to name the bad file, row and column.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm.auto import tqdm

from data_prep.concepts.variables import PHYSIONET_EXTRA, VARIABLES
from data_prep.errors import DataError
from data_prep.sepsis3 import LABEL_COLUMNS, ONSET_COLUMNS

logger = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = (
    "HR", "O2Sat", "Temp", "SBP", "MAP", "DBP", "Resp", "EtCO2", "BaseExcess", "HCO3", "FiO2", "pH",
    "PaCO2", "SaO2", "AST", "BUN", "Alkalinephos", "Calcium", "Chloride", "Creatinine",
    "Bilirubin_direct", "Glucose", "Lactate", "Magnesium", "Phosphate", "Potassium",
    "Bilirubin_total", "TroponinI", "Hct", "Hgb", "PTT", "WBC", "Fibrinogen", "Platelets", "Age",
    "Gender", "Unit1", "Unit2", "HospAdmTime", "ICULOS", "SepsisLabel",
)  # fmt: skip
HEADER = "|".join(COLUMNS).encode()
EPOCH = pd.Timestamp("2100-01-01")
PHYSIONET_SOURCE = "physionet2019"
ONSET_SHIFT_HOURS = 6
ONSET_BEFORE_DATA = -1.0  # onset_hour of stays labelled septic from their first row
SOFA_UNKNOWN = -1  # the SOFA columns of labels_hourly (non-nullable int8; no SOFA published)
_NAME = re.compile(r"(?:^|/)p(\d+)\.psv$")
_CHUNK_FILES = 256  # files per chunk when locating a parse failure


def _variable_map() -> list[tuple[str, str, float, float]]:
    """(PhysioNet column, variable name, low, high) for every time-varying column."""
    out = [(v.physionet, v.name, float(v.low), float(v.high)) for v in VARIABLES if v.physionet]
    out += [
        (col, name, float(lo), float(hi)) for col, (name, _unit, lo, hi) in PHYSIONET_EXTRA.items()
    ]
    return out


VARIABLE_MAP = _variable_map()


@dataclass(frozen=True)
class PhysioNetParams:
    """Reader options (`labels.on_bad_rows` in the YAML)."""

    on_bad_rows: str = "error"  # "error" | "skip-and-count"

    def validate(self) -> None:
        """Raise ValueError("<key>: ...") for impossible values."""
        if self.on_bad_rows not in ("error", "skip-and-count"):
            raise ValueError(
                f"on_bad_rows: expected 'error' or 'skip-and-count', got {self.on_bad_rows!r}"
            )


class PhysioNetFormatError(DataError):
    """A `.psv` member does not have the challenge format (names member, row, column)."""


class PhysioNetInputNotFound(PhysioNetFormatError, FileNotFoundError):
    """The input path is absent, or a folder with neither .psv files nor one zip."""


@dataclass
class PhysioNetTables:
    """The prepared tables of one PhysioNet 2019 training set (CONTRACTS.md schemas)."""

    stays: pd.DataFrame
    onsets: pd.DataFrame
    labels_hourly: pd.DataFrame
    diagnoses: pd.DataFrame
    observations: pd.DataFrame
    dropped_values: dict[str, int] = field(default_factory=dict)
    events: pd.DataFrame | None = None  # io.EVENTS: every non-missing value, as read
    attrition: list[dict] = field(default_factory=list)
    bad_rows: list[str] = field(default_factory=list)  # one message per skipped row / file

    @property
    def source_attrition(self) -> list[dict]:
        """The reader's counts, for `prepare_from_tables(source_attrition=...)`."""
        return self.attrition


# ----------------------------------------------------------------------------- input
def _open_source(
    path: Path,
) -> tuple[list[str], Callable[[str], bytes], Callable[[], None], Callable[[str], str]]:
    """(sorted member names, read(name) -> bytes, close(), label(name) for messages) for a zip,
    a folder of .psv, or a folder holding exactly one zip."""
    path = Path(path)
    if not path.exists():
        raise PhysioNetInputNotFound(
            f"{path}: PhysioNet 2019 input not found (a .zip or a folder of .psv files)"
        )
    if path.is_dir():
        files = sorted(path.rglob("*.psv"))
        if files:
            by_name = {str(f.relative_to(path)): f for f in files}
            return (
                list(by_name),
                lambda n: by_name[n].read_bytes(),
                lambda: None,
                lambda n: str(by_name[n]),
            )
        zips = sorted(path.glob("*.zip"))
        if len(zips) != 1:
            raise PhysioNetInputNotFound(
                f"{path}: expected .psv files or exactly one .zip in the folder, found "
                f"{len(zips)} zip file(s) ({', '.join(z.name for z in zips) or 'none'})"
            )
        path = zips[0]
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise PhysioNetFormatError(
            f"{path}: not a readable zip file ({e}); expected the challenge's training set zip "
            "or a folder of .psv files"
        ) from e
    names = sorted(n for n in zf.namelist() if n.endswith(".psv") and not n.endswith("/"))
    if not names:
        others = [n for n in zf.namelist() if not n.endswith("/")]
        zf.close()
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise PhysioNetFormatError(
            f"{path}: the zip holds no .psv members (it has {len(others)} other file(s)"
            f"{': ' + shown if others else ''}); expected one pNNNNNN.psv per ICU stay"
        )

    def label(name: str) -> str:
        return f"{path} member {name}"

    def read(name: str) -> bytes:
        # a bad CRC is BadZipFile; an undecompressable body zlib.error, EOFError or OSError
        try:
            return zf.read(name)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as e:
            raise PhysioNetFormatError(
                f"{label(name)}: cannot be decompressed ({e}); expected an intact zip member "
                "(the zip is corrupt or truncated)"
            ) from e

    return names, read, zf.close, label


def _parse(body: bytes) -> pa.Table:
    return pacsv.read_csv(
        io.BytesIO(body),
        read_options=pacsv.ReadOptions(column_names=list(COLUMNS)),
        parse_options=pacsv.ParseOptions(delimiter="|"),
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(COLUMNS, pa.float64())),
    )


def _line_check(name: str, body: bytes) -> tuple[bytes, list[str]]:
    """Slow path for one member: (its good lines, one message per bad line)."""
    good, bad = [], []
    for i, line in enumerate(body.split(b"\n")):
        if not line.strip():
            continue
        fields = line.rstrip(b"\r").split(b"|")
        where = f"{name}: line {i + 2} (data row {i + 1})"
        if len(fields) != len(COLUMNS):
            bad.append(f"{where}: expected {len(COLUMNS)} '|'-separated fields, got {len(fields)}")
            continue
        problem = None
        for col, val in zip(COLUMNS, fields, strict=True):
            try:
                float(val) if val.strip() else None
            except ValueError:
                problem = f"{where}: column '{col}' = {val.decode(errors='replace')!r}, expected a number or NaN"
                break
        if problem:
            bad.append(problem)
        else:
            good.append(line.rstrip(b"\r"))
    return b"".join(g + b"\n" for g in good), bad


def _parse_located(
    names: list[str], bodies: list[bytes], skip: bool, bad_msgs: list[str]
) -> list[bytes]:
    """Find the members that break the one-shot parse; return the bodies with bad lines removed
    (skip) or raise naming the first bad member/row/column (error)."""
    bodies = list(bodies)
    for c0 in range(0, len(bodies), _CHUNK_FILES):
        chunk = range(c0, min(c0 + _CHUNK_FILES, len(bodies)))
        try:
            _parse(b"".join(bodies[i] for i in chunk))
            continue
        except pa.ArrowInvalid:
            pass
        for i in chunk:
            try:
                _parse(bodies[i])
                continue
            except pa.ArrowInvalid as e:
                arrow_msg = str(e)
            good, bad = _line_check(names[i], bodies[i])
            if not bad:
                bad = [f"{names[i]}: cannot be parsed as pipe-separated numbers: {arrow_msg}"]
                good = b""
            if not skip:
                raise PhysioNetFormatError(
                    bad[0]
                    + (
                        f" (and {len(bad) - 1} more bad row(s) in this file)"
                        if len(bad) > 1
                        else ""
                    )
                )
            bad_msgs.extend(bad)
            bodies[i] = good
    return bodies


def _count_rows(body: bytes) -> int:
    # rows = non-empty lines; fast path assumes no blank lines (checked against the parse)
    return body.count(b"\n")


# ----------------------------------------------------------------------------- main
def read_physionet2019(
    path: Path,
    params: PhysioNetParams = PhysioNetParams(),  # noqa: B008 - frozen dataclass
    progress: bool = True,
    limit: int | None = None,
) -> PhysioNetTables:
    """Read a PhysioNet 2019 training set (zip, folder of .psv, or folder holding the zip).

    `limit` reads only the first `limit` members in name order. Raises PhysioNetFormatError
    naming the zip, member, row and column for a bad header / field count / non-numeric value
    or a header-only member (with ``on_bad_rows="skip-and-count"`` such rows - or files, for
    a bad header or no rows - are skipped and counted in ``attrition``; the messages are in
    ``bad_rows``); a corrupt member, a non-zip or a zip without .psv members always raise.
    """
    params.validate()
    if limit is not None and limit < 1:
        raise ValueError(f"limit: expected None or an integer >= 1, got {limit!r}")
    skip = params.on_bad_rows == "skip-and-count"
    names, read, close, label = _open_source(Path(path))
    n_members = len(names)
    if limit is not None:
        names = names[:limit]
    if not names:
        close()
        raise PhysioNetFormatError(f"{path}: no .psv files found")

    bad_msgs: list[str] = []
    counts = {"bad_header_files": 0, "empty_files": 0, "bad_rows": 0}
    keep_names: list[str] = []
    stay_ids: list[int] = []
    bodies: list[bytes] = []
    seen: dict[int, str] = {}
    try:
        for name in tqdm(names, desc="physionet2019 files", unit="file", disable=not progress):
            m = _NAME.search(name)
            if not m:
                raise PhysioNetFormatError(
                    f"{label(name)}: file name is not pNNNNNN.psv (the stay id is its number)"
                )
            sid = int(m.group(1))
            if sid in seen:
                raise PhysioNetFormatError(
                    f"{label(name)}: stay id {sid} appears twice (also {seen[sid]})"
                )
            seen[sid] = name
            data = read(name)
            name = label(name)  # from here on the name is only used in messages
            nl = data.find(b"\n")
            header = (data if nl < 0 else data[:nl]).rstrip(b"\r").strip()
            if header != HEADER:
                got = header.decode(errors="replace").split("|")
                diff = next(
                    (
                        f"column {i + 1} is {g!r}, expected {w!r}"
                        for i, (g, w) in enumerate(zip(got, COLUMNS, strict=False))
                        if g != w
                    ),
                    f"{len(got)} columns, expected {len(COLUMNS)}",
                )
                msg = f"{name}: line 1 (header): {diff}; expected the 41 challenge columns {'|'.join(COLUMNS)}"
                if not skip:
                    raise PhysioNetFormatError(msg)
                bad_msgs.append(msg)
                counts["bad_header_files"] += 1
                continue
            body = b"" if nl < 0 else data[nl + 1 :]
            if b"\r" in body:
                body = body.replace(b"\r\n", b"\n")
            if body and not body.endswith(b"\n"):
                body += b"\n"
            if not body.strip():
                if not skip:
                    raise PhysioNetFormatError(
                        f"{name}: has a header but no data rows; expected one row per ICU hour "
                        "(set on_bad_rows: skip-and-count to skip and count such files)"
                    )
                counts["empty_files"] += 1
                continue
            keep_names.append(name)
            stay_ids.append(sid)
            bodies.append(body)
    finally:
        close()

    try:
        table = _parse(b"".join(bodies))
        nrows = np.fromiter((_count_rows(b) for b in bodies), np.int64, len(bodies))
        if table.num_rows != nrows.sum():  # blank lines inside a file: recount the slow way
            raise pa.ArrowInvalid("row count mismatch")
    except pa.ArrowInvalid:
        n_bad_before = len(bad_msgs)
        bodies = _parse_located(keep_names, bodies, skip, bad_msgs)
        counts["bad_rows"] += len(bad_msgs) - n_bad_before
        keep = [i for i, b in enumerate(bodies) if b.strip()]
        counts["empty_files"] += len(bodies) - len(keep)
        keep_names = [keep_names[i] for i in keep]
        stay_ids = [stay_ids[i] for i in keep]
        bodies = [bodies[i] for i in keep]
        for i, b in enumerate(bodies):  # drop blank lines so that rows match the parse
            if b"\n\n" in b or b.startswith(b"\n"):
                bodies[i] = b"".join(ln + b"\n" for ln in b.split(b"\n") if ln.strip())
        table = _parse(b"".join(bodies))
        nrows = np.fromiter((_count_rows(b) for b in bodies), np.int64, len(bodies))
    del bodies
    cols = {c: table.column(c).to_numpy() for c in COLUMNS}
    del table
    file_of_row = np.repeat(np.arange(len(keep_names)), nrows)
    row_in_file = np.arange(len(file_of_row)) - np.repeat(np.cumsum(nrows) - nrows, nrows)

    # ICULOS: present, integer, >= 0, strictly increasing within the file; SepsisLabel 0/1
    icu, lab = cols["ICULOS"], cols["SepsisLabel"]
    first_of_file = row_in_file == 0
    prev = np.r_[np.nan, icu[:-1]]
    checks = [
        ("ICULOS", ~np.isfinite(icu) | (icu < 0) | (icu != np.round(icu)), "an integer hour >= 0"),
        (
            "ICULOS",
            ~first_of_file & np.isfinite(icu) & np.isfinite(prev) & (icu <= prev),
            "greater than the previous row's ICULOS",
        ),
        ("SepsisLabel", ~np.isin(lab, (0.0, 1.0)), "0 or 1"),
    ]
    bad_row = np.zeros(len(icu), bool)
    for col, mask, what in checks:
        for r in np.flatnonzero(mask & ~bad_row):
            f, k = file_of_row[r], row_in_file[r]
            msg = (
                f"{keep_names[f]}: line {k + 2} (data row {k + 1}): column '{col}' = {float(cols[col][r])!r}, "
                f"expected {what}"
            )
            if not skip:
                raise PhysioNetFormatError(msg)
            bad_msgs.append(msg)
        bad_row |= mask
    if bad_row.any():
        counts["bad_rows"] += int(bad_row.sum())
        ok = ~bad_row
        cols = {c: v[ok] for c, v in cols.items()}
        file_of_row = file_of_row[ok]
        row_in_file = None  # not needed after this point
        icu, lab = cols["ICULOS"], cols["SepsisLabel"]
        emptied = np.setdiff1d(np.arange(len(keep_names)), file_of_row)
        counts["empty_files"] += len(emptied)

    tables = _build(np.asarray(stay_ids, np.int64), file_of_row, cols, progress)
    stays = tables.stays
    n_pos = int(stays["_has_label"].sum())
    n_start = int(stays["positive_at_start"].sum())
    tables.stays = stays.drop(columns="_has_label")
    tables.bad_rows = bad_msgs
    tables.attrition = [
        {"step": "members found", "count": n_members, "detail": f".psv files in {path}"},
        {
            "step": "members read",
            "count": len(names),
            "detail": f"first {limit} by name" if limit else "all",
        },
        {
            "step": "files with a bad header skipped",
            "count": counts["bad_header_files"],
            "detail": f"on_bad_rows={params.on_bad_rows}",
        },
        {
            "step": "bad rows skipped",
            "count": counts["bad_rows"],
            "detail": f"on_bad_rows={params.on_bad_rows}",
        },
        {
            "step": "files without rows",
            "count": counts["empty_files"],
            "detail": "header only / all rows bad",
        },
        {"step": "stays", "count": len(stays), "detail": "one per file with rows"},
        {"step": "rows", "count": len(icu), "detail": "ICU hours (labels_hourly rows)"},
        {
            "step": "stays with SepsisLabel 1",
            "count": n_pos,
            "detail": "onset = first labelled ICULOS + 6",
        },
        {
            "step": "stays positive from the first row",
            "count": n_start,
            "detail": f"onset before the data starts: onset_hour = {ONSET_BEFORE_DATA} (excluded by the cohort "
            "step 'onset outside stay')",
        },
        {
            "step": "observations",
            "count": len(tables.observations),
            "detail": f"values kept; {sum(tables.dropped_values.values())} outside the plausible range dropped",
        },
    ]
    logger.info(
        "physionet2019: %d files, %d stays, %d rows, %d septic (%d from the first row), "
        "%d observations, %d bad rows skipped",
        len(names),
        len(stays),
        len(icu),
        n_pos,
        n_start,
        len(tables.observations),
        counts["bad_rows"],
    )
    return tables


def _build(
    stay_ids: np.ndarray, file_of_row: np.ndarray, cols: dict[str, np.ndarray], progress: bool
) -> PhysioNetTables:
    """Vectorised table construction from the parsed columns (rows grouped by file, in order)."""
    present = np.unique(file_of_row)
    # rows of each file are contiguous and ordered: first / last row index per file
    starts = np.searchsorted(file_of_row, present, side="left")
    ends = np.searchsorted(file_of_row, present, side="right")
    sid_row = stay_ids[file_of_row]
    sid = stay_ids[present]
    icu, lab = cols["ICULOS"], cols["SepsisLabel"]

    # onsets: first labelled row per file
    pos_rows = np.flatnonzero(lab == 1)
    pos_files, first_pos = np.unique(file_of_row[pos_rows], return_index=True)
    first_pos_row = pos_rows[first_pos]
    onset_by_file = np.full(len(stay_ids), np.nan)
    onset_by_file[pos_files] = icu[first_pos_row] + ONSET_SHIFT_HOURS
    at_start = np.zeros(len(stay_ids), bool)
    at_start[pos_files] = first_pos_row == starts[np.searchsorted(present, pos_files)]
    onset_by_file[at_start] = ONSET_BEFORE_DATA
    onset = onset_by_file[present]

    def static(c: str) -> np.ndarray:  # first non-missing value of the stay (constant in set A)
        v = cols[c]
        ok = np.isfinite(v)
        idx = np.flatnonzero(ok)
        f_idx = np.searchsorted(idx, starts)  # first finite row at or after the file's start
        out = np.full(len(present), np.nan)
        has = f_idx < len(idx)
        has[has] &= idx[f_idx[has]] < ends[has]
        out[has] = v[idx[f_idx[has]]]
        return out

    gender = static("Gender")
    u1, u2 = static("Unit1"), static("Unit2")
    los = icu[ends - 1].astype(float)
    unit = np.where(u1 == 1, "MICU", np.where(u2 == 1, "SICU", None))
    stays = pd.DataFrame(
        {
            "stay_id": sid,
            "patient_id": sid,
            "hadm_id": pd.array([pd.NA] * len(sid), dtype="Int64"),
            "source": PHYSIONET_SOURCE,
            "intime": pd.Series(EPOCH, index=range(len(sid))).astype("datetime64[us]"),
            "outtime": (EPOCH + pd.to_timedelta(los, unit="h")).astype("datetime64[us]"),
            "los_hours": los,
            "age": static("Age"),
            "gender": pd.array(
                np.where(gender == 1, "M", np.where(gender == 0, "F", None)), dtype="string"
            ),
            "dbsource": pd.array([None] * len(sid), dtype="string"),
            "unit": pd.array(unit, dtype="string"),
            "died": pd.array([None] * len(sid), dtype="boolean"),
            "positive_at_start": at_start[present],
            "_has_label": np.isin(present, pos_files),
        }
    )

    onsets = pd.DataFrame({c: pd.Series([None] * len(sid), dtype="object") for c in ONSET_COLUMNS})
    onsets["stay_id"] = sid
    for c in ("si_time", "antibiotic_time", "culture_time", "onset_time"):
        onsets[c] = pd.Series(pd.NaT, index=onsets.index, dtype="datetime64[us]")
    for c in ("antibiotic", "culture_specimen", "components_rose"):
        onsets[c] = pd.array([None] * len(sid), dtype="string")
    for c in ("sofa_baseline", "sofa_at_onset"):
        onsets[c] = pd.array([None] * len(sid), dtype="Int8")
    onsets["si_hour"] = np.nan
    onsets["onset_hour"] = onset
    onsets = onsets[ONSET_COLUMNS]

    row_onset = onset_by_file[file_of_row]
    n = len(icu)
    labels = {"stay_id": sid_row, "hour": icu.astype(np.int32)}
    for c in LABEL_COLUMNS:
        if c.startswith("sofa"):
            labels[c] = np.full(n, SOFA_UNKNOWN, np.int8)
    labels["si_window"] = np.zeros(n, bool)
    labels["sepsis"] = np.isfinite(row_onset) & (icu >= row_onset)
    labels_hourly = pd.DataFrame(labels)[LABEL_COLUMNS]

    # observations: the shared builder over the events (the dictionary's ranges and FiO2
    # rule, written once for every source)
    from data_prep.observations import observations_from_events

    events = _events(sid_row, icu, cols)
    observations, dropped_all = observations_from_events(events, stays)
    dropped = dropped_all["out_of_range"]
    empty_diag = pd.DataFrame({"hadm_id": pd.Series(dtype="int64")})  # no sepsis codes
    return PhysioNetTables(
        stays=stays,
        onsets=onsets,
        labels_hourly=labels_hourly,
        diagnoses=empty_diag,
        observations=observations,
        dropped_values={k: v for k, v in dropped.items() if v},
        events=events,
    )


def _events(sid_row: np.ndarray, icu: np.ndarray, cols: dict[str, np.ndarray]) -> pd.DataFrame:
    """io.EVENTS rows: one per non-missing value of a mapped column, as read (the observation
    builder applies the dictionary's ranges and the FiO2 rule, as for every source), at
    time = EPOCH + ICULOS hours, in row order then column order."""
    parts = []
    for code, (col, _name, _lo, _hi) in enumerate(VARIABLE_MAP):
        rows = np.flatnonzero(np.isfinite(cols[col]))
        parts.append((rows, np.full(len(rows), code, np.int16)))
    rows = np.concatenate([p[0] for p in parts])
    codes = np.concatenate([p[1] for p in parts])
    order = np.lexsort((codes, rows))
    rows, codes = rows[order], codes[order]
    vals = np.empty(len(rows))
    for code, (col, _name, _lo, _hi) in enumerate(VARIABLE_MAP):
        sel = codes == code
        vals[sel] = cols[col][rows[sel]]
    hours_us = np.round(icu[rows] * 3_600_000_000).astype(np.int64)
    return pd.DataFrame(
        {
            "stay_id": sid_row[rows],
            "time": np.datetime64(EPOCH.to_datetime64(), "us") + hours_us.astype("timedelta64[us]"),
            "concept": pd.Categorical.from_codes(codes, categories=[m[1] for m in VARIABLE_MAP]),
            "value": vals,
            "end_time": pd.Series(pd.NaT, index=range(len(rows)), dtype="datetime64[us]"),
            "text": pd.array([None] * len(rows), dtype="string"),
        }
    )


# ------------------------------------------------------------------ the source protocol
LABELS = (
    "the PhysioNet/CinC 2019 challenge's labels (SepsisLabel; onset = first labelled hour + "
    f"{ONSET_SHIFT_HOURS} h), not derived here: the challenge publishes no antibiotics, "
    f"cultures or full SOFA inputs; the SOFA columns are {SOFA_UNKNOWN} (unknown)"
)


def inputs(data_dir: Path) -> list[Path]:
    """The files the reader reads: the .psv files of a folder, else its one zip (or the zip)."""
    data_dir = Path(data_dir)
    if data_dir.is_dir():
        files = sorted(data_dir.rglob("*.psv"))
        return files or sorted(data_dir.glob("*.zip"))[:1] or [data_dir]
    return [data_dir]


def extract(data_dir: Path, out_dir: Path, options, progress: bool = True) -> dict:
    """Write the extracted-events contract, plus the challenge's labels in ``labels/``."""
    from data_prep import io as dio

    t = read_physionet2019(
        Path(data_dir), PhysioNetParams(on_bad_rows=options.on_bad_rows), progress
    )
    out_dir = Path(out_dir)
    stays = t.stays.drop(columns=["positive_at_start"]).assign(has_chart=True, weight_kg=np.nan)
    dio.write_parquet(stays, out_dir / "stays.parquet", dio.EXTRACTED_STAYS)
    dio.write_parquet(t.events, out_dir / "events" / "physionet2019.parquet", dio.EVENTS)
    empty = pd.DataFrame({f.name: pd.Series(dtype=object) for f in dio.ADMISSION_EVENTS})
    dio.write_parquet(empty, out_dir / "admission_events.parquet", dio.ADMISSION_EVENTS)
    dio.write_parquet(
        t.labels_hourly, out_dir / "labels" / "labels_hourly.parquet", dio.LABELS_HOURLY
    )
    dio.write_parquet(t.onsets, out_dir / "labels" / "onsets.parquet", dio.ONSETS)
    return {"steps": t.attrition, "bad_rows": t.bad_rows[:100], "bad_rows_total": len(t.bad_rows)}


def _source():
    from data_prep.sources import Source

    return Source(
        name=PHYSIONET_SOURCE,
        description="PhysioNet/CinC Challenge 2019 training sets (.psv files, zip or folder)",
        extract=extract,
        inputs=inputs,
        labels=LABELS,
    )


SOURCE = _source()
