"""Typed run configuration: YAML files in `configs/` mapped onto the stages' dataclasses.

A run config has a few top-level keys (`source`, `data_dir`, `output_dir`, ...) and one
section per stage. Each section is the parameter dataclass the stage itself declares
(`data_prep.sepsis3.LabelParams`, `data_prep.cohort.CohortParams`, ...) or, for the
learners, the keyword parameters of the estimator. Unknown or misspelled keys, wrong types
and impossible values are rejected with a `ConfigError` naming the file and the key.

Paths may use `${VAR}` or `${VAR:-default}`; relative paths are taken from the current
directory (the repository root when run through `make`). `extends: parent.yaml` (relative
to the file) merges a parent chain under the file; reading and the path safety checks are in
`sepsis.config_files`, checking values and building sections from them in `sepsis.config_types`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sepsis.config_files import (
    ConfigError,
    check_run_paths,
    read_with_parents,
    safe_load,
)
from sepsis.config_types import (  # noqa: F401  (re-exported)
    _suggest,
    build_dataclass,
    build_learner_params,
    coerce,
    expand_path,
)

LEARNERS = ("mgp_tcn", "dtw_knn", "logreg", "gbm", "sofa", "mgp_tcn_tuned", "dtw_knn_tuned")

#: Learners beyond the paper: the class of a paper learner under a name of their own, so each
#: has its own YAML section, model folders and rows in every table, and never replaces the
#: paper's model. Their defaults (below) apply under the section's own keys; a variant does
#: not inherit the paper learner's section.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "mgp_tcn_tuned": (
        "mgp_tcn",
        {
            "epochs": 40,
            "patience": 8,
            "smoothing": 3,
            "lr_schedule": "plateau",
            "lr_patience": 2,
            "grad_clip": 1.0,
            "mc_samples_predict": 30,
        },
    ),
    "dtw_knn_tuned": (
        "dtw_knn",
        {
            "per_variable": True,
            "weights_grid": ["uniform", "distance"],
            "k_grid": [1, 3, 5, 10, 20, 40],
            "radius_grid": [None, 2, 6],
            "combine": "logistic",
        },
    ),
}

#: keys that were removed, with what replaced them (refused with this message)
REMOVED_KEYS = {
    ("train", "mgp_search_trials"): (
        "removed: the random search is replaced by the section `mgp_tcn_search` "
        "(trials, budget_minutes, pruner, sampler_seed, learners, ...), e.g. "
        "`mgp_tcn_search: {trials: 30, budget_minutes: 60}`; it tunes the learners in "
        "mgp_tcn_search.learners (default [mgp_tcn_tuned]), so list mgp_tcn there to tune "
        "the paper's model as before (README, 'Tuning the learners')"
    ),
}


@dataclass(frozen=True)
class TrainParams:
    """Which learners to fit, at which horizons, in which regime (YAML section `train`)."""

    # learners fitted once per horizon on windows ending at onset - h
    per_horizon: tuple[str, ...] = ("dtw_knn", "logreg", "gbm", "sofa")
    # learners fitted at horizon 0 and applied at every horizon
    train_once: tuple[str, ...] = ("mgp_tcn", "dtw_knn", "logreg", "gbm")
    horizons: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    split_seeds: tuple[int, ...] | None = None  # None: every seed of cohort.split_seeds
    shuffle_train_labels: bool = False  # leakage check only: permute training labels
    threads: int = 2

    def validate(self) -> None:
        for key in ("per_horizon", "train_once"):
            for name in getattr(self, key):
                if name not in LEARNERS:
                    raise ValueError(
                        f"train.{key}: unknown learner '{name}', expected one of {LEARNERS}"
                    )
        if "sofa" in self.train_once:
            raise ValueError(
                "train.train_once: 'sofa' is a score without training; list it under per_horizon"
            )
        if not self.horizons or any(h < 0 for h in self.horizons):
            raise ValueError(f"train.horizons: expected non-negative hours, got {self.horizons}")
        if self.threads < 1:
            raise ValueError("train.threads: expected >= 1")


@dataclass(frozen=True)
class EvaluateParams:
    """Bootstrap and reporting settings (YAML section `evaluate`)."""

    n_bootstrap: int = 1000
    bootstrap_seed: int = 0
    alpha: float = 0.05

    def validate(self) -> None:
        if self.n_bootstrap < 1:
            raise ValueError("evaluate.n_bootstrap: expected >= 1")
        if not 0 < self.alpha < 1:
            raise ValueError("evaluate.alpha: expected 0 < alpha < 1")


def _section_classes() -> dict[str, type]:
    # imported lazily so that `sepsis --help` stays fast
    from data_prep.cohort import CohortParams
    from data_prep.sepsis3 import LabelParams
    from data_prep.sources.synthetic import SyntheticParams
    from models.mgp_tcn.search import SearchParams
    from sepsis.online import OnlineParams

    return {
        "synthetic": SyntheticParams,
        "labels": LabelParams,
        "cohort": CohortParams,
        "train": TrainParams,
        "mgp_tcn_search": SearchParams,
        "evaluate": EvaluateParams,
        "online": OnlineParams,
    }


def _learner_classes() -> dict[str, type]:
    from models.baselines import GradientBoostingBaseline, LogisticRegressionBaseline
    from models.dtw_knn import DTWKNNClassifier
    from models.mgp_tcn import MGPTCNClassifier

    paper = {
        "mgp_tcn": MGPTCNClassifier,
        "dtw_knn": DTWKNNClassifier,
        "logreg": LogisticRegressionBaseline,
        "gbm": GradientBoostingBaseline,
    }
    return {**paper, **{name: paper[base] for name, (base, _) in VARIANTS.items()}}


@dataclass(frozen=True)
class RunConfig:
    """A resolved run configuration."""

    name: str
    source: str
    data_dir: Path
    output_dir: Path
    config_file: Path | None
    sections: dict[str, Any] = field(default_factory=dict)  # dataclass instances
    learners: dict[str, dict[str, Any]] = field(default_factory=dict)  # estimator kwargs
    raw: dict[str, Any] = field(default_factory=dict)  # the merged YAML, for the record

    def __getattr__(self, item: str) -> Any:
        sections = object.__getattribute__(self, "sections")
        if item in sections:
            return sections[item]
        raise AttributeError(item)

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved configuration (defaults filled in), JSON-serialisable."""
        out: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "data_dir": str(self.data_dir),
            "output_dir": str(self.output_dir),
        }
        for key, value in self.sections.items():
            out[key] = _jsonable(dataclasses.asdict(value))
        for key, value in self.learners.items():
            out[key] = _jsonable(value)
        return out

    def section_hash(self, *keys: str) -> str:
        """Hash of the named parts of the resolved config (what a stage depends on)."""
        full = self.to_dict()
        part = {k: full.get(k) for k in keys}
        return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """`cohort.control_ratio=5` -> (["cohort", "control_ratio"], 5); values parsed as YAML."""
    if "=" not in text:
        raise ConfigError(
            f"override '{text}': expected key=value (e.g. data_dir=/path or cohort.control_ratio=5)"
        )
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}': empty key")
    return key.split("."), safe_load(value, f"override '{text}'") if value.strip() else None


