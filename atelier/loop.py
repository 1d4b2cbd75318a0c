"""Start, resume and inspect runs of the loop: the glue between the CLI and the graph.

A run lives in <run_dir>/<run_id>/: config.yaml (the validated config), checkpoints.sqlite
(LangGraph's SQLite checkpointer, thread id = run id), status.json, and every node's outputs.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import torch
import yaml
from langgraph.checkpoint.sqlite import SqliteSaver
from rich.console import Console

from atelier.config import Config, parse_config
from atelier.graphs.graph import compile_graph
from atelier.graphs.state import LoopContext
from atelier.strategies import strategy_for
from atelier.worlds import load_world
from atelier.runs import CHECKPOINT_DB, RunError, evaluation_dir, get_status, new_run_id, read_json, set_status

console = Console(stderr=True, soft_wrap=True)
_NODE_ORDER = ["plan", "baseline", "write_prompts", "generate", "judge", "curate", "train", "evaluate", "decide", "report"]


def _checkpointer(run_dir: Path) -> SqliteSaver:
    conn = sqlite3.connect(run_dir / CHECKPOINT_DB, check_same_thread=False)
    return SqliteSaver(conn)


def _drive(cfg: Config, run_dir: Path, run_id: str, inputs) -> dict:
    """Run the graph to its end (or to the first error), printing each finished node."""
    set_status(run_dir, state="running", pid=os.getpid(), error=None)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    saver = _checkpointer(run_dir)
    strategy = strategy_for(cfg)
    graph = compile_graph(saver, strategy)
    thread = {"configurable": {"thread_id": run_id}, "recursion_limit": 10_000, "max_concurrency": 1}
    world = load_world(cfg)  # its models load once, when first used, and stay for the whole run
    ctx = LoopContext(config=cfg, run_dir=run_dir, world=world, strategy=strategy)
    last = time.time()
    try:
        for update in graph.stream(inputs, thread, context=ctx, stream_mode="updates"):
            for node, value in update.items():
                now = time.time()
                where = get_status(run_dir)
                prefix = f"round {where['round']}/{cfg.budget.rounds} " if "round" in where and node not in ("plan", "baseline", "report") else ""
                console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {prefix}{_describe(node, value)} [dim]({now - last:.1f}s)[/dim]")
                last = now
    except BaseException as e:
        set_status(run_dir, state="failed", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise
    finally:
        saver.conn.close()
        world.close()
    final = graph_state(run_dir, run_id)
    set_status(run_dir, state="finished", node="done", report=final.get("report"))
    return final


def _describe(node: str, value) -> str:
    if not isinstance(value, dict):
        return node
    if node == "decide" and value.get("rounds"):
        rec = value["rounds"][-1]
        verdict = "[green]promoted[/green]" if rec["promoted"] else "[yellow]rolled back[/yellow]"
        return f"decide: {verdict} — {rec['reason']}"
    if node in ("baseline", "evaluate"):
        metrics = value.get("base_metrics") or value.get("candidate_metrics") or {}
        parts = [f"{k} {metrics[k]['value']:.3f}" for k in ("object_accuracy", "relation_accuracy_cond", "count_accuracy")
                 if k in metrics and metrics[k]["value"] is not None]
        return f"{node}: " + ", ".join(parts)
    if node == "report":
        return f"report: {value.get('report')}"
    return node


def start_run(cfg: Config, run_id: str | None = None) -> tuple[str, dict]:
    if cfg.agents.planner.backend == "builtin":
        load_world(cfg).plan(cfg.goal, Path("."))  # a goal the planner cannot map fails here, before a run exists
    run_id = run_id or new_run_id()
    run_dir = cfg.run_dir / run_id
    if (run_dir / CHECKPOINT_DB).exists():
        raise RunError(f"run {run_id} already exists in {cfg.run_dir}; use `atelier resume {run_id}`")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    console.print(f"run id [bold]{run_id}[/bold] in {run_dir}")
    return run_id, _drive(cfg, run_dir, run_id, {})


def find_run(run_id: str, root: Path | None = None) -> Path:
    candidates = [root / run_id] if root else [Path("runs") / run_id, Path(run_id)]
    for path in candidates:
        if (path / "config.yaml").exists():
            return path
    raise RunError(f"no run {run_id!r} (looked in {', '.join(str(c) for c in candidates)})")


def resume_run(run_id: str, root: Path | None = None) -> dict:
    run_dir = find_run(run_id, root)
    cfg = parse_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    # The config may name another run_dir (relative paths): the run folder found is the truth.
    cfg = cfg.model_copy(update={"run_dir": run_dir.parent})
    if get_status(run_dir).get("state") == "finished":
        console.print(f"run {run_id} already finished")
        return graph_state(run_dir, run_dir.name)
    console.print(f"resuming run [bold]{run_dir.name}[/bold]")
    # Killed before the first checkpoint: start over (every node skips what is on disk).
    inputs = None if graph_state(run_dir, run_dir.name) else {}
    return _drive(cfg, run_dir, run_dir.name, inputs)


def graph_state(run_dir: Path, run_id: str) -> dict:
    saver = _checkpointer(run_dir)
    try:
        snapshot = compile_graph(saver).get_state({"configurable": {"thread_id": run_id}})
        return dict(snapshot.values)
    finally:
        saver.conn.close()


def run_summary(run_dir: Path) -> dict:
    """What `atelier status --json` prints: rounds with held-out metrics, best adapter, state."""
    state = graph_state(run_dir, run_dir.name) if (run_dir / CHECKPOINT_DB).exists() else {}
    status = get_status(run_dir)
    base = state.get("base_metrics")
    base_metrics = evaluation_dir(run_dir, None) / "metrics.json"
    if base is None and base_metrics.exists():
        base = read_json(base_metrics)
    return {
        "run_id": run_dir.name,
        "state": status.get("state"),
        "node": status.get("node"),
        "round": state.get("round"),
        "goal": (read_json(run_dir / "plan.json")["goal"] if (run_dir / "plan.json").exists() else None),
        "metric": state.get("metric"),
        "base": base,
        "rounds": [
            {"round": r["round"], "promoted": r["promoted"], "metrics": r["metrics"], "gain": r["gain"], "noise": r["noise"],
             "reason": r["reason"], "adapter": r["adapter"]}
            for r in state.get("rounds", [])
        ],
        "best_adapter": state.get("best_adapter"),
        "stop_reason": state.get("stop_reason"),
        "report": state.get("report"),
        "error": status.get("error"),
    }
