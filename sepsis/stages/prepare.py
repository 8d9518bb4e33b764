"""The data stages: generate (a generated source's raw data) -> extract (the
extracted-events contract) -> prepare (Sepsis-3 labels, matched cohort and windows)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from sepsis.config import RunConfig
from sepsis.manifest import PipelineError, Stage, hash_files, stage_fingerprint
from sepsis.runlock import data_lock, run_lock
from sepsis.stages.common import _asdict, _locked, _source

log = logging.getLogger("sepsis.pipeline")


def generate(cfg: RunConfig, force: bool = False, progress: bool = True) -> Path:
    """Write a generated source's raw data (the synthetic database) into `cfg.data_dir`
    (skipped if current)."""
    src = _source(cfg)
    if src.generate is None:
        raise PipelineError(f"generate: source '{cfg.source}' is read, not generated")
    params = cfg.sections[src.generator_section]
    stage = Stage("generate", cfg.data_dir, {src.generator_section: _asdict(params)}, force=force)
    with run_lock(data_lock(cfg.data_dir), f"data folder {cfg.data_dir}"):
        if stage.is_current():
            log.info("generate: %s is current, skipped", cfg.data_dir)
            return cfg.data_dir
        # a data_dir that holds anything but an earlier generate's own files is someone's
        # data: writing() refuses it before any work, and never moves or deletes it
        counts: dict[str, Any] = {}
        with stage.writing(counts) as tmp:
            report = src.generate(tmp, params, progress)
            counts.update(_report_counts(report))
    return cfg.data_dir


def _report_counts(report: Any) -> dict[str, Any]:
    if report is None:
        return {}
    if dataclasses.is_dataclass(report):
        return json.loads(json.dumps(dataclasses.asdict(report), default=str))
    if isinstance(report, dict):
        return json.loads(json.dumps(report, default=str))
    return {"report": str(report)}


def _reader_options(cfg: RunConfig):
    from data_prep.sources import ReaderOptions

    # one pre-ICU lookback: the reader keeps the pre-ICU data that the scored pre-ICU hours'
    # SOFA windows reach (LabelParams.data_lookback_hours), no more and no less
    return ReaderOptions(
        on_bad_rows=cfg.labels.on_bad_rows, lookback_hours=cfg.labels.data_lookback_hours
    )


def _inputs_fingerprint(cfg: RunConfig, src) -> str:
    """Fingerprint of exactly the raw files the source reads (other files ignored)."""
    try:
        files = src.inputs(cfg.data_dir)
    except FileNotFoundError as err:
        raise PipelineError(str(err)) from None
    return hash_files(files, cfg.data_dir)


def _rules_fingerprint(cfg: RunConfig, src) -> str:
    """Fingerprint of the rules an extraction follows: the concept dictionary and its data
    files (data_prep/concepts/*.yaml, *.csv, *.txt) and the source's own rule files."""
    import hashlib

    from data_prep.concepts import dictionary
    from sepsis.manifest import hash_file

    folder = dictionary.DICTIONARY_FILE.parent
    files = sorted(f for pat in ("*.yaml", "*.csv", "*.txt") for f in folder.glob(pat))
    files += sorted(src.rules(cfg.data_dir)) if src.rules else []
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.parent.name}/{f.name}".encode() + b"\0" + hash_file(f).encode())
    return h.hexdigest()[:16]


@_locked
def extract(cfg: RunConfig, force: bool = False, progress: bool = True) -> Path:
    """Read the source's raw data into the extracted-events contract (`extracted/`)."""
    src = _source(cfg)
    if src.generate is not None:
        generate(cfg, force=force, progress=progress)
    if not cfg.data_dir.exists():
        raise PipelineError(f"data_dir {cfg.data_dir} does not exist")
    options = _reader_options(cfg)
    out = cfg.output_dir / "extracted"
    stage = Stage(
        "extract",
        out,
        {"source": cfg.source, "reader": _asdict(options)},
        inputs={"tables": _inputs_fingerprint(cfg, src), "rules": _rules_fingerprint(cfg, src)},
        force=force,
    )
    if stage.is_current():
        log.info("extract: %s is current, skipped", out)
        return out
    counts: dict[str, Any] = {}
    with stage.writing(counts) as tmp:
        counts.update(_report_counts(src.extract(cfg.data_dir, tmp, options, progress)))
    return out


@_locked
def prepare(cfg: RunConfig, force: bool = False, progress: bool = True) -> Path:
    """Raw records -> Sepsis-3 labels -> matched cohort and windows (`prepared/`)."""
    from data_prep import io as dio
    from data_prep.cohort import prepare_from_tables, sepsis_admissions
    from data_prep.observations import observations_from_extracted
    from data_prep.sepsis3 import derive_labels

    src = _source(cfg)
    out = cfg.output_dir / "prepared"
    stage_cfg = {"source": cfg.source, "labels": _asdict(cfg.labels), "cohort": _asdict(cfg.cohort)}
    extracted = extract(cfg, force=force, progress=progress)
    inputs = {"extracted": stage_fingerprint(extracted)}
    stage = Stage("prepare", out, stage_cfg, inputs=inputs, force=force)
    if stage.is_current():
        log.info("prepare: %s is current, skipped", out)
        return out
    counts: dict[str, Any] = {}
    with stage.writing(counts) as tmp:
        extraction = json.loads((extracted / "manifest.json").read_text()).get("counts", {})
        if src.labels is None:
            labels_hourly, onsets, label_counts = derive_labels(
                extracted, cfg.labels, progress=progress, spill_dir=tmp
            )
            label_step = {"step": "sepsis-3 labels", "detail": label_counts}
        else:  # the source's own labels (PhysioNet 2019: the challenge's)
            labels_hourly = dio.read_parquet(
                extracted / "labels" / "labels_hourly.parquet", dio.LABELS_HOURLY
            )
            onsets = dio.read_parquet(extracted / "labels" / "onsets.parquet", dio.ONSETS)
            label_step = {"step": "labels", "detail": src.labels}
        stays = pd.read_parquet(extracted / "stays.parquet")
        observations, dropped = observations_from_extracted(extracted, stays, progress=progress)
        reader_steps = extraction.pop("steps", None) or []
        result = prepare_from_tables(
            stays=stays,
            onsets=onsets,
            labels_hourly=labels_hourly,
            diagnoses=sepsis_admissions(extracted),
            observations=observations,
            params=cfg.cohort,
            out_dir=tmp,
            dropped_values=dropped,
            source_attrition=[
                *reader_steps,
                label_step,
                {"step": "extraction", "detail": extraction},
            ],
            source_columns=src.attributes,
        )
        counts.update(_prepare_counts(result))
    return out


def _prepare_counts(attrition: dict) -> dict[str, Any]:
    """The headline numbers of a prepared cohort, for the manifest."""
    steps = attrition.get("steps", [])
    last = steps[-1] if steps else {}
    return {
        "cases": last.get("cases"),
        "controls": last.get("controls"),
        "remaining": last.get("remaining"),
        "prevalence": attrition.get("prevalence"),
        "split_counts": attrition.get("split_counts"),
    }


def describe_prepared(prepared: Path) -> str:
    """A short text summary of a prepared cohort (printed by `sepsis prepare`)."""
    cohort = pd.read_parquet(prepared / "cohort.parquet")
    n_case = int((cohort["label"] == 1).sum())
    n_ctrl = int((cohort["label"] == 0).sum())
    prev = n_case / max(len(cohort), 1)
    lines = [f"cohort: {n_case} cases, {n_ctrl} controls, prevalence {prev:.3f}"]
    att = prepared / "attrition.json"
    if att.exists():
        data = json.loads(att.read_text())
        steps = data.get("steps", data) if isinstance(data, dict) else data
        if isinstance(steps, list):
            lines.append("attrition:")
            for s in steps:
                if isinstance(s, dict) and "step" in s:
                    lines.append(
                        f"  {s['step']:<48} removed {s.get('removed', ''):>7}  remaining {s.get('remaining', ''):>7}"
                    )
    return "\n".join(lines)
