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

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from data_prep.sources.physionet2019_input import (  # noqa: F401  (re-exported)
    _NAME,
    COLUMNS,
    HEADER,
    PhysioNetFormatError,
    PhysioNetInputNotFound,
    _count_rows,
    _open_source,
    _parse,
    _parse_located,
)
from data_prep.sources.physionet2019_tables import (  # noqa: F401  (re-exported)
    EPOCH,
    ONSET_BEFORE_DATA,
    ONSET_SHIFT_HOURS,
    PHYSIONET_SOURCE,
    SOFA_UNKNOWN,
    VARIABLE_MAP,
    PhysioNetTables,
    _build,
)

logger = logging.getLogger(__name__)


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