TOP_KEYS = ("name", "source", "data_dir", "output_dir", "extends")


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    check_paths: bool = True,
) -> RunConfig:
    """Load and validate a run config; `overrides` are `key=value` strings applied on top."""
    path = Path(path) if path else None
    where_file = str(path) if path else "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        if not path.exists():
            raise ConfigError(
                f"config file {path} does not exist (configs in ./configs: "
                f"{', '.join(sorted(p.name for p in Path('configs').glob('*.yaml')))})"
            )
        raw = read_with_parents(path)
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] == "extends":
            raise ConfigError(f"override '{text}': extends is read from config files only")
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{k}' is not a section")
        node[keys[-1]] = value

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{where_file}: {msg}")

    for (section, key), why in REMOVED_KEYS.items():
        if isinstance(raw.get(section), dict) and key in raw[section]:
            raise fail(f"{section}.{key}: {why}")

    sections = _section_classes()
    learners = _learner_classes()
    known = set(TOP_KEYS) | set(sections) | set(learners)
    for key in raw:
        if key not in known:
            raise fail(
                f"{key}: unknown key{_suggest(key, sorted(known))}; valid keys: {', '.join(sorted(known))}"
            )

    name = raw.get("name") or (path.stem if path else "default")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise fail(f"name: expected letters, digits, '.', '_' or '-', got {name!r}")
    if not re.search(r"[A-Za-z0-9]", name):
        # '.', '..' or '--' would make runs/<name> the runs folder itself or the repository
        raise fail(f"name: expected at least one letter or digit, got {name!r}")
    from data_prep import sources

    source = raw.get("source", "synthetic")
    if not isinstance(source, str) or source not in sources.names():
        raise fail(f"source: expected one of {', '.join(sources.names())}, got {source!r}")
    generated = sources.get(source).generate is not None
    if "data_dir" not in raw and not generated:
        raise fail("data_dir: required for source " + source)
    try:
        data_dir = coerce(raw.get("data_dir", f"data/synthetic-{name}"), Path, "data_dir")
        output_dir = coerce(raw.get("output_dir", f"runs/{name}"), Path, "output_dir")
        check_run_paths(generated, data_dir, output_dir)
    except ConfigError as err:
        raise fail(str(err)) from None
    if check_paths and not generated and not data_dir.exists():
        raise fail(
            f"data_dir: {data_dir} does not exist (source {source}); pass data_dir=/path/to/data"
        )

    built: dict[str, Any] = {}
    for key, cls in sections.items():
        try:
            built[key] = build_dataclass(cls, raw.get(key), key)
        except ConfigError as err:
            raise fail(str(err)) from None
    learner_params: dict[str, dict[str, Any]] = {}
    for key, cls in learners.items():
        try:
            defaults = VARIANTS[key][1] if key in VARIANTS else None
            learner_params[key] = build_learner_params(cls, raw.get(key), key, defaults)
        except ConfigError as err:
            raise fail(str(err)) from None
    cfg = RunConfig(
        name=name,
        source=source,
        data_dir=data_dir,
        output_dir=output_dir,
        config_file=path,
        sections=built,
        learners=learner_params,
        raw=raw,
    )
    _cross_check(cfg, fail)
    return cfg


