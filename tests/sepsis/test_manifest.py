"""Stage manifests: skip when current, redo on change or --force, atomic on failure."""

import json

import pytest

from sepsis.manifest import Stage, hash_path, stage_fingerprint


def _run(stage, text="x"):
    with stage.writing({"rows": 1}) as tmp:
        (tmp / "out.txt").write_text(text)


def test_stage_writes_manifest_and_is_then_current(tmp_path):
    stage = Stage("demo", tmp_path / "out", {"a": 1}, inputs={"in": "abc"})
    assert not stage.is_current()
    _run(stage)
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (
        man["stage"] == "demo" and man["counts"] == {"rows": 1} and man["inputs"] == {"in": "abc"}
    )
    assert man["config_hash"] == stage.config_hash and man["wall_seconds"] >= 0
    assert Stage("demo", tmp_path / "out", {"a": 1}, inputs={"in": "abc"}).is_current()


@pytest.mark.parametrize("change", ["config", "inputs", "force", "stage"])
def test_stage_not_current_after_change(tmp_path, change):
    _run(Stage("demo", tmp_path / "out", {"a": 1}, inputs={"in": "abc"}))
    kw = {"name": "demo", "out_dir": tmp_path / "out", "config": {"a": 1}, "inputs": {"in": "abc"}}
    if change == "config":
        kw["config"] = {"a": 2}
    elif change == "inputs":
        kw["inputs"] = {"in": "abd"}
    elif change == "force":
        kw["force"] = True
    else:
        kw["name"] = "other"
    assert not Stage(**kw).is_current()


def test_interrupted_stage_leaves_nothing_that_looks_whole(tmp_path):
    stage = Stage("demo", tmp_path / "out", {"a": 1})
    with pytest.raises(KeyboardInterrupt):
        with stage.writing() as tmp:
            (tmp / "half.txt").write_text("half")
            raise KeyboardInterrupt
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone too


def test_interrupted_redo_keeps_previous_complete_output(tmp_path):
    _run(Stage("demo", tmp_path / "out", {"a": 1}), "first")
    with pytest.raises(RuntimeError):
        with Stage("demo", tmp_path / "out", {"a": 2}).writing() as tmp:
            (tmp / "out.txt").write_text("second")
            raise RuntimeError("crash")
    assert (tmp_path / "out" / "out.txt").read_text() == "first"
    assert Stage("demo", tmp_path / "out", {"a": 1}).is_current()


def test_redo_replaces_output(tmp_path):
    _run(Stage("demo", tmp_path / "out", {"a": 1}), "first")
    _run(Stage("demo", tmp_path / "out", {"a": 2}), "second")
    assert (tmp_path / "out" / "out.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_hash_path_tracks_content(tmp_path):
    f = tmp_path / "d" / "a.csv"
    f.parent.mkdir()
    f.write_text("1,2\n")
    h1 = hash_path(tmp_path / "d")
    assert hash_path(tmp_path / "d") == h1
    f.write_text("1,3\n")
    assert hash_path(tmp_path / "d") != h1
    assert hash_path(tmp_path / "missing") == "missing"
    assert stage_fingerprint(tmp_path / "d") == "missing"
