"""The MEDS source: a MEDS dataset (schema 0.3 / 0.4) -> the extracted-events contract.

``data_dir`` is a MEDS root: ``data/**/*.parquet`` shards and ``metadata/`` (dataset.json,
codes.parquet). Which codes feed which concept is a mapping file per ETL
(``data_prep/sources/meds_mappings/*.yaml``, chosen by dataset.json's ``dataset_name``; a
``meds_mapping.yaml`` in the MEDS root wins; docs/MEDS_MAPPING.md). Two passes over the
shards, each in record batches of the needed columns (memory bounded by a batch and one
shard's infusion rows, not by the dataset):

1. ICU stays, patients and hospital admissions (data_prep.sources.meds_stays);
2. measurements, infusions and admission events (data_prep.sources.meds_events).

Writes ``stays.parquet``, ``events/<part>.parquet``, ``admission_events.parquet`` and
``extraction_report.json`` into ``out_dir`` and returns the report. Nothing is dropped
without a count. A dataset without cultures (the official MIMIC-IV MEDS ETL has no
microbiology) is read, and ``cultures: 0`` says so at the top of the report.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from data_prep import io as dio
from data_prep.sources import ReaderOptions, Source
from data_prep.sources import meds_mapping as mm
from data_prep.sources.extract_output import peak_rss_mb
from data_prep.sources.meds_read import (
    CodeTable,
    MedsDataError,
    check_listed,
    open_shard,
    read_metadata,
    shard_files,
)

log = logging.getLogger(__name__)

BATCH_ROWS = 1_000_000
OVERRIDE_MAPPING = "meds_mapping.yaml"  # in the MEDS root: used instead of the shipped ones
_KIND = {
    "hadm_id": "int",
    "stay_id": "int",
    "order_id": "int",
    "unit": "string",
    "route": "string",
    "drug_type": "string",
    "status": "string",
}


def choose_mapping(data_dir: Path, dataset: dict) -> mm.Mapping:
    """`<data_dir>/meds_mapping.yaml` if present, else the shipped mapping for the dataset."""
    override = Path(data_dir) / OVERRIDE_MAPPING
    if override.is_file():
        return mm.load(override)
    return mm.for_dataset(
        dataset.get("dataset_name"), str(Path(data_dir) / "metadata" / "dataset.json")
    )


def inputs(data_dir: Path) -> list[Path]:
    """The shards, the metadata files read and a `meds_mapping.yaml` of the MEDS root."""
    data_dir = Path(data_dir)
    files = shard_files(data_dir)
    meta = data_dir / "metadata"
    extra = [
        meta / "dataset.json",
        meta / "codes.parquet",
        meta / ".shards.json",
        data_dir / OVERRIDE_MAPPING,
    ]
    return files + [f for f in extra if f.is_file()]


def extract(data_dir: Path, out_dir: Path, options: ReaderOptions, progress: bool = True) -> dict:
    from tqdm import tqdm

    from data_prep.sources.meds_events import Pass2
    from data_prep.sources.meds_stays import read_stays

    t0 = time.perf_counter()
    options.validate()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    files = shard_files(data_dir)
    warnings = check_listed(data_dir, files)
    meta = read_metadata(data_dir)
    mapping = choose_mapping(data_dir, meta.dataset)
    name = meta.dataset.get("dataset_name")
    if mapping.dataset_names and name not in mapping.dataset_names:
        warnings.append(
            f"dataset_name {name!r} is not one of {mapping.path.name}'s {list(mapping.dataset_names)}"
        )
    version = str(meta.dataset.get("meds_version", ""))
    if not version.startswith(("0.3", "0.4")):
        warnings.append(f"meds_version {version or '<none>'!r}: this reader knows MEDS 0.3 and 0.4")
    if meta.codes is None:
        warnings.append(
            "no metadata/codes.parquet: codes cannot be checked against the code metadata"
        )
    wanted = {col: _KIND[role] for role, col in mapping.columns.items()}
    for r in mapping.admission_rules:
        wanted.update({c: "any" for c in r.require_columns if c not in wanted})
    shards = [open_shard(data_dir, f, wanted) for f in files]
    for col in sorted({c for s in shards for c in s.absent}):
        lacking = [s.name for s in shards if col in s.absent]
        warnings.append(
            f"column {col!r} absent from {len(lacking)} of {len(shards)} shard(s) (read as null)"
        )
    codes = CodeTable(mapping.classify, meta.codes)
    st = read_stays(shards, mapping, codes, BATCH_ROWS)
    if st.stays.empty:
        raise MedsDataError(
            f"{data_dir}: no ICU stays: no row has a code of {mapping.path.name} stays.admission "
            f"(with a time{' and a ' + mapping.column('stay_id') if mapping.column('stay_id') else ''})"
        )
    p2 = Pass2(mapping, codes, st.stays, st.admissions, options, out_dir, BATCH_ROWS)
    for shard in tqdm(shards, desc="meds shards", disable=not progress):
        p2.shard(shard)
    res = p2.finish()
    stays = st.stays
    ids = p2.index.ids
    wmap = dict(zip(ids, p2.weights.w, strict=True))
    imap = dict(zip(ids, p2.inf_weights.w, strict=True))
    w = stays["stay_id"].map(wmap).astype(float)
    stays["weight_kg"] = w.where(np.isfinite(w), stays["stay_id"].map(imap).astype(float))
    stays["has_chart"] = (
        stays["stay_id"].map(dict(zip(ids, p2.has_chart, strict=True))).astype(bool)
    )
    dio.write_parquet(
        stays[dio.EXTRACTED_STAYS.names], out_dir / "stays.parquet", dio.EXTRACTED_STAYS
    )

    adm = res["admission"]
    several = p2.subjects_in_several_shards()
    if several:
        warnings.append(
            f"{several} subject(s) in more than one shard (MEDS keeps a subject in one): "
            "infusion and specimen pairing is per shard"
        )
    if adm["culture"] == 0:
        warnings.append(
            "no culture events: suspected infection (Sepsis-3) needs cultures; this "
            "dataset has none (the official MIMIC-IV MEDS ETL has no microbiology)"
        )
    seconds = time.perf_counter() - t0
    concepts = {
        **dict(sorted(p2.counts.items())),
        **{c: adm[c] for c in ("antibiotic", "culture", "sepsis_diagnosis")},
    }
    report = {
        "source": "meds",
        "cultures": adm["culture"],
        "antibiotics": adm["antibiotic"],
        "stays": len(stays),
        "warnings": warnings,
        "data_dir": str(data_dir),
        "mapping": {"file": str(mapping.path), "name": mapping.name},
        "dataset": meta.dataset,
        "shards": {s.name: s.rows for s in shards},
        "rows_read": p2.rows_read,
        "rows_unmapped": codes.unmapped_rows,
        "rows_null_code": codes.null_code_rows,
        "codes_not_in_metadata": {
            "codes": len(codes.not_in_metadata),
            "rows": int(sum(codes.not_in_metadata.values())),
            "examples": sorted(codes.not_in_metadata)[:10],
        },
        "concepts": concepts,
        "admission_events": adm,
        "stays_detail": {
            **st.counts,
            "with_weight": int(stays["weight_kg"].notna().sum()),
            "with_chart": int(stays["has_chart"].sum()),
        },
        "dropped": {k: dict(v) for k, v in sorted(p2.dropped.items())},
        "pairing": dict(p2.pairing),
        "outputs": {"stays.parquet": len(stays), **res["outputs"]},
        "params": {"on_bad_rows": options.on_bad_rows, "lookback_hours": options.lookback_hours},
        "seconds": round(seconds, 3),
        "rows_per_s": round(p2.rows_read / seconds) if seconds > 0 else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    (out_dir / "extraction_report.json").write_text(
        json.dumps(report, indent=2, default=str) + "\n"
    )
    log.info(
        "MEDS extraction: %d stays, %d cultures, %d antibiotics, %d rows in %.1f s",
        len(stays),
        adm["culture"],
        adm["antibiotic"],
        p2.rows_read,
        seconds,
    )
    return report


SOURCE = Source(
    name="meds",
    description="a MEDS dataset (schema 0.3 / 0.4: data/**/*.parquet + metadata/), codes mapped "
    "to concepts by a per-ETL mapping file (data_prep/sources/meds_mappings)",
    extract=extract,
    inputs=inputs,
    attributes=(),
    rules=lambda data_dir: sorted(Path(mm.__file__).with_name("meds_mappings").glob("*.yaml")),
)