def _cross_check(cfg: RunConfig, fail) -> None:
    cohort = cfg.sections["cohort"]
    train = cfg.sections["train"]
    from models.mgp_tcn import MGPTCNClassifier

    classes = _learner_classes()
    for name in cfg.sections["mgp_tcn_search"].learners:
        if classes.get(name) is not MGPTCNClassifier:
            mgp = [n for n, c in classes.items() if c is MGPTCNClassifier]
            raise fail(
                f"mgp_tcn_search.learners: '{name}' is not an MGP-TCN learner (expected {mgp})"
            )
    bad = [h for h in train.horizons if h not in tuple(cohort.horizons)]
    if bad:
        raise fail(
            f"train.horizons: {bad} not prepared (cohort.horizons = {list(cohort.horizons)})"
        )
    if train.split_seeds is not None:
        missing = [s for s in train.split_seeds if s not in tuple(cohort.split_seeds)]
        if missing:
            raise fail(
                f"train.split_seeds: {missing} not in cohort.split_seeds = {list(cohort.split_seeds)}"
            )


def split_seeds(cfg: RunConfig) -> tuple[int, ...]:
    """The split seeds a run trains and evaluates."""
    train = cfg.sections["train"]
    return (
        tuple(train.split_seeds)
        if train.split_seeds is not None
        else tuple(cfg.sections["cohort"].split_seeds)
    )
