"""Data sources: each one module with a `SOURCE` (a `Source`), looked up here by name.

A source reads its raw data and writes the extracted-events contract (io.EXTRACTED_STAYS
``stays.parquet``, io.EVENTS parts under ``events/``, io.ADMISSION_EVENTS
``admission_events.parquet``; docs/CONTRACTS.md) into the folder it is given, and returns
its attrition counts. Everything after extraction (labels, cohort, views, learners) is the
same for every source: adding a source is one reader module plus its entries in
``data_prep/concepts/dictionary.yaml``, registered with `register` (or listed in
``_BUILTIN``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ReaderOptions:
    """What every reader is told (from the YAML `labels` section)."""

    on_bad_rows: str = "error"  # "error" | "skip-and-count"
    # keep data from this long before ICU admission (LabelParams.data_lookback_hours)
    lookback_hours: float = 48.0

    def validate(self) -> None:
        if self.on_bad_rows not in ("error", "skip-and-count"):
            raise ValueError(
                f"on_bad_rows: expected 'error' or 'skip-and-count', got {self.on_bad_rows!r}"
            )
        if not self.lookback_hours >= 0:
            raise ValueError(f"lookback_hours: expected >= 0, got {self.lookback_hours!r}")


@dataclass(frozen=True)
class Source:
    """One data source: how to read it into the extracted-events contract.

    * ``extract(data_dir, out_dir, options, progress) -> dict``: write the contract into
      ``out_dir`` (an empty folder the caller makes atomic) and return the attrition counts
      (JSON-able).
    * ``inputs(data_dir) -> list[Path]``: exactly the raw files it reads (the extract stage
      fingerprints them and reruns when one changes; other files in the folder are ignored).
    * ``attributes``: source-specific stay columns it fills (e.g. ``dbsource``); a cohort
      filter on such a column applies only to sources that declare it.
    * ``labels``: None when the Sepsis-3 labels are derived by the concept layer; else a
      sentence saying whose labels the source provides (it then also writes
      ``labels/labels_hourly.parquet`` and ``labels/onsets.parquet``).
    * ``rules(data_dir) -> list[Path]``: the source's own rule files beyond the concept
      dictionary and its data files (which every extraction depends on), e.g. MEDS mapping
      files; the extract stage reruns when one changes.
    * ``generate(folder, params, progress)``: for a generated source (the synthetic one),
      writes the raw data first; ``generator_section`` names its YAML section.
    """

    name: str
    description: str
    extract: Callable[[Path, Path, ReaderOptions, bool], dict[str, Any]]
    inputs: Callable[[Path], list[Path]]
    attributes: tuple[str, ...] = ()
    labels: str | None = None
    rules: Callable[[Path], list[Path]] | None = None
    generate: Callable[[Path, Any, bool], Any] | None = None
    generator_section: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# name -> "module:attribute" of the built-in sources (imported on first use)
_BUILTIN = {
    "synthetic": "data_prep.sources.synthetic_source:SOURCE",
    "mimic3": "data_prep.sources.mimic3_source:SOURCE",
    "physionet2019": "data_prep.sources.physionet2019:SOURCE",
    "mimic4": "data_prep.sources.mimic4:SOURCE",
    "meds": "data_prep.sources.meds:SOURCE",
}
_REGISTERED: dict[str, Source] = {}


def register(source: Source) -> Source:
    """Add (or replace) a source under its name; returns it."""
    if not source.name or not source.name.replace("_", "").isalnum():
        raise ValueError(f"source name: expected letters, digits or '_', got {source.name!r}")
    _REGISTERED[source.name] = source
    return source


def unregister(name: str) -> None:
    _REGISTERED.pop(name, None)


def names() -> tuple[str, ...]:
    """Every known source name (built-in first)."""
    return tuple(dict.fromkeys([*_BUILTIN, *_REGISTERED]))


def get(name: str) -> Source:
    """The source called `name` (KeyError naming the known ones otherwise)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(names())}")
    module, attr = _BUILTIN[name].split(":")
    source = getattr(importlib.import_module(module), attr)
    _REGISTERED[name] = source
    return source
