"""Cohort: exclusions, seeded case-control matching, patient-level splits, normalisation.

PIPELINE.md sections 2 and 3. `build_cohort` takes the prepared tables (stays, onsets,
diagnoses, observations) and returns the cohort, the splits for every split seed, the
training-split normalisation statistics and an attrition record. `prepare_from_tables`
runs it and writes every artifact of the prepare stage atomically.

Matching (deviations from the reference code on purpose):
* a control must still be in the ICU at its pseudo-onset (``los_hours >= onset``);
* controls are never reused; a case that cannot get ``ratio`` eligible controls gets as
  many as remain (counted in the attrition record as ``cases_short``);
* cases are served in order of decreasing onset hour (ties in seeded random order), each
  taking the first eligible unused controls of the seeded shuffle. Eligible sets are nested
  (a control eligible for onset o is eligible for every earlier onset), so serving the most
  constrained cases first never leaves a case short when another order would not.

Variable selection: variables with at least ``min_variable_observations`` observations
inside the cohort's h=0 windows are kept; normalisation rows exist only for kept
variables, and ``CohortDataset.variables`` is read from them.

The matching, split, window and normalisation functions are in `data_prep.cohort_matching`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_prep import io
from data_prep.cohort_matching import (  # noqa: F401  (re-exported)
    match_controls,
    normalisation_stats,
    patient_splits,
    window_mask,
)
from data_prep.observations import variable_order

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CohortParams:
    """YAML section `cohort`."""

    min_age: float = 15
    dbsource: str = "metavision"  # "metavision" | "carevue" | "all"; for sources with a dbsource
    min_onset_hour: float = 7
    window_hours: int = 48
    horizons: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    control_ratio: int | None = None  # None: floor(#controls / #cases)
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seeds: tuple[int, ...] = (0, 1, 2)
    matching_seed: int = 0
    min_variable_observations: int = 500
    exclude_icd9_controls: bool = True  # controls with a sepsis diagnosis code (any coding)

    def validate(self) -> None:
        """Raise ValueError("cohort.<key>: ...") for impossible values."""
        if not (0 <= self.min_age <= 120):
            raise ValueError(f"cohort.min_age: expected a number in [0, 120], got {self.min_age!r}")
        if self.dbsource not in ("metavision", "carevue", "all"):
            raise ValueError(
                f"cohort.dbsource: expected 'metavision', 'carevue' or 'all', got {self.dbsource!r}"
            )
        if not isinstance(self.window_hours, int) or self.window_hours < 1:
            raise ValueError(
                f"cohort.window_hours: expected an integer >= 1, got {self.window_hours!r}"
            )
        if not self.horizons or any(not isinstance(h, int) or h < 0 for h in self.horizons):
            raise ValueError(
                f"cohort.horizons: expected a non-empty list of integers >= 0, got {self.horizons!r}"
            )
        if len(set(self.horizons)) != len(self.horizons):
            raise ValueError(f"cohort.horizons: duplicates in {self.horizons!r}")
        if self.min_onset_hour < max(self.horizons):
            raise ValueError(
                f"cohort.min_onset_hour: must be >= the largest horizon ({max(self.horizons)}) so that "
                f"every horizon has a window, got {self.min_onset_hour!r}"
            )
        if self.control_ratio is not None and (
            not isinstance(self.control_ratio, int) or self.control_ratio < 1
        ):
            raise ValueError(
                f"cohort.control_ratio: expected null or an integer >= 1, got {self.control_ratio!r}"
            )
        fr = tuple(self.split_fractions)
        if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6 or fr[0] <= 0:
            raise ValueError(
                f"cohort.split_fractions: expected three fractions (train, val, test) >= 0 summing to 1 "
                f"with train > 0, got {self.split_fractions!r}"
            )
        if not self.split_seeds or len(set(self.split_seeds)) != len(self.split_seeds):
            raise ValueError(
                f"cohort.split_seeds: expected a non-empty list of distinct integers, got {self.split_seeds!r}"
            )
        if not isinstance(self.matching_seed, int):
            raise ValueError(
                f"cohort.matching_seed: expected an integer, got {self.matching_seed!r}"
            )
        if (
            not isinstance(self.min_variable_observations, int)
            or self.min_variable_observations < 0
        ):
            raise ValueError(
                f"cohort.min_variable_observations: expected an integer >= 0, "
                f"got {self.min_variable_observations!r}"
            )


class _Attrition:
    """Ordered exclusion steps, with removed/remaining counts per class."""

    def __init__(self, is_case: pd.Series) -> None:
        self.steps: list[dict[str, Any]] = []
        self.alive = pd.Series(True, index=is_case.index)
        self.is_case = is_case
        self._record(
            "all stays", pd.Series(False, index=is_case.index), "stays given to the cohort stage"
        )

    def _record(self, step: str, remove: pd.Series, detail: str) -> None:
        rem = remove & self.alive
        self.alive &= ~rem
        rc = int((rem & self.is_case).sum())
        self.steps.append(
            {
                "step": step,
                "removed": int(rem.sum()),
                "removed_cases": rc,
                "removed_controls": int(rem.sum()) - rc,
                "remaining": int(self.alive.sum()),
                "cases": int((self.alive & self.is_case).sum()),
                "controls": int((self.alive & ~self.is_case).sum()),
                "detail": detail,
            }
        )

    def remove(self, step: str, remove: pd.Series | np.ndarray, detail: str) -> None:
        if not isinstance(remove, pd.Series):
            remove = pd.Series(np.asarray(remove, bool), index=self.alive.index)
        self._record(step, remove.reindex(self.alive.index).fillna(False).astype(bool), detail)


def _exclusions(
    stays: pd.DataFrame,
    onsets: pd.DataFrame,
    sepsis_admissions: pd.DataFrame,
    obs_stays: np.ndarray,
    params: CohortParams,
    source_columns: tuple[str, ...] | None = None,
) -> tuple[pd.DataFrame, _Attrition]:
    s = stays.set_index("stay_id", drop=False)
    if s.index.has_duplicates:
        dup = s.index[s.index.duplicated()][0]
        raise ValueError(f"stays: column 'stay_id' must be unique, {dup} appears more than once")
    on = (
        onsets.drop_duplicates("stay_id").set_index("stay_id")["onset_hour"]
        if len(onsets)
        else pd.Series(dtype=float)
    )
    s["onset"] = on.reindex(s.index).astype(float)
    is_case = s["onset"].notna()
    att = _Attrition(is_case)
    att.remove("age", ~(s["age"] >= params.min_age), f"age < {params.min_age} or unknown")
    los = s["los_hours"].astype(float)
    att.remove(
        "times",
        s["intime"].isna() | s["outtime"].isna() | ~(los > 0),
        "intime or outtime missing, or length of stay <= 0",
    )
    if params.dbsource != "all":
        # a filter on a source-specific stay column applies when the source declares it
        if source_columns is None or "dbsource" in source_columns:
            att.remove(
                "dbsource", s["dbsource"] != params.dbsource, f"dbsource != {params.dbsource}"
            )
        else:
            att.remove(
                "dbsource",
                pd.Series(False, index=s.index),
                f"not applicable: the source has no dbsource (cohort.dbsource={params.dbsource})",
            )
    no_data = ~s.index.isin(obs_stays)
    if "has_chart" in s.columns:
        no_data |= ~s["has_chart"].fillna(False).astype(bool)
    att.remove("no chart data", no_data, "no chart data / no observations for the stay")
    att.remove(
        "onset outside stay",
        is_case & ((s["onset"] < 0) | (s["onset"] > los)),
        "(case) onset before intime or after the stay's end",
    )
    att.remove(
        "early onset",
        is_case & (s["onset"] < params.min_onset_hour),
        f"(case) onset < {params.min_onset_hour} h after ICU admission",
    )
    if params.exclude_icd9_controls and len(sepsis_admissions):
        bad_hadm = set(sepsis_admissions["hadm_id"].dropna().astype("int64").tolist())
        has_code = (
            s["hadm_id"].isin(bad_hadm)
            if "hadm_id" in s.columns
            else pd.Series(False, index=s.index)
        )
        att.remove(
            "sepsis ICD-9",
            ~is_case & has_code,
            "(control) a sepsis diagnosis code on the admission "
            "(concept sepsis_diagnosis; MIMIC-III: ICD-9 995.91 / 995.92 / 785.52)",
        )
    return s[att.alive].copy(), att


def build_cohort(
    stays: pd.DataFrame,
    onsets: pd.DataFrame,
    diagnoses: pd.DataFrame | None,
    observations: pd.DataFrame,
    params: CohortParams,
    source_columns: tuple[str, ...] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Exclusions, matching, splits, normalisation (PIPELINE.md 2-3).

    Returns (cohort, splits, normalisation, attrition) with the schemas `io.COHORT`,
    `io.SPLITS`, `io.NORMALISATION`; attrition = {"steps": [...], "matching": {...},
    "variables": {...}, "prevalence", "params"}. `diagnoses`: the admissions (``hadm_id``)
    with a sepsis diagnosis code; `source_columns`: the source-specific stay columns the
    source declares (a filter on an undeclared one does not apply; None: all apply).
    """
    params.validate()
    if diagnoses is None:
        diagnoses = pd.DataFrame({"hadm_id": pd.Series(dtype="int64")})
    obs_stays = observations["stay_id"].unique()
    kept, att = _exclusions(stays, onsets, diagnoses, obs_stays, params, source_columns)
    cases = kept[kept["onset"].notna()][["stay_id", "patient_id", "onset"]].reset_index(drop=True)
    controls = kept[kept["onset"].isna()][["stay_id", "patient_id", "los_hours"]].reset_index(
        drop=True
    )
    if len(cases) == 0:
        raise ValueError(
            "cohort: no cases remain after the exclusions (see attrition): "
            + "; ".join(f"{s['step']}: -{s['removed']}" for s in att.steps)
        )
    ratio = (
        params.control_ratio
        if params.control_ratio is not None
        else max(1, len(controls) // len(cases))
    )
    matched, minfo = match_controls(cases, controls, ratio, params.matching_seed)
    used = pd.Series(kept.index.isin(matched["stay_id"]), index=kept.index)
    att.remove(
        "not matched",
        ~used.reindex(att.alive.index, fill_value=True) & ~att.is_case,
        f"(control) not drawn by the matching (ratio {ratio}, seed {params.matching_seed})",
    )

    pid = kept["patient_id"]
    cohort = (
        pd.concat(
            [
                pd.DataFrame(
                    {
                        "stay_id": cases["stay_id"],
                        "patient_id": cases["patient_id"],
                        "label": np.int8(1),
                        "onset_hour": cases["onset"].astype(float),
                        "matched_case": cases["stay_id"],
                    }
                ),
                pd.DataFrame(
                    {
                        "stay_id": matched["stay_id"],
                        "patient_id": matched["stay_id"].map(pid).to_numpy(),
                        "label": np.int8(0),
                        "onset_hour": matched["onset_hour"],
                        "matched_case": matched["matched_case"],
                    }
                ),
            ],
            ignore_index=True,
        )
        .sort_values("stay_id", kind="stable")
        .reset_index(drop=True)
    )
    cohort["label"] = cohort["label"].astype(np.int8)
    cohort["patient_id"] = cohort["patient_id"].astype(np.int64)

    # variables: observations inside the h=0 windows of the cohort
    obs_win = observations[window_mask(observations, cohort, params.window_hours, 0)]
    counts = obs_win["variable"].astype(str).value_counts()
    keep_vars = variable_order(
        [v for v, c in counts.items() if c >= params.min_variable_observations]
    )
    dropped_vars = {
        str(v): int(c) for v, c in counts.items() if c < params.min_variable_observations
    }
    if not keep_vars:
        raise ValueError(
            f"cohort: no variable has >= {params.min_variable_observations} observations in the "
            f"cohort windows (cohort.min_variable_observations); counts: {dict(counts)}"
        )
    obs_win = obs_win[obs_win["variable"].astype(str).isin(keep_vars)]

    # patient-level stratified splits, per seed
    pat = cohort.groupby("patient_id")["label"].max().rename("has_case").astype(bool).reset_index()
    split_frames, norm_frames = [], []
    for seed in params.split_seeds:
        by_patient = patient_splits(pat, tuple(params.split_fractions), seed)
        sp = pd.DataFrame(
            {
                "stay_id": cohort["stay_id"],
                "seed": np.int32(seed),
                "split": cohort["patient_id"].map(by_patient).to_numpy(),
            }
        )
        split_frames.append(sp)
        train = sp.loc[sp["split"] == "train", "stay_id"].to_numpy()
        norm_frames.append(normalisation_stats(obs_win, keep_vars, train, seed))
    splits = pd.concat(split_frames, ignore_index=True)
    splits["seed"] = splits["seed"].astype(np.int32)
    normalisation = pd.concat(norm_frames, ignore_index=True)
    normalisation["seed"] = normalisation["seed"].astype(np.int32)

    n_case, n_ctrl = int((cohort["label"] == 1).sum()), int((cohort["label"] == 0).sum())
    minfo.update(
        {
            "final_ratio": n_ctrl / n_case,
            "cases": n_case,
            "controls": n_ctrl,
            "seed": params.matching_seed,
        }
    )
    attrition = {
        "steps": att.steps,
        "matching": minfo,
        "prevalence": n_case / (n_case + n_ctrl),
        "variables": {
            "kept": list(keep_vars),
            "dropped": dropped_vars,
            "min_observations": params.min_variable_observations,
        },
        "split_counts": {
            int(s): splits[splits["seed"] == s]["split"].value_counts().to_dict()
            for s in params.split_seeds
        },
        "params": _params_json(params),
    }
    logger.info(
        "cohort: %d cases, %d controls (ratio %.2f, %d cases short), prevalence %.3f, %d variables",
        n_case,
        n_ctrl,
        n_ctrl / n_case,
        minfo["cases_short"],
        attrition["prevalence"],
        len(keep_vars),
    )
    return cohort, splits, normalisation, attrition


def _params_json(params: CohortParams) -> dict:
    d = asdict(params)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def sepsis_admissions(extracted_dir: str | Path) -> pd.DataFrame:
    """hadm_id of every admission with a sepsis diagnosis code: the `sepsis_diagnosis`
    events of `extracted/admission_events.parquet` (the controls excluded by
    ``exclude_icd9_controls``)."""
    import pyarrow.parquet as pq

    t = pq.read_table(
        Path(extracted_dir) / "admission_events.parquet",
        columns=["hadm_id", "concept"],
        filters=[("concept", "=", "sepsis_diagnosis")],
    ).to_pandas()
    return t.loc[t["hadm_id"].notna(), ["hadm_id"]].drop_duplicates().reset_index(drop=True)


def prepare_from_tables(
    stays: pd.DataFrame,
    onsets: pd.DataFrame,
    labels_hourly: pd.DataFrame,
    diagnoses: pd.DataFrame | None,
    observations: pd.DataFrame,
    params: CohortParams,
    out_dir: str | Path,
    *,
    dropped_values: dict | None = None,
    source_attrition: list[dict] | None = None,
    source_columns: tuple[str, ...] | None = None,
) -> dict:
    """Run `build_cohort` and write every `prepared/` artifact into `out_dir` (the caller
    makes the folder atomic: the pipeline's prepare stage writes into its temporary folder).

    Writes stays, labels_hourly, onsets (as given, schema-checked), observations restricted
    to the cohort stays' h=0 windows [max(0, o - W), o] and the kept variables, cohort,
    splits, normalisation and attrition.json (steps, matching, variables, params, plus
    `dropped_values` from the observation builder and `source_attrition`, the reader's own
    exclusions, e.g. PhysioNet stays positive from their first row). Returns the attrition dict.
    """
    cohort, splits, normalisation, attrition = build_cohort(
        stays, onsets, diagnoses, observations, params, source_columns
    )
    obs = observations[window_mask(observations, cohort, params.window_hours, 0)]
    obs = obs[obs["variable"].astype(str).isin(attrition["variables"]["kept"])]
    obs = obs.sort_values(["stay_id", "hour"], kind="stable").reset_index(drop=True)
    attrition["dropped_values"] = dropped_values or {}
    attrition["source_attrition"] = source_attrition or []
    stays_out = stays[[f.name for f in io.STAYS]]
    tmp = Path(out_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    io.write_parquet(stays_out, tmp / "stays.parquet", io.STAYS)
    io.write_parquet(labels_hourly, tmp / "labels_hourly.parquet", io.LABELS_HOURLY)
    io.write_parquet(onsets, tmp / "onsets.parquet", io.ONSETS)
    io.write_parquet(obs, tmp / "observations.parquet", io.OBSERVATIONS)
    io.write_parquet(cohort, tmp / "cohort.parquet", io.COHORT)
    io.write_parquet(splits, tmp / "splits.parquet", io.SPLITS)
    io.write_parquet(normalisation, tmp / "normalisation.parquet", io.NORMALISATION)
    io.write_json(attrition, tmp / "attrition.json")
    return attrition
