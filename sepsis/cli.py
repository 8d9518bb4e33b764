"""The `sepsis` command: generate, prepare, train, evaluate, report (and `run` = all of them).

Every sub-command takes `--config configs/<name>.yaml` and `key=value` overrides, e.g.

    sepsis prepare --config configs/physionet2019.yaml data_dir=/data/training_setA.zip
    sepsis train --config configs/default.yaml train.horizons=[0,7] mgp_tcn.epochs=5
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
import time
import traceback
from pathlib import Path

DEFAULT_CONFIG = "configs/default.yaml"

EPILOG = """\
overrides:
  key=value pairs after the options change the config, e.g. data_dir=/path,
  output_dir=runs/try2, cohort.control_ratio=5, train.horizons=[0,3,7],
  mgp_tcn.epochs=3. Values are parsed as YAML.

outputs (under output_dir, default runs/<config name>/):
  extracted/  prepared/  models/<learner>/<regime>/h<H>/seed<S>/  evaluation/  reports/
  evaluation-online/ (evaluate/report --online: every ICU hour of the val/test stays)
  Each folder has a manifest.json; a stage whose manifest matches is skipped (--force redoes it).
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        default=DEFAULT_CONFIG,
        help=f"run config YAML (default: {DEFAULT_CONFIG}, the embedded synthetic cohort)",
    )
    p.add_argument(
        "--force", action="store_true", help="redo the stage even if its manifest matches"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sepsis",
        description="Sepsis early warning: hourly Sepsis-3 labels from ICU records, a matched "
        "case-control cohort, MGP-TCN and DTW-KNN learners, and AUPRC 0-7 h before onset.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    helps = {
        "generate": "write the synthetic MIMIC-III-format database (source: synthetic) to data_dir",
        "extract": "read the source's raw records into the extracted-events contract "
        "(extracted/: stays, events by concept, admission events; runs `generate` first for "
        "source: synthetic)",
        "prepare": "raw records -> hourly SOFA, suspected infection, Sepsis-3 onsets -> matched cohort "
        "(runs `generate` first for source: synthetic)",
        "train": "fit the learners for each horizon and split seed; write test-split predictions",
        "evaluate": "AUPRC/AUROC per learner and horizon with bootstrap CIs (metrics.csv)",
        "report": "evaluate, then write report.md, report.html and plots under reports/",
        "run": "prepare -> train -> report, printing where the report is",
        "export-predictions": "write online test predictions in the PhysioNet 2019 challenge format "
        "(one p<stay>.psv per stay) with matching label files, for the official scorer",
        "export-labels": "write the prepared hourly Sepsis-3 labels as MEDS task labels "
        "(<out>/sepsis3_hourly/) and the onsets as MEDS events (<out>/sepsis3_events/)",
    }
    for name, text in helps.items():
        p = sub.add_parser(
            name,
            help=text,
            description=text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common(p)
        if name in ("evaluate", "report"):
            p.add_argument(
                "--models",
                metavar="RUN_DIR",
                default=None,
                help="external validation: evaluate the models of another run "
                "(e.g. runs/physionet2019) on this config's dataset",
            )
            p.add_argument(
                "--partial",
                action="store_true",
                help="evaluate although some planned training units are missing or stale "
                "(the report lists them); without it such a run stops with the list",
            )
            p.add_argument(
                "--online",
                action="store_true",
                help="also score every ICU hour of the val/test stays (evaluation-online/: "
                "utility, hourly AUROC/AUPRC, alarms; config section `online`)",
            )
        if name == "export-predictions":
            _add_export(p)
        if name == "export-labels":
            p.add_argument("--format", default="meds", choices=["meds"])
            p.add_argument("--out", required=True, help="MEDS task root for the label folders")
    return parser


def _data_errors() -> dict[type, str]:
    """Exception types that mean bad or unreadable input (not a bug), with what they say."""
    import csv
    import gzip
    import zipfile
    import zlib

    from data_prep.errors import DataError
    from sepsis.pipeline import PipelineError

    kinds: dict[type, str] = {
        DataError: "",
        PipelineError: "",
        gzip.BadGzipFile: "not a readable gzip file",  # before OSError, its base
        OSError: "",
        zipfile.BadZipFile: "corrupt zip file or member",
        zlib.error: "corrupt compressed data",
        EOFError: "the file ends early (truncated?)",
        UnicodeDecodeError: "not UTF-8 text",
        csv.Error: "unreadable CSV",
    }
    try:
        import pandas as pd

        kinds[pd.errors.EmptyDataError] = "empty table"
        kinds[pd.errors.ParserError] = "unreadable table"
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    try:
        import pyarrow as pa

        kinds[pa.lib.ArrowException] = "unreadable table"
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pass
    return kinds


def describe_error(err: BaseException, kind: str, where: Path | None) -> str:
    """One line: `<file>[: row, column]: <what>`; `where` (what the stage was reading or
    writing) names the place when the exception itself names no file."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None:
        target = f"{err.filename}" + (f" -> {err.filename2}" if err.filename2 else "")
        return f"{target}: {err.strerror or text}"
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror
    if kind:
        cls = type(err)
        name = (
            cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__name__}"
        )
        text = f"{kind}: {name}: {text}"
    if where is not None and str(where) not in text:
        text = f"{where}: {text}"
    return text


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="physionet2019", choices=["physionet2019"])
    p.add_argument("--learner", required=True, help="e.g. mgp_tcn, dtw_knn, logreg, gbm")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument(
        "--training",
        default="case-control",
        choices=["case-control", "online"],
        help="the case-control-trained model (default) or the online-trained baseline",
    )
    p.add_argument("--out", required=True, help="folder for predictions/ and labels/")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    # default: the pipeline's own INFO lines, libraries' warnings; -v: every INFO line; -vv: debug
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.verbose == 0:
        logging.getLogger("sepsis").setLevel(logging.INFO)
    prefix = f"sepsis {args.command}"
    places: dict[str, Path] = {}  # what the running stage reads ("input") and writes ("output")
    try:
        return _run(args, places)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        try:
            kinds = _data_errors()
        except Exception:  # e.g. the pipeline itself does not import: a bug, shown as one
            kinds = {}
        kind = next((k for t, k in kinds.items() if isinstance(err, t)), None)
        if kind is None:  # a bug: keep the traceback, end with a one-line summary
            traceback.print_exc()
            print(
                f"{prefix}: internal error (a bug; please report it with the traceback "
                f"above): {type(err).__name__}: {err}",
                file=sys.stderr,
            )
            return 1
        if args.verbose > 1:
            traceback.print_exc()
        full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
        place = places.get("output" if full else "input")
        print(f"{prefix}: {describe_error(err, kind, place)}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, places: dict[str, Path]) -> int:
    from sepsis.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"sepsis {args.command}: config error: {err}", file=sys.stderr)
        return 2
    from sepsis import pipeline

    progress = not args.no_progress
    t0 = time.time()

    def stage(name: str) -> None:
        # generate writes data_dir; prepare reads it; the later stages read the run folder
        places["input"] = (
            cfg.data_dir if name in ("generate", "extract", "prepare") else cfg.output_dir
        )
        places["output"] = cfg.data_dir if name == "generate" else cfg.output_dir

    if args.command == "generate":
        stage("generate")
        path = pipeline.generate(cfg, force=args.force, progress=progress)
        print(f"synthetic database: {path}")
    elif args.command == "extract":
        stage("extract")
        path = pipeline.extract(cfg, force=args.force, progress=progress)
        print(f"extracted events: {path}")
    elif args.command == "prepare":
        stage("prepare")
        path = pipeline.prepare(cfg, force=args.force, progress=progress)
        print(pipeline.describe_prepared(path))
        print(f"prepared cohort: {path}")
    elif args.command == "train":
        stage("train")
        path = pipeline.train(cfg, force=args.force, progress=progress)
        print(f"models and test-split predictions: {path}")
    elif args.command in ("evaluate", "report"):
        stage("evaluate")
        models = Path(args.models) if args.models else None
        path = pipeline.evaluate(
            cfg, force=args.force, progress=progress, models_run=models, partial=args.partial
        )
        if args.online:
            from sepsis.online import evaluate_online

            if models is not None:
                raise pipeline.PipelineError("--online does not combine with --models")
            online = evaluate_online(cfg, force=args.force, progress=progress)
            print(f"online metrics: {online / 'metrics.csv'}")
        if args.command == "report":
            path = pipeline.report(cfg, force=args.force, models_run=models)
            print(f"report: {path / 'report.html'} (and report.md)")
        else:
            print(f"metrics: {path / 'metrics.csv'}")
    elif args.command == "export-predictions":
        from sepsis.online import export_physionet2019

        stage("evaluate")
        n = export_physionet2019(cfg, args.learner, args.seed, Path(args.out), args.training)
        print(f"{n} stays: {Path(args.out) / 'predictions'} and {Path(args.out) / 'labels'}")
    elif args.command == "export-labels":
        from sepsis.export_labels import export_meds

        stage("evaluate")
        n = export_meds(cfg.output_dir / "prepared", Path(args.out))
        print(
            f"{n['labels']} hourly labels ({n['positive']} positive, {n['subjects']} subjects): "
            f"{n['label_file']}"
            + (f"; {n['onsets']} onsets: {n['events_file']}" if "onsets" in n else "")
        )
    elif args.command == "run":
        stage("prepare")
        pipeline.prepare(cfg, force=args.force, progress=progress)
        stage("train")
        pipeline.train(cfg, force=args.force, progress=progress)
        stage("evaluate")
        pipeline.evaluate(cfg, force=args.force, progress=progress)
        path = pipeline.report(cfg, force=args.force)
        print(f"report: {path / 'report.html'} (and report.md)")
    print(f"done in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
