"""`atelier`: the command line. Bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_PAUSED = 75  # EX_TEMPFAIL: an agent endpoint stopped answering; `atelier resume` continues the run


def _gate_error(min_timestep: int) -> str | None:
    """The one-line error for an --adapter-min-timestep outside the config's bounds, else None."""
    if 0 <= min_timestep <= 999:
        return None
    return f"--adapter-min-timestep must be between 0 and 999, got {min_timestep}"


def _generate_bounds_error(args) -> str | None:
    """The one-line error for a `generate` number out of its bounds, or an --out that is a file."""
    for flag, value, least in (("--n", args.n, 1), ("--steps", args.steps, 1), ("--batch-size", args.batch_size, 1),
                               ("--height", args.height, 8), ("--width", args.width, 8), ("--seed", args.seed, 0)):
        if value is not None and value < least:
            return f"{flag} must be at least {least}, got {value}"
    if args.guidance is not None and args.guidance < 1:
        return f"--guidance must be at least 1 (1 = no classifier-free guidance), got {args.guidance:g}"
    if args.scale < 0:
        return f"--scale must be at least 0, got {args.scale:g}"
    if Path(args.out).exists() and not Path(args.out).is_dir():
        return f"--out {args.out}: is a file; give a folder for the images and metadata.jsonl"
    return None


def adapter_error(adapter) -> str | None:
    from atelier.tools.model_folders import adapter_error as check

    return check(adapter)


def _fail(message: str) -> int:
    print(f"atelier: error: {message}", file=sys.stderr)
    return EXIT_USAGE


# --- run, resume, status, runs ----------------------------------------------------------------


def cmd_run(args) -> int:
    from atelier.runs import check_run_id

    if args.run_id is not None:
        check_run_id(args.run_id)  # before the config is read or anything is written
    from atelier.config import load_config
    from atelier.loop import start_run

    from atelier.packaged_examples import config_argument

    cfg = load_config(config_argument(args.config), args.set)  # a file, or an example's name ('shapes')
    run_id, final = start_run(cfg, args.run_id)
    print(f"run {run_id} finished: {final.get('stop_reason')}")
    print(f"report: {final.get('report')}")
    return 0


def cmd_resume(args) -> int:
    from atelier.loop import resume_run

    final = resume_run(args.run_id, Path(args.run_dir) if args.run_dir else None, args.set)
    print(f"report: {final.get('report')}")
    return 0


def cmd_status(args) -> int:
    from atelier.loop import find_run, run_summary
    from atelier.report import format_share

    summary = run_summary(find_run(args.run_id, Path(args.run_dir) if args.run_dir else None))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"run {summary['run_id']}: {summary['state']} (node: {summary['node']})  goal: {summary['goal']}")
    metric = summary["metric"]
    if summary["base"] and metric:
        print(f"  base     {metric} {format_share(summary['base'][metric])}  object_accuracy {format_share(summary['base']['object_accuracy'])}")
    for r in summary["rounds"]:
        mark = "promoted" if r["promoted"] else "rolled back"
        print(f"  round {r['round']}  {metric} {format_share(r['metrics'].get(metric))}  object_accuracy "
              f"{format_share(r['metrics'].get('object_accuracy'))}  {mark}: {r['reason']}")
    print(f"  best adapter: {summary['best_adapter'] or 'base model'}")
    if summary["reason"]:
        print(f"  {summary['state']}: {summary['reason']}")
    if summary["error"]:
        print(f"  error: {summary['error']}")
    return 0


def cmd_runs(args) -> int:
    from atelier.runs import get_status, list_runs

    root = Path(args.run_dir)
    runs = list_runs(root)  # RunError when root is not a folder
    if not runs:
        print(f"no runs in {root}")
    for path in runs:  # one bad run is marked, never hides the others
        s = get_status(path)
        line = f"{path.name}  {str(s.get('state', '?')):10s} {str(s.get('node') or ''):24s} {s.get('updated', '')}"
        if s.get("state") in ("failed", "stopped", "unreadable"):
            line += f"  {s.get('error') or s.get('reason') or ''}"
        print(line.rstrip())
    return 0


# --- config -----------------------------------------------------------------------------------


