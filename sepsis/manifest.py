"""Stage manifests and atomic stage outputs.

Every stage writes into a temporary sibling folder and renames it into place only when it
has finished, so a crash never leaves half an artifact that looks whole. The folder's
`manifest.json` records the stage, the resolved config and its hash, the hashes of its
inputs, the package version, row counts and wall time; a stage whose manifest matches the
current config and inputs is skipped (``--force`` redoes it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# Files up to this size are hashed in full. Larger ones (raw MIMIC tables, 4 GB compressed
# CHARTEVENTS) are fingerprinted by size, their first and last MiB and SAMPLE_BLOCKS blocks
# of SAMPLE_BYTES spread evenly over the file (about 17 MiB read, whatever the size), plus
# their modification and status-change times: ctime cannot be set back by a user, so an
# in-place edit with its mtime restored still changes the fingerprint.
CONTENT_HASH_LIMIT = 64 * 1024 * 1024
SAMPLE_BLOCKS = 256
SAMPLE_BYTES = 64 * 1024
EDGE_BYTES = 1024 * 1024


class PipelineError(RuntimeError):
    """A stage cannot run (missing input, unbuilt learner, bad data); the message says why."""


class UnsafeOverwriteError(PipelineError):
    """A stage would replace a folder that it did not write (someone's data)."""


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("sepsis-ews")
    except Exception:  # pragma: no cover - running from a source tree without install
        return "0+unknown"


def hash_file(path: Path) -> str:
    """Content fingerprint of one file: full SHA-256 when small, sampled blocks when large."""
    path = Path(path)
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if st.st_size <= CONTENT_HASH_LIMIT:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f"sampled:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}".encode())
            span = st.st_size - SAMPLE_BYTES
            offsets = [0, st.st_size - EDGE_BYTES]
            offsets += [span * i // (SAMPLE_BLOCKS - 1) for i in range(SAMPLE_BLOCKS)]
            for i, off in enumerate(offsets):
                fh.seek(off)
                h.update(fh.read(EDGE_BYTES if i < 2 else SAMPLE_BYTES))
    return h.hexdigest()[:16]


def hash_files(paths: list[Path], root: Path) -> str:
    """One fingerprint over named files (names relative to `root`, and their contents)."""
    h = hashlib.sha256()
    for f in sorted(Path(p) for p in paths):
        h.update(str(f.relative_to(root)).encode() + b"\0" + hash_file(f).encode())
    return h.hexdigest()[:16]


def hash_path(path: Path) -> str:
    """A fingerprint of a file or folder (every file's name and `hash_file` fingerprint)."""
    path = Path(path)
    if not path.exists():
        return "missing"
    if path.is_file():
        return hash_files([path], path.parent)
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".tmp"))
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(path)).encode())
        # a stage folder is identified by its manifest's own record of its inputs
        h.update(f.read_bytes() if f.name == MANIFEST else hash_file(f).encode())
    return h.hexdigest()[:16]


