"""Safety of user data and run folders (issue 17): no foreign folder is replaced, stale
results are not trusted, one process per run folder, inputs fingerprinted by content."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sepsis import manifest, pipeline
from sepsis.cli import main
from sepsis.config import load_config
from sepsis.manifest import Stage, UnsafeOverwriteError, hash_file
from sepsis.runlock import RunLockedError, output_lock, run_lock

SMALL = {
    "synthetic": {"n_patients": 150, "seed": 5, "signal_strength": 2.5},
    "cohort": {
        "split_seeds": [0],
        "dbsource": "all",
        "split_fractions": [0.5, 0.2, 0.3],
        "min_variable_observations": 5,
        "horizons": [0],
    },
    "train": {"per_horizon": ["logreg", "sofa"], "train_once": [], "horizons": [0]},
    "evaluate": {"n_bootstrap": 20},
}


def _config(tmp_path: Path, name: str = "safe", **extra) -> Path:
    data = {
        "name": name,
        "source": "synthetic",
        "data_dir": str(tmp_path / "db"),
        "output_dir": str(tmp_path / "runs" / name),
        **yaml.safe_load(yaml.safe_dump(SMALL)),
    }
    data.update(extra)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("safe")
    cfg = load_config(_config(tmp))
    pipeline.prepare(cfg, progress=False)
    pipeline.train(cfg, progress=False)
    return tmp, cfg


# ---- 1. data loss -----------------------------------------------------------------------


def test_generate_refuses_a_folder_of_someone_elses_files(tmp_path):
    real = tmp_path / "mimic"
    real.mkdir()
    (real / "CHARTEVENTS.csv.gz").write_bytes(b"\x1f\x8b real data")
    (real / "notes.txt").write_text("my notes")
    before = _tree(real)
    cfg = load_config(_config(tmp_path, data_dir=str(real)))
    with pytest.raises(UnsafeOverwriteError, match="not written by this tool"):
        pipeline.prepare(cfg, progress=False)
    assert _tree(real) == before  # nothing replaced, moved or deleted
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")) == []


def test_regenerate_refuses_when_a_foreign_file_was_added(tmp_path):
    cfg = load_config(_config(tmp_path, synthetic={"n_patients": 20, "seed": 1}))
    pipeline.generate(cfg, progress=False)
    (cfg.data_dir / "my_analysis.csv").write_text("keep me")
    cfg2 = load_config(_config(tmp_path, synthetic={"n_patients": 20, "seed": 2}))
    with pytest.raises(UnsafeOverwriteError, match="my_analysis.csv"):
        pipeline.generate(cfg2, progress=False)
    assert (cfg.data_dir / "my_analysis.csv").read_text() == "keep me"
    # without the foreign file the tool may replace its own folder
    (cfg.data_dir / "my_analysis.csv").unlink()
    pipeline.generate(cfg2, progress=False)
    assert (
        json.loads((cfg.data_dir / "manifest.json").read_text())["config"]["synthetic"]["seed"] == 2
    )


def test_cli_names_the_refused_folder(tmp_path, capsys):
    real = tmp_path / "mimic"
    real.mkdir()
    (real / "PATIENTS.csv").write_text("subject_id\n1\n")
    assert main(["prepare", "--config", str(_config(tmp_path, data_dir=str(real)))]) == 1
    err = capsys.readouterr().err
    assert str(real) in err and "Traceback" not in err
    assert (real / "PATIENTS.csv").read_text() == "subject_id\n1\n"


# ---- 7. incomplete work -----------------------------------------------------------------


def test_deleted_artifact_makes_a_stage_stale(tmp_path):
    stage = Stage("demo", tmp_path / "out", {"a": 1})
    with stage.writing() as tmp:
        (tmp / "table.parquet").write_bytes(b"12345")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.bin").write_bytes(b"1")
    assert stage.is_current()
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["files"] == {"sub/x.bin": 1, "table.parquet": 5}
    (tmp_path / "out" / "table.parquet").write_bytes(b"123")
    assert stage.stale_reason() == "table.parquet changed size (3 bytes, recorded 5)"
    (tmp_path / "out" / "table.parquet").unlink()
    assert stage.stale_reason() == "table.parquet is missing"
    assert not stage.is_current()


def test_legacy_manifest_without_file_record_is_not_trusted(tmp_path):
    stage = Stage("demo", tmp_path / "out", {"a": 1})
    with stage.writing() as tmp:
        (tmp / "a.txt").write_text("a")
    m = tmp_path / "out" / "manifest.json"
    man = json.loads(m.read_text())
    del man["files"]
    m.write_text(json.dumps(man))
    assert not stage.is_current()


def test_deleted_observations_reprepare(small_run):
    tmp, cfg = small_run
    prepared = cfg.output_dir / "prepared"
    obs = prepared / "observations.parquet"
    saved = obs.read_bytes()
    obs.unlink()
    try:
        pipeline.prepare(cfg, progress=False)
        assert obs.exists()
        assert pd.read_parquet(obs).equals(pd.read_parquet(io.BytesIO(saved)))
    finally:
        pipeline.train(cfg, progress=False)  # the re-prepared cohort retrains the units


def test_evaluate_refuses_incomplete_training_unless_partial(small_run, tmp_path):
    tmp, cfg = small_run
    unit = pipeline.Unit("logreg", "per_horizon", 0, 0).folder(cfg.output_dir / "models")
    moved = tmp_path / "moved-unit"
    os.replace(unit, moved)  # as if training had been killed before this unit
    try:
        with pytest.raises(pipeline.PipelineError, match=r"1 of 2 units.*logreg per_horizon h0"):
            pipeline.evaluate(cfg, progress=False)
        ev = pipeline.evaluate(cfg, progress=False, partial=True)
        assert pd.read_csv(ev / "missing_units.csv")["learner"].tolist() == ["logreg"]
        assert set(pd.read_parquet(ev / "predictions.parquet")["learner"]) == {"sofa"}
        rep = pipeline.report(cfg)
        text = (rep / "report.md").read_text()
        assert "INCOMPLETE" in text and "logreg" in text.split("INCOMPLETE")[1][:2000]
    finally:
        os.replace(moved, unit)
    ev = pipeline.evaluate(cfg, progress=False)
    assert pd.read_csv(ev / "missing_units.csv").empty
    assert "INCOMPLETE" not in (pipeline.report(cfg) / "report.md").read_text()


def test_evaluate_refuses_units_trained_with_another_config(small_run):
    tmp, cfg = small_run
    cfg2 = load_config(_config(tmp), ["logreg.C=0.25"])  # logreg not retrained for C=0.25
    with pytest.raises(pipeline.PipelineError, match="logreg per_horizon h0 seed0 \\(config"):
        pipeline.evaluate(cfg2, progress=False)


# ---- 8. concurrency ---------------------------------------------------------------------

_HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from sepsis.runlock import run_lock
    with run_lock(Path(sys.argv[1]), "run folder"):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_second_process_on_the_same_run_folder_is_refused(small_run):
    tmp, cfg = small_run
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(output_lock(cfg.output_dir))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _tree(cfg.output_dir / "prepared")
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            pipeline.prepare(cfg, force=True, progress=False)
        assert _tree(cfg.output_dir / "prepared") == before
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the killed holder's lock: the next run proceeds
    pipeline.prepare(cfg, progress=False)


def test_two_concurrent_cli_prepares_one_wins_cleanly(tmp_path):
    path = _config(tmp_path, synthetic={"n_patients": 60, "seed": 2})
    cmd = [sys.executable, "-m", "sepsis.cli", "prepare", "--config", str(path), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    # normally one holds the lock while the other is refused at once; should one start only
    # after the other finished, it finds the stage current: never a crash or a half result
    assert 0 in [rc for rc, _ in results], results
    for rc, err in results:
        assert rc == 0 or ("in use by another sepsis process" in err and "Traceback" not in err)
    cfg = load_config(path)
    assert Stage("prepare", cfg.output_dir / "prepared", {}).read_manifest()["files"]
    leftovers = [p.name for p in cfg.output_dir.iterdir() if p.name.startswith((".tmp", ".trash"))]
    assert leftovers == []


def test_lock_is_reentrant_in_one_process(tmp_path):
    lock = tmp_path / ".lock"
    with run_lock(lock, "x"):
        with run_lock(lock, "x"):
            pass
        with run_lock(lock, "x"):
            pass


def test_stale_temporary_folders_are_removed(small_run):
    tmp, cfg = small_run
    stale = cfg.output_dir / ".tmp-prepared-deadbeef"
    stale.mkdir()
    (stale / "half.parquet").write_bytes(b"half")
    trash = cfg.output_dir / ".trash-prepared-deadbeef"
    trash.mkdir()
    pipeline.prepare(cfg, force=True, progress=False)
    assert not stale.exists() and not trash.exists()
    pipeline.train(cfg, progress=False)


# ---- 9. input fingerprints --------------------------------------------------------------
def test_unrelated_files_in_the_data_folder_do_not_trigger_reextraction(small_run):
    tmp, cfg = small_run
    extracted = cfg.output_dir / "extracted" / "manifest.json"
    before = extracted.stat().st_mtime_ns
    (cfg.data_dir / "README_mine.txt").write_text("unrelated")
    try:
        pipeline.extract(cfg, progress=False)
        assert extracted.stat().st_mtime_ns == before
    finally:
        (cfg.data_dir / "README_mine.txt").unlink()


def test_a_changed_rule_file_reextracts(small_run, monkeypatch):
    """The extraction depends on the concept dictionary and its data files: editing one
    (here: a copy of the dictionary with one more comment line) re-extracts."""
    from data_prep.concepts import dictionary

    tmp, cfg = small_run
    before = pipeline._rules_fingerprint(cfg, pipeline._source(cfg))
    folder = tmp / "concepts"
    folder.mkdir()
    for f in dictionary.DICTIONARY_FILE.parent.iterdir():
        if f.suffix in (".yaml", ".csv", ".txt"):
            (folder / f.name).write_bytes(f.read_bytes())
    (folder / "dictionary.yaml").write_text((folder / "dictionary.yaml").read_text() + "# edit\n")
    monkeypatch.setattr(dictionary, "DICTIONARY_FILE", folder / "dictionary.yaml")
    assert pipeline._rules_fingerprint(cfg, pipeline._source(cfg)) != before


def test_large_file_edited_in_place_with_mtime_restored_changes_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "CONTENT_HASH_LIMIT", 1000)
    monkeypatch.setattr(manifest, "EDGE_BYTES", 100)
    monkeypatch.setattr(manifest, "SAMPLE_BYTES", 10)
    monkeypatch.setattr(manifest, "SAMPLE_BLOCKS", 8)
    f = tmp_path / "CHARTEVENTS.csv"
    f.write_bytes(b"row,1.0\n" * 10_000)
    h0 = hash_file(f)
    assert hash_file(f) == h0  # deterministic
    st = f.stat()
    time.sleep(0.01)
    with open(f, "r+b") as fh:  # same size, a byte in the middle, far from any sampled block
        fh.seek(40_003)
        fh.write(b"9")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert hash_file(f) != h0
