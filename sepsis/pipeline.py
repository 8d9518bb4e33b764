"""The pipeline stages: generate -> prepare -> train -> evaluate -> report.

Each stage writes one folder under the run's output directory through `sepsis.manifest.Stage`
(temporary folder renamed into place, manifest with config hash and input hashes; skipped
when current). Training is split into one unit per (learner, regime, horizon, seed), each
its own stage folder, so an interrupted `make train` resumes where it stopped.

The stages live in `sepsis.stages` (`prepare`: generate/extract/prepare, `train`: the
training units, `evaluate`: evaluate/report and the report's context); this module is their
façade: the names the CLI, the online evaluation, the benchmarks and the tests use.
"""

from __future__ import annotations

from sepsis.manifest import PipelineError
from sepsis.stages.common import _asdict, _source  # noqa: F401  (re-exported)
from sepsis.stages.evaluate import (  # noqa: F401  (re-exported)
    STAGE_FOLDERS,
    evaluate,
    labels_note,
    report,
    report_context,
    stage_wall_seconds,
)
from sepsis.stages.prepare import (  # noqa: F401  (re-exported)
    _reader_options,
    _rules_fingerprint,
    describe_prepared,
    extract,
    generate,
    prepare,
)
from sepsis.stages.train import (  # noqa: F401  (re-exported)
    CHECKPOINT,
    REGIMES,
    SEARCH,
    Unit,
    _train_unit,
    _unit_stage,
    _view,
    collect_histories,
    collect_predictions,
    make_learner,
    plan_units,
    point_summary,
    train,
    unfinished_units,
)

__all__ = ["PipelineError", "generate", "prepare", "train", "evaluate", "report"]
