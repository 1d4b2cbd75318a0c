"""The run store: one folder per run id, atomic writes, and the run's status file.

Every output of a node is written under a name derived from (round, node, item), first to a
temporary sibling and then renamed, so a file that exists is complete and a killed process
leaves at most a stray temporary behind. Nodes skip work whose output already exists.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from atelier.atomic import write_json_atomic

CHECKPOINT_DB = "checkpoints.sqlite"


class RunError(RuntimeError):
    """A run that cannot be started or resumed as asked."""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def round_dir(run_dir: Path, round_no: int) -> Path:
    return run_dir / f"round_{round_no:03d}"


def best_round(state: dict) -> int | None:
    """The round whose adapter is the best so far; None while the base is the best."""
    best = state.get("best_adapter")
    return None if best is None else next((r["round"] for r in state.get("rounds", []) if r["adapter"] == best), None)


def evaluation_dir(run_dir: Path, round_no: int | None) -> Path:
    """Where a round's held-out evaluation (images, judgments.jsonl, metrics.json) is; None = the base's."""
    return run_dir / "base" if round_no is None else round_dir(run_dir, round_no) / "eval"


def guided_base_dir(run_dir: Path) -> Path:
    """The base's held-out evaluation at generation.candidate_guidance_scale: a reference that
    tells whether training beat raising the guidance, never a candidate."""
    return evaluation_dir(run_dir, None) / "at_candidate_guidance"


# --- status -----------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def set_status(run_dir: Path, **fields) -> None:
    path = run_dir / "status.json"
    status = read_json(path) if path.exists() else {}
    status.update(fields, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_json_atomic(path, status)


def get_status(run_dir: Path) -> dict:
    """The status file, with a 'running' run whose process is gone reported as failed."""
    path = run_dir / "status.json"
    if not path.exists():
        return {"state": "unknown"}
    status = read_json(path)
    if status.get("state") == "running" and not _alive(int(status.get("pid", -1))):
        status["state"] = "failed"
        status["error"] = status.get("error") or "the process stopped without finishing; `atelier resume` continues it"
    return status


def list_runs(root: Path) -> list[Path]:
    if not root.exists():
        return []
    return sorted((p for p in root.iterdir() if (p / "status.json").exists()), key=lambda p: p.name)
