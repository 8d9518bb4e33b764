"""What every pipeline stage shares: the run folder's lock, config sections as plain dicts,
and the configured data source."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

from sepsis.config import RunConfig
from sepsis.manifest import PipelineError
from sepsis.runlock import output_lock, run_lock


def _locked(fn):
    """Run a stage entry point holding the run folder's lock (one process per run folder)."""

    @functools.wraps(fn)
    def wrapper(cfg: RunConfig, *args, **kwargs):
        with run_lock(output_lock(cfg.output_dir), f"run folder {cfg.output_dir}"):
            return fn(cfg, *args, **kwargs)

    return wrapper


def _asdict(obj: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def _source(cfg: RunConfig):
    from data_prep import sources

    try:
        return sources.get(cfg.source)
    except KeyError as err:
        raise PipelineError(str(err.args[0])) from None
