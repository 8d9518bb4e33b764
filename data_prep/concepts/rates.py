"""Infusion rate units: every spelling the MIMIC readers meet, normalised, with its
conversion to the vasopressor concepts' unit (mcg/kg/min). One table for MIMIC-III and
MIMIC-IV (the MEDS mapping files carry their own `rate_units`, as the ETL spells them)."""

from __future__ import annotations

# normalised unit -> (factor to mcg, divide by weight?, per hour?)
RATE_UNITS: dict[str, tuple[float, bool, bool]] = {
    "mcgkgmin": (1.0, False, False),
    "mcgmin": (1.0, True, False),
    "mgkgmin": (1000.0, False, False),
    "mgmin": (1000.0, True, False),
    "mcgkghr": (1.0, False, True),
    "mcghr": (1.0, True, True),
    "mgkghr": (1000.0, False, True),
    "mghr": (1000.0, True, True),
    "ngkgmin": (1e-3, False, False),
    "ngmin": (1e-3, True, False),
}


def normalise_rate_unit(u: str | None) -> str | None:
    """'mcg/kg/min' -> 'mcgkgmin', 'ug/kg/hour' -> 'mcgkghr'; None for an empty unit."""
    if u is None:
        return None
    s = "".join(ch for ch in u.lower() if ch.isalnum())
    s = s.replace("ug", "mcg").replace("hour", "hr").replace("mcgmcg", "mcg")
    if s.endswith("h") and not s.endswith("hr"):
        s += "r"
    return s or None
