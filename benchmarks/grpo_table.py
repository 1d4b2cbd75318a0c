"""The per-round table of a `grpo` run: the policy's reward, held-out relation (given both
objects), object and count accuracy of each round's adapter, with paired 95% intervals against
the base and against the base at the candidates' guidance (the report's guided reference), and
the minutes spent so far (every node of the rounds, from timings.jsonl).

    python benchmarks/grpo_table.py runs/<run id>

Every figure is read from the run folder; nothing is sampled again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tables import METRICS, paired_cell

from atelier.report.failures import node_times
from atelier.runs import evaluation_dir, guided_base_dir, read_jsonl, round_dir


def _read(path: Path) -> list[dict]:
    return read_jsonl(path) if path.exists() else []


def value(metrics: dict, key: str) -> float:
    v = metrics[key]
    return v["value"] if isinstance(v, dict) else v


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    args = p.parse_args()
    run = args.run_dir
    base = _read(evaluation_dir(run, None) / "judgments.jsonl")
    guided = _read(guided_base_dir(run) / "judgments.jsonl")
    base_m = json.loads((evaluation_dir(run, None) / "metrics.json").read_text())
    _, seconds = node_times(run)
    head = "| round | iterations | policy reward (first → last) | " + " | ".join(
        f"{name} | vs base | vs guided base" for _, name in METRICS) + " | minutes (cumulative) | promoted |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    row = ["base (guidance 3)", "", ""] + [x for key, _ in METRICS for x in (f"{value(base_m, key):.3f}", "", "")]
    print("| " + " | ".join(row) + " | | |")
    if guided:
        gm = json.loads((guided_base_dir(run) / "metrics.json").read_text())
        row = [f"base at guidance {gm['guidance_scale']:g}", "", ""]
        row += [x for key, _ in METRICS for x in (f"{value(gm, key):.3f}", paired_cell(guided, base, key), "")]
        print("| " + " | ".join(row) + " | | |")
    minutes = 0.0
    r = 1
    while (round_dir(run, r) / "decision.json").exists():
        stats = _read(round_dir(run, r) / "grpo_iterations.jsonl")
        judged = _read(evaluation_dir(run, r) / "judgments.jsonl")
        metrics = json.loads((evaluation_dir(run, r) / "metrics.json").read_text())
        decision = json.loads((round_dir(run, r) / "decision.json").read_text())
        minutes += seconds.get(r, 0.0) / 60
        reward = f"{stats[0]['reward_mean']:.3f} → {stats[-1]['reward_mean']:.3f}" if stats else ""
        row = [str(r), str(len(stats)), reward]
        for key, _ in METRICS:
            row += [f"{value(metrics, key):.3f}", paired_cell(judged, base, key), paired_cell(judged, guided, key) if guided else ""]
        print("| " + " | ".join(row) + f" | {minutes:.1f} | {'yes' if decision['promoted'] else 'no'} |")
        r += 1


if __name__ == "__main__":
    main()
