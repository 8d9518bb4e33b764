"""The embedded synthetic source: a generated ICU database in MIMIC-III format, read by the
MIMIC-III reader (so the default run exercises the real reading and labelling path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_prep.sources import Source, mimic3_source


def generate(folder: Path, params: Any, progress: bool = True) -> Any:
    from data_prep.sources.synthetic import generate as gen

    return gen(folder, params, progress=progress)


SOURCE = Source(
    name="synthetic",
    description="synthetic ICU database in MIMIC-III format, generated on first use",
    extract=mimic3_source.extract,
    inputs=mimic3_source.inputs,
    attributes=("dbsource",),
    generate=generate,
    generator_section="synthetic",
)
