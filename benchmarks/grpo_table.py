"""The per-round table of a `grpo` run: the policy's reward, held-out relation (given both
objects), object and count accuracy of each round's adapter, with paired 95% intervals against
the base and against the base at the candidates' guidance (the report's guided reference), and
the CPU minutes spent so far (train + evaluate + generate nodes, from timings.jsonl).

    python benchmarks/grpo_table.py runs/<run id>

Every figure is read from the run folder; nothing is sampled again.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from atelier.runs import evaluation_dir, guided_base_dir, round_dir
from atelier.worlds.judgment import paired_difference

METRICS = (("relation_accuracy_cond", "relation"), ("object_accuracy", "objects"), ("count_accuracy", "counts"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def value(metrics: dict, key: str) -> float:
    v = metrics[key]
    return v["value"] if isinstance(v, dict) else v


def paired(new: list[dict], old: list[dict], metric: str) -> str:
    diff, se = paired_difference(new, old, metric)
    return f"{100 * diff:+.1f} [{100 * (diff - 1.96 * se):+.1f}, {100 * (diff + 1.96 * se):+.1f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    args = p.parse_args()
    run = args.run_dir
    base = read_jsonl(evaluation_dir(run, None) / "judgments.jsonl")
    guided = read_jsonl(guided_base_dir(run) / "judgments.jsonl")
    base_m = json.loads((evaluation_dir(run, None) / "metrics.json").read_text())
    seconds: dict[int, float] = defaultdict(float)
    for t in read_jsonl(run / "timings.jsonl"):
        if "round" in t and t["node"] in ("generate", "judge", "curate", "train", "evaluate", "write_prompts"):
            seconds[t["round"]] += t["seconds"]
    head = "| round | iterations | policy reward (first → last) | " + " | ".join(
        f"{name} | vs base | vs guided base" for _, name in METRICS) + " | minutes (cumulative) | promoted |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    row = ["base (guidance 3)", "", ""] + [x for key, _ in METRICS for x in (f"{value(base_m, key):.3f}", "", "")]
    print("| " + " | ".join(row) + " | | |")
    if guided:
        gm = json.loads((guided_base_dir(run) / "metrics.json").read_text())
        row = [f"base at guidance {gm['guidance_scale']:g}", "", ""]
        row += [x for key, _ in METRICS for x in (f"{value(gm, key):.3f}", paired(guided, base, key), "")]
        print("| " + " | ".join(row) + " | | |")
    minutes = 0.0
    r = 1
    while (round_dir(run, r) / "decision.json").exists():
        stats = read_jsonl(round_dir(run, r) / "grpo_iterations.jsonl")
        judged = read_jsonl(evaluation_dir(run, r) / "judgments.jsonl")
        metrics = json.loads((evaluation_dir(run, r) / "metrics.json").read_text())
        decision = json.loads((round_dir(run, r) / "decision.json").read_text())
        minutes += seconds[r] / 60
        reward = f"{stats[0]['reward_mean']:.3f} → {stats[-1]['reward_mean']:.3f}" if stats else ""
        row = [str(r), str(len(stats)), reward]
        for key, _ in METRICS:
            row += [f"{value(metrics, key):.3f}", paired(judged, base, key), paired(judged, guided, key) if guided else ""]
        print("| " + " | ".join(row) + f" | {minutes:.1f} | {'yes' if decision['promoted'] else 'no'} |")
        r += 1


if __name__ == "__main__":
    main()
