"""Bad raw files in the MIMIC-III reader: corrupt streams and empty tables (issue 17)."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pandas as pd
import pytest

from data_prep.errors import DataError
from data_prep.sources import csv_stream, mimic3
from data_prep.sources.mimic3 import ReaderParams, extract

FIXTURE = Path(__file__).parent / "fixtures" / "mimic3_mini"


def _raw(tmp_path: Path, extra_chart_rows: int = 0) -> Path:
    """The mini fixture as .csv.gz, CHARTEVENTS padded with unneeded rows (random values)."""
    dst = tmp_path / "raw"
    dst.mkdir()
    rnd = random.Random(17)
    for src in FIXTURE.glob("*.csv"):
        text = src.read_text()
        if src.stem == "CHARTEVENTS" and extra_chart_rows:
            pad = [
                f"{1000 + i},1,101,300001,1,2150-01-01 12:00:00,,10,{v},{v},,0,0,,\n"
                for i, v in ((i, rnd.randint(0, 10**9)) for i in range(extra_chart_rows))
            ]
            text = text + "".join(pad)
        with gzip.open(dst / f"{src.name}.gz", "wt") as fh:
            fh.write(text)
    return dst


def _extract(raw: Path, tmp_path: Path, **kw) -> mimic3.ExtractionReport:
    return extract(raw, tmp_path / "out", ReaderParams(batch_rows=1000, **kw), progress=False)


def test_truncated_gzip_names_file_and_row(tmp_path) -> None:
    raw = _raw(tmp_path, extra_chart_rows=30_000)
    path = raw / "CHARTEVENTS.csv.gz"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(mimic3.CorruptFileError) as err:
        _extract(raw, tmp_path)
    msg = str(err.value)
    assert "CHARTEVENTS.csv.gz: truncated or corrupt gzip stream after data row " in msg
    rows = int(msg.split("after data row ")[1].split(" ")[0].replace(",", ""))
    assert 1000 <= rows < 30_000  # some batches were read before the cut
    assert isinstance(err.value, DataError)
    assert not (tmp_path / "out").exists()


def test_byte_flipped_gzip_body_is_named(tmp_path) -> None:
    raw = _raw(tmp_path, extra_chart_rows=30_000)
    path = raw / "CHARTEVENTS.csv.gz"
    data = bytearray(path.read_bytes())
    mid = int(len(data) * 0.7)
    data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
    path.write_bytes(bytes(data))
    # deflate may decode the flipped bytes to garbage text: then the CSV parser stops first
    # (a row with the wrong field count); else zlib does. Either way the file is named.
    with pytest.raises(DataError) as err:
        _extract(raw, tmp_path)
    assert f"{path}: " in str(err.value)
    assert "corrupt gzip" in str(err.value) or "fields, expected 15" in str(err.value)


def test_corrupt_gzip_crc_is_named(tmp_path) -> None:
    raw = _raw(tmp_path)
    path = raw / "LABEVENTS.csv.gz"
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # the stored CRC-32 no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"LABEVENTS\.csv\.gz: truncated or corrupt gzip"):
        _extract(raw, tmp_path)


def test_not_a_gzip_file_is_named(tmp_path) -> None:
    raw = _raw(tmp_path)
    (raw / "ICUSTAYS.csv.gz").write_bytes(b"this is not gzip data\n" * 10)
    with pytest.raises(DataError, match=r"ICUSTAYS\.csv\.gz: truncated or corrupt gzip stream in"):
        _extract(raw, tmp_path)


def test_plain_csv_not_utf8_is_named(tmp_path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for src in FIXTURE.glob("*.csv"):
        (raw / src.name).write_bytes(src.read_bytes())
    path = raw / "PATIENTS.csv"
    path.write_bytes(path.read_bytes().replace(b",M,", b",\xff\xfe,", 1))
    with pytest.raises(DataError, match=r"PATIENTS\.csv: text that is not valid UTF-8"):
        _extract(raw, tmp_path)


def _empty(raw: Path, table: str) -> None:
    path = raw / f"{table}.csv.gz"
    with gzip.open(path, "rt") as fh:
        header = fh.readline()
    with gzip.open(path, "wt") as fh:
        fh.write(header)


@pytest.mark.parametrize(
    "table,what",
    [("ICUSTAYS", "one row per ICU stay"), ("DIAGNOSES_ICD", "one row per ICD-9 diagnosis")],
)
def test_empty_required_table(tmp_path, table, what) -> None:
    raw = _raw(tmp_path)
    _empty(raw, table)
    with pytest.raises(mimic3.EmptyTableError) as err:
        _extract(raw, tmp_path)
    assert f"{table}.csv.gz: has a header but no data rows; expected {what}" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_empty_optional_table_is_a_report_warning(tmp_path) -> None:
    raw = _raw(tmp_path)
    _empty(raw, "PRESCRIPTIONS")
    rep = _extract(raw, tmp_path)
    assert rep.tables["PRESCRIPTIONS"].rows_kept == 0
    adm = pd.read_parquet(tmp_path / "out" / "admission_events.parquet")
    assert (
        "antibiotic" not in set(adm["concept"])
        and len(adm) == rep.outputs["admission_events.parquet"]
    )
    assert len(rep.warnings) == 1
    assert "PRESCRIPTIONS.csv.gz: has a header but no data rows" in rep.warnings[0]
    assert rep.tables["PRESCRIPTIONS"].warnings == rep.warnings
    assert '"warnings"' in (tmp_path / "out" / "extraction_report.json").read_text()


def test_not_utf8_late_in_a_plain_csv_names_the_row(tmp_path) -> None:
    raw = _raw(tmp_path, extra_chart_rows=30_000)
    gz = raw / "CHARTEVENTS.csv.gz"
    data = gzip.decompress(gz.read_bytes())
    i = data.find(b"\n25000,")  # ROW_ID 25000 = data row 24,013 (12 fixture rows + padding)
    data = data[:i] + data[i:].replace(b",10,", b",10,\xff", 1)  # first byte of its VALUE
    gz.unlink()
    (raw / "CHARTEVENTS.csv").write_bytes(data)
    with pytest.raises(mimic3.CorruptFileError) as err:
        _extract(raw, tmp_path)
    row = data[: i + 1].count(b"\n")  # lines before it = its data row number
    assert (
        f"CHARTEVENTS.csv: data row {row:,} (line {row + 1:,}): text that is not valid UTF-8"
        in (str(err.value))
    )


def test_full_disk_is_a_data_error_naming_the_output(tmp_path, monkeypatch) -> None:
    raw = _raw(tmp_path)

    def full(self) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv_stream.ParquetSink, "close", full)
    with pytest.raises(DataError, match=r"out: cannot write the extracted tables .*No space left"):
        _extract(raw, tmp_path)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("decoder", ["isal", "python-gzip"])
def test_gzip_decoders_read_the_same_and_name_a_truncated_file(tmp_path, monkeypatch, decoder):
    """ISA-L (the default) and Python's gzip (the fallback without isal) give the same
    extracted events, and both name a truncated stream."""
    from data_prep.sources import csv_files

    raw = _raw(tmp_path, extra_chart_rows=5_000)
    ref = _extract(raw, tmp_path / "ref")
    if decoder == "python-gzip":
        monkeypatch.setattr(csv_files, "_igzip", None)
    rep = _extract(raw, tmp_path / "other")
    assert rep.outputs == ref.outputs
    for part in ("chartevents", "labevents"):
        a = pd.read_parquet(tmp_path / "ref" / "out" / "events" / f"{part}.parquet")
        b = pd.read_parquet(tmp_path / "other" / "out" / "events" / f"{part}.parquet")
        pd.testing.assert_frame_equal(a, b)
    path = raw / "CHARTEVENTS.csv.gz"
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    with pytest.raises(mimic3.CorruptFileError, match="truncated or corrupt gzip stream"):
        _extract(raw, tmp_path / "cut")
