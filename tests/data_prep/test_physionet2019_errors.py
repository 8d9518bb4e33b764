"""PhysioNet 2019 reader: corrupt zips and members are DataErrors naming zip and member."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest
from test_physionet2019 import FILES, HEADER, SKIP, psv, row, write_zip

from data_prep.errors import DataError
from data_prep.sources.physionet2019 import PhysioNetFormatError, read_physionet2019


def _corrupt_member(path: Path, member: str) -> None:
    """Flip bytes in the middle of `member`'s stored data (the zip directory stays intact)."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack(
        "<HH", data[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_len + extra_len
    mid = start + info.compress_size // 2
    for k in range(mid, mid + 4):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


def _big_files() -> dict[str, str]:
    # a member long enough that its compressed body has a middle to corrupt
    return {**FILES, "p000009.psv": psv(*[row(h, HR=60 + h % 50) for h in range(1, 200)])}


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_corrupt_member_names_zip_and_member(tmp_path, method) -> None:
    src = tmp_path / "set.zip"
    with zipfile.ZipFile(src, "w", method) as z:
        for name, text in _big_files().items():
            z.writestr(f"training_setA/{name}", text)
    _corrupt_member(src, "training_setA/p000009.psv")
    with pytest.raises(PhysioNetFormatError) as err:
        read_physionet2019(src, progress=False)
    msg = str(err.value)
    assert f"{src} member training_setA/p000009.psv: cannot be decompressed" in msg
    assert isinstance(err.value, DataError)


def test_not_a_zip(tmp_path) -> None:
    src = tmp_path / "set.zip"
    src.write_text(HEADER + "\n")
    with pytest.raises(DataError, match=rf"{src}: not a readable zip file"):
        read_physionet2019(src, progress=False)


def test_zip_without_psv_members(tmp_path) -> None:
    src = tmp_path / "set.zip"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("training_setA/README.txt", "hello")
    with pytest.raises(DataError, match=r"holds no \.psv members .*README\.txt"):
        read_physionet2019(src, progress=False)


def test_header_only_member(tmp_path) -> None:
    src = write_zip(tmp_path / "set.zip", {**FILES, "p000008.psv": HEADER + "\n"})
    with pytest.raises(
        DataError, match=rf"{src} member training_setA/p000008\.psv: has a header but no data rows"
    ):
        read_physionet2019(src, progress=False)
    t = read_physionet2019(src, SKIP, progress=False)  # skipped and counted instead
    assert {r["step"]: r["count"] for r in t.source_attrition}["files without rows"] == 1
    assert 8 not in set(t.stays["stay_id"])


def test_wrong_columns_names_zip_and_member(tmp_path) -> None:
    files = {**FILES, "p000005.psv": psv(row(1), header=HEADER.replace("|SepsisLabel", ""))}
    src = write_zip(tmp_path / "set.zip", files)
    with pytest.raises(
        DataError, match=rf"{src} member training_setA/p000005\.psv: line 1 \(header\): 40 columns"
    ):
        read_physionet2019(src, progress=False)
