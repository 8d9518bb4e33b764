"""`LabelParams`, YAML section `labels`: the Sepsis-3 options, composing the parameters of
the concepts below it (`SofaParams`, `InfectionParams`), which never see it
(`data_prep.sepsis3`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from data_prep.concepts.infection import InfectionParams
from data_prep.concepts.sofa import SofaParams


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
