"""The loop's nodes. Each reads small records from the state, does its work through the tools and
agents, writes its outputs atomically under run/<round>/<node>/..., and skips work already on
disk, so any node can be re-run after a crash and gives the same result.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from langgraph.runtime import Runtime
from langgraph.types import Command, Send
from PIL import Image

from atelier.agents.judge import judge_batch
from atelier.agents.planner import TargetSpec, plan_builtin, plan_with_agent
from atelier.agents.prompt_writer import heldout_prompts, write_prompts_builtin, write_prompts_with_agent
from atelier.faults import maybe_die
from atelier.graphs.state import BatchTask, LoopContext, LoopState, RoundRecord
from atelier.ipr import ipr_rows
from atelier.atomic import staged_dir, write_json_atomic, write_jsonl_atomic
from atelier.runs import best_round, evaluation_dir, guided_base_dir, read_json, read_jsonl, round_dir, set_status
from atelier.worlds.shapes.metrics import ImageJudgment, summarize
from atelier.worlds.shapes.paired import paired_difference
from atelier.worlds.shapes.references import reference_metrics
from atelier.tools.generate import GenerationRequest, generate, generation_options, load_generator
from atelier.tools.sft import SFTConfig, train_lora_sft, write_sft_dataset


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


# --- plan and baseline ------------------------------------------------------------------------


@loop_node("plan")
def plan(state: LoopState, ctx: LoopContext) -> dict:
    match ctx.config.agents.planner.backend:
        case "builtin":
            spec = plan_builtin(ctx.config.goal)
        case "openai":
            spec = plan_with_agent(ctx.config.agents.planner, ctx.config.goal, ctx.run_dir / "agents")
    metric = spec.metric if ctx.config.decide.metric == "auto" else ctx.config.decide.metric
    write_json_atomic(ctx.run_dir / "plan.json", {"goal": ctx.config.goal, "spec": spec.model_dump(), "metric": metric})
    heldout_file = ctx.run_dir / "heldout" / "prompts.json"
    if not heldout_file.exists():
        write_json_atomic(heldout_file, heldout_prompts(spec, ctx.config.budget.heldout_prompts, ctx.config.seed))
    return {"spec": spec.model_dump(), "metric": metric, "heldout_file": str(heldout_file), "round": 1,
            "best_adapter": None, "no_improve": 0}


def _evaluate(ctx: LoopContext, state: LoopState, adapter: str | None, out: Path, guidance: float | None = None) -> dict:
    """Held-out metrics of the base (adapter None) or an adapter, at `guidance` (None: the config's
    guidance_scale); cached in out/metrics.json."""
    metrics_file = out / "metrics.json"
    if metrics_file.exists():
        return read_json(metrics_file)
    cfg = ctx.config
    guidance = cfg.generation.guidance_scale if guidance is None else guidance
    prompts = read_json(Path(state["heldout_file"]))
    k = cfg.budget.images_per_heldout_prompt
    items = [(i, p, j) for i, p in enumerate(prompts) for j in range(k)]
    # The same seeds for base and every candidate: comparisons are paired.
    seeds = [image_seed(cfg.seed, 0, i, j) for i, _, j in items]
    names = [f"p{i:03d}_{j}.png" for i, _, j in items]
    if not (out / "images").exists():  # a crash after the images were saved skips straight to judging
        pipe = load_generator(cfg.model, adapter, cfg.generation.lora_scale, cfg.device, generation_options(cfg.generation))
        images = generate(pipe, GenerationRequest([p for _, p, _ in items], seeds, cfg.generation.steps,
                                                  guidance, cfg.generation.batch_size))
        with staged_dir(out / "images") as tmp:
            for name, img in zip(names, images):
                img.save(tmp / name)
    rows = [{"file": str(out / "images" / name), "prompt": p, "prompt_index": i, "seed": s}
            for name, (i, p, _), s in zip(names, items, seeds)]
    judgments = judge_batch(cfg.agents.judge, rows)
    write_jsonl_atomic(out / "judgments.jsonl", judgments)
    metrics = summarize([ImageJudgment.model_validate(j) for j in judgments])
    metrics["seed"] = cfg.seed
    metrics["guidance_scale"] = guidance
    write_json_atomic(metrics_file, metrics)
    return metrics


@loop_node("baseline")
def baseline(state: LoopState, ctx: LoopContext) -> dict:
    metrics = _evaluate(ctx, state, None, evaluation_dir(ctx.run_dir, None))
    maybe_die("baseline:base")  # a crash point between the base's evaluations, for the resume tests
    references_file = evaluation_dir(ctx.run_dir, None) / "references.json"
    # Chance and ceiling of the same prompts and seeds; only the built-in detector judges them for free.
    if ctx.config.agents.judge.backend == "builtin" and not references_file.exists():
        cfg = ctx.config
        write_json_atomic(references_file, reference_metrics(
            read_json(Path(state["heldout_file"])), cfg.budget.images_per_heldout_prompt,
            lambda i, k: image_seed(cfg.seed, 0, i, k)))
    generation = ctx.config.generation
    if generation.candidates_guided_apart and ctx.config.budget.guided_base_reference:
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
        spec = TargetSpec.model_validate(state["spec"])
        match ctx.config.agents.prompt_writer.backend:
            case "builtin":
                batch = write_prompts_builtin(spec, ctx.config.budget.prompts_per_round, seed=ctx.config.seed * 1000 + r)
            case "openai":
                batch = write_prompts_with_agent(ctx.config.agents.prompt_writer, spec, ctx.config.budget.prompts_per_round,
                                                 seed=ctx.config.seed * 1000 + r, record_dir=round_dir(ctx.run_dir, r) / "agents")
        write_json_atomic(path, batch.prompts)
    return {"prompts_file": str(path), "judged": []}


def fan_out_generate(state: LoopState, runtime: Runtime[LoopContext]) -> list[Send]:
    """One generate task per batch of prompts (the unit of parallelism and of resume)."""
    n = len(read_json(Path(state["prompts_file"])))
    size = runtime.context.config.budget.batch_prompts
    return [
        Send("generate", BatchTask(round=state["round"], batch=b, prompts_file=state["prompts_file"],
                                   start=start, end=min(start + size, n), adapter=state.get("best_adapter")))
        for b, start in enumerate(range(0, n, size))
    ]


def _batch_dir(ctx: LoopContext, task: BatchTask, node: str) -> Path:
    return round_dir(ctx.run_dir, task["round"]) / node / f"batch_{task['batch']:03d}"


@loop_node("generate")
def generate_batch(task: BatchTask, ctx: LoopContext) -> Command:
    cfg = ctx.config
    out = _batch_dir(ctx, task, "generate")
    if not (out / "manifest.jsonl").exists():
        prompts = read_json(Path(task["prompts_file"]))[task["start"] : task["end"]]
        k = cfg.budget.images_per_prompt
        items = [(task["start"] + i, p, j) for i, p in enumerate(prompts) for j in range(k)]
        seeds = [image_seed(cfg.seed, task["round"], i, j) for i, _, j in items]
        # Candidates come from the best model so far: its mistakes are what the round fixes.
        pipe = load_generator(cfg.model, task["adapter"], cfg.generation.lora_scale, cfg.device,
                              generation_options(cfg.generation))
        guidance = cfg.generation.candidate_guidance(task["adapter"])
        images = generate(pipe, GenerationRequest([p for _, p, _ in items], seeds, cfg.generation.steps,
                                                  guidance, cfg.generation.batch_size))
        with staged_dir(out) as tmp:
            rows = []
            for (i, p, j), s, img in zip(items, seeds, images):
                name = f"p{i:03d}_{j}.png"
                img.save(tmp / name)
                rows.append({"file": str(out / name), "prompt": p, "prompt_index": i, "seed": s,
                             "adapter": task["adapter"],
                             "scale": cfg.generation.lora_scale if task["adapter"] else None, "guidance_scale": guidance})
            write_jsonl_atomic(tmp / "manifest.jsonl", rows)
    return Command(goto=Send("judge", task))


@loop_node("judge")
def judge(task: BatchTask, ctx: LoopContext) -> dict:
    out = round_dir(ctx.run_dir, task["round"]) / "judge" / f"batch_{task['batch']:03d}.jsonl"
    if not out.exists():
        rows = read_jsonl(_batch_dir(ctx, task, "generate") / "manifest.jsonl")
        write_jsonl_atomic(out, judge_batch(ctx.config.agents.judge, rows))
    return {"judged": [str(out)]}


@loop_node("curate")
def curate(state: LoopState, ctx: LoopContext) -> dict:
    cfg = ctx.config
    r = state["round"]
    out = round_dir(ctx.run_dir, r) / "dataset"
    if not (out / "metadata.jsonl").exists():
        judgments = [j for f in state["judged"] for j in read_jsonl(Path(f))]
        rows = ipr_rows(judgments, cfg.train.relabel_weight, cfg.train.correct_weight, cfg.train.relabel)
        images = [Image.open(row["file"]).convert("RGB") for row in rows]
        meta = [{"file_name": f"{i:05d}.png", "text": row["text"], "weight": row["weight"], "kind": row["kind"],
                 "original_prompt": row["prompt"], "source": row["file"]} for i, row in enumerate(rows)]
        write_sft_dataset(out, meta, images)
    return {"dataset": str(out)}


@loop_node("train")
def train(state: LoopState, ctx: LoopContext) -> dict:
    cfg = ctx.config
    r = state["round"]
    datasets = [round_dir(ctx.run_dir, q) / "dataset" for q in range(1, r + 1)] if cfg.train.accumulate else [Path(state["dataset"])]
    datasets = [d for d in datasets if (d / "metadata.jsonl").exists() and read_jsonl(d / "metadata.jsonl")]
    if not datasets:  # nothing usable was generated: there is no candidate this round
        return {"candidate_adapter": None}
    out = round_dir(ctx.run_dir, r) / "adapter"
    sft = SFTConfig(steps=cfg.train.steps, batch_size=cfg.train.batch_size, lr=cfg.train.learning_rate,
                    rank=cfg.train.lora_rank, alpha=cfg.train.lora_alpha or cfg.train.lora_rank,
                    seed=cfg.seed * 1000 + r, bf16=cfg.train.bf16, caption_dropout=cfg.train.caption_dropout,
                    min_timestep=cfg.train.min_timestep)
    pipe = load_generator(cfg.model, None, device=cfg.device)
    train_lora_sft(pipe, datasets, out, sft, init_adapter=state.get("best_adapter"),
                             progress=lambda step, steps, loss: maybe_die(f"train_step:{step}"))
    return {"candidate_adapter": str(out)}


@loop_node("evaluate")
def evaluate(state: LoopState, ctx: LoopContext) -> dict:
    r = state["round"]
    if state.get("candidate_adapter") is None:
        return {"candidate_metrics": None}
    metrics = _evaluate(ctx, state, state["candidate_adapter"], evaluation_dir(ctx.run_dir, r))
    return {"candidate_metrics": metrics}


# --- decide -----------------------------------------------------------------------------------


def _value(metrics: dict, key: str) -> tuple[float, float]:
    """(value, standard error) of a proportion metric; SE from its Wilson half-width / 1.96."""
    m = metrics[key]
    if m["value"] is None:
        return 0.0, 0.0
    lo, hi = m["ci95"]
    return m["value"], (hi - lo) / (2 * 1.96)


def promotion(candidate: dict, best: dict, base: dict, metric: str, sigmas: float, max_object_drop: float,
              paired: tuple[float, float] | None = None,
              max_count_drop: float | None = None) -> tuple[bool, float, float, str]:
    """The rule: promote iff gain > sigmas * (standard error of the gain) on the target metric and
    held-out object accuracy is no more than max_object_drop below the base's (and count
    accuracy no more than max_count_drop below, when that is given). The standard
    error is `paired` (gain, se) when given: both evaluations on the same prompts and seeds
    (atelier.worlds.shapes.paired); otherwise sqrt(se_c^2 + se_b^2) from the two Wilson intervals."""
    c, se_c = _value(candidate, metric)
    b, se_b = _value(best, metric)
    gain, noise = (c - b, math.sqrt(se_c**2 + se_b**2)) if paired is None else paired
    kind = "noise" if paired is None else "paired noise"
    obj_drop = base["object_accuracy"]["value"] - candidate["object_accuracy"]["value"]
    if obj_drop > max_object_drop:
        return False, gain, noise, f"object accuracy fell {obj_drop:.3f} below the base (limit {max_object_drop})"
    if max_count_drop is not None:
        count_drop = base["count_accuracy"]["value"] - candidate["count_accuracy"]["value"]
        if count_drop > max_count_drop:
            return False, gain, noise, f"count accuracy fell {count_drop:.3f} below the base (limit {max_count_drop})"
    if gain > sigmas * noise:
        return True, gain, noise, f"{metric} {b:.3f} -> {c:.3f}: gain {gain:+.3f} > {sigmas} x {kind} {noise:.3f}"
    return False, gain, noise, f"{metric} {b:.3f} -> {c:.3f}: gain {gain:+.3f} within {sigmas} x {kind} {noise:.3f}"


def _paired_gain(ctx: LoopContext, state: LoopState, r: int) -> tuple[float, float] | None:
    """Candidate minus best on the target metric with its paired standard error, from the two
    evaluations' judgments on disk; None where they cannot be paired (then the Wilson rule)."""
    best_eval = evaluation_dir(ctx.run_dir, best_round(state))
    try:
        return paired_difference(read_jsonl(evaluation_dir(ctx.run_dir, r) / "judgments.jsonl"),
                                 read_jsonl(best_eval / "judgments.jsonl"), state["metric"])
    except (OSError, ValueError, KeyError):
        return None


@loop_node("decide")
def decide(state: LoopState, ctx: LoopContext) -> dict:
    cfg = ctx.config
    r = state["round"]
    if state.get("candidate_metrics") is None:
        promoted, gain, noise, reason = False, None, None, "no training data this round: nothing to evaluate"
    else:
        promoted, gain, noise, reason = promotion(state["candidate_metrics"], state["best_metrics"], state["base_metrics"],
                                                  state["metric"], cfg.decide.noise_sigmas, cfg.decide.max_object_drop,
                                                  _paired_gain(ctx, state, r) if cfg.decide.paired else None,
                                                  cfg.decide.max_count_drop)
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
