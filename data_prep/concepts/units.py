"""Expected units of the MIMIC-III values the pipeline reads, and the known conversions.

The table is data (`units.csv` beside this module), read once and validated: one row per
(unit group, unit spelling) with `value_expected = value * factor + offset`. Unit groups are
the variables of `variables.VARIABLES` plus a few concept item groups
(`variables.unit_groups`). `UnitChecker` applies it to record batches, vectorised: a batch's
distinct VALUEUOM spellings are looked up once, every row by array indexing.
"""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_prep.concepts import variables as V
from data_prep.errors import DataError

UNITS_CSV = Path(__file__).with_name("units.csv")
ANY_UNIT = "*"
_COLUMNS = ["group", "unit", "factor", "offset", "note"]


def normalise(unit: str) -> str:
    """Spelling key of a unit: case and white space ignored ("mm Hg" == "MMHG" == "mmHg")."""
    return "".join(unit.split()).lower()


@dataclass(frozen=True)
class UnitRule:
    """One row of units.csv: `unit` of `group` is accepted (1, 0) or converted."""

    group: str
    unit: str
    factor: float
    offset: float
    note: str = ""

    @property
    def identity(self) -> bool:
        """Whether the unit is a spelling of the expected unit (no conversion)."""
        return self.factor == 1.0 and self.offset == 0.0


def _number(text: str, where: str, column: str) -> float:
    """`a` or `a/b` as a finite float; DataError naming the line and column otherwise."""
    try:
        num, _, den = text.strip().partition("/")
        value = float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{where}, column {column!r}: {text!r} is not a number or a/b")
    return value


@functools.cache
def load_rules(path: Path = UNITS_CSV) -> tuple[UnitRule, ...]:
    """The validated rules of `path`: known groups, numbers, no duplicate spelling, and an
    expected unit (a 1,0 row or `*`) for every group the reader uses."""
    known = set(V.unit_groups("chartevents").values()) | set(V.unit_groups("labevents").values())
    rules: list[UnitRule] = []
    seen: dict[tuple[str, str], int] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        lines = [(i, ln) for i, ln in enumerate(fh, 1) if ln.strip() and not ln.startswith("#")]
    reader = csv.reader([ln for _, ln in lines])
    header = next(reader, None)
    if header != _COLUMNS:
        raise DataError(f"{path}: header {header}, expected {','.join(_COLUMNS)}")
    for (line, _), fields in zip(lines[1:], reader, strict=True):
        where = f"{path}: line {line}"
        if len(fields) != len(_COLUMNS):
            raise DataError(f"{where}: {len(fields)} fields, expected {len(_COLUMNS)}")
        group, unit, factor, offset, note = (f.strip() for f in fields)
        if group not in known:
            raise DataError(f"{where}: unknown group {group!r}; expected one of {sorted(known)}")
        if not normalise(unit):
            raise DataError(f"{where}: empty unit (an empty VALUEUOM is always accepted)")
        key = (group, normalise(unit))
        if key in seen:
            raise DataError(f"{where}: {group} {unit!r} repeats line {seen[key]}")
        seen[key] = line
        rule = UnitRule(
            group, unit, _number(factor, where, "factor"), _number(offset, where, "offset"), note
        )
        if rule.factor == 0:
            raise DataError(f"{where}, column 'factor': expected a non-zero factor")
        rules.append(rule)
    lacking = sorted(g for g in known if not any(r.group == g and r.identity for r in rules))
    if lacking:
        raise DataError(f"{path}: no expected unit (a row with factor 1, offset 0) for {lacking}")
    return tuple(rules)


@dataclass
class UnitResult:
    """What `UnitChecker.apply` found in one batch (row masks are over the batch's rows)."""

    valuenum: pa.Array  # converted to the expected units (the input array when nothing changed)
    unknown: np.ndarray  # rows with a value whose unit is neither expected nor convertible
    no_unit: dict[str, int] = field(default_factory=dict)  # group -> rows without a unit
    converted: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, unit) -> rows
    unknown_counts: dict[tuple[str, str], int] = field(default_factory=dict)


