"""The IPR paper's ablations on the shapes world, with the demo's budget, side by side:

- ipr (3 rounds): the demo as configured;
- ipr, one round: the same run after its first round (what one round buys);
- no relabelling (3 rounds): every sample trained with its original prompt, wrong ones at lambda.

Runs the variants as separate `atelier run` processes in parallel (one torch thread each), or
reads finished runs given with --full/--no-relabel, and prints held-out metrics with 95% CIs.

    .venv/bin/python benchmarks/ipr_ablations.py [--config examples/shapes.yaml] [--full RUN_ID] [--no-relabel RUN_ID]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from atelier.report import format_share

KEYS = ("relation_accuracy_cond", "relation_accuracy_uncond", "object_accuracy", "count_accuracy", "visor_4")


def _status(run_id: str, run_dir: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "atelier.cli", "status", run_id, "--run-dir", run_dir, "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="examples/shapes.yaml")
    parser.add_argument("--run-dir", default="runs")
    parser.add_argument("--full", help="a finished run of the config to reuse")
    parser.add_argument("--no-relabel", help="a finished no-relabelling run to reuse")
    args = parser.parse_args()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    variants = {"full": (args.full, []), "no_relabel": (args.no_relabel, ["--set", "train.relabel=false"])}
    procs, run_ids = {}, {}
    for name, (given, extra) in variants.items():
        run_ids[name] = given or f"ablation-{name}-{stamp}"
        if not given:
            cmd = [sys.executable, "-m", "atelier.cli", "run", args.config, "--run-id", run_ids[name],
                   "--set", f"run_dir={args.run_dir}", "--set", "torch_threads=1", *extra]
            procs[name] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), time.time())
    walls = {}
    for name, (proc, started) in procs.items():
        _, err = proc.communicate()
        walls[name] = time.time() - started
        if proc.returncode != 0:
            sys.exit(f"{name} run failed:\n{err[-2000:]}")

    full, nore = _status(run_ids["full"], args.run_dir), _status(run_ids["no_relabel"], args.run_dir)
    rows = [("base", full["base"])]
    rows.append(("ipr, one round", full["rounds"][0]["metrics"]))
    rows.append(("no relabelling, one round", nore["rounds"][0]["metrics"]))
    best_full = next((r["metrics"] for r in reversed(full["rounds"]) if r["promoted"]), full["base"])
    best_nore = next((r["metrics"] for r in reversed(nore["rounds"]) if r["promoted"]), nore["base"])
    rows.append((f"ipr, {len(full['rounds'])} rounds (best)", best_full))
    rows.append((f"no relabelling, {len(nore['rounds'])} rounds (best)", best_nore))
    # What the last round trained, promoted or not: the effect of the training itself.
    rows.append((f"ipr, round {len(full['rounds'])} candidate", full["rounds"][-1]["metrics"]))
    rows.append((f"no relabelling, round {len(nore['rounds'])} candidate", nore["rounds"][-1]["metrics"]))
    print(f"runs: full={run_ids['full']} no_relabel={run_ids['no_relabel']}  (held-out, Wilson 95% CIs)")
    for name, wall in walls.items():
        print(f"wall time {name}: {wall / 60:.1f} min (1 torch thread, two runs in parallel)")
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  " + "  ".join(f"{k:27s}" for k in KEYS))
    for label, metrics in rows:
        print(f"{label:{width}}  " + "  ".join(f"{format_share(metrics.get(k), 3):27s}" for k in KEYS))
    for name, status in (("ipr", full), ("no relabelling", nore)):
        for r in status["rounds"]:
            print(f"{name} round {r['round']}: {'promoted' if r['promoted'] else 'rolled back'} — {r['reason']}")


if __name__ == "__main__":
    main()
