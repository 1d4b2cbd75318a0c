"""Start, resume and inspect runs of the loop: the glue between the CLI and the graph.

A run lives in <run_dir>/<run_id>/: config.yaml (the validated config), checkpoints.sqlite
(LangGraph's SQLite checkpointer, thread id = run id), status.json, run.lock, and every node's
outputs. The run id is one safe path component (runs.check_run_id), checked before anything is
written. One process drives a run at a time (runs.RunLock, a flock the kernel drops when the
process dies); SIGINT/SIGTERM stop it with status 'stopped'; a write the disk refuses ends it
with one line and status 'failed'. `atelier resume` continues from any of these.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
import yaml
from langgraph.checkpoint.sqlite import SqliteSaver
from rich.console import Console

from atelier import progress, trackers
from atelier.atomic import write_json_atomic, write_text_atomic
from atelier.config import Config, changed_result_fields, edit_for_resume, result_fields
from atelier.graphs.graph import compile_graph
from atelier.graphs.pause import RunPaused
from atelier.graphs.state import LoopContext
from atelier.strategies import strategy_for
from atelier.worlds import load_world
from atelier.runs import (CHECKPOINT_DB, RunError, RunLock, check_run_id, disk_error, evaluation_dir, get_status,
                          in_run, lock_held, new_run_id, read_json, set_status)
from atelier.version import atelier_version

console = Console(stderr=True, soft_wrap=True)
_NODE_ORDER = ["plan", "baseline", "write_prompts", "generate", "judge", "curate", "train", "evaluate", "decide", "report"]


def _checkpointer(run_dir: Path) -> SqliteSaver:
    conn = sqlite3.connect(run_dir / CHECKPOINT_DB, check_same_thread=False)
    return SqliteSaver(conn)


class RunStopped(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run: its status says 'stopped' and how to resume it; the
    CLI exits 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, signum: int, run_id: str | None = None):
        super().__init__(signum)
        self.signum, self.run_id = signum, run_id

    @property
    def signame(self) -> str:
        return signal.Signals(self.signum).name

    def __str__(self) -> str:
        return f"stopped by {self.signame}" + (f"; `atelier resume {self.run_id}` continues run {self.run_id}" if self.run_id else "")


@contextmanager
def _stop_on_signals():
    """SIGINT and SIGTERM raise RunStopped in the main thread while a run is driven (a signal
    that was ignored stays ignored; off the main thread nothing changes). LangGraph lets a node
    running on a worker thread finish before the exception leaves graph.stream, so no node is
    cut off mid-write by this (and every node's writes are atomic anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    stopping = []

    def stop(signum, frame):
        if stopping:  # one stop is enough: a second signal must not interrupt the status write
            print("atelier: still stopping (a node on a worker thread finishes first); SIGKILL ends it now, "
                  "and `atelier resume` continues from the last checkpoint", file=sys.stderr, flush=True)
            return
        stopping.append(signum)
        raise RunStopped(signum)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(s, stop)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def _fail_status(run_dir: Path, **fields) -> None:
    """Record how a run ended, unless the disk refuses that too (a full disk): the error is
    reported to the user either way."""
    try:
        set_status(run_dir, **fields)
    except OSError:
        pass


def _drive(cfg: Config, run_dir: Path, run_id: str, inputs) -> dict:
    """Run the graph to its end (or to the first error), printing each finished node. The
    caller holds the run's lock. SIGINT/SIGTERM end it as RunStopped (status 'stopped'); a
    write the disk refuses ends it as a one-line RunError (status 'failed')."""
    with _stop_on_signals():  # still in place while the status is written: a second signal waits
        try:
            return _drive_graph(cfg, run_dir, run_id, inputs)
        except RunStopped as e:
            e.run_id = run_id
            node = get_status(run_dir).get("node")
            _fail_status(run_dir, state="stopped", error=None, reason=f"stopped by {e.signame}" + (f" in {node}" if node else "")
                         + f"; `atelier resume {run_id}` continues it")
            raise
        except RunPaused as e:  # an agent's endpoint stopped answering: nothing of the node was written
            reason = f"{e}; `atelier resume {run_id}` continues the run once it answers"
            _fail_status(run_dir, state="paused", error=None, reason=reason)
            raise RunPaused(reason) from None
        except KeyboardInterrupt:  # raised by other code than our handler (a caller's own SIGINT handling)
            _fail_status(run_dir, state="stopped", error=None, reason=f"interrupted; `atelier resume {run_id}` continues it")
            raise
        except BaseException as e:
            if (err := disk_error(e, run_dir, run_id)) is not None:
                _fail_status(run_dir, state="failed", error=str(err), reason=None)
                raise err from e
            _fail_status(run_dir, state="failed", reason=None,
                         error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            raise


def _drive_graph(cfg: Config, run_dir: Path, run_id: str, inputs) -> dict:
    set_status(run_dir, state="running", pid=os.getpid(), host=socket.gethostname(), error=None, reason=None,
               atelier_version=atelier_version())
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
        names = trackers.tracker_names(cfg)
        run_trackers = trackers.RunTrackers(names, run_dir, run_id) if names else None
    except ValueError as e:  # an unknown tracker, or its package missing
        saver.conn.close()
        world.close()
        raise RunError(str(e)) from None
    try:
        with progress.use(progress.RunProgress(console)) as bars, trackers.use(run_trackers):
            for update in graph.stream(inputs, thread, context=ctx, stream_mode="updates"):
                for node, value in update.items():
                    now = time.time()
                    where = get_status(run_dir)
                    prefix = f"round {where['round']}/{cfg.budget.rounds} " if "round" in where and node not in ("plan", "baseline", "report") else ""
                    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {prefix}{_describe(node, value)} [dim]({now - last:.1f}s)[/dim]")
                    last = now
                    _track_round(bars, node, where, cfg, run_dir)
                    if node == "decide" and isinstance(value, dict) and value.get("rounds") and not value.get("stop_reason"):
                        _report_round(graph, thread, value, cfg, run_dir)
                    _track_metrics(node, value, run_dir)
    finally:
        saver.conn.close()
        world.close()
    final = graph_state(run_dir, run_id)
    set_status(run_dir, state="finished", node="done", report=final.get("report"))
    return final


def _track_round(bars: progress.RunProgress, node: str, where: dict, cfg: Config, run_dir: Path) -> None:
    """The round's line above the bars: its ETA from the previous round's wall time."""
    if node == "write_prompts" and "round" in where:
        r = where["round"]
        bars.round_started(r, cfg.budget.rounds, progress.round_seconds(run_dir, r - 1) if r > 1 else None)
    elif node == "decide":
        bars.round_ended()


def _track_metrics(node: str, value, run_dir: Path) -> None:
    """Held-out metrics to TensorBoard / W&B: the base as round 0, each decided round, and the
    report's grid whenever it was rewritten."""
    if not isinstance(value, dict):
        return
    grid = run_dir / "report" / "heldout_grid.png"
    if node == "baseline" and value.get("base_metrics"):
        trackers.heldout(0, value["base_metrics"])
    elif node == "decide" and value.get("rounds"):
        record = value["rounds"][-1]
        trackers.heldout(record["round"], record["metrics"] or {}, None if value.get("stop_reason") else grid)
    elif node == "report" and (rounds := get_status(run_dir).get("round")):
        trackers.heldout(rounds, {}, grid)


def _report_round(graph, thread: dict, decided: dict, cfg: Config, run_dir: Path) -> None:
    """Rewrite the report after a round's decision, so a user can watch a run (the report node
    writes the final one). A report that fails here is one line, and the run goes on; a disk
    error is not swallowed."""
    from atelier.report import write_report

    state = dict(graph.get_state(thread).values)
    if decided["rounds"][-1]["round"] not in [r["round"] for r in state.get("rounds", [])]:  # not checkpointed yet
        state |= {**{k: v for k, v in decided.items() if k != "rounds"}, "rounds": [*state.get("rounds", []), *decided["rounds"]]}
    try:
        path = write_report(run_dir, state, cfg.generation)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - a report is never a reason to stop training
        console.print(f"[yellow]report not updated this round: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}[/yellow]")
        return
    console.print(f"[dim]report updated: {path}[/dim]")


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
    run_id = new_run_id() if run_id is None else check_run_id(run_id)  # before anything is written
    if cfg.agents.planner.backend == "builtin":
        load_world(cfg).plan(cfg.goal, Path("."))  # a goal the planner cannot map fails here, before a run exists
    # Absolute: the paths a run records (held-out file, adapters) stay right when it is resumed
    # or inspected from another folder.
    run_dir = (cfg.run_dir / run_id).absolute()
    if (run_dir / CHECKPOINT_DB).exists() and not _in_use(run_dir):
        raise RunError(f"run {run_id} already exists in {cfg.run_dir}; use `atelier resume {run_id}`")
    with ExitStack() as held:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            held.enter_context(RunLock(run_dir, run_id))  # refused while another process drives the run
            if (run_dir / CHECKPOINT_DB).exists():  # started by another process since the check above
                raise RunError(f"run {run_id} already exists in {cfg.run_dir}; use `atelier resume {run_id}`")
            (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
            write_json_atomic(run_dir / RESULT_FIELDS, result_fields(cfg))
        except OSError as e:  # the run folder could not be made, locked or written
            raise _write_error(e, run_dir, run_id) from e
        console.print(f"run id [bold]{run_id}[/bold] in {run_dir}")
        return run_id, _drive(cfg, run_dir, run_id, {})


def _in_use(run_dir: Path) -> bool:
    return bool(lock_held(run_dir))


def _write_error(e: OSError, run_dir: Path, run_id: str) -> RunError:
    return disk_error(e, run_dir, run_id) or RunError(f"cannot write the run folder {run_dir}: {e.strerror or e}"
                                                      + (f" ({e.filename})" if e.filename else ""))


def find_run(run_id: str, root: Path | None = None) -> Path:
    check_run_id(run_id)  # a run id never names a path outside the run folder
    candidates = [root / run_id] if root else [Path("runs") / run_id, Path(run_id)]
    for path in candidates:
        if (path / "config.yaml").exists():
            return path.absolute()
    raise RunError(f"no run {run_id!r} (looked in {', '.join(str(c) for c in candidates)})")


def resume_run(run_id: str, root: Path | None = None, overrides: list[str] | None = None) -> dict:
    """Continue a run from its checkpoint; `overrides` (`--set key=value`) may change the fields
    that do not change results (config.FIXABLE_ON_RESUME: device, endpoints, concurrency...),
    validated as at `run` and kept in the run's config.yaml (and config_edits.jsonl)."""
    run_dir = find_run(run_id, root)
    with ExitStack() as held:
        try:
            held.enter_context(RunLock(run_dir, run_id))  # refused while another process drives the run
        except OSError as e:  # a read-only or full run folder
            raise _write_error(e, run_dir, run_id) from e
        return _resume_locked(run_dir, overrides)


RESULT_FIELDS = "config_results.json"  # the result-changing fields as the run started (atelier.config.result_fields)


def _check_result_fields(run_dir: Path, cfg: Config) -> None:
    """Refuse a stored config whose result-changing fields were edited since the run started
    (a seed edited by hand would silently unpair the evaluations)."""
    stored = run_dir / RESULT_FIELDS
    if not stored.exists():  # a run started before this record existed
        return
    if changed := changed_result_fields(json.loads(stored.read_text()), result_fields(cfg)):
        raise RunError(f"{run_dir / 'config.yaml'} was edited since the run started ({'; '.join(changed[:3])}"
                       f"{' ...' if len(changed) > 3 else ''}); these change results: put them back, or start a new run")


def _resume_locked(run_dir: Path, overrides: list[str] | None = None) -> dict:
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text())
    except yaml.YAMLError as e:
        raise RunError(f"{run_dir / 'config.yaml'} is unreadable: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise RunError(f"{run_dir / 'config.yaml'} is unreadable: not a mapping of fields")
    cfg = edit_for_resume(data, overrides or [])
    _check_result_fields(run_dir, cfg)
    if overrides:  # kept: the run's config is what it runs with from now on
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        with open(run_dir / "config_edits.jsonl", "a") as f:
            f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "set": list(overrides)}) + "\n")
    # The config may name another run_dir (relative paths): the run folder found is the truth.
    cfg = cfg.model_copy(update={"run_dir": run_dir.parent})
    try:
        current = graph_state(run_dir, run_dir.name)
    except sqlite3.DatabaseError as e:  # not a database, or a damaged one
        raise RunError(f"{run_dir / CHECKPOINT_DB} is unreadable ({e}); the run cannot be resumed") from None
    if get_status(run_dir).get("state") == "finished":
        console.print(f"run {run_dir.name} already finished")
        return current
    console.print(f"resuming run [bold]{run_dir.name}[/bold]")
    # Killed before the first checkpoint: start over (every node skips what is on disk).
    inputs = None if current else {}
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
    try:
        state = graph_state(run_dir, run_dir.name) if (run_dir / CHECKPOINT_DB).exists() else {}
    except sqlite3.DatabaseError as e:  # not a database, or a damaged one
        raise RunError(f"{run_dir / CHECKPOINT_DB} is unreadable ({e}); the run cannot be shown or resumed") from None
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
        "goal": _goal(run_dir),
        "metric": state.get("metric"),
        "base": base,
        "rounds": [
            {"round": r["round"], "promoted": r["promoted"], "metrics": r["metrics"], "gain": r["gain"], "noise": r["noise"],
             "reason": r["reason"], "adapter": in_run(r["adapter"], run_dir)}
            for r in state.get("rounds", [])
        ],
        "best_adapter": in_run(state.get("best_adapter"), run_dir),
        "stop_reason": state.get("stop_reason"),
        "report": in_run(state.get("report"), run_dir),
        "atelier_version": status.get("atelier_version"),
        "error": status.get("error"),
        "reason": status.get("reason"),
    }


def _goal(run_dir: Path) -> str | None:
    try:
        return read_json(run_dir / "plan.json")["goal"]
    except (OSError, ValueError, KeyError, TypeError):  # no plan yet, or an unreadable one
        return None
