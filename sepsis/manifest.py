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
# Files up to this size are hashed by content; larger ones (raw MIMIC tables) by size and
# modification time, since reading 33 GB to decide whether to skip a stage defeats the point.
CONTENT_HASH_LIMIT = 64 * 1024 * 1024


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("sepsis-ews")
    except Exception:  # pragma: no cover - running from a source tree without install
        return "0+unknown"


def hash_path(path: Path) -> str:
    """A fingerprint of a file or folder (content for small files, size+mtime for big ones)."""
    path = Path(path)
    if not path.exists():
        return "missing"
    h = hashlib.sha256()
    if path.is_file():
        files = [path]
        root = path.parent
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".tmp"))
        root = path
    for f in files:
        st = f.stat()
        h.update(str(f.relative_to(root)).encode())
        if f.name == MANIFEST:
            # a stage folder is identified by its manifest's own record of its inputs
            h.update(f.read_bytes())
        elif st.st_size <= CONTENT_HASH_LIMIT:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        else:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def stage_fingerprint(stage_dir: Path) -> str:
    """Fingerprint of a finished stage folder: the hash of its manifest (cheap, exact)."""
    m = Path(stage_dir) / MANIFEST
    if not m.exists():
        return "missing"
    return hashlib.sha256(m.read_bytes()).hexdigest()[:16]


@dataclass
class Stage:
    """One pipeline stage writing the folder `out_dir`."""

    name: str
    out_dir: Path
    config: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)
    force: bool = False
    started: float = field(default_factory=time.time)

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
            return json.loads(m.read_text())
        except json.JSONDecodeError:
            return None

    def is_current(self) -> bool:
        """True when the folder exists with a manifest for this config and these inputs."""
        if self.force:
            return False
        man = self.read_manifest()
        return bool(
            man
            and man.get("stage") == self.name
            and man.get("config_hash") == self.config_hash
            and man.get("inputs") == self.inputs
        )

    @contextmanager
    def writing(self, counts: dict[str, Any] | None = None) -> Iterator[Path]:
        """Yield a temporary folder; on success write the manifest and rename into place."""
        final = Path(self.out_dir)
        final.parent.mkdir(parents=True, exist_ok=True)
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
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            if final.exists():
                trash = final.parent / f".trash-{final.name}-{uuid.uuid4().hex[:8]}"
                os.replace(final, trash)
                os.replace(tmp, final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
