"""Strategies side by side on the shapes world: ipr, ccsr and rpo (each editor, each objective) from
the same base, seeds and budget, in one table.

Per round of each run: held-out relation (VISOR_cond), object and count accuracy minus the base,
with paired 95% intervals (same prompts and seeds: atelier.worlds.judgment.paired_difference);
relation minus the base at the candidates' guidance (the guided reference); training rows (for
rpo: pairs kept); and the wall time per node. Then RPO's edit success per editor and instruction
kind (the exact detector's check of each instruction on the edited image).

    # run every variant (one `atelier run` each, one after the other, one torch thread):
    .venv/bin/python benchmarks/strategies.py --config examples/shapes.yaml --run-dir runs/strategies
    # only the table, from finished runs:
    .venv/bin/python benchmarks/strategies.py --reuse ipr=runs/x/ipr1 --reuse rpo-layout-sft=runs/x/rpo1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

from tables import METRICS, paired_cell

from atelier.report.failures import node_times
from atelier.runs import evaluation_dir, guided_base_dir, read_jsonl, round_dir

VARIANTS = {
    "ipr": ["strategy=ipr"],
    "ccsr": ["strategy=ccsr"],
    "rpo-layout-dpo": ["strategy=rpo", "rpo.editor=layout", "rpo.objective=dpo"],
    "rpo-layout-sft": ["strategy=rpo", "rpo.editor=layout", "rpo.objective=sft"],
    "rpo-sdedit-dpo": ["strategy=rpo", "rpo.editor=sdedit", "rpo.objective=dpo"],
}


def run_variant(name: str, config: str, run_dir: Path) -> Path:
    sets = [*VARIANTS[name], "budget.guided_base_reference=true", "torch_threads=1", f"run_dir={run_dir}"]
    cmd = [sys.executable, "-m", "atelier.cli", "run", config, "--run-id", name, *(a for s in sets for a in ("--set", s))]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return run_dir / name


def _paired(run: Path, r: int, other: Path, metric: str) -> str:
    try:
        return paired_cell(read_jsonl(evaluation_dir(run, r) / "judgments.jsonl"), read_jsonl(other / "judgments.jsonl"),
                           metric)
    except (OSError, ValueError):
        return "n/a"


def _rows(run: Path, r: int) -> int:
    meta = round_dir(run, r) / "dataset" / "metadata.jsonl"
    return len(read_jsonl(meta)) if meta.exists() else 0


def _node_seconds(run: Path) -> dict[str, float]:
    return {t.node: t.seconds for t in node_times(run)[0]}


def table(runs: dict[str, Path]) -> str:
    lines = ["| strategy | round | relation − base | objects − base | counts − base | relation − guided base | "
             "rows (rpo: pairs kept) | promoted |", "|---|---|---|---|---|---|---|---|"]
    for name, run in runs.items():
        base, guided = evaluation_dir(run, None), guided_base_dir(run)
        r = 1
        while (round_dir(run, r) / "decision.json").exists():
            decision = json.loads((round_dir(run, r) / "decision.json").read_text())
            cells = [_paired(run, r, base, m) for m, _ in METRICS]
            lines.append(f"| {name} | {r} | {' | '.join(cells)} | {_paired(run, r, guided, 'relation_accuracy_cond')} | "
                         f"{_rows(run, r)} | {'yes' if decision['promoted'] else 'no'} |")
            r += 1
    lines += ["", "Wall time per node (s, all rounds):", ""]
    nodes = sorted({n for run in runs.values() for n in _node_seconds(run)})
    lines += ["| strategy | " + " | ".join(nodes) + " |", "|---|" + "---|" * len(nodes)]
    for name, run in runs.items():
        seconds = _node_seconds(run)
        lines.append(f"| {name} | " + " | ".join(f"{seconds.get(n, 0):.0f}" for n in nodes) + " |")
    return "\n".join(lines)


def edit_success(runs: dict[str, Path]) -> str:
    """Per run and instruction kind: instructions, carried out (applied), confirmed by the detector (done)."""
    lines = ["| strategy | instruction kind | instructions | applied | confirmed | pairs kept / edits judged |",
             "|---|---|---|---|---|---|"]
    for name, run in runs.items():
        counts: dict[str, Counter] = defaultdict(Counter)
        kept = judged = 0
        for f in sorted(run.glob("round_*/rpo/pair/batch_*.jsonl")):
            for p in read_jsonl(f):
                judged += p["edited_file"] is not None
                kept += p["kept"]
                for o in p["edit"]["outcomes"]:
                    counts[o["kind"]].update(n=1, applied=o["applied"], done=o["done"])
        for kind, c in sorted(counts.items()):
            lines.append(f"| {name} | {kind} | {c['n']} | {c['applied'] / c['n']:.0%} | {c['done'] / c['n']:.0%} | "
                         f"{kept} / {judged} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="examples/shapes.yaml")
    parser.add_argument("--run-dir", default="runs/strategies", type=Path)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--reuse", action="append", default=[], metavar="NAME=RUN_FOLDER",
                        help="a finished run to put in the table instead of running NAME")
    args = parser.parse_args()
    runs = {}
    for item in args.reuse:
        name, _, folder = item.partition("=")
        runs[name] = Path(folder)
    if not args.reuse:
        for name in args.variants.split(","):
            if name not in VARIANTS:
                parser.error(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
            runs[name] = run_variant(name, args.config, args.run_dir)
    print(table(runs))
    print()
    print(edit_success({n: r for n, r in runs.items() if any(r.glob("round_*/rpo/pair"))}))


if __name__ == "__main__":
    main()
