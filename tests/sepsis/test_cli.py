"""The CLI turns bad-data errors into one line `sepsis <command>: <file>: <what>`, exit 1."""

from __future__ import annotations

import errno
import gzip
import zipfile
import zlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import yaml

from data_prep.errors import DataError
from data_prep.sources.physionet2019 import COLUMNS
from sepsis import pipeline
from sepsis.cli import main


def _config(tmp_path: Path, **extra) -> Path:
    data = {
        "name": "cli",
        "source": "synthetic",
        "data_dir": str(tmp_path / "db"),
        "output_dir": str(tmp_path / "runs" / "cli"),
        **extra,
    }
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _raise(err: BaseException):
    def stage(*args, **kwargs):
        raise err

    return stage


DB, RUN = "{tmp}/db", "{tmp}/runs/cli"
CASES = [
    # (command, the stage that raises, exception, words the one line must hold)
    ("prepare", "prepare", DataError("a.csv: row 3, column HR: expected a number"), ["a.csv"]),
    (
        "prepare",
        "prepare",
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/d/ICUSTAYS.csv.gz"),
        ["/d/ICUSTAYS.csv.gz: No such file or directory"],
    ),
    (
        "prepare",
        "prepare",
        OSError(errno.ENOSPC, "No space left on device", "/r/prepared/windows.parquet"),
        ["/r/prepared/windows.parquet: No space left on device"],
    ),
    (
        "train",
        "train",
        OSError(errno.ENOSPC, "No space left on device"),
        [RUN + ": No space left on device"],
    ),
    (
        "prepare",
        "prepare",
        zipfile.BadZipFile("Bad CRC-32 for file 'training_setA/p000001.psv'"),
        [DB + ": corrupt zip", "p000001.psv"],
    ),
    ("prepare", "prepare", EOFError("Compressed file ended early"), [DB + ": the file ends early"]),
    ("prepare", "prepare", gzip.BadGzipFile("Not a gzipped file (b'ab')"), [DB, "gzip"]),
    ("prepare", "prepare", zlib.error("Error -3 while decompressing"), [DB + ": corrupt compr"]),
    ("prepare", "prepare", pa.lib.ArrowInvalid("CSV parse error: Expected 3 columns"), ["3 col"]),
    ("prepare", "prepare", pd.errors.EmptyDataError("No columns to parse"), [DB + ": empty"]),
    ("train", "train", pipeline.PipelineError("no prepared cohort"), ["no prepared cohort"]),
    ("run", "train", pa.lib.ArrowIOError("Parquet magic bytes not found"), [RUN, "magic bytes"]),
]


@pytest.mark.parametrize("command, stage, err, words", CASES)
def test_data_errors_are_one_line_without_traceback(
    tmp_path, capsys, monkeypatch, command, stage, err, words
):
    for name in ("generate", "prepare", "train", "evaluate", "report"):
        monkeypatch.setattr(pipeline, name, lambda *a, **k: tmp_path)
    monkeypatch.setattr(pipeline, "describe_prepared", lambda path: "")
    monkeypatch.setattr(pipeline, stage, _raise(err))
    cfg = _config(tmp_path)
    assert main([command, "--config", str(cfg), "--no-progress"]) == 1
    out = capsys.readouterr().err
    lines = out.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out, out
    assert lines[0].startswith(f"sepsis {command}: ")
    for word in words:
        assert word.format(tmp=tmp_path) in lines[0]

    assert main([command, "--config", str(cfg), "--no-progress", "-vv"]) == 1
    out = capsys.readouterr().err
    assert "Traceback (most recent call last)" in out
    assert out.strip().splitlines()[-1] == lines[0]


def test_a_bug_keeps_its_traceback_and_ends_with_a_summary(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "train", _raise(TypeError("unsupported operand")))
    assert main(["train", "--config", str(_config(tmp_path))]) == 1
    out = capsys.readouterr().err
    assert "Traceback (most recent call last)" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("sepsis train: internal error") and "TypeError: unsupported" in last


def test_interrupt_exits_130(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "train", _raise(KeyboardInterrupt()))
    assert main(["train", "--config", str(_config(tmp_path))]) == 130
    out = capsys.readouterr().err
    assert out.strip() == "sepsis train: interrupted"


def _psv(n_rows: int, stay: int) -> str:
    rows = []
    for hour in range(1, n_rows + 1):
        values = dict.fromkeys(COLUMNS, "NaN")
        values.update(
            Age=60 + stay, Gender=stay % 2, Unit1=1, Unit2=0, HospAdmTime=-1.5, ICULOS=hour
        )
        values.update(HR=70 + (hour * 7 + stay) % 40, SepsisLabel=0)
        rows.append("|".join(str(values[c]) for c in COLUMNS))
    return "\n".join(["|".join(COLUMNS), *rows]) + "\n"


def test_corrupt_zip_member_end_to_end(tmp_path, capsys):
    path = tmp_path / "training_setA.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("training_setA/", "")
        for stay in (1, 2, 3):
            z.writestr(f"training_setA/p{stay:06d}.psv", _psv(48, stay))
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("training_setA/p000002.psv")
    raw = bytearray(path.read_bytes())
    # local header: 30 bytes + file name + extra field, then the compressed bytes
    name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    raw[start : start + info.compress_size] = bytes(
        b ^ 0x5A for b in raw[start : start + info.compress_size]
    )
    path.write_bytes(bytes(raw))
    before = path.read_bytes()

    cfg = _config(tmp_path, source="physionet2019", data_dir=str(path))
    assert main(["prepare", "--config", str(cfg), "--no-progress"]) == 1
    out = capsys.readouterr().err
    assert "Traceback" not in out, out
    line = out.strip().splitlines()[-1]
    assert line.startswith("sepsis prepare: ") and str(path) in line
    assert path.read_bytes() == before  # the raw input is never modified


def test_extract_command_writes_the_events_contract(tmp_path, capsys):
    cfg = _config(tmp_path, synthetic={"n_patients": 30, "seed": 0})
    assert main(["extract", "--config", str(cfg), "--no-progress"]) == 0
    out = tmp_path / "runs" / "cli" / "extracted"
    assert f"extracted events: {out}" in capsys.readouterr().out
    assert (out / "stays.parquet").exists() and (out / "admission_events.parquet").exists()
    concepts = set(pd.read_parquet(out / "events")["concept"].astype(str))
    assert {"heart_rate", "platelets", "gcs_verbal", "urine_output"} <= concepts
