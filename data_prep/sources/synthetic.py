"""Embedded synthetic ICU database in the MIMIC-III v1.4 table format (`sepsis generate`).

`generate(out_dir, params)` writes PATIENTS, ADMISSIONS, ICUSTAYS, CHARTEVENTS, LABEVENTS,
PRESCRIPTIONS, MICROBIOLOGYEVENTS, INPUTEVENTS_MV, INPUTEVENTS_CV, OUTPUTEVENTS, DIAGNOSES_ICD,
D_ITEMS and D_LABITEMS as upper-case `.csv.gz` files with the upper-case column names of the
full MIMIC-III release and the real ITEMIDs of `data_prep.concepts.variables`, plus
`ground_truth.parquet` (each stay's group and designed onset hour; for tests only, the
pipeline never reads it).

Design (each stay belongs to one group):

* ``septic``: SOFA <= 1 before the designed onset hour ``o`` (values kept away from the SOFA
  thresholds), then at ``o + u`` (0 < u < 1) a trigger raises SOFA by >= 2 (a lab with low
  platelets / high creatinine / high bilirubin, MAP < 70 with norepinephrine, a worse
  PaO2/FiO2, a falling GCS), and dysfunction persists for hours. A culture and an antibiotic
  (either order, inside the Sepsis-3 pairing windows) make suspected infection within
  [o - 22, o + 46] h, so the onset hour falls inside the SI window. Over the 6-24 h before
  onset, heart rate, temperature, respiratory rate, lactate and WBC drift (scaled by
  ``signal_strength``; heterogeneous amplitudes, some hypothermic / leukopenic patients).
* ``infection``: cultures and antibiotics, a milder febrile drift, but no organ failure
  (SOFA <= 1 all stay): suspected infection without sepsis.
* ``organ``: an organ-dysfunction event with haemodynamic drift but no infection workup.
* ``control``: everyone else; some with stable chronic organ dysfunction.

Trajectories are Ornstein-Uhlenbeck processes around per-patient means with a shared latent
severity process (heart rate, MAP, respiratory rate, lactate move together) plus measurement
noise; vitals are charted about hourly with gaps, labs every 4-20 h, blood gases mostly in
ventilated patients. Patients are simulated in blocks of `BLOCK` with an RNG seeded from
(seed, block), and each block's rows are appended to gzip streams (mtime 0), so the output
is byte-for-byte deterministic for a seed and memory is bounded by the block size.

Modules: this one holds the parameters, the order of one stay's draws (`_simulate_stay`) and
`generate`; `synthetic_scenario` designs a stay (group events, care, coding),
`synthetic_physiology` and `synthetic_labs` its measurements, `synthetic_emit` writes them as
rows of each table, `synthetic_items` names the items (ITEMIDs from the concept mapping), and
`synthetic_tables` holds the MIMIC-III table layout.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from data_prep.sources import synthetic_emit as emit
from data_prep.sources import synthetic_labs as labs
from data_prep.sources import synthetic_physiology as physiology
from data_prep.sources import synthetic_scenario as scenario
from data_prep.sources.synthetic_items import d_items, d_labitems
from data_prep.sources.synthetic_scenario import Ids
from data_prep.sources.synthetic_tables import COLUMNS, EVENT_TABLES, KINDS, Rows

# The public API (imported by sepsis/, benchmarks/ and tests/); the layout lives in synthetic_tables.
__all__ = ["BLOCK", "COLUMNS", "EVENT_TABLES", "GROUPS", "KINDS", "SyntheticParams", "generate"]

log = logging.getLogger(__name__)

BLOCK = 250  # patients per block (one RNG stream and one flush per block)
GROUPS = ("septic", "infection", "organ", "control")


@dataclass(frozen=True)
class SyntheticParams:
    """YAML section `synthetic`: size and difficulty of the embedded database."""

    n_patients: int = 600
    septic_fraction: float = 0.1
    signal_strength: float = 1.0  # scales the pre-onset drift; 0 = no early signal
    metavision_fraction: float = 0.6
    confounder_fraction: float = (
        0.15  # each of: infection-without-organ-failure, organ-dysfunction-without-infection
    )
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError("synthetic.<key>: expected ..., got ...") for impossible values."""
        n = self.n_patients
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
            raise ValueError(f"synthetic.n_patients: expected an integer >= 1, got {n!r}")
        for key in ("septic_fraction", "metavision_fraction", "confounder_fraction"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1):
                raise ValueError(f"synthetic.{key}: expected a number in [0, 1], got {v!r}")
        total = self.septic_fraction + 2 * self.confounder_fraction
        if total > 1:
            raise ValueError(
                f"synthetic.septic_fraction + 2 * confounder_fraction: expected <= 1, got {total:g}"
            )
        s = self.signal_strength
        if not (
            isinstance(s, (int, float))
            and not isinstance(s, bool)
            and math.isfinite(s)
            and 0 <= s <= 10
        ):
            raise ValueError(f"synthetic.signal_strength: expected a number in [0, 10], got {s!r}")
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0):
            raise ValueError(f"synthetic.seed: expected an integer >= 0, got {self.seed!r}")


# --------------------------------------------------------------------------------------
# one stay
# --------------------------------------------------------------------------------------