def cmd_config_schema(args) -> int:
    from atelier.config import Config

    print(json.dumps(Config.model_json_schema(), indent=2))
    return 0


def cmd_config_check(args) -> int:
    from atelier.config import load_config

    cfg = load_config(args.file, args.set)
    print(f"{args.file}: ok (goal: {cfg.goal!r}, model: {cfg.model}, strategy: {cfg.strategy}, rounds: {cfg.budget.rounds})")
    return 0


# --- agents and serving -----------------------------------------------------------------------


def cmd_agents_check(args) -> int:
    from atelier.agents.check import check_agents, format_line
    from atelier.config import load_config

    cfg = load_config(args.config, args.set)
    match cfg.world_name:  # each world's sample: an image, its prompt and one request per role
        case "shapes":
            from atelier.worlds.shapes.agents_check import check_sample
        case "open_vocab":
            from atelier.worlds.open_vocab import agents_check

            def check_sample(tmp_dir, goal):
                return agents_check.check_sample(cfg, tmp_dir, goal)
    lines = check_agents(cfg, check_sample)
    for line in lines:
        print(format_line(line))
    return 0 if all(line.ok for line in lines) else 1


def cmd_serve_vlm(args) -> int:
    from atelier.agents.serve_vllm import find_vllm, serve

    executable = find_vllm()
    if executable is None:
        return _fail("vLLM is not installed; `pip install 'atelier[vllm]'` on a machine with a CUDA GPU")
    extra = shlex.split(args.vllm_args)
    return serve(executable, args.model, host=args.host, port=args.port, max_model_len=args.max_model_len,
                 max_images=args.max_images, extra=extra, ready_timeout_s=args.ready_timeout,
                 gpu_memory_utilization=args.gpu_memory_utilization)


# --- generate and the shapes world ------------------------------------------------------------


def cmd_generate(args) -> int:
    from atelier.atomic import write_jsonl_atomic
    from atelier.worlds.shapes.model import DEFAULT_GUIDANCE, DEFAULT_STEPS
    from atelier.tools import diffusers_generator
    from atelier.tools.diffusers_generator import DiffusersOptions
    from atelier.tools.generate import GenerationRequest, generate, load_generator
    from atelier.tools.model_folders import is_shapes_model

    prompts = list(args.prompt or [])
    if args.prompts_file:
        prompts += [line.strip() for line in Path(args.prompts_file).read_text().splitlines() if line.strip()]
    if not prompts:
        return _fail("give --prompt P or --prompts-file F")
    if error := _gate_error(args.adapter_min_timestep) or _generate_bounds_error(args) or adapter_error(args.adapter):
        return _fail(error)
    shapes = is_shapes_model(args.model)
    if args.model == "shapes":
        from atelier.worlds.shapes.scene import parse

        for p in prompts:
            parse(p)  # the shapes model only knows its world's captions: say so before sampling
    drawn = {p: p for p in prompts}  # the text drawn for each prompt: itself, or its rewrite
    if args.rewrite_with:
        from atelier.rewriter.commands import rewrite_prompts

        try:
            rewrites, rewriter = rewrite_prompts(args.rewrite_with, prompts)
        except ValueError as e:
            return _fail(str(e).strip().splitlines()[0])
        drawn = dict(zip(prompts, rewrites))
        print(f"rewritten by the {rewriter}:")
        for p in dict.fromkeys(prompts):
            print(f"  {p!r} -> {drawn[p]!r}")
    # Sampler defaults belong to the model: the shapes model's 8 DPM-Solver++ steps, or a real model's 25.
    default_steps, default_guidance = (
        (DEFAULT_STEPS, DEFAULT_GUIDANCE) if shapes else (diffusers_generator.DEFAULT_STEPS, diffusers_generator.DEFAULT_GUIDANCE)
    )
    steps = args.steps if args.steps is not None else default_steps
    guidance = args.guidance if args.guidance is not None else default_guidance
    batch_size = args.batch_size or (64 if shapes else 8)  # 64 tiny shapes images fit anywhere; SD images do not
    options = DiffusersOptions(dtype=args.dtype, scheduler=args.scheduler, vae_tiling=args.vae_tiling,
                               vae_slicing=args.vae_slicing, cpu_offload=args.cpu_offload,
                               adapter_min_timestep=args.adapter_min_timestep)
    if shapes:  # the shapes world's own pipeline (the `atelier shapes` commands are its own too)
        from atelier.worlds.shapes.model import load_generator
    try:
        pipe = load_generator(args.model, args.adapter, args.scale, device=args.device, options=options)
    except (ValueError, OSError) as e:  # a bad dtype or device; a model the hub or the disk does not have
        return _fail(str(e).strip().splitlines()[0])
    items = [(p, args.seed + i * args.n + k) for i, p in enumerate(prompts) for k in range(args.n)]
    request = GenerationRequest([drawn[p] for p, _ in items], [s for _, s in items], steps, guidance, batch_size,
                                args.height, args.width)
    images = generate(pipe, request)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for idx, ((p, s), img) in enumerate(zip(items, images)):
        name = f"{idx:05d}.png"
        img.save(out / name)
        rows.append({"file": name, "file_name": name, "prompt": p, "seed": s, "model": args.model,
                     "adapter": args.adapter, "scale": args.scale if args.adapter else None,
                     "adapter_min_timestep": args.adapter_min_timestep if args.adapter else None,
                     "steps": steps, "guidance_scale": guidance,
                     # the shapes model always samples with its own DPM-Solver++ 2M
                     "scheduler": "dpm++2m" if shapes else args.scheduler, "dtype": args.dtype,
                     **({"rewrite": drawn[p], "rewrite_with": str(args.rewrite_with)} if args.rewrite_with else {})})
    write_jsonl_atomic(out / "metadata.jsonl", rows)
    print(f"wrote {len(rows)} images and metadata.jsonl to {out}")
    return 0


