"""The loop's nodes: thin, each calls the world, the strategy or the stats. Each reads small
records from the state, writes its outputs atomically under run/<round>/<node>/..., and skips
work already on disk, so any node can be re-run after a crash and gives the same result.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from langgraph.runtime import Runtime
from langgraph.types import Command, Send
from PIL import Image

from atelier.agents.planner import TargetSpec
from atelier import progress
from atelier.atomic import staged_dir, write_json_atomic, write_jsonl_atomic
from atelier.faults import maybe_die
from atelier.graphs.pause import pause_on_failures
from atelier.graphs.state import BatchTask, LoopContext, LoopState, RoundRecord
from atelier.runs import best_round, evaluation_dir, guided_base_dir, read_json, read_jsonl, round_dir, set_status
from atelier.stats.promotion import promotion
from atelier.tools.datasets import write_sft_dataset
from atelier.worlds.base import WorldPrompt
from atelier.worlds.judgment import paired_difference, summarize


def loop_node(name: str):
    """Make `fn(state, ctx) -> update` a LangGraph node that records where the run is
    (status.json), how long the node took (timings.jsonl), and then passes a crash point."""

    def wrap(fn):
        def node(state: dict, runtime: Runtime[LoopContext]):
            ctx = runtime.context
            where = {k: state[k] for k in ("round", "batch") if k in state and name not in ("plan", "baseline", "report")}
            set_status(ctx.run_dir, node=name + (f" batch {where['batch']}" if "batch" in where else ""), **where)
            started = time.time()
            update = fn(state, ctx)
            with open(ctx.run_dir / "timings.jsonl", "a") as f:
                f.write(json.dumps({"node": name, "seconds": round(time.time() - started, 3), **where}) + "\n")
            maybe_die(name)  # the node's outputs are on disk by now: a crash point for the resume tests
            return update

        node.__name__, node.__doc__ = fn.__name__, fn.__doc__
        return node

    return wrap


def image_seed(seed: int, round_no: int, prompt_idx: int, k: int) -> int:
    """A seed per image that depends only on where the image sits in the run."""
    return int(np.random.SeedSequence([seed, round_no, prompt_idx, k]).generate_state(1)[0])


def read_prompts(path: str | Path) -> list[WorldPrompt]:
    return [WorldPrompt.model_validate(p) for p in read_json(Path(path))]


def _spec(state: LoopState) -> TargetSpec:
    return TargetSpec.model_validate(state["spec"])


def _rows(prompts: list[WorldPrompt], items: list[tuple[int, int]], seeds: list[int], files: list[Path]) -> list[dict]:
    """The rows a judge gets: where each image is, its prompt and what the prompt asks."""
    return [{"file": str(f), "prompt": prompts[i].text, "prompt_index": i, "seed": s,
             "asked": prompts[i].asked.model_dump(mode="json"), "target_class": prompts[i].target_class}
            for (i, _), s, f in zip(items, seeds, files)]


# --- plan and baseline ------------------------------------------------------------------------


@loop_node("plan")
def plan(state: LoopState, ctx: LoopContext) -> dict:
    cfg = ctx.config
    spec = ctx.world.plan(cfg.goal, ctx.run_dir / "agents")
    metric = spec.metric if cfg.decide.metric == "auto" else cfg.decide.metric
    planner_record = ctx.run_dir / "agents" / "planner.json"
    # A builtin plan standing in for the model's is a config choice (agents.planner.fallback), and said in the report.
    fallback = read_json(planner_record).get("fallback") if planner_record.exists() else None
    write_json_atomic(ctx.run_dir / "plan.json", {"goal": cfg.goal, "spec": spec.model_dump(mode="json"), "metric": metric,
                                                  "planner_fallback": fallback})
    heldout_file = ctx.run_dir / "heldout" / "prompts.json"
    if not heldout_file.exists():  # frozen at plan time: every evaluation of the run uses these
        prompts = ctx.world.heldout_prompts(spec, cfg.budget.heldout_prompts, cfg.seed)
        write_json_atomic(heldout_file, [p.model_dump(mode="json") for p in prompts])
    return {"spec": spec.model_dump(mode="json"), "metric": metric, "heldout_file": str(heldout_file), "round": 1,
            "best_adapter": None, "no_improve": 0}


def _evaluate(ctx: LoopContext, state: LoopState, adapter: str | None, out: Path, guidance: float | None = None) -> dict:
    """Held-out metrics of the base (adapter None) or an adapter, at `guidance` (None: the config's
    guidance_scale); cached in out/metrics.json."""
    metrics_file = out / "metrics.json"
    if metrics_file.exists():
        return read_json(metrics_file)
    cfg = ctx.config
    guidance = cfg.generation.guidance_scale if guidance is None else guidance
    prompts = read_prompts(state["heldout_file"])
    k = cfg.budget.images_per_heldout_prompt
    items = [(i, j) for i in range(len(prompts)) for j in range(k)]
    # The same seeds for base and every candidate: comparisons are paired.
    seeds = [image_seed(cfg.seed, 0, i, j) for i, j in items]
    names = [f"p{i:03d}_{j}.png" for i, j in items]
    texts, rewritten = [prompts[i].text for i, _ in items], False
    if adapter is not None and (best_rewrites := getattr(ctx.strategy, "best_rewrites", None)) is not None:
        # rewrite: the candidate is a rewriter state, never a LoRA; its best guess of each prompt, frozen generator
        rewrites = best_rewrites(prompts, adapter, out / "rewrites.json")
        texts, adapter, rewritten = [rewrites[i] for i, _ in items], None, True
    bar = f"held-out {out.relative_to(ctx.run_dir)} (sample, judge)"
    progress.update(bar, 0, 2 * len(items))
    if not (out / "images").exists():  # a crash after the images were saved skips straight to judging
        images = ctx.world.sample(texts, seeds, guidance, adapter)
        with staged_dir(out / "images") as tmp:
            for name, img in zip(names, images):
                img.save(tmp / name)
    judgments_file = out / "judgments.jsonl"
    progress.update(bar, len(items), 2 * len(items))
    if judgments_file.exists():  # judged before a crash: a model judge is not asked again (nor answers anew)
        judgments = read_jsonl(judgments_file)
    else:
        rows = _rows(prompts, items, seeds, [out / "images" / n for n in names])
        if rewritten:  # judged against the user's prompt; the text drawn rides along
            rows = [{**row, "rewrite": text} for row, text in zip(rows, texts)]
        judgments = ctx.world.judge(rows, _spec(state))
        pause_on_failures(judgments, cfg, f"held-out evaluation {out.name}")  # nothing written: resume judges again
        write_jsonl_atomic(judgments_file, judgments)
        maybe_die("evaluate:judged")  # between the judgments and the metrics, for the resume tests
    metrics = summarize(judgments)
    metrics["seed"] = cfg.seed
    metrics["guidance_scale"] = guidance
    write_json_atomic(metrics_file, metrics)
    progress.update(bar, 2 * len(items), 2 * len(items))
    return metrics


@loop_node("baseline")
def baseline(state: LoopState, ctx: LoopContext) -> dict:
    cfg = ctx.config
    metrics = _evaluate(ctx, state, None, evaluation_dir(ctx.run_dir, None))
    maybe_die("baseline:base")  # a crash point between the base's evaluations, for the resume tests
    references_file = evaluation_dir(ctx.run_dir, None) / "references.json"
    # Chance and ceiling of the same prompts and seeds, where the world judges them for free.
    if cfg.agents.judge.backend == "builtin" and not references_file.exists():
        references = ctx.world.references(read_prompts(state["heldout_file"]), cfg.budget.images_per_heldout_prompt,
                                          lambda i, k: image_seed(cfg.seed, 0, i, k))
        write_json_atomic(references_file, references)
    generation = cfg.generation
    if generation.candidates_guided_apart and cfg.budget.guided_base_reference:
        # The adapter's teacher, for the report only (decide never reads it): on the shapes world the
        # loop's gain is the candidates' guidance, learned (BENCHMARKS.md), so a user wants to see
        # whether training beat raising the guidance. It costs one more held-out evaluation.
        _evaluate(ctx, state, None, guided_base_dir(ctx.run_dir), guidance=generation.candidate_guidance_scale)
    return {"base_metrics": metrics, "best_metrics": metrics}


# --- one round --------------------------------------------------------------------------------


@loop_node("write_prompts")
def write_prompts(state: LoopState, ctx: LoopContext) -> dict:
    r = state["round"]
    path = round_dir(ctx.run_dir, r) / "prompts.json"
    if not path.exists():
        cfg = ctx.config
        prompts = ctx.world.training_prompts(_spec(state), cfg.budget.prompts_per_round, cfg.seed * 1000 + r,
                                             round_dir(ctx.run_dir, r) / "agents", read_prompts(state["heldout_file"]))
        write_json_atomic(path, [p.model_dump(mode="json") for p in prompts])
    return {"prompts_file": str(path), "judged": []}


def fan_out_generate(state: LoopState, runtime: Runtime[LoopContext]) -> list[Send]:
    """One generate task per batch of prompts (the unit of parallelism and of resume)."""
    n = len(read_json(Path(state["prompts_file"])))
    size = runtime.context.config.budget.batch_prompts
    return [
        Send("generate", BatchTask(round=state["round"], batch=b, prompts_file=state["prompts_file"],
                                   start=start, end=min(start + size, n), adapter=state.get("best_adapter"), n_prompts=n))
        for b, start in enumerate(range(0, n, size))
    ]


def _round_prompts(task: BatchTask) -> int:
    """How many prompts the task's round has (the progress bars' total), without reading the file
    again unless the task was checkpointed before it carried the count."""
    return task.get("n_prompts") or len(read_json(Path(task["prompts_file"])))


def _batch_dir(ctx: LoopContext, task: BatchTask, node: str) -> Path:
    return round_dir(ctx.run_dir, task["round"]) / node / f"batch_{task['batch']:03d}"


def _rewritten_candidates(ctx: LoopContext, task: BatchTask, prompts: list[WorldPrompt], rewrite) -> tuple:
    """(items, seeds, texts, row extras) of a strategy that rewrites prompts (rewrite): the best
    rewriter so far (task's adapter) rewrites each prompt up to N times, recorded under
    round/rewrites/; every rewrite of a prompt is drawn once with the prompt's seed (paired)."""
    cfg = ctx.config
    record = round_dir(ctx.run_dir, task["round"]) / "rewrites" / f"batch_{task['batch']:03d}.json"
    rewrites = rewrite(prompts[task["start"]:task["end"]], task["adapter"], record,
                       image_seed(cfg.seed, task["round"], task["start"], 0))
    items = [(i, j) for i, texts in enumerate(rewrites, task["start"]) for j in range(len(texts))]
    texts = [rewrites[i - task["start"]][j] for i, j in items]
    extra = [{"rewrite": text, "rewriter": task["adapter"]} for text in texts]
    return items, [image_seed(cfg.seed, task["round"], i, 0) for i, _ in items], texts, extra


@loop_node("generate")
def generate_batch(task: BatchTask, ctx: LoopContext) -> Command:
    cfg = ctx.config
    out = _batch_dir(ctx, task, "generate")
    if not (out / "manifest.jsonl").exists():
        prompts = read_prompts(task["prompts_file"])
        if (rewrite := getattr(ctx.strategy, "rewrite_for_training", None)) is None:
            k = cfg.budget.images_per_prompt
            items = [(i, j) for i in range(task["start"], task["end"]) for j in range(k)]
            seeds = [image_seed(cfg.seed, task["round"], i, j) for i, j in items]
            texts, adapter, extra = [prompts[i].text for i, _ in items], task["adapter"], [{}] * len(items)
            # Candidates come from the best model so far: its mistakes are what the round fixes.
            guidance = cfg.generation.candidate_guidance(task["adapter"])
        else:
            items, seeds, texts, extra = _rewritten_candidates(ctx, task, prompts, rewrite)
            adapter, guidance = None, cfg.generation.guidance_scale  # the generator stays frozen
        images = ctx.world.sample(texts, seeds, guidance, adapter) if items else []
        with staged_dir(out) as tmp:
            names = [f"p{i:03d}_{j}.png" for i, j in items]
            for name, img in zip(names, images):
                img.save(tmp / name)
            rows = [{**row, "adapter": adapter, "scale": cfg.generation.lora_scale if adapter else None,
                     "guidance_scale": guidance, **more}
                    for row, more in zip(_rows(prompts, items, seeds, [out / n for n in names]), extra)]
            write_jsonl_atomic(tmp / "manifest.jsonl", rows)
    progress.advance(f"round {task['round']} prompts generated", task["end"] - task["start"], _round_prompts(task))
    return Command(goto=Send("judge", task))


@loop_node("judge")
def judge(task: BatchTask, ctx: LoopContext) -> dict:
    out = round_dir(ctx.run_dir, task["round"]) / "judge" / f"batch_{task['batch']:03d}.jsonl"
    if not out.exists():
        rows = read_jsonl(_batch_dir(ctx, task, "generate") / "manifest.jsonl")
        spec = TargetSpec.model_validate(read_json(ctx.run_dir / "plan.json")["spec"])
        judgments = ctx.world.judge(rows, spec)
        pause_on_failures(judgments, ctx.config, f"round {task['round']} judge batch {task['batch']}")  # resume judges again
        write_jsonl_atomic(out, judgments)
    progress.advance(f"round {task['round']} prompts judged", task["end"] - task["start"], _round_prompts(task))
    return {"judged": [str(out)]}


@loop_node("curate")
def curate(state: LoopState, ctx: LoopContext) -> dict:
    out = round_dir(ctx.run_dir, state["round"]) / "dataset"
    if not (out / "metadata.jsonl").exists():
        judgments = [j for f in state["judged"] for j in read_jsonl(Path(f))]
        rows = ctx.strategy.curate(judgments, ctx.world, read_prompts(state["heldout_file"]))
        images = [Image.open(row["file"]).convert("RGB") for row in rows]
        meta = [{"file_name": f"{i:05d}.png", "text": row["text"], "weight": row["weight"], "kind": row["kind"],
                 "original_prompt": row["prompt"], "source": row["file"],
                 **{k: v for k, v in row.items() if k not in ("file", "text", "weight", "kind", "prompt")}}
                for i, row in enumerate(rows)]
        write_sft_dataset(out, meta, images)
    return {"dataset": str(out)}


TRAIN_ERROR = "train_error.json"  # under a round's folder: why its training failed (no adapter then)


@loop_node("train")
def train(state: LoopState, ctx: LoopContext) -> dict:
    """The round's adapter, trained by the strategy. A training whose loss or weights go NaN/inf
    (FloatingPointError from the trainers' guard) is no crash: the round has no candidate, its
    one-line reason is recorded in round_NNN/train_error.json, and `decide` rolls it back."""
    cfg = ctx.config
    r = state["round"]
    datasets = [round_dir(ctx.run_dir, q) / "dataset" for q in range(1, r + 1)] if cfg.train.accumulate else [Path(state["dataset"])]
    datasets = [d for d in datasets if (d / "metadata.jsonl").exists() and read_jsonl(d / "metadata.jsonl")]
    if not datasets:  # nothing usable was generated: there is no candidate this round
        return {"candidate_adapter": None, "train_error": None}
    # A training that diverged is recorded, not retrained: a resumed run decides as this one did.
    error_file = round_dir(ctx.run_dir, r) / TRAIN_ERROR
    if error_file.exists():
        return {"candidate_adapter": None, "train_error": read_json(error_file)["error"]}
    out = round_dir(ctx.run_dir, r) / "adapter"
    try:
        ctx.strategy.train(ctx.world, datasets, out, state.get("best_adapter"), cfg.seed * 1000 + r,
                           progress=lambda step, steps, loss: (progress.train_step(r, step, steps, loss),
                                                               maybe_die(f"train_step:{step}")), spec=_spec(state))
    except FloatingPointError as e:  # the trainers' NaN/inf guard (atelier.tools.train_loop): no adapter was saved
        error = " ".join(str(e).split())
        write_json_atomic(error_file, {"error": error, "type": type(e).__name__})
        return {"candidate_adapter": None, "train_error": error}
    return {"candidate_adapter": str(out), "train_error": None}


@loop_node("evaluate")
def evaluate(state: LoopState, ctx: LoopContext) -> dict:
    r = state["round"]
    if state.get("candidate_adapter") is None:
        return {"candidate_metrics": None}
    metrics = _evaluate(ctx, state, state["candidate_adapter"], evaluation_dir(ctx.run_dir, r))
    return {"candidate_metrics": metrics}


# --- decide -----------------------------------------------------------------------------------


def _paired_gain(ctx: LoopContext, state: LoopState, r: int) -> tuple[float, float] | None:
    """Candidate minus best on the target metric with its paired standard error, from the two
    evaluations' judgments on disk; None where they cannot be paired (then the Wilson rule)."""
    best_eval = evaluation_dir(ctx.run_dir, best_round(state))
    try:
        return paired_difference(read_jsonl(evaluation_dir(ctx.run_dir, r) / "judgments.jsonl"),
                                 read_jsonl(best_eval / "judgments.jsonl"), state["metric"])
    except (OSError, ValueError, KeyError):
        return None


def _guard_changes(ctx: LoopContext, r: int) -> dict[str, float] | None:
    """Candidate minus base on each guarded metric over the images judged on both sides (a failed
    judgment on one side is left out of both); None where the evaluations cannot be paired."""
    try:
        candidate = read_jsonl(evaluation_dir(ctx.run_dir, r) / "judgments.jsonl")
        base = read_jsonl(evaluation_dir(ctx.run_dir, None) / "judgments.jsonl")
    except (OSError, ValueError):
        return None
    changes = {}
    for metric in ctx.config.decide.max_drop:
        try:
            changes[metric] = paired_difference(candidate, base, metric)[0]
        except (ValueError, KeyError, ZeroDivisionError):
            continue  # not measured here, or nothing to count: the guard falls back to the two values
    return changes


@loop_node("decide")
def decide(state: LoopState, ctx: LoopContext) -> dict:
    cfg = ctx.config
    r = state["round"]
    if state.get("train_error"):
        promoted, gain, noise, reason = False, None, None, f"training failed: {state['train_error']}"
    elif state.get("candidate_metrics") is None:
        promoted, gain, noise, reason = False, None, None, "no training data this round: nothing to evaluate"
    else:
        try:
            promoted, gain, noise, reason = promotion(
                state["candidate_metrics"], state["best_metrics"], state["base_metrics"], state["metric"],
                cfg.decide.noise_sigmas, cfg.decide.max_drop, _paired_gain(ctx, state, r) if cfg.decide.paired else None,
                _guard_changes(ctx, r) if cfg.decide.paired else None)
        except ValueError as e:
            promoted, gain, noise, reason = False, None, None, str(e)
    record = RoundRecord(round=r, metrics=state["candidate_metrics"] or {}, promoted=promoted, adapter=state["candidate_adapter"],
                         gain=gain, noise=noise, reason=reason)
    write_json_atomic(round_dir(ctx.run_dir, r) / "decision.json", record)
    update: dict = {"rounds": [record], "round": r + 1}
    if promoted:
        update |= {"best_adapter": state["candidate_adapter"], "best_metrics": state["candidate_metrics"], "no_improve": 0}
    else:
        update["no_improve"] = state.get("no_improve", 0) + 1
    if r >= cfg.budget.rounds:
        update["stop_reason"] = f"ran the configured {cfg.budget.rounds} rounds"
    elif update.get("no_improve", 0) >= cfg.budget.patience:
        update["stop_reason"] = f"{cfg.budget.patience} rounds in a row without promotion"
    return update


def after_decide(state: LoopState) -> str:
    return "report" if state.get("stop_reason") else "write_prompts"


@loop_node("report")
def report(state: LoopState, ctx: LoopContext) -> dict:
    from atelier.report import write_report

    path = write_report(ctx.run_dir, state, ctx.config.generation)
    return {"report": str(path)}
