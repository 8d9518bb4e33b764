"""MEDS code-to-concept mapping files (`meds_mappings/<etl>.yaml`): load, validate, classify.

A mapping file says, for one MEDS ETL, which codes feed which concept of
data_prep/concepts/dictionary.yaml, in which unit, and how ICU stays, patients and
hospital admissions are coded (docs/MEDS_MAPPING.md describes the format). `load` checks
it completely (every error names the file and the key); `Mapping.classify(code)` says what
one code is (memoised per distinct code by the reader, so rows are never looped over).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import yaml

from data_prep.errors import DataError

MAPPINGS_DIR = Path(__file__).with_name("meds_mappings")
COLUMN_ROLES = ("hadm_id", "stay_id", "order_id", "unit", "route", "drug_type", "status")
ADMISSION_CONCEPTS = ("antibiotic", "culture", "sepsis_diagnosis")
TIME_SOURCES = ("order date", "order time", "administration")
DATE_ONLY = ("never", "midnight", "always")

# roles of a code (Classified.role)
STAY_IN, STAY_OUT, BIRTH, DEATH, GENDER, ADM_START, ADM_END = range(7)
EVENT, INF_START, INF_END, INF_WEIGHT, ADMISSION_EVENT = range(7, 12)
ED_REG = 12  # an emergency-department registration (admissions.ed_registration)
IV_START, IV_END = 13, 14  # the start / end row of an interval (intervals)
PASS1_ROLES = (STAY_IN, STAY_OUT, BIRTH, DEATH, GENDER, ADM_START, ADM_END, ED_REG)


class MappingError(DataError):
    """A MEDS mapping file is malformed (the message names the file and the key)."""


@dataclass(frozen=True)
class Matcher:
    """Which codes a rule takes: exact codes, prefixes or one regex (any of them)."""

    codes: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    regex: re.Pattern | None = None

    def match(self, code: str) -> tuple[bool, str | None, str | None]:
        """(matched, text, item): text = the regex group `text`, else the part after the
        prefix, else the code; item = the regex group `item` (None without one)."""
        if code in self.codes:
            return True, code, None
        for p in self.prefixes:
            if code.startswith(p):
                return True, code[len(p) :], None
        if self.regex is not None:
            m = self.regex.search(code)
            if m:
                groups = m.groupdict()
                return True, groups.get("text", code), groups.get("item")
        return False, None, None


@dataclass(frozen=True)
class EventRule:
    key: str  # "events.<part>[i]", for messages and counts
    part: str
    concept: str
    match: Matcher
    units: dict[str, tuple[float, float]] | None  # unit -> (scale, offset); None = any unit
    convert: tuple[float, float]  # applied when `units` is None
    negate: bool = False
    text: bool = False
    text_codes: dict[str, int] | None = None  # normalised text -> code (blood_gas_specimen)
    pair_with: str | None = None
    pair_minutes: float = 0.0


@dataclass(frozen=True)
class Drug:
    concept: str
    start: Matcher
    end: Matcher


@dataclass(frozen=True)
class Infusions:
    pair_on: str | None
    weight: Matcher | None
    exclude_status: tuple[str, ...]
    rate_units: dict[str, tuple[float, bool, bool]]  # unit -> (scale, per_weight, per_hour)
    drugs: tuple[Drug, ...]


@dataclass(frozen=True)
class IntervalRule:
    """An interval written as START and END rows (MIMIC-IV procedureevents ventilation)."""

    key: str  # "intervals[i] (<concept>)"
    part: str
    concept: str
    start: Matcher
    end: Matcher
    labels: dict[str, str] | None  # item (regex group `item`) -> text of the events
    hold_hours: float | None  # the concept's dictionary hold_hours (None: one event per interval)


@dataclass(frozen=True)
class AdmissionRule:
    key: str
    name: str
    concept: str
    match: Matcher
    time_source: str | None = None
    antibiotic_names: bool = False
    items: dict[str, str] | None = None  # item -> drug label (mv_antibiotics.csv)
    drug_types: tuple[str, ...] = ()
    exclude_routes: tuple[str, ...] = ()
    exclude_route_substrings: tuple[str, ...] = ()
    exclude_name_substrings: tuple[str, ...] = ()
    require_columns: tuple[str, ...] = ()
    date_only: str = "never"


@dataclass(frozen=True)
class Classified:
    """What one code is: its role, rule and per-code constants."""

    role: int
    rule: int = -1  # index into Mapping.events / .drugs / .admission_rules
    concept: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    drop: str | None = None  # a reason to drop every row of this code (e.g. unit not listed)
    text: str | None = None  # text derived from the code (drug name, specimen, care unit)
    key: str = ""
    item: str | None = None  # intervals: the regex group `item` (START and END pair on it)


@dataclass(frozen=True)
class Mapping:
    path: Path
    name: str
    description: str
    dataset_names: tuple[str, ...]
    separator: str
    missing_unit: str | None
    columns: dict[str, str]
    stays: dict[str, Any]
    patients: dict[str, Any]
    admissions: dict[str, Matcher]
    events: tuple[EventRule, ...]
    infusions: Infusions | None
    admission_rules: tuple[AdmissionRule, ...]
    intervals: tuple[IntervalRule, ...] = ()
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def column(self, role: str) -> str | None:
        return self.columns.get(role)

    def classify(self, code: str) -> Classified | None:
        """The role of `code` (None: not mapped). A code matched by two rules is an error."""
        if code in self._cache:
            return self._cache[code]
        if not self._prefilter()(code):  # most codes of a dataset feed no rule
            self._cache[code] = None
            return None
        found = list(self._candidates(code))
        if len(found) > 1:
            raise MappingError(
                f"{self.path}: code {code!r} matches both {found[0].key} and {found[1].key}; "
                "each code may feed one rule"
            )
        out = found[0] if found else None
        self._cache[code] = out
        return out

    def _matchers(self):
        yield self.stays["admission"]
        yield self.stays["discharge"]
        yield from (self.patients.get(k) for k in ("birth", "death"))
        yield (self.patients.get("gender") or (None,))[0]
        yield from self.admissions.values()
        yield from (r.match for r in self.events)
        if self.infusions is not None:
            yield from (m for d in self.infusions.drugs for m in (d.start, d.end))
            yield self.infusions.weight
        yield from (r.match for r in self.admission_rules)
        yield from (m for r in self.intervals for m in (r.start, r.end))

    def _prefilter(self):
        """A quick test that is False for codes no rule can match: the exact codes, the
        prefixes and one regex of every rule's regex (named groups dropped)."""
        if "__prefilter__" in self._cache:
            return self._cache["__prefilter__"]
        ms = [m for m in self._matchers() if m is not None]
        codes = frozenset().union(*(m.codes for m in ms))
        prefixes = tuple(p for m in ms for p in m.prefixes)
        regexes = [re.sub(r"\(\?P<\w+>", "(?:", m.regex.pattern) for m in ms if m.regex is not None]
        try:
            combined = re.compile("|".join(f"(?:{r})" for r in regexes)) if regexes else None
        except re.error:  # e.g. a named backreference: no prefilter on regexes
            combined = re.compile("")

        def test(code: str) -> bool:
            return (
                code in codes
                or (bool(prefixes) and code.startswith(prefixes))
                or (combined is not None and combined.search(code) is not None)
            )

        self._cache["__prefilter__"] = test
        return test

    def _candidates(self, code: str):
        for role, key, m in (
            (STAY_IN, "stays.admission", self.stays["admission"]),
            (STAY_OUT, "stays.discharge", self.stays["discharge"]),
            (BIRTH, "patients.birth", self.patients.get("birth")),
            (DEATH, "patients.death", self.patients.get("death")),
            (ADM_START, "admissions.start", self.admissions.get("start")),
            (ADM_END, "admissions.end", self.admissions.get("end")),
            (ED_REG, "admissions.ed_registration", self.admissions.get("ed_registration")),
        ):
            if m is not None:
                ok, text, _ = m.match(code)
                if ok:
                    yield Classified(role, text=text, key=key)
        g = self.patients.get("gender")
        if g is not None:
            ok, text, _ = g[0].match(code)
            if ok:
                value = g[1].get(text) if g[1] else text
                yield Classified(GENDER, text=value, key="patients.gender")
        for i, r in enumerate(self.events):
            ok, _text, _ = r.match.match(code)
            if ok:
                yield self._event(i, r, code)
        if self.infusions is not None:
            inf = self.infusions
            for i, d in enumerate(inf.drugs):
                for role, m, k in ((INF_START, d.start, "start"), (INF_END, d.end, "end")):
                    if m.match(code)[0]:
                        yield Classified(
                            role, i, d.concept, key=f"infusions.drugs[{i}].{k} ({d.concept})"
                        )
            if inf.weight is not None and inf.weight.match(code)[0]:
                yield Classified(INF_WEIGHT, key="infusions.weight")
        for i, r in enumerate(self.intervals):
            for role, m, k in ((IV_START, r.start, "start"), (IV_END, r.end, "end")):
                ok, _text, item = m.match(code)
                if ok:
                    label = (r.labels or {}).get(item) if item is not None else None
                    yield Classified(
                        role, i, r.concept, text=label, key=f"{r.key}.{k}", item=item or ""
                    )
        for i, r in enumerate(self.admission_rules):
            ok, text, item = r.match.match(code)
            if not ok:
                continue
            if r.items is not None:
                if item is None or item not in r.items:
                    continue
                text = r.items[item]
            yield Classified(
                ADMISSION_EVENT, i, r.concept, drop=_name_drop(r, text), text=text, key=r.key
            )

    def _event(self, i: int, r: EventRule, code: str) -> Classified:
        scale, offset, drop = r.convert[0], r.convert[1], None
        if r.units is not None:
            unit = code.rsplit(self.separator, 1)[-1] if self.separator in code else ""
            if unit in r.units:
                scale, offset = r.units[unit]
            elif self.missing_unit is not None and unit == self.missing_unit:
                scale, offset = 1.0, 0.0
            else:
                drop = f"unit_not_listed:{unit}"
        if r.negate:
            scale, offset = -scale, -offset
        return Classified(EVENT, i, r.concept, scale, offset, drop, key=r.key)


