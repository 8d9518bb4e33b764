"""The MIMIC-III source (v1.4, CareVue and MetaVision): `data_prep.sources.mimic3` reads it."""

from __future__ import annotations

import json
from pathlib import Path

from data_prep.sources import ReaderOptions, Source


def reader_params(options: ReaderOptions):
    from data_prep.sources.mimic3 import ReaderParams

    return ReaderParams(on_bad_rows=options.on_bad_rows, lab_lookback_hours=options.lookback_hours)


def extract(data_dir: Path, out_dir: Path, options: ReaderOptions, progress: bool = True) -> dict:
    """Stream the MIMIC-III tables of `data_dir` into the contract in `out_dir` (which the
    caller, the pipeline's extract stage, makes atomic)."""
    from data_prep.sources.mimic3 import MissingTableError, _extract_into

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise MissingTableError(f"MIMIC-III folder {data_dir} does not exist")
    params = reader_params(options)
    params.validate()
    report = _extract_into(data_dir, out_dir, params, progress)
    report.out_dir = str(out_dir)
    counts = report.to_dict()
    (out_dir / "extraction_report.json").write_text(json.dumps(counts, indent=2) + "\n")
    return counts


def inputs(data_dir: Path) -> list[Path]:
    """Exactly the tables the MIMIC-III reader reads (MissingTableError naming a missing one)."""
    from data_prep.sources.mimic3 import TABLE_COLUMNS, find_table

    return [find_table(Path(data_dir), table) for table in TABLE_COLUMNS]


SOURCE = Source(
    name="mimic3",
    description="MIMIC-III v1.4 CSV tables (CareVue and MetaVision ICU stays)",
    extract=extract,
    inputs=inputs,
    attributes=("dbsource",),
)
