"""PhysioNet 2019 input: the challenge's columns, opening a zip / folder of `.psv` members,
and the pyarrow parse with its slow paths that name the bad member, row and column
(`data_prep.sources.physionet2019`)."""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from data_prep.errors import DataError

COLUMNS: tuple[str, ...] = (
    "HR", "O2Sat", "Temp", "SBP", "MAP", "DBP", "Resp", "EtCO2", "BaseExcess", "HCO3", "FiO2", "pH",
    "PaCO2", "SaO2", "AST", "BUN", "Alkalinephos", "Calcium", "Chloride", "Creatinine",
    "Bilirubin_direct", "Glucose", "Lactate", "Magnesium", "Phosphate", "Potassium",
    "Bilirubin_total", "TroponinI", "Hct", "Hgb", "PTT", "WBC", "Fibrinogen", "Platelets", "Age",
    "Gender", "Unit1", "Unit2", "HospAdmTime", "ICULOS", "SepsisLabel",
)  # fmt: skip
HEADER = "|".join(COLUMNS).encode()
_NAME = re.compile(r"(?:^|/)p(\d+)\.psv$")
_CHUNK_FILES = 256  # files per chunk when locating a parse failure


class PhysioNetFormatError(DataError):
    """A `.psv` member does not have the challenge format (names member, row, column)."""


class PhysioNetInputNotFound(PhysioNetFormatError, FileNotFoundError):
    """The input path is absent, or a folder with neither .psv files nor one zip."""


def _open_source(
    path: Path,
) -> tuple[list[str], Callable[[str], bytes], Callable[[], None], Callable[[str], str]]:
    """(sorted member names, read(name) -> bytes, close(), label(name) for messages) for a zip,
    a folder of .psv, or a folder holding exactly one zip."""
    path = Path(path)
    if not path.exists():
        raise PhysioNetInputNotFound(
            f"{path}: PhysioNet 2019 input not found (a .zip or a folder of .psv files)"
        )
    if path.is_dir():
        files = sorted(path.rglob("*.psv"))
        if files:
            by_name = {str(f.relative_to(path)): f for f in files}
            return (
                list(by_name),
                lambda n: by_name[n].read_bytes(),
                lambda: None,
                lambda n: str(by_name[n]),
            )
        zips = sorted(path.glob("*.zip"))
        if len(zips) != 1:
            raise PhysioNetInputNotFound(
                f"{path}: expected .psv files or exactly one .zip in the folder, found "
                f"{len(zips)} zip file(s) ({', '.join(z.name for z in zips) or 'none'})"
            )
        path = zips[0]
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise PhysioNetFormatError(
            f"{path}: not a readable zip file ({e}); expected the challenge's training set zip "
            "or a folder of .psv files"
        ) from e
    names = sorted(n for n in zf.namelist() if n.endswith(".psv") and not n.endswith("/"))
    if not names:
        others = [n for n in zf.namelist() if not n.endswith("/")]
        zf.close()
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise PhysioNetFormatError(
            f"{path}: the zip holds no .psv members (it has {len(others)} other file(s)"
            f"{': ' + shown if others else ''}); expected one pNNNNNN.psv per ICU stay"
        )

    def label(name: str) -> str:
        return f"{path} member {name}"

    def read(name: str) -> bytes:
        # a bad CRC is BadZipFile; an undecompressable body zlib.error, EOFError or OSError
        try:
            return zf.read(name)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as e:
            raise PhysioNetFormatError(
                f"{label(name)}: cannot be decompressed ({e}); expected an intact zip member "
                "(the zip is corrupt or truncated)"
            ) from e

    return names, read, zf.close, label


def _parse(body: bytes) -> pa.Table:
    return pacsv.read_csv(
        io.BytesIO(body),
        read_options=pacsv.ReadOptions(column_names=list(COLUMNS)),
        parse_options=pacsv.ParseOptions(delimiter="|"),
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(COLUMNS, pa.float64())),
    )


def _line_check(name: str, body: bytes) -> tuple[bytes, list[str]]:
    """Slow path for one member: (its good lines, one message per bad line)."""
    good, bad = [], []
    for i, line in enumerate(body.split(b"\n")):
        if not line.strip():
            continue
        fields = line.rstrip(b"\r").split(b"|")
        where = f"{name}: line {i + 2} (data row {i + 1})"
        if len(fields) != len(COLUMNS):
            bad.append(f"{where}: expected {len(COLUMNS)} '|'-separated fields, got {len(fields)}")
            continue
        problem = None
        for col, val in zip(COLUMNS, fields, strict=True):
            try:
                float(val) if val.strip() else None
            except ValueError:
                problem = f"{where}: column '{col}' = {val.decode(errors='replace')!r}, expected a number or NaN"
                break
        if problem:
            bad.append(problem)
        else:
            good.append(line.rstrip(b"\r"))
    return b"".join(g + b"\n" for g in good), bad


def _parse_located(
    names: list[str], bodies: list[bytes], skip: bool, bad_msgs: list[str]
) -> list[bytes]:
    """Find the members that break the one-shot parse; return the bodies with bad lines removed
    (skip) or raise naming the first bad member/row/column (error)."""
    bodies = list(bodies)
    for c0 in range(0, len(bodies), _CHUNK_FILES):
        chunk = range(c0, min(c0 + _CHUNK_FILES, len(bodies)))
        try:
            _parse(b"".join(bodies[i] for i in chunk))
            continue
        except pa.ArrowInvalid:
            pass
        for i in chunk:
            try:
                _parse(bodies[i])
                continue
            except pa.ArrowInvalid as e:
                arrow_msg = str(e)
            good, bad = _line_check(names[i], bodies[i])
            if not bad:
                bad = [f"{names[i]}: cannot be parsed as pipe-separated numbers: {arrow_msg}"]
                good = b""
            if not skip:
                raise PhysioNetFormatError(
                    bad[0]
                    + (
                        f" (and {len(bad) - 1} more bad row(s) in this file)"
                        if len(bad) > 1
                        else ""
                    )
                )
            bad_msgs.extend(bad)
            bodies[i] = good
    return bodies


def _count_rows(body: bytes) -> int:
    # rows = non-empty lines; fast path assumes no blank lines (checked against the parse)
    return body.count(b"\n")
