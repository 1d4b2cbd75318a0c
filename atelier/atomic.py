"""Atomic writes: a file or folder that exists is complete.

Everything is written to a hidden sibling first and then renamed into place (one rename is atomic
on POSIX), so a process killed at any moment leaves either the old state or the new one, never a
half-written file. A stale sibling left by a killed writer is removed by the next attempt.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl_atomic(path: str | Path, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


@contextmanager
def staged_dir(final: str | Path) -> Iterator[Path]:
    """A hidden sibling folder that becomes `final` by one rename when the block ends without
    error, so a reader never sees a half-written `final`. On error the stage is removed; one left
    by a killed process is removed by the next attempt (one writer per `final` at a time)."""
    final = Path(final)
    if final.exists():
        raise FileExistsError(f"{final} already exists")
    stage = final.parent / f".{final.name}.partial"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
        os.rename(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