@lru_cache(maxsize=1)
def _antibiotic_pattern() -> re.Pattern:
    from data_prep.concepts.infection import antibiotic_names

    return re.compile("|".join(re.escape(n) for n in antibiotic_names()))


def _name_drop(r: AdmissionRule, text: str | None) -> str | None:
    """Why an antibiotic code is not a systemic antibiotic (None: it is one)."""
    if r.concept != "antibiotic":
        return None
    name = (text or "").lower()
    if r.antibiotic_names and not _antibiotic_pattern().search(name):
        return "not_antibiotic"
    if any(s.lower() in name for s in r.exclude_name_substrings):
        return "excluded_name"
    return None


def load(path: str | Path) -> Mapping:
    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as err:
        raise MappingError(f"{path}: not valid YAML ({err})") from None
    except OSError as err:
        raise MappingError(
            f"{path}: cannot read the mapping file ({err.strerror or err})"
        ) from None
    from data_prep.sources.meds_mapping_parse import parse

    return parse(data, path)


@cache
def shipped() -> tuple[Path, ...]:
    return tuple(sorted(MAPPINGS_DIR.glob("*.yaml")))


def for_dataset(dataset_name: str | None, where: str) -> Mapping:
    """The shipped mapping whose `dataset_names` holds `dataset_name` (MappingError if none)."""
    loaded = [load(p) for p in shipped()]
    found = [m for m in loaded if dataset_name in m.dataset_names]
    if not found:
        known = {m.path.name: list(m.dataset_names) for m in loaded}
        raise MappingError(
            f"{where}: no MEDS mapping for dataset_name {dataset_name!r} (shipped mappings: "
            f"{known}); write one (docs/MEDS_MAPPING.md) and put it in the MEDS folder as "
            "meds_mapping.yaml"
        )
    return found[0]