class UnitChecker:
    """Checks (ITEMID, VALUENUM, VALUEUOM) batches of one table against the unit rules."""

    def __init__(self, table: str, rules: tuple[UnitRule, ...] | None = None):
        rules = load_rules() if rules is None else rules
        item_groups = V.unit_groups(table)
        self.groups = sorted(set(item_groups.values()))
        gi = {g: i for i, g in enumerate(self.groups)}
        self.item_group = np.full(max(item_groups) + 1, -1, np.int32)
        for item, group in item_groups.items():
            self.item_group[item] = gi[group]
        rules = tuple(r for r in rules if r.group in gi)
        units = sorted({normalise(r.unit) for r in rules if r.unit != ANY_UNIT})
        self.unit_index = {u: i for i, u in enumerate(units)}
        n_g, n_u = len(self.groups), len(units) + 1  # last unit column: not in the table
        self.known = np.zeros((n_g, n_u), bool)
        self.factor = np.ones((n_g, n_u))
        self.offset = np.zeros((n_g, n_u))
        self.any_unit = np.zeros(n_g, bool)
        self.rules = {g: [r for r in rules if r.group == g] for g in self.groups}
        for r in rules:
            g = gi[r.group]
            if r.unit == ANY_UNIT:
                self.any_unit[g] = True
                continue
            u = self.unit_index[normalise(r.unit)]
            self.known[g, u], self.factor[g, u], self.offset[g, u] = True, r.factor, r.offset

    def expected_unit(self, group: str) -> str:
        """The group's expected unit (its first 1,0 row)."""
        return next(r.unit for r in self.rules[group] if r.identity)

    def describe(self, group: str) -> str:
        """Accepted and convertible spellings of `group`, for messages."""
        same = [r.unit for r in self.rules[group] if r.identity]
        conv = [r.unit for r in self.rules[group] if not r.identity]
        text = " or ".join(repr(u) for u in same)
        if conv:
            text += f" (converted from {', '.join(repr(u) for u in conv)})"
        return text + " or an empty unit"

    def apply(
        self, itemid: np.ndarray, valuenum: pa.Array, valueuom: pa.Array | None
    ) -> UnitResult:
        """Convert known units, flag unknown ones; rows without a value are not checked.

        Decided once per (unit group, distinct spelling) cell of the batch, then looked up
        per row through one flat index (a few gathers per row, whatever the rule count).
        """
        has_value = valuenum.is_valid().to_numpy(zero_copy_only=False)
        g = self.item_group[np.clip(itemid, 0, len(self.item_group) - 1)]
        if (g < 0).any():  # the caller filters on the needed ITEMIDs: every one has a group
            raise ValueError(f"ITEMID {int(itemid[g < 0][0])} has no unit group")
        n_unknown_col = self.known.shape[1] - 1
        if valueuom is None:
            raw: list[str | None] = []
            col = np.array([-2], np.int64)  # one spelling: the empty unit
            code = np.zeros(len(itemid), np.int64)
        else:
            enc = pc.dictionary_encode(valueuom)
            raw = enc.dictionary.to_pylist()
            keys = [normalise(s) for s in raw]
            # per distinct spelling: its unit column, -2 for an empty unit (null appended last)
            col = np.array(
                [self.unit_index.get(k, n_unknown_col) if k else -2 for k in keys] + [-2],
                np.int64,
            )
            code = pc.fill_null(enc.indices, len(raw)).to_numpy(zero_copy_only=False)
        width = len(col)
        uc = np.where(col < 0, n_unknown_col, col)
        has_unit = (col >= 0)[None, :]
        known = self.known[:, uc]  # (groups, spellings)
        factor, offset = self.factor[:, uc], self.offset[:, uc]
        conv_cell = has_unit & known & ((factor != 1.0) | (offset != 0.0))
        unknown_cell = has_unit & ~(known | self.any_unit[:, None])
        # cell status: 0 as expected, 1 no unit, 2 unknown unit, 3 converted
        status = np.zeros(known.shape, np.int8)
        status[:, col == -2] = 1
        status[unknown_cell] = 2
        status[conv_cell] = 3
        flat = g.astype(np.int64) * width + code
        row_status = status.ravel()[flat]
        row_status[~has_value] = 0
        unknown = row_status == 2
        conv = row_status == 3
        res = UnitResult(valuenum=valuenum, unknown=unknown)
        if conv.any():
            v = pc.fill_null(valuenum, 0.0).to_numpy(zero_copy_only=False).copy()
            fc = flat[conv]
            v[conv] = v[conv] * factor.ravel()[fc] + offset.ravel()[fc]
            res.valuenum = pa.array(v, pa.float64(), mask=~has_value)
        flagged = row_status != 0
        if flagged.any():  # rows per cell, in one pass
            per_cell = np.bincount(flat[flagged], minlength=status.size)
            for cell in np.flatnonzero(per_cell):
                gi_, si = divmod(int(cell), width)
                n, kind = int(per_cell[cell]), status.ravel()[cell]
                group = self.groups[gi_]
                if kind == 1:
                    res.no_unit[group] = res.no_unit.get(group, 0) + n
                elif kind == 2:
                    res.unknown_counts[(group, raw[si])] = n
                elif kind == 3:
                    res.converted[(group, raw[si])] = n
        return res