def folder_files(folder: Path) -> dict[str, int]:
    """Every file under `folder` (relative path -> size in bytes), the manifest excluded."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST
    }


def stage_fingerprint(stage_dir: Path) -> str:
    """Fingerprint of a finished stage folder: the hash of its manifest (cheap, exact)."""
    m = Path(stage_dir) / MANIFEST
    if not m.exists():
        return "missing"
    return hashlib.sha256(m.read_bytes()).hexdigest()[:16]


@dataclass
class Stage:
    """One pipeline stage writing the folder `out_dir`.

    `scratch` names entries the stage itself may leave in `out_dir` before it has finished
    (a training checkpoint); they are the only foreign entries a replace may discard.
    """

    name: str
    out_dir: Path
    config: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)
    force: bool = False
    started: float = field(default_factory=time.time)
    scratch: tuple[str, ...] = ()

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(
            json.dumps(self.config, sort_keys=True, default=str).encode()
        ).hexdigest()[:16]

    def read_manifest(self) -> dict[str, Any] | None:
        m = Path(self.out_dir) / MANIFEST
        if not m.exists():
            return None
        try:
            man = json.loads(m.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return man if isinstance(man, dict) else None

    def stale_reason(self) -> str | None:
        """Why the folder is not a current result of this stage (None when it is)."""
        if self.force:
            return "--force"
        man = self.read_manifest()
        if man is None:
            return "no manifest"
        if man.get("stage") != self.name:
            return f"written by stage {man.get('stage')!r}"
        if man.get("config_hash") != self.config_hash:
            return "config changed"
        if man.get("inputs") != self.inputs:
            return "inputs changed"
        files = man.get("files")
        if not isinstance(files, dict):
            return "manifest predates the file record"
        out = Path(self.out_dir)
        for rel, size in files.items():
            f = out / rel
            if not f.is_file():
                return f"{rel} is missing"
            if f.stat().st_size != size:
                return f"{rel} changed size ({f.stat().st_size} bytes, recorded {size})"
        return None

    def is_current(self) -> bool:
        """True when the folder holds this stage's output for this config and these inputs,
        with every file the manifest records present at its recorded size."""
        reason = self.stale_reason()
        if reason is not None and reason not in ("no manifest", "--force"):
            log.info("%s: %s is not current (%s)", self.name, self.out_dir, reason)
        return reason is None

    def check_replaceable(self) -> None:
        """Raise UnsafeOverwriteError unless `out_dir` is absent, empty or this stage's own.

        A folder is this stage's own when its manifest names this stage and every file in it
        is one the manifest records (or a declared scratch entry). Anything else, such as a
        folder of real tables passed where the tool writes, is never moved or deleted.
        """
        final = Path(self.out_dir)
        if not final.exists():
            return
        if not final.is_dir():
            raise UnsafeOverwriteError(
                f"{final} exists and is not a folder; refusing to replace it"
            )
        entries = [p for p in final.iterdir() if p.name not in self.scratch]
        if not entries:
            return
        man = self.read_manifest()
        if man is None or man.get("stage") != self.name:
            raise UnsafeOverwriteError(
                f"{final} holds {len(entries)} entries ({_names(entries)}) and no "
                f"`{self.name}` manifest: it was not written by this tool, so it is left "
                "untouched; choose another folder or move those files"
            )
        recorded = man.get("files")
        if isinstance(recorded, dict):
            foreign = [
                rel
                for rel in folder_files(final)
                if rel not in recorded and Path(rel).parts[0] not in self.scratch
            ]
            if foreign:
                raise UnsafeOverwriteError(
                    f"{final} holds {len(foreign)} files this tool did not write "
                    f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); "
                    "refusing to replace the folder: move them out first"
                )

    def clean_stale(self) -> None:
        """Remove temporary/trash folders of this stage left by a killed process.

        Only called with the run lock held, so no live process owns them.
        """
        final = Path(self.out_dir)
        if not final.parent.exists():
            return
        for pattern in (f".tmp-{final.name}-*", f".trash-{final.name}-*"):
            for p in final.parent.glob(pattern):
                log.info("removing %s, left by an interrupted run", p)
                shutil.rmtree(p, ignore_errors=True)

    @contextmanager
    def writing(self, counts: dict[str, Any] | None = None) -> Iterator[Path]:
        """Yield a temporary folder; on success write the manifest and rename into place."""
        final = Path(self.out_dir)
        self.check_replaceable()
        final.parent.mkdir(parents=True, exist_ok=True)
        self.clean_stale()
        tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        self.started = time.time()
        counts = {} if counts is None else counts
        try:
            yield tmp
            manifest = {
                "stage": self.name,
                "config_hash": self.config_hash,
                "config": self.config,
                "inputs": self.inputs,
                "package_version": package_version(),
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "command": " ".join(sys.argv),
                "counts": counts,
                "wall_seconds": round(time.time() - self.started, 3),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": folder_files(tmp),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            if final.exists():
                self.check_replaceable()  # again: the folder may have changed meanwhile
                trash = final.parent / f".trash-{final.name}-{uuid.uuid4().hex[:8]}"
                os.replace(final, trash)
                os.replace(tmp, final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _names(entries: list[Path], n: int = 5) -> str:
    names = sorted(p.name for p in entries)
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")
