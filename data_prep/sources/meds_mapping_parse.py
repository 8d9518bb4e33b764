"""Validation of MEDS mapping files (data_prep.sources.meds_mapping.load calls `parse`).

Every key is checked (type, allowed values, concept names and kinds against
data_prep/concepts/dictionary.yaml, conversions, regular expressions); an error names the
file and the key path, e.g. ``mimic_iv_meds.yaml: events.labevents[3].units.mg/dL: ...``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from data_prep.concepts.dictionary import concepts as dictionary
from data_prep.sources.meds_mapping import (
    ADMISSION_CONCEPTS,
    COLUMN_ROLES,
    DATE_ONLY,
    TIME_SOURCES,
    AdmissionRule,
    Drug,
    EventRule,
    Infusions,
    IntervalRule,
    Mapping,
    MappingError,
    Matcher,
)


class _Where:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, msg: str) -> MappingError:
        return MappingError(f"{self.path}: {key}: {msg}")


def _keys(w: _Where, raw: Any, key: str, allowed: set[str], required: set[str] = frozenset()):
    if not isinstance(raw, dict):
        raise w.fail(key, f"expected a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise w.fail(key, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(raw))
    if missing:
        raise w.fail(key, f"missing key(s) {missing}")
    return raw


def _strings(w: _Where, raw: Any, key: str) -> tuple[str, ...]:
    raw = [raw] if isinstance(raw, str) else raw
    if not isinstance(raw, list) or not all(isinstance(s, str) and s for s in raw):
        raise w.fail(key, "expected a string or a list of non-empty strings")
    return tuple(raw)


def _matcher(w: _Where, raw: Any, key: str) -> Matcher:
    raw = _keys(w, raw, key, {"code", "prefix", "regex"})
    if not raw:
        raise w.fail(key, "expected one of code, prefix, regex")
    regex = None
    if "regex" in raw:
        if not isinstance(raw["regex"], str):
            raise w.fail(f"{key}.regex", "expected a string")
        try:
            regex = re.compile(raw["regex"])
        except re.error as err:
            raise w.fail(f"{key}.regex", f"not a valid regular expression ({err})") from None
        bad = set(regex.groupindex) - {"text", "item"}
        if bad:
            raise w.fail(
                f"{key}.regex", f"unknown named group(s) {sorted(bad)}; allowed: text, item"
            )
    codes = frozenset(_strings(w, raw["code"], f"{key}.code")) if "code" in raw else frozenset()
    prefixes = _strings(w, raw["prefix"], f"{key}.prefix") if "prefix" in raw else ()
    return Matcher(codes, prefixes, regex)


def _conversion(w: _Where, raw: Any, key: str) -> tuple[float, float]:
    convs = dictionary().conversions
    if isinstance(raw, bool):
        raise w.fail(key, "expected 1, a conversion name or {scale, offset}")
    if isinstance(raw, (int, float)):
        return float(raw), 0.0
    if isinstance(raw, str):
        if raw not in convs:
            raise w.fail(
                key, f"unknown conversion {raw!r} (dictionary conversions: {sorted(convs)})"
            )
        return convs[raw]
    raw = _keys(w, raw, key, {"scale", "offset"}, {"scale"})
    try:
        return float(raw["scale"]), float(raw.get("offset", 0.0))
    except (TypeError, ValueError):
        raise w.fail(key, "scale and offset must be numbers") from None


def _concept(w: _Where, name: Any, key: str, kinds: tuple[str, ...]):
    d = dictionary()
    if not isinstance(name, str) or name not in d.concepts:
        raise w.fail(key, f"unknown concept {name!r} (not in {d.path})")
    c = d[name]
    if c.kind not in kinds:
        raise w.fail(key, f"concept {name!r} is of kind {c.kind!r}; expected one of {kinds}")
    return c


_EVENT_KEYS = {"concept", "match", "units", "convert", "negate", "text", "text_codes", "pair_with"}
_EVENT_KINDS = ("variable", "sofa_input", "marker")


def _event_rules(w: _Where, raw: Any) -> tuple[EventRule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise w.fail("events", "expected a mapping of part name -> list of rules")
    out = []
    for part, rules in raw.items():
        if not isinstance(part, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", part):
            raise w.fail(f"events.{part}", "part names are letters, digits, '_' or '-'")
        if not isinstance(rules, list):
            raise w.fail(f"events.{part}", "expected a list of rules")
        for i, r in enumerate(rules):
            key = f"events.{part}[{i}]"
            r = _keys(w, r, key, _EVENT_KEYS, {"concept", "match"})
            c = _concept(w, r["concept"], f"{key}.concept", _EVENT_KINDS)
            units = None
            if "units" in r:
                if not isinstance(r["units"], dict) or not r["units"]:
                    raise w.fail(f"{key}.units", "expected a mapping unit -> 1 | conversion")
                units = {
                    str(u): _conversion(w, v, f"{key}.units.{u}") for u, v in r["units"].items()
                }
            if "units" in r and "convert" in r:
                raise w.fail(key, "give units or convert, not both")
            convert = (
                _conversion(w, r["convert"], f"{key}.convert") if "convert" in r else (1.0, 0.0)
            )
            for flag in ("negate", "text", "text_codes"):
                if flag in r and not isinstance(r[flag], bool):
                    raise w.fail(f"{key}.{flag}", "expected true or false")
            text_codes = None
            if r.get("text_codes"):
                codes = c.extra.get("codes")
                if not isinstance(codes, dict):
                    raise w.fail(
                        f"{key}.text_codes", f"concept {c.name!r} has no `codes` in the dictionary"
                    )
                text_codes = {str(k).upper(): int(v) for k, v in codes.items()}
            pair, minutes = None, 0.0
            if "pair_with" in r:
                p = _keys(
                    w,
                    r["pair_with"],
                    f"{key}.pair_with",
                    {"concept", "within_minutes"},
                    {"concept", "within_minutes"},
                )
                _concept(w, p["concept"], f"{key}.pair_with.concept", _EVENT_KINDS)
                if not isinstance(p["within_minutes"], (int, float)) or not p["within_minutes"] > 0:
                    raise w.fail(f"{key}.pair_with.within_minutes", "expected a number > 0")
                pair, minutes = p["concept"], float(p["within_minutes"])
            out.append(
                EventRule(
                    f"{key} ({c.name})",
                    part,
                    c.name,
                    _matcher(w, r["match"], f"{key}.match"),
                    units,
                    convert,
                    bool(r.get("negate", False)),
                    bool(r.get("text", False)),
                    text_codes,
                    pair,
                    minutes,
                )
            )
    return tuple(out)


def _infusions(w: _Where, raw: Any) -> Infusions | None:
    if raw is None:
        return None
    raw = _keys(
        w,
        raw,
        "infusions",
        {"pair_on", "weight", "exclude_status", "rate_units", "drugs"},
        {"drugs", "rate_units"},
    )
    units = {}
    if not isinstance(raw["rate_units"], dict) or not raw["rate_units"]:
        raise w.fail(
            "infusions.rate_units", "expected a mapping unit -> {scale, per_weight, per_hour}"
        )
    for u, spec in raw["rate_units"].items():
        k = f"infusions.rate_units.{u}"
        spec = _keys(w, spec, k, {"scale", "per_weight", "per_hour"}, {"scale"})
        if not isinstance(spec["scale"], (int, float)) or isinstance(spec["scale"], bool):
            raise w.fail(f"{k}.scale", "expected a number")
        units[str(u)] = (
            float(spec["scale"]),
            bool(spec.get("per_weight")),
            bool(spec.get("per_hour")),
        )
    if not isinstance(raw["drugs"], list) or not raw["drugs"]:
        raise w.fail("infusions.drugs", "expected a list of {concept, start, end}")
    drugs = []
    for i, d in enumerate(raw["drugs"]):
        k = f"infusions.drugs[{i}]"
        d = _keys(w, d, k, {"concept", "start", "end"}, {"concept", "start", "end"})
        c = _concept(w, d["concept"], f"{k}.concept", ("vasopressor",))
        drugs.append(
            Drug(c.name, _matcher(w, d["start"], f"{k}.start"), _matcher(w, d["end"], f"{k}.end"))
        )
    pair_on = raw.get("pair_on")
    if pair_on is not None and pair_on not in COLUMN_ROLES:
        raise w.fail(
            "infusions.pair_on", f"expected a column role of `columns` ({', '.join(COLUMN_ROLES)})"
        )
    weight = (
        _matcher(w, raw["weight"], "infusions.weight") if raw.get("weight") is not None else None
    )
    status = (
        _strings(w, raw["exclude_status"], "infusions.exclude_status")
        if raw.get("exclude_status")
        else ()
    )
    return Infusions(pair_on, weight, status, units, tuple(drugs))


def _intervals(w: _Where, raw: Any) -> tuple[IntervalRule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise w.fail("intervals", "expected a list of {concept, start, end, part, labels}")
    out = []
    for i, r in enumerate(raw):
        key = f"intervals[{i}]"
        r = _keys(
            w, r, key, {"concept", "start", "end", "part", "labels"}, {"concept", "start", "end"}
        )
        c = _concept(w, r["concept"], f"{key}.concept", _EVENT_KINDS)
        part = r.get("part", "intervals")
        if not isinstance(part, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", part):
            raise w.fail(f"{key}.part", "part names are letters, digits, '_' or '-'")
        labels = r.get("labels")
        if labels is not None and not isinstance(labels, dict):
            raise w.fail(f"{key}.labels", "expected a mapping item -> text")
        hold = c.extra.get("hold_hours")
        if hold is not None and not (isinstance(hold, (int, float)) and hold > 0):
            raise w.fail(f"{key}.concept", f"dictionary hold_hours of {c.name!r} must be > 0")
        out.append(
            IntervalRule(
                f"{key} ({c.name})",
                part,
                c.name,
                _matcher(w, r["start"], f"{key}.start"),
                _matcher(w, r["end"], f"{key}.end"),
                {str(k): str(v) for k, v in labels.items()} if labels else None,
                float(hold) if hold is not None else None,
            )
        )
    return tuple(out)


_ADM_KEYS = {
    "name",
    "match",
    "time_source",
    "antibiotic_names",
    "items",
    "drug_types",
    "exclude_routes",
    "exclude_route_substrings",
    "exclude_name_substrings",
    "require_columns",
    "date_only",
}


def _admission_rules(w: _Where, raw: Any) -> tuple[AdmissionRule, ...]:
    if raw is None:
        return ()
    raw = _keys(w, raw, "admission_events", set(ADMISSION_CONCEPTS))
    out = []
    for concept, rules in raw.items():
        if not isinstance(rules, list):
            raise w.fail(f"admission_events.{concept}", "expected a list of rules")
        for i, r in enumerate(rules):
            key = f"admission_events.{concept}[{i}]"
            r = _keys(w, r, key, _ADM_KEYS, {"match"})
            ts = r.get("time_source")
            if concept == "antibiotic" and ts not in TIME_SOURCES:
                raise w.fail(f"{key}.time_source", f"expected one of {TIME_SOURCES}, got {ts!r}")
            if concept != "antibiotic":
                for k in (
                    "time_source",
                    "antibiotic_names",
                    "items",
                    "drug_types",
                    "exclude_routes",
                    "exclude_route_substrings",
                    "exclude_name_substrings",
                ):
                    if k in r:
                        raise w.fail(f"{key}.{k}", f"only antibiotic rules take {k}")
            if "date_only" in r and (concept != "culture" or r["date_only"] not in DATE_ONLY):
                raise w.fail(f"{key}.date_only", f"culture rules only; expected one of {DATE_ONLY}")
            items = None
            if "items" in r:
                if r["items"] != "mv_antibiotics.csv":
                    raise w.fail(f"{key}.items", "expected mv_antibiotics.csv (data_prep/concepts)")
                from data_prep.concepts.infection import mv_antibiotic_items

                items = {str(k): v for k, v in mv_antibiotic_items().items()}
            if "antibiotic_names" in r and not isinstance(r["antibiotic_names"], bool):
                raise w.fail(f"{key}.antibiotic_names", "expected true or false")
            req = (
                _strings(w, r["require_columns"], f"{key}.require_columns")
                if "require_columns" in r
                else ()
            )

            def opt(k: str, r=r, key=key) -> tuple[str, ...]:
                return _strings(w, r[k], f"{key}.{k}") if r.get(k) else ()

            out.append(
                AdmissionRule(
                    f"{key} ({r.get('name', concept)})",
                    str(r.get("name", f"{concept}{i}")),
                    concept,
                    _matcher(w, r["match"], f"{key}.match"),
                    ts,
                    bool(r.get("antibiotic_names", False)),
                    items,
                    opt("drug_types"),
                    opt("exclude_routes"),
                    opt("exclude_route_substrings"),
                    opt("exclude_name_substrings"),
                    req,
                    r.get("date_only", "never"),
                )
            )
    return tuple(out)


_TOP = {
    "version",
    "name",
    "description",
    "dataset_names",
    "separator",
    "missing_unit",
    "columns",
    "stays",
    "patients",
    "admissions",
    "events",
    "infusions",
    "intervals",
    "admission_events",
}


def parse(data: Any, path: Path) -> Mapping:
    """Validate the YAML document of a mapping file."""
    w = _Where(path)
    if not isinstance(data, dict):
        raise MappingError(f"{path}: expected a mapping at the top level")
    _keys(w, data, "<top level>", _TOP, {"version", "name", "stays", "events"})
    if data["version"] != 1:
        raise w.fail("version", f"expected 1, got {data['version']!r}")
    sep = data.get("separator", "//")
    if not isinstance(sep, str) or not sep:
        raise w.fail("separator", "expected a non-empty string")
    missing_unit = data.get("missing_unit")
    if missing_unit is not None and not isinstance(missing_unit, str):
        raise w.fail("missing_unit", "expected a string")
    columns = _keys(w, data.get("columns") or {}, "columns", set(COLUMN_ROLES))
    for role, col in columns.items():
        if not isinstance(col, str) or not col:
            raise w.fail(f"columns.{role}", "expected a column name")
    st = _keys(
        w,
        data["stays"],
        "stays",
        {"admission", "discharge", "care_unit"},
        {"admission", "discharge"},
    )
    if st.get("care_unit") not in (None, "code_suffix"):
        raise w.fail("stays.care_unit", "expected code_suffix or null")
    stays = {
        "admission": _matcher(w, st["admission"], "stays.admission"),
        "discharge": _matcher(w, st["discharge"], "stays.discharge"),
        "care_unit": st.get("care_unit"),
    }
    pt = _keys(w, data.get("patients") or {}, "patients", {"birth", "death", "gender"})
    patients: dict[str, Any] = {
        k: _matcher(w, pt[k], f"patients.{k}") for k in ("birth", "death") if pt.get(k)
    }
    if pt.get("gender"):
        g = dict(pt["gender"]) if isinstance(pt["gender"], dict) else pt["gender"]
        values = g.pop("values", None) if isinstance(g, dict) else None
        if values is not None and (
            not isinstance(values, dict) or not set(map(str, values.values())) <= {"M", "F"}
        ):
            raise w.fail("patients.gender.values", "expected a mapping code text -> M | F")
        patients["gender"] = (
            _matcher(w, g, "patients.gender"),
            {str(k): str(v) for k, v in values.items()} if values else None,
        )
    adm = _keys(w, data.get("admissions") or {}, "admissions", {"start", "end", "ed_registration"})
    admissions = {k: _matcher(w, v, f"admissions.{k}") for k, v in adm.items() if v}
    if "ed_registration" in admissions and "start" not in admissions:
        raise w.fail(
            "admissions.ed_registration", "needs admissions.start (the admission it precedes)"
        )
    desc = data.get("description", "")
    names = _strings(w, data["dataset_names"], "dataset_names") if data.get("dataset_names") else ()
    m = Mapping(
        path=path,
        name=str(data["name"]),
        description=str(desc),
        dataset_names=names,
        separator=sep,
        missing_unit=missing_unit,
        columns=dict(columns),
        stays=stays,
        patients=patients,
        admissions=admissions,
        events=_event_rules(w, data.get("events")),
        infusions=_infusions(w, data.get("infusions")),
        admission_rules=_admission_rules(w, data.get("admission_events")),
        intervals=_intervals(w, data.get("intervals")),
    )
    for r in m.events:
        if r.pair_with is not None and not any(o.concept == r.pair_with for o in m.events):
            raise w.fail(f"{r.key}.pair_with.concept", f"no rule of `events` gives {r.pair_with!r}")
    if (
        m.infusions is not None
        and m.infusions.pair_on is not None
        and m.infusions.pair_on not in columns
    ):
        raise w.fail("infusions.pair_on", f"columns.{m.infusions.pair_on} is not set")
    return m
