"""Crash injection for the resume tests: `ATELIER_DIE_AT=<point>` makes the process SIGKILL
itself when it reaches that point (e.g. `generate`, `train_step:2`, `evaluate`), exactly as
an out-of-memory kill or a pulled plug would, with no chance to clean up."""

from __future__ import annotations

import os
import signal


def maybe_die(point: str) -> None:
    if os.environ.get("ATELIER_DIE_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