def cmd_rewriter_train(args) -> int:
    from atelier.rewriter.commands import train_command

    try:
        print(train_command(args))
    except ValueError as e:
        return _fail(str(e).strip().splitlines()[0])
    return 0


def cmd_shapes_train_base(args) -> int:
    from atelier.worlds.shapes.train_base import BaseRecipe, train_base

    fields = {"seed": args.seed, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr}
    from pydantic import ValidationError

    if args.recipe:
        # A recipe file (e.g. a shipped model's recipe.json) sets every field; flags given explicitly win.
        try:
            data = json.loads(Path(args.recipe).read_text())
        except (OSError, json.JSONDecodeError) as e:
            return _fail(f"recipe {args.recipe}: {e}")
        fields = {**data.get("recipe", data), **{k: v for k, v in fields.items() if v is not None}}
    else:
        fields = {k: v for k, v in fields.items() if v is not None}
    if args.init_from:
        fields["init_from"] = args.init_from
    try:
        recipe = BaseRecipe(**fields)
    except ValidationError as e:
        err = e.errors()[0]
        return _fail(f"recipe field {'.'.join(map(str, err['loc']))}: {err['msg']}")
    out = train_base(args.out, recipe, device=args.device)
    print(f"model saved to {out}")
    return 0


def cmd_shapes_eval(args) -> int:
    from atelier.report import format_share
    from atelier.worlds.shapes.evaluate import MAX_IMAGES_PER_PROMPT, evaluate_model
    from atelier.worlds.shapes.heldout import heldout_scenes

    if not 1 <= args.n <= len(heldout_scenes()):
        return _fail(f"--n must be between 1 and {len(heldout_scenes())} (the held-out prompts), got {args.n}")
    if not 1 <= args.images_per_prompt <= MAX_IMAGES_PER_PROMPT:
        return _fail(f"--images-per-prompt must be between 1 and {MAX_IMAGES_PER_PROMPT}, got {args.images_per_prompt}")
    if error := _gate_error(args.adapter_min_timestep) or adapter_error(args.adapter):
        return _fail(error)
    metrics = evaluate_model(args.model, args.adapter, n_prompts=args.n, seed=args.seed, device=args.device,
                             images_per_prompt=args.images_per_prompt, dtype=args.dtype,
                             adapter_min_timestep=args.adapter_min_timestep)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    for key, m in metrics.items():
        if isinstance(m, dict) and "value" in m:
            print(f"{key:28s} {format_share(m)}")
    print(f"{'n_images':28s} {metrics['n_images']}   seed {metrics['seed']}")
    return 0


