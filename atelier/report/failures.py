"""What went wrong in a run, for the report: agent answers that failed (planner, prompt writer,
judge, ...) with their raw text, judgments that failed, trainings that diverged; and the wall time
of each node."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from atelier.runs import read_json, read_jsonl

MAX_FAILURES = 30
MAX_RAW = 2_000  # characters of a raw answer shown


@dataclass
class Failure:
    where: str  # the file it was read from, relative to the run folder
    role: str
    error: str
    raw: str


def _cut(text) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= MAX_RAW else text[:MAX_RAW] + f"…[cut: {len(text)} characters]"


def run_failures(run_dir: Path, limit: int = MAX_FAILURES) -> tuple[list[Failure], int]:
    """(the first `limit` failures, how many there are), in file order."""
    found: list[Failure] = []
    for path in sorted(run_dir.rglob("agents/*.json")):
        try:
            rec = read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and (rec.get("ok") is False or rec.get("errors") or rec.get("fallback")):
            error = rec.get("error") or "; ".join(map(str, rec.get("errors") or [])) or "a fallback answer was used"
            found.append(Failure(str(path.relative_to(run_dir)), str(rec.get("role", path.stem)), _cut(error),
                                 _cut(rec.get("raw"))))
    for path in sorted([*run_dir.glob("round_*/judge/*.jsonl"), *run_dir.glob("**/judgments.jsonl")]):
        try:
            rows = read_jsonl(path)
        except (OSError, ValueError):
            continue
        for j in rows:
            if isinstance(j, dict) and j.get("failure"):
                f = j["failure"]
                found.append(Failure(f"{path.relative_to(run_dir)} ({Path(str(j.get('file', ''))).name})",
                                     str(f.get("role", "judge")), _cut(f.get("error")), _cut(f.get("raw"))))
    for path in sorted(run_dir.glob("round_*/train_error.json")):
        try:
            found.append(Failure(str(path.relative_to(run_dir)), "trainer", _cut(read_json(path).get("error")), ""))
        except (OSError, ValueError, AttributeError):
            continue
    return found[:limit], len(found)


@dataclass
class NodeTime:
    node: str
    calls: int
    seconds: float


def node_times(run_dir: Path) -> tuple[list[NodeTime], dict[int, float]]:
    """(wall time per node over the whole run, slowest first; wall time per round) from
    timings.jsonl (a resumed run's repeated nodes count as often as they ran)."""
    per_node: dict[str, list[float]] = defaultdict(list)
    per_round: dict[int, float] = defaultdict(float)
    try:
        lines = (run_dir / "timings.jsonl").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        per_node[row.get("node", "?")].append(float(row.get("seconds", 0.0)))
        if isinstance(row.get("round"), int):
            per_round[row["round"]] += float(row.get("seconds", 0.0))
    times = sorted((NodeTime(n, len(s), sum(s)) for n, s in per_node.items()), key=lambda t: -t.seconds)
    return times, dict(per_round)