def _simulate_stay(
    rng: np.random.Generator,
    ids: Ids,
    group: str,
    db: str,
    params: SyntheticParams,
    rows: dict[str, Rows],
) -> dict:
    """Simulate one ICU stay, append its rows to `rows`, return its ground-truth record.

    The calls draw from `rng` in this order (changing it changes every later stay of the block).
    """
    stay = scenario.draw_stay(rng, ids, group, db)
    course = physiology.Course(rng, stay, params.signal_strength)
    chart, tv = physiology.vitals(rng, stay, course)
    resp, fio2 = physiology.ventilation_and_gcs(rng, stay, tv)
    infusions = scenario.vasopressor_infusions(rng, stay)
    t_urine, urine_ml = physiology.urine_output(rng, stay, course)
    lab_series, tl, lactate = labs.labs(rng, stay, course)
    gases = labs.blood_gases(rng, stay, course, fio2, tl, lactate)
    workup = scenario.infection_workup(rng, stay)
    drugs = scenario.other_drugs(rng, stay)
    coding = scenario.coding(rng, stay)

    emit.chartevents(rows, stay, chart + resp)
    emit.inputevents(rows, stay, infusions)
    emit.outputevents(rows, stay, t_urine, urine_ml)
    emit.labevents(rows, stay, lab_series + gases)
    emit.prescriptions(rows, stay, workup.antibiotics + drugs)
    emit.microbiologyevents(rows, stay, workup.cultures)
    emit.admission(rows, stay, coding)
    return {
        "stay_id": ids.stay,
        "icustay_id": ids.stay,
        "subject_id": ids.subject,
        "hadm_id": ids.hadm,
        "group": group,
        "dbsource": db,
        "designed_onset_hour": stay.onset,
        "trigger_hour": stay.trig_at if group in ("septic", "organ") else np.nan,
        "si_hour": workup.si_hour,
        "triggers": ",".join(sorted(stay.triggers)),
        "ventilated": stay.vent,
        "los_hours": stay.los,
        "icd9_sepsis": coding.sepsis_dx,
    }


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------


def _groups(params: SyntheticParams) -> np.ndarray:
    """Group of every patient: exact counts from the fractions, order shuffled by the seed."""
    n = params.n_patients
    n_sep = int(round(n * params.septic_fraction))
    n_conf = int(round(n * params.confounder_fraction))
    n_conf = min(n_conf, (n - n_sep) // 2)
    g = np.array(
        ["septic"] * n_sep
        + ["infection"] * n_conf
        + ["organ"] * n_conf
        + ["control"] * (n - n_sep - 2 * n_conf),
        dtype=object,
    )
    np.random.default_rng([params.seed, 0xC0FFEE]).shuffle(g)
    return g


def _open_gz(path: Path):
    raw = open(path, "wb")
    gz = gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=raw, mtime=0)
    return raw, gz


def generate(out_dir: Path, params: SyntheticParams, progress: bool = True) -> dict:
    """Write the synthetic MIMIC-III-format database into `out_dir`; return counts.

    `out_dir` is created if needed; the caller makes it atomic (the pipeline's generate stage
    writes into its temporary folder and renames it into place). Returns a summary: rows per
    table, stays per group, seconds and peak RSS (MiB).
    """
    params.validate()
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    groups = _groups(params)
    n = params.n_patients
    n_blocks = (n + BLOCK - 1) // BLOCK
    counts = {t: 0 for t in COLUMNS}
    truth_parts = []
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext(out_dir) as tmp:
        handles = {}
        try:
            for t in EVENT_TABLES:
                raw, gz = _open_gz(tmp / f"{t}.csv.gz")
                gz.write((",".join(COLUMNS[t]) + "\n").encode())
                handles[t] = (raw, gz)
            bar = tqdm(total=n, desc="synthetic patients", unit="patient", disable=not progress)
            for b in range(n_blocks):
                rng = np.random.default_rng([params.seed, b])
                rows = {t: Rows(t) for t in EVENT_TABLES}
                for i in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
                    db = "metavision" if rng.random() < params.metavision_fraction else "carevue"
                    ids = Ids(subject=10_000 + i, hadm=100_000 + i, stay=200_000 + i)
                    truth_parts.append(_simulate_stay(rng, ids, str(groups[i]), db, params, rows))
                    bar.update(1)
                for t in EVENT_TABLES:
                    frame = rows[t].frame(counts[t] + 1)
                    if len(frame):
                        handles[t][1].write(
                            frame.to_csv(header=False, index=False, lineterminator="\n").encode()
                        )
                    counts[t] += len(frame)
            bar.close()
        finally:
            for raw, gz in handles.values():
                gz.close()
                raw.close()
        for t, frame in (("D_ITEMS", d_items()), ("D_LABITEMS", d_labitems())):
            raw, gz = _open_gz(tmp / f"{t}.csv.gz")
            with raw, gz:
                gz.write(frame.to_csv(index=False, lineterminator="\n").encode())
            counts[t] = len(frame)
        truth = pd.DataFrame(truth_parts)
        truth.to_parquet(tmp / "ground_truth.parquet", index=False)
    seconds = time.perf_counter() - t0
    from data_prep.sources.csv_stream import peak_rss_mb

    summary = {
        "out_dir": str(out_dir),
        "n_patients": n,
        "rows": counts,
        "groups": {g: int((groups == g).sum()) for g in GROUPS},
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    log.info("synthetic database: %d patients in %.1f s -> %s", n, seconds, out_dir)
    return summary
