"""The rewrite strategy on the shapes world with builtin agents: held-out metrics of the learned
rewrites' best guesses against the raw prompts, paired image by image (same prompts and seeds),
with 95% intervals and win / tie / loss counts, on the world's metrics and the builtin judge's
rubric sum (0-15).

Runs `atelier run examples/shapes.yaml --set strategy=rewrite ...` (one torch thread), or reads a
finished run given with --run, then compares every round's candidate rewriter with the raw prompts.

    .venv/bin/python benchmarks/rewrite_shapes.py [--run RUN_DIR] [--rounds 3] [--prompts 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from atelier.rewriter.compare import builtin_rubric_sum, compare_metrics, compare_scores
from atelier.worlds.base import WorldPrompt

KEYS = ("relation_accuracy_cond", "relation_accuracy_uncond", "object_accuracy", "count_accuracy", "ipr_accuracy",
        "question_score")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a finished rewrite run folder to read instead of running one")
    parser.add_argument("--run-dir", default="runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=64, help="training prompts per round")
    parser.add_argument("--heldout-images", type=int, default=4, help="images per held-out prompt")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (prompts, rewrites, images)")
    args = parser.parse_args()
    run = Path(args.run) if args.run else None
    if run is None:
        run_id = "rewrite-bench-" + time.strftime("%Y%m%d-%H%M%S")
        started = time.time()
        sets = ["strategy=rewrite", f"budget.rounds={args.rounds}", f"budget.patience={args.rounds}",
                f"budget.prompts_per_round={args.prompts}", f"budget.images_per_heldout_prompt={args.heldout_images}",
                f"run_dir={args.run_dir}", "torch_threads=1", f"seed={args.seed}"]
        cmd = [sys.executable, "-m", "atelier.cli", "run", "examples/shapes.yaml", "--run-id", run_id]
        for s in sets:
            cmd += ["--set", s]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        print(f"run {run_id}: {time.time() - started:.0f} s")
        run = Path(args.run_dir) / run_id
    raw = read_jsonl(run / "base" / "judgments.jsonl")
    heldout = [WorldPrompt.model_validate(p) for p in json.loads((run / "heldout" / "prompts.json").read_text())]
    rubric_sum = builtin_rubric_sum(lambda i: heldout[i].asked)  # the builtin judge's rubric, from stored detections
    results = {}
    for decision_file in sorted(run.glob("round_*/decision.json")):
        decision = json.loads(decision_file.read_text())
        judged = decision_file.parent / "eval" / "judgments.jsonl"
        if not judged.exists():
            continue
        new = read_jsonl(judged)
        state = json.loads((decision_file.parent / "adapter" / "rewriter.json").read_text())
        changed = sum(r.get("rewrite") != r["prompt"] for r in new)
        results[decision_file.parent.name] = {
            "promoted": decision["promoted"], "reason": decision["reason"], "rule": state.get("rule"),
            "pairs": state.get("pairs"), "rewritten_images": changed, "images": len(new),
            "metrics": compare_metrics(new, raw, KEYS), "rubric_sum": compare_scores(new, raw, rubric_sum)}
    (run / "rewrite_vs_raw.json").write_text(json.dumps(results, indent=2) + "\n")
    for name, r in results.items():
        print(f"{name}: {'promoted' if r['promoted'] else 'rolled back'} ({r['reason']}); {r['pairs']} pairs; "
              f"{r['rewritten_images']}/{r['images']} held-out images drawn from a rewrite")
        for line in r["rule"] or []:
            print(f"    rule: {line}")
        for key, m in [*r["metrics"].items(), ("rubric_sum", r["rubric_sum"])]:
            lo, hi = m["ci95"] or (float("nan"), float("nan"))
            base = f"{m['raw']:.3f} -> {m['rewritten']:.3f}  " if "raw" in m else ""
            print(f"    {key:26s} {base}gain {m['gain']:+.3f} [{lo:+.3f}, {hi:+.3f}]  "
                  f"win/tie/loss {m['wins']}/{m['ties']}/{m['losses']}")
    print(f"written: {run / 'rewrite_vs_raw.json'}")


if __name__ == "__main__":
    main()
