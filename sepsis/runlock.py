"""One process at a time per run folder (and per generated data folder).

Two `sepsis prepare` runs into the same output folder would otherwise race: both write
temporary folders and the last rename wins, or one removes the other's work. Every stage
entry point takes an exclusive, non-blocking `flock` on a lock file; a second process gets
a clear error naming the holder instead of waiting or racing. The lock is re-entrant
within a process (prepare takes it and calls generate and extract, which take it too) and
is released by the kernel when the process dies, so a `kill -9` never leaves it stuck.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sepsis.manifest import PipelineError

_held: dict[Path, int] = {}


class RunLockedError(PipelineError):
    """Another process holds the lock of this run folder."""


@contextmanager
def run_lock(lock_file: Path, what: str) -> Iterator[None]:
    """Hold the exclusive lock `lock_file` (created if needed) for the block."""
    key = Path(lock_file).resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    key.parent.mkdir(parents=True, exist_ok=True)
    fh = open(key, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown process"
        fh.close()
        raise RunLockedError(
            f"{what} is in use by another sepsis process ({holder}; lock {key}); "
            "wait for it to finish or choose another output_dir"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(
        f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)}\n"
    )
    fh.flush()
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        fh.close()  # closing releases the flock


def output_lock(output_dir: Path) -> Path:
    """The lock file of a run's output folder."""
    return Path(output_dir) / ".lock"


def data_lock(data_dir: Path) -> Path:
    """The lock file of a generated data folder: beside it, never inside it."""
    data_dir = Path(data_dir)
    return data_dir.parent / f".{data_dir.name}.lock"
