"""The concept dictionary (`dictionary.yaml`): read once, validated, looked up by name.

Every clinical concept the pipeline uses is declared there with its unit, plausible range
and, per data source, where it comes from (table + item IDs + unit conversions, or a
column). The concept layer (SOFA, suspected infection, observations) reads concept names
only; a source's reader uses `Dictionary.items(source, table)` to map its rows onto them.
docs/CONCEPTS.md describes the format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from data_prep.errors import DataError

DICTIONARY_FILE = Path(__file__).with_name("dictionary.yaml")
KINDS = ("variable", "sofa_input", "marker", "vasopressor", "infection", "diagnosis")
_MAPPING_KEYS = {"table", "ids", "convert", "negate", "column"}


class DictionaryError(DataError, ValueError):
    """The concept dictionary is malformed (names the file, concept and key)."""


@dataclass(frozen=True)
class SourceMapping:
    """Where one source keeps (part of) a concept."""

    table: str | None = None
    ids: tuple[int, ...] = ()  # items in the concept's unit
    convert: dict[int, tuple[float, float]] = field(default_factory=dict)  # id -> scale, offset
    negate: tuple[int, ...] = ()  # items whose values count negatively (urine: irrigant in)
    column: str | None = None  # a column of a wide file (PhysioNet 2019)
    extra: dict[str, Any] = field(default_factory=dict)  # source conventions (antibiotic rules)

    @property
    def all_ids(self) -> tuple[int, ...]:
        """Every item of this mapping, plain items first, in dictionary order."""
        return self.ids + tuple(self.convert) + self.negate


@dataclass(frozen=True)
class Concept:
    name: str
    kind: str
    unit: str | None
    low: float | None
    high: float | None
    sources: dict[str, tuple[SourceMapping, ...]]
    also: tuple[str, ...] = ()  # marker concepts: other concepts whose events mark this one
    extra: dict[str, Any] = field(default_factory=dict)  # codes, hold_hours, intubated_text, ...

    def mappings(self, source: str, table: str | None = None) -> tuple[SourceMapping, ...]:
        return tuple(m for m in self.sources.get(source, ()) if table is None or m.table == table)


@dataclass(frozen=True)
class Dictionary:
    concepts: dict[str, Concept]
    conversions: dict[str, tuple[float, float]]
    path: Path

    def __getitem__(self, name: str) -> Concept:
        try:
            return self.concepts[name]
        except KeyError:
            raise KeyError(f"{self.path}: no concept {name!r}") from None

    def of_kind(self, kind: str) -> tuple[Concept, ...]:
        return tuple(c for c in self.concepts.values() if c.kind == kind)

    def sources(self) -> set[str]:
        return {s for c in self.concepts.values() for s in c.sources}

    def items(self, source: str, table: str) -> dict[int, tuple[str, float, float]]:
        """Item ID -> (concept, scale, offset) for one source table: value in the concept's
        unit = value * scale + offset (negated items have scale -1)."""
        out: dict[int, tuple[str, float, float]] = {}
        for c in self.concepts.values():
            for m in c.mappings(source, table):
                for i in m.ids:
                    out[i] = (c.name, 1.0, 0.0)
                for i, (scale, offset) in m.convert.items():
                    out[i] = (c.name, scale, offset)
                for i in m.negate:
                    out[i] = (c.name, -1.0, 0.0)
        return out

    def marked_by(self, marker: str) -> tuple[str, ...]:
        """The concepts whose events mark `marker` (itself first, then its `also`)."""
        return (marker, *self[marker].also)


def _where(path: Path, concept: str, key: str) -> str:
    return f"{path}: concept {concept!r}: {key}"


def _mapping(
    raw: Any, path: Path, name: str, source: str, conversions: dict[str, tuple[float, float]]
) -> SourceMapping:
    where = _where(path, name, f"sources.{source}")
    if not isinstance(raw, dict):
        raise DictionaryError(f"{where}: expected a mapping, got {type(raw).__name__}")
    ids = raw.get("ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise DictionaryError(f"{where}.ids: expected a list of integer item IDs")
    convert: dict[int, tuple[float, float]] = {}
    for conv, conv_ids in (raw.get("convert") or {}).items():
        if conv not in conversions:
            raise DictionaryError(
                f"{where}.convert: unknown conversion {conv!r} (known: {sorted(conversions)})"
            )
        for i in conv_ids:
            convert[int(i)] = conversions[conv]
    negate = tuple(int(i) for i in raw.get("negate", []))
    extra = {k: v for k, v in raw.items() if k not in _MAPPING_KEYS}
    return SourceMapping(
        table=raw.get("table"),
        ids=tuple(ids),
        convert=convert,
        negate=negate,
        column=raw.get("column"),
        extra=extra,
    )


def parse(data: Any, path: Path) -> Dictionary:
    """Validate the YAML document of a concept dictionary."""
    if not isinstance(data, dict) or "concepts" not in data:
        raise DictionaryError(f"{path}: expected a mapping with a 'concepts' section")
    conversions: dict[str, tuple[float, float]] = {}
    for name, c in (data.get("conversions") or {}).items():
        try:
            conversions[name] = (float(c["scale"]), float(c["offset"]))
        except (KeyError, TypeError, ValueError):
            raise DictionaryError(
                f"{path}: conversion {name!r}: expected {{scale: <number>, offset: <number>}}"
            ) from None
    concepts: dict[str, Concept] = {}
    for name, raw in data["concepts"].items():
        if not isinstance(raw, dict):
            raise DictionaryError(f"{_where(path, name, 'entry')}: expected a mapping")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise DictionaryError(
                f"{_where(path, name, 'kind')}: expected one of {KINDS}, got {kind!r}"
            )
        low = high = None
        if "range" in raw:
            rng = raw["range"]
            if not (isinstance(rng, list) and len(rng) == 2 and rng[0] <= rng[1]):
                raise DictionaryError(
                    f"{_where(path, name, 'range')}: expected [low, high], low <= high"
                )
            low, high = float(rng[0]), float(rng[1])
        sources: dict[str, tuple[SourceMapping, ...]] = {}
        for source, maps in (raw.get("sources") or {}).items():
            maps = maps if isinstance(maps, list) else [maps]
            sources[source] = tuple(_mapping(m, path, name, source, conversions) for m in maps)
        extra = {
            k: v for k, v in raw.items() if k not in ("kind", "unit", "range", "sources", "also")
        }
        concepts[name] = Concept(
            name=name,
            kind=kind,
            unit=None if raw.get("unit") is None else str(raw["unit"]),
            low=low,
            high=high,
            sources=sources,
            also=tuple(raw.get("also", ())),
            extra=extra,
        )
    for c in concepts.values():
        for other in c.also:
            if other not in concepts:
                raise DictionaryError(f"{_where(path, c.name, 'also')}: unknown concept {other!r}")
    # each item ID feeds exactly one concept per source table
    seen: dict[tuple[str, str | None, int], str] = {}
    for c in concepts.values():
        for source, maps in c.sources.items():
            for m in maps:
                for i in m.all_ids:
                    key = (source, m.table, i)
                    if key in seen:
                        where = "twice in" if seen[key] == c.name else f"in {seen[key]!r} and"
                        raise DictionaryError(
                            f"{path}: {source} {m.table} item {i} appears {where} "
                            f"{c.name!r}; each item ID appears once"
                        )
                    seen[key] = c.name
    return Dictionary(concepts=concepts, conversions=conversions, path=path)


def load(path: str | Path = DICTIONARY_FILE) -> Dictionary:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise DictionaryError(f"{path}: not valid YAML ({err})") from None
    return parse(data, path)


@lru_cache(maxsize=1)
def concepts() -> Dictionary:
    """The shipped dictionary (read once per process)."""
    return load(DICTIONARY_FILE)
