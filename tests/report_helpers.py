"""One tiny run of the real loop shared by the report, progress, model card and export tests
(shipped shapes model, 2 rounds, promotion on any gain), run once per test session with the
terminal forced on so that rich draws its live bars into the captured stderr."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from loop_helpers import atelier, write_config

_RUNS: dict[str, tuple[Path, subprocess.CompletedProcess]] = {}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def tiny_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """(the run folder, the finished `atelier run` process), made on first use."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _RUNS:
        tmp = tmp_path_factory.mktemp("report_run")
        done = atelier("run", str(write_config(tmp)), "--run-id", "tiny",
                       env={"FORCE_COLOR": "1", "COLUMNS": "140", "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
        _RUNS[key] = (tmp / "runs" / "tiny", done)
    return _RUNS[key]


def screen_lines(stderr: str) -> list[str]:
    """What a terminal showed, frame by frame: escape codes removed, one line per redraw."""
    return [line for line in re.split(r"[\r\n]", ANSI.sub("", stderr)) if line.strip()]