def cmd_init(args) -> int:
    from atelier.packaged_examples import write_example

    try:
        path = write_example(args.example, Path(args.out))
    except (ValueError, OSError) as e:
        return _fail(str(e))
    print(f"wrote {path}; run it with: atelier run {path}")
    return 0


def cmd_export(args) -> int:
    from atelier.export import export_run
    from atelier.loop import find_run

    print(export_run(find_run(args.run_id, Path(args.run_dir) if args.run_dir else None), args.format, Path(args.out),
                     args.round))
    return 0


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="atelier",
        description="Make a text-to-image model better at a goal, by itself: a LangGraph loop of prompt writing, "
        "generation, judging, relabelling and LoRA fine-tuning, evaluated on held-out prompts.",
        epilog="Start with: atelier run shapes (the demo), or atelier init shapes to get its config to edit",
    )
    from atelier.version import atelier_version

    p.add_argument("--version", action="version", version=f"atelier {atelier_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="start a run from a config file")
    run.add_argument("config", help="YAML config (see examples/shapes.yaml, `atelier config schema`)")
    run.add_argument("--run-id", help="name of the run (default: time + random suffix)")
    run.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a config field; repeatable")
    run.set_defaults(func=cmd_run)

    res = sub.add_parser("resume", help="continue a stopped or killed run from its checkpoint")
    res.add_argument("run_id")
    res.add_argument("--run-dir", help="folder holding the runs (default: ./runs)")
    res.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="change a field that does not change results before resuming (device, torch_threads, "
                     "decide.max_failed_share, agents.ROLE.base_url / api_key_env / max_concurrency / timeout_s / "
                     "max_retries / retry_backoff_s); repeatable; validated as at `run`")
    res.set_defaults(func=cmd_resume)

    st = sub.add_parser("status", help="round-by-round metrics of a run")
    st.add_argument("run_id")
    st.add_argument("--run-dir", help="folder holding the runs (default: ./runs)")
    st.add_argument("--json", action="store_true", help="one JSON object: rounds, best_adapter, state")
    st.set_defaults(func=cmd_status)

    rs = sub.add_parser("runs", help="list runs")
    rs.add_argument("--run-dir", default="runs")
    rs.set_defaults(func=cmd_runs)

    ini = sub.add_parser("init", help="write an example config to edit (shapes, sd15-ipr-spatial, ...)")
    ini.add_argument("example", nargs="?", default="shapes", help="example name (default: shapes)")
    ini.add_argument("--out", default=".", help="file or folder to write it to (default: ./EXAMPLE.yaml)")
    ini.set_defaults(func=cmd_init)

    exp = sub.add_parser("export", help="a run's adapter or data in other tools' layouts")
    exp.add_argument("run_id")
    exp.add_argument("--format", required=True, choices=["kohya", "dpo-pairs", "sft"],
                     help="kohya: the adapter with kohya/A1111/ComfyUI keys; dpo-pairs: preference pairs as parquet "
                     "(Pick-a-Pic columns); sft: every round's training images as one image folder")
    exp.add_argument("--round", type=int, help="kohya: the round whose adapter (default: the best)")
    exp.add_argument("--out", default="export", help="output folder (default: ./export)")
    exp.add_argument("--run-dir", help="folder holding the runs (default: ./runs)")
    exp.set_defaults(func=cmd_export)

    cfg = sub.add_parser("config", help="inspect and validate configs").add_subparsers(dest="what", required=True, metavar="WHAT")
    cfg.add_parser("schema", help="print the config's JSON schema").set_defaults(func=cmd_config_schema)
    chk = cfg.add_parser("check", help="validate a config file")
    chk.add_argument("file")
    chk.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    chk.set_defaults(func=cmd_config_check)

    agents = sub.add_parser("agents", help="check the configured agents").add_subparsers(dest="what", required=True, metavar="WHAT")
    ach = agents.add_parser("check", help="call every configured role once: latency and whether its answer validated")
    ach.add_argument("config", help="YAML config whose agents section is checked")
    ach.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a config field; repeatable")
    ach.set_defaults(func=cmd_agents_check)

    serve = sub.add_parser("serve", help="serve models for the agents").add_subparsers(dest="what", required=True, metavar="WHAT")
    vlm = serve.add_parser("vlm", help="start `vllm serve MODEL` set up for judging images; Ctrl-C stops it")
    vlm.add_argument("model", help="hub id or local path of a vision-language model, e.g. Qwen/Qwen2.5-VL-7B-Instruct")
    vlm.add_argument("--port", type=int, default=8000)
    vlm.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    vlm.add_argument("--max-model-len", type=int, default=8192, help="context length in tokens")
    vlm.add_argument("--max-images", type=int, default=2, help="images per request (the pair rubric needs 2)")
    vlm.add_argument("--gpu-memory-utilization", type=float, default=0.4, metavar="F",
                     help="share of the GPU vLLM may take (vLLM's own default is 0.9); 0.4 leaves the rest to atelier's "
                     "generator, detector and trainer on the same card (a 7B VLM in bf16 needs about 0.25 of 80 GB)")
    vlm.add_argument("--ready-timeout", type=float, default=1800, help="seconds to wait for /v1/models")
    vlm.add_argument("--vllm-args", default="", metavar="'FLAGS'",
                     help="more flags for vllm serve, in one quoted string: --vllm-args='--trust-remote-code --dtype bfloat16'")
    vlm.set_defaults(func=cmd_serve_vlm)

    gen = sub.add_parser("generate", help="generate images and a metadata.jsonl")
    gen.add_argument("--model", default="shapes",
                     help="'shapes' for the shipped model, a shapes-model folder, or a diffusers model: hub id or local "
                     "pipeline folder (SD 1.5, SD 2.x, SDXL)")
    gen.add_argument("--prompt", action="append", help="a prompt; repeatable")
    gen.add_argument("--prompts-file", help="a file with one prompt per line")
    gen.add_argument("--n", type=int, default=4, help="images per prompt")
    gen.add_argument("--seed", type=int, default=0, help="seed of the first image; image i gets seed+i")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--adapter", help="LoRA adapter folder (diffusers format)")
    gen.add_argument("--scale", type=float, default=1.0, help="LoRA scale")
    gen.add_argument("--adapter-min-timestep", type=int, default=0, metavar="T",
                     help="apply the adapter only at sampling timesteps >= T (of 1000), the base model below; "
                     "0 = every step (the loop's generation.adapter_min_timestep)")
    gen.add_argument("--steps", type=int, help="sampler steps (default: 8 for the shapes model, 25 for a diffusers model)")
    gen.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: 3 shapes, 7.5 diffusers)")
    gen.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (never guessed)")
    gen.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                     help="diffusers models: float16/bfloat16 need a CUDA device")
    gen.add_argument("--scheduler", default="dpm++2m", choices=["dpm++2m", "ddim", "euler", "euler_a"],
                     help="diffusers models' sampler (the shapes model always uses its DPM-Solver++ 2M)")
    gen.add_argument("--batch-size", type=int, help="images per forward batch (default: 64 shapes, 8 diffusers)")
    gen.add_argument("--height", type=int, help="image height in pixels (diffusers models; default: the model's)")
    gen.add_argument("--width", type=int, help="image width in pixels (diffusers models; default: the model's)")
    gen.add_argument("--vae-tiling", action="store_true", help="decode in tiles: large images in less GPU memory")
    gen.add_argument("--vae-slicing", action="store_true", help="decode a batch one image at a time")
    gen.add_argument("--cpu-offload", action="store_true", help="move each model to the GPU only while it runs")
    gen.add_argument("--rewrite-with", metavar="CONFIG_OR_RUN",
                     help="draw each prompt as a rewriter rewrites it (its single best guess): a rewrite run's folder "
                     "(its best rewriter), a rewriter folder (run/round_NNN/adapter) or a rewrite config (untrained)")
    gen.set_defaults(func=cmd_generate)

    rw = sub.add_parser("rewriter", help="the prompt rewriter of the rewrite strategy").add_subparsers(
        dest="what", required=True, metavar="WHAT")
    rwt = rw.add_parser("train", help="DPO (trl) of a causal-LM rewriter on preference pairs into a LoRA vLLM can serve")
    rwt.add_argument("pairs", help="pairs in trl's preference format: pairs.jsonl / pairs.parquet (a rewrite run's "
                     "round_NNN/adapter/) or the folder holding pairs.jsonl")
    rwt.add_argument("--model", required=True, help="the rewriter's weights: hub id or local folder of a causal LM with a chat template")
    rwt.add_argument("--out", required=True, help="new folder for the LoRA adapter (peft format)")
    rwt.add_argument("--beta", type=float, default=0.1, help="DPO beta (default 0.1, the paper's)")
    rwt.add_argument("--lr", type=float, default=5e-6, help="learning rate (default 5e-6; the paper: 1e-5 to 5e-6)")
    rwt.add_argument("--epochs", type=float, default=1.0, help="passes over the pairs")
    rwt.add_argument("--max-steps", type=int, default=-1, help="optimizer steps (default: from --epochs)")
    rwt.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    rwt.add_argument("--rank", type=int, default=16, help="LoRA rank")
    rwt.add_argument("--alpha", type=int, default=32, help="LoRA alpha")
    rwt.add_argument("--init-lora", help="continue from this LoRA of the same model")
    rwt.add_argument("--seed", type=int, default=0)
    rwt.add_argument("--device", default="cpu", help="cpu or cuda (never guessed)")
    rwt.set_defaults(func=cmd_rewriter_train)

    shapes = sub.add_parser("shapes", help="the embedded shapes world").add_subparsers(dest="what", required=True, metavar="WHAT")
    tb = shapes.add_parser("train-base", help="train the shapes world's base model (about 50 min on 2 CPU cores)")
    tb.add_argument("--out", required=True, help="output folder for the pipeline")
    tb.add_argument("--recipe", help="recipe JSON (a model card's recipe.json reproduces that model)")
    tb.add_argument("--init-from", help="model folder to continue from (a curriculum phase)")
    tb.add_argument("--steps", type=int, help="optimizer steps (default 3000)")
    tb.add_argument("--batch-size", type=int, help="default 32")
    tb.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    tb.add_argument("--seed", type=int, help="default 0")
    tb.add_argument("--device", default="cpu")
    tb.set_defaults(func=cmd_shapes_train_base)
    ev = shapes.add_parser("eval", help="VISOR metrics with 95%% CIs on the held-out prompts")
    ev.add_argument("--model", default="shapes", help="'shapes' or a model folder")
    ev.add_argument("--adapter", help="LoRA adapter folder")
    ev.add_argument("--adapter-min-timestep", type=int, default=0, metavar="T",
                    help="apply the adapter only at sampling timesteps >= T (of 1000); 0 = every step")
    ev.add_argument("--n", type=int, default=80, help="held-out prompts, at most 80")
    ev.add_argument("--images-per-prompt", type=int, default=4, help="images per prompt, each with its own seed (1-16)")
    ev.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="bfloat16 = bf16 autocast, twice as fast on CPUs with AVX512-BF16 (the demo's setting)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--json", action="store_true", help="one JSON object")
    ev.set_defaults(func=cmd_shapes_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    from atelier.agents.planner import PlanError
    from atelier.config import ConfigError
    from atelier.graphs.pause import RunPaused
    from atelier.runs import RunError
    from atelier.worlds.shapes.scene import CaptionError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, PlanError, RunError, CaptionError, FileNotFoundError) as e:
        return _fail(str(e))
    except RunPaused as e:  # an agent's endpoint stopped answering; the run is kept, paused
        print(f"atelier: paused: {e}", file=sys.stderr)
        return EXIT_PAUSED
    except KeyboardInterrupt as e:
        if (signum := getattr(e, "signum", None)) is not None:  # atelier.loop.RunStopped: the run's status says stopped
            print(f"atelier: {e}", file=sys.stderr)
            return 128 + signum  # 130 for Ctrl-C (SIGINT), 143 for SIGTERM
        print("interrupted; `atelier resume RUN_ID` continues a run", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
