"""The MGP-TCN search's settings (YAML section `mgp_tcn_search`) and its space: the paper's
ranges, overrides and their dimensions (`models.mgp_tcn.search`, which re-exports these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

PRUNERS = ("median", "hyperband", "none")

# The paper's space (PIPELINE.md 4): levels 9, kernel 3-5, hidden 15-81, batch 10-40, lr 0.005,
# L2 0.01-100, dropout ~0, 10 MC samples. Fewer levels are allowed because 49-hour windows do
# not need a receptive field of thousands of hours; lr, dropout and the MC sample count get a
# range around the paper's value. [low, high] = a range (integers when both ends are), any
# other list = the choices; LOG_SCALE entries are drawn on a log scale.
DEFAULT_SPACE: dict[str, Any] = {
    "levels": [2, 9],
    "kernel_size": [3, 5],
    "hidden": [15, 81],
    "batch_size": [10, 40],
    "lr": [0.0005, 0.01],
    "l2": [0.01, 100.0],
    "dropout": [0.0, 0.2],
    "n_mc_samples": [4, 16],
}
LOG_SCALE = frozenset({"hidden", "lr", "l2"})
SEARCHABLE = frozenset(DEFAULT_SPACE) | {"smoothing", "lr_schedule", "grad_clip", "jitter"}


@dataclass(frozen=True)
class SearchParams:
    """The MGP-TCN search (YAML section `mgp_tcn_search`); off while ``trials`` is 0.

    trials: finished trials to reach (complete + pruned); budget_minutes: wall-time budget of
    the whole search (None: no limit); pruner: median | hyperband | none; sampler_seed: TPE's
    seed (the pipeline adds the split seed); startup_trials: random trials before TPE models
    the space, and complete trials before the median pruner prunes; warmup_epochs: epochs a
    trial always runs before it can be pruned; train_fraction: stratified share of the
    training stays each trial trains on (< 1: cheaper trials, then one refit on all);
    max_epochs: epochs per trial (None: the learner's); predict_samples: candidate
    mc_samples_predict values scored on validation after each trial (besides the trial's
    own); learners: the MGP-TCN learners the search tunes; space: overrides of
    `DEFAULT_SPACE` entries (``[low, high]``, a list of choices, or ``{choices: [...]}``).
    """

    trials: int = 0
    budget_minutes: float | None = None
    pruner: str = "median"
    sampler_seed: int = 0
    startup_trials: int = 5
    warmup_epochs: int = 2
    train_fraction: float = 1.0
    max_epochs: int | None = None
    predict_samples: tuple[int, ...] = ()
    learners: tuple[str, ...] = ("mgp_tcn_tuned",)
    space: dict[str, Any] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.trials > 0

    def validate(self) -> None:
        w = "mgp_tcn_search"
        if self.trials < 0:
            raise ValueError(f"{w}.trials: expected >= 0 (0 = no search), got {self.trials}")
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            raise ValueError(f"{w}.budget_minutes: expected > 0 or null, got {self.budget_minutes}")
        if self.pruner not in PRUNERS:
            raise ValueError(f"{w}.pruner: expected one of {list(PRUNERS)}, got {self.pruner!r}")
        for key in ("sampler_seed", "startup_trials", "warmup_epochs"):
            if getattr(self, key) < 0:
                raise ValueError(f"{w}.{key}: expected >= 0, got {getattr(self, key)}")
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"{w}.train_fraction: expected 0 < f <= 1, got {self.train_fraction}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError(f"{w}.max_epochs: expected >= 1 or null, got {self.max_epochs}")
        if any(isinstance(n, bool) or n < 1 for n in self.predict_samples):
            raise ValueError(
                f"{w}.predict_samples: expected counts >= 1, got {self.predict_samples}"
            )
        resolve_space(self.space)  # raises naming the entry

    @property
    def refit(self) -> bool:
        """True when trials train differently from the final fit (subsample or fewer epochs)."""
        return self.train_fraction < 1 or self.max_epochs is not None


@dataclass(frozen=True)
class _Dim:
    """One searched parameter: a range (int or float, maybe log) or categorical choices."""

    name: str
    low: float | None = None
    high: float | None = None
    integer: bool = False
    log: bool = False
    choices: tuple | None = None

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


def _number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def resolve_space(overrides: dict[str, Any] | None = None) -> dict[str, _Dim]:
    """`DEFAULT_SPACE` with `overrides` applied, as dimensions; ValueError names a bad entry."""
    spec = {**DEFAULT_SPACE, **(overrides or {})}
    out = {}
    for name, v in spec.items():
        where = f"mgp_tcn_search.space.{name}"
        if name not in SEARCHABLE:
            raise ValueError(
                f"{where}: not a searchable parameter ({', '.join(sorted(SEARCHABLE))})"
            )
        if isinstance(v, dict):
            if (
                set(v) != {"choices"}
                or not isinstance(v["choices"], list | tuple)
                or not v["choices"]
            ):
                raise ValueError(f"{where}: expected {{choices: [...]}}, got {v!r}")
            out[name] = _Dim(name, choices=tuple(v["choices"]))
        elif isinstance(v, list | tuple) and len(v) == 2 and all(_number(x) for x in v):
            low, high = v
            if low > high:
                raise ValueError(f"{where}: low {low} > high {high}")
            integer = all(isinstance(x, Integral) for x in v)
            log = name in LOG_SCALE and low > 0
            out[name] = _Dim(name, low, high, integer=integer, log=log)
        elif isinstance(v, list | tuple) and v:
            out[name] = _Dim(name, choices=tuple(v))
        else:
            raise ValueError(f"{where}: expected [low, high] or a list of choices, got {v!r}")
    return out
