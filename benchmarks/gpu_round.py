"""One round of each strategy (ipr, ccsr, grpo) on SD 1.5-architecture models at 512 px: seconds per node.

What it measures. It builds, from configs written out in benchmarks/random_models.py, random-weight
models of the real architectures and saves them with `save_pretrained` (SD 1.5: UNet 860M, VAE 84M,
CLIP ViT-L/14 text encoder 123M, PNDM scheduler; OWLv2 base-patch16 at 960 px; CLIP ViT-L/14 at
224 px), then runs ONE round of the loop per strategy through the product's own code path:
a config (world open_vocab, builtin agents) -> `atelier.loop.start_run` -> the run folder's
timings.jsonl. Per strategy it prints, per node: seconds, and throughput where it means
something (held-out images/s for baseline and evaluate, which generate and judge; images/s for
generate; judged images/s for judge; optimizer steps/s for train), the round's wall time, and on
CUDA the peak GPU memory (`torch.cuda.max_memory_allocated`, reset per strategy). It also times
loading the three models once on their own (baseline's time includes their first load).

    python benchmarks/gpu_round.py --device cuda --dtype auto          # a GPU: real sizes, 512 px
    python benchmarks/gpu_round.py --size tiny --device cpu            # a CPU smoke run (~1-2 min)
    python benchmarks/gpu_round.py --build-only                        # only build and save the models

Models are built once under --work (default <temp dir>/atelier-gpu-round/models-<size>; ~3.3 GB at real
size, saved in float16 as the hub's fp16 variants) and reused; --rebuild builds them again. The
budget flags (--prompts, --images-per-prompt, --heldout, --heldout-images, --train-steps,
--train-batch, --sampler-steps, --gen-batch) default to a round small enough for a few minutes
on one GPU; the real examples (examples/sd15-*.yaml) run 64 prompts x 4, 40 x 4 held-out and 500
steps, which scale these figures linearly. A summary is written as JSON (--out). The first
strategy run pays the process's one-time costs (imports such as peft at the first train, CUDA
kernel selection); `--strategies ipr,ccsr,ipr` repeats one to see them apart.

What it cannot measure. The weights are random: every quality figure a run writes (accuracy,
VISOR, question score, CLIP score, promotion) is meaningless; only time and memory are real.
Detections of a random OWLv2 are noise: at the product's 0.1 threshold it can keep most of its
3600 boxes per image (the table prints boxes per candidate), so the judge's post-processing
(NMS, JSON rows) and IPR's relabels ("1800 dogs") are heavier than with real weights; the
detector's forward pass, which dominates, is the real one (--detector-threshold changes the
threshold). CCSR's detector threshold is set to 0 here so that its best-of-N keeps one image per
prompt and training always runs. A VLM judge (vLLM) is not run: the agents are builtin.

Memory estimate (arithmetic, not measured; the script's peak figures replace the SD 1.5 row's).
Parameters x bytes: SD 1.5 = UNet 0.86B + VAE 0.084B + text 0.123B = 1.07B -> 2.1 GB in bf16.
SDXL = UNet 2.57B + VAE 0.084B + text 0.123B + 0.695B = 3.47B -> 6.9 GB in bf16. The judges load
in float32 (the product gives the detector and CLIP no dtype): OWLv2-B/16 0.155B + CLIP-L/14
0.428B = 0.58B x 4 B = 2.3 GB. LoRA r=8 on the UNet attention (to_q/k/v/out): 3.2M (SD 1.5),
23M (SDXL) parameters x 16 B (fp32 weight, grad, two AdamW moments) = 0.05 / 0.4 GB. Training
activations, rule of thumb for a UNet backward in bf16 with SDPA attention: ~2.5 GB per 512 px
image without gradient checkpointing, ~0.6 GB with it; SDXL at 1024 px ~4 GB per image with
checkpointing (~20 GB without). Sampling with CFG at batch 8: ~3-4 GB transient at 512 px (UNet
at batch 16 + VAE decode); at 1024 px ~4x that, so SDXL samples at batch 2-4 or with vae_slicing.
CUDA context + allocator slack ~1.5 GB per process. A 7B VLM (Qwen2.5-VL-7B, 8.3B with its vision
tower) in bf16 = 16.6 GB of weights; KV cache 28 layers x 4 KV heads x 128 x 2 (K, V) x 2 B =
57 KB/token. vLLM claims `--gpu-memory-utilization` x total memory up front (default 0.9, which
leaves no room for atelier on the same GPU: `atelier serve vlm ... --vllm-args='--gpu-memory-utilization 0.4'`).

| on one GPU                                  | SD 1.5, 512 px, LoRA batch 4          | SDXL, 1024 px, LoRA batch 1-2, grad. ckpt |
|---------------------------------------------|---------------------------------------|-------------------------------------------|
| generator + judges + LoRA/AdamW (resident)  | 2.1 + 2.3 + 0.05 = 4.5 GB             | 6.9 + 2.3 + 0.4 = 9.6 GB                  |
| + training activations                      | 10 GB (no ckpt) / 2.5 GB (ckpt)       | 4-8 GB                                    |
| + CUDA context, slack                       | 1.5 GB                                | 1.5 GB                                    |
| peak (training is the largest phase)        | ~16 GB / ~8.5 GB                      | ~15 GB (batch 1) / ~19 GB (batch 2)       |
| 24 GB, no VLM                               | fits                                  | fits at batch 1; batch 2 tight; vae_slicing |
| 24 GB + 7B VLM on vLLM                      | no in bf16 (16.6 GB weights alone); an AWQ 4-bit 7B (~6 GB) at utilization 0.4 (9.6 GB) + SD 1.5 with ckpt (~8.5 GB) fits, tight | no |
| 80 GB + 7B VLM at utilization 0.4 (32 GB:   | fits (48 GB left, ~16 GB used)        | fits (48 GB left, ~19 GB used)            |
|   16.6 weights + ~13 GB KV (~230k tokens) + 2 GB) |                                 |                                           |
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from random_models import build_all, parameter_count  # noqa: E402

NODE_ORDER = ["plan", "baseline", "write_prompts", "generate", "judge", "curate", "train", "evaluate", "decide", "report"]

IPR_CLASSES = ["person", "dog", "cat", "horse", "car", "bench"]
IPR_RELATIONS = ["left of", "right of", "above", "below"]
CCSR_CLASSES = ["elephant", "giraffe"]
CCSR_SETTINGS = ["in the savanna", "at a watering hole", "next to acacia trees", "in a zoo enclosure", "at sunset",
                 "in tall grass", "by a river", "in a forest"]  # 8: two held-out settings, 20 held-out prompts

# Budgets per size: tiny = a CPU smoke run; real = a few minutes on one GPU.
DEFAULTS = {
    "tiny": dict(prompts=2, images_per_prompt=2, heldout=2, heldout_images=2, train_steps=2, train_batch=2,
                 sampler_steps=2, gen_batch=4),
    "real": dict(prompts=16, images_per_prompt=4, heldout=16, heldout_images=4, train_steps=50, train_batch=4,
                 sampler_steps=25, gen_batch=8),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["tiny", "real"], default="real", help="model widths: real (512 px) or tiny (64 px)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="generation.dtype (the generator's weights); training autocast follows train.bf16's default")
    p.add_argument("--strategies", default="ipr,ccsr", help="comma-separated: ipr, ccsr, grpo")
    p.add_argument("--grpo-iterations", type=int, default=2, help="grpo: online iterations in the round")
    p.add_argument("--grpo-prompts", type=int, default=4, help="grpo: prompts per iteration")
    p.add_argument("--grpo-group", type=int, default=4, help="grpo: images per prompt per iteration (G)")
    p.add_argument("--grpo-sampler-steps", type=int, default=10, help="grpo: DDIM steps of the policy's samples")
    p.add_argument("--grpo-train-steps", type=int, default=3, help="grpo: noisiest steps trained on")
    p.add_argument("--prompts", type=int, help="training prompts in the round")
    p.add_argument("--images-per-prompt", type=int, help="candidates per training prompt")
    p.add_argument("--heldout", type=int, help="held-out prompts (baseline and evaluate)")
    p.add_argument("--heldout-images", type=int, help="images per held-out prompt")
    p.add_argument("--train-steps", type=int, help="LoRA optimizer steps")
    p.add_argument("--train-batch", type=int, help="images per optimizer step")
    p.add_argument("--sampler-steps", type=int, help="sampler steps per image (dpm++2m)")
    p.add_argument("--gen-batch", type=int, help="images per generation forward batch")
    p.add_argument("--batch-prompts", type=int, default=16, help="prompts per generate/judge task (fan-out unit)")
    p.add_argument("--detector-threshold", type=float, help="detector.score_threshold (default: the product's, 0.1 for "
                   "OWLv2); a random OWLv2 scores most of its 3600 boxes above 0.1")
    p.add_argument("--gradient-checkpointing", action="store_true", help="train.gradient_checkpointing")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "atelier-gpu-round", help="models and runs go here (default: under the system temp dir)")
    p.add_argument("--rebuild", action="store_true", help="build the models again even if saved ones are there")
    p.add_argument("--build-only", action="store_true", help="build and save the models, print their sizes, stop")
    p.add_argument("--skip-load-timing", action="store_true", help="do not time a separate load of the three models")
    p.add_argument("--out", type=Path, help="write the summary as JSON here (default: <work>/gpu_round-<time>.json)")
    args = p.parse_args()
    for key, value in DEFAULTS[args.size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


# --- config and run ---------------------------------------------------------------------------


def make_config(args, strategy: str, models: dict[str, Path]) -> dict:
    spatial = strategy in ("ipr", "grpo")
    common_vocab = (dict(classes=IPR_CLASSES, relations=IPR_RELATIONS) if spatial
                    else dict(classes=CCSR_CLASSES, settings=CCSR_SETTINGS))
    goal = "get left, right, above and below right for two objects" if spatial else "realistic elephants and giraffes"
    return {
        "goal": goal,
        "model": str(models["model"]),
        "world": "open_vocab",
        "strategy": strategy,
        "seed": 0,
        "run_dir": str(args.work / "runs"),
        "device": args.device,
        "vocabulary": common_vocab,
        "detector": {"architecture": "owlv2", "model": str(models["detector"]), "score_threshold": args.detector_threshold},
        "clip": {"model": str(models["clip"])},
        # Random OWLv2 confidences are noise: threshold 0 keeps each prompt's best, so train always runs.
        "ccsr": {"detector_threshold": 0.0},
        "agents": {role: {"backend": "builtin"} for role in ("planner", "prompt_writer", "judge", "critic", "edit_writer")},
        "budget": {
            "rounds": 1, "patience": 1, "prompts_per_round": args.prompts, "images_per_prompt": args.images_per_prompt,
            "heldout_prompts": args.heldout, "images_per_heldout_prompt": args.heldout_images,
            "batch_prompts": args.batch_prompts,
        },
        "train": {"steps": args.train_steps, "batch_size": args.train_batch, "learning_rate": 1e-4, "lora_rank": 8,
                  "gradient_checkpointing": args.gradient_checkpointing},
        "generation": {"steps": args.sampler_steps, "guidance_scale": 7.5, "dtype": args.dtype, "scheduler": "dpm++2m",
                       "batch_size": args.gen_batch},
        "decide": {"metric": "auto"},
        # grpo: the round's candidates only supply prompts; its own sampling, judging and updates run in train.
        "grpo": {"iterations": args.grpo_iterations, "prompts_per_iteration": args.grpo_prompts,
                 "group_size": args.grpo_group, "sampler_steps": args.grpo_sampler_steps,
                 "train_steps": args.grpo_train_steps, "updates_per_iteration": 2},
    }


def cuda(device: str) -> bool:
    return torch.device(device).type == "cuda"


def gib(n_bytes: int) -> float:
    return n_bytes / 2**30


def time_loads(cfg) -> dict:
    """Seconds to load each of the three models on the device, alone (the OS file cache is warm
    after the first), and the GPU memory they hold once loaded."""
    from atelier.worlds.open_vocab.models import OpenVocabModels

    models = OpenVocabModels(cfg)
    out = {}
    for name in ("generator", "detector", "clip"):
        started = time.time()
        getattr(models, name)
        if cuda(cfg.device):
            torch.cuda.synchronize()
        out[name] = round(time.time() - started, 2)
    if cuda(cfg.device):
        out["weights_gib"] = round(gib(torch.cuda.memory_allocated()), 2)
    models.close()
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def run_one(args, strategy: str, models: dict[str, Path], index: int = 0) -> dict:
    from atelier.config import parse_config
    from atelier.loop import start_run

    cfg = parse_config(make_config(args, strategy, models))
    loads = None if args.skip_load_timing else time_loads(cfg)
    if cuda(args.device):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    run_id = f"{strategy}-{args.size}-{time.strftime('%Y%m%d-%H%M%S')}-{index}"
    started = time.time()
    start_run(cfg, run_id)
    wall = time.time() - started
    peak = (gib(torch.cuda.max_memory_allocated()), gib(torch.cuda.max_memory_reserved())) if cuda(args.device) else None

    run_dir = cfg.run_dir / run_id
    heldout = len(json.loads((run_dir / "heldout" / "prompts.json").read_text())) * cfg.budget.images_per_heldout_prompt
    round_prompts = json.loads((run_dir / "round_001" / "prompts.json").read_text())
    candidates = len(round_prompts) * cfg.budget.images_per_prompt
    dataset = len(read_jsonl(run_dir / "round_001" / "dataset" / "metadata.jsonl"))
    trained = (run_dir / "round_001" / "adapter").exists()
    steps = cfg.train.steps if trained else 0
    grpo = read_jsonl(run_dir / "round_001" / "grpo_iterations.jsonl")
    if strategy == "grpo":
        steps = sum(s["updates"] for s in grpo)
    judged = [j for f in sorted((run_dir / "round_001" / "judge").glob("*.jsonl")) for j in read_jsonl(f)]
    boxes = sum(len(j.get("detections", [])) for j in judged) / max(1, len(judged))

    seconds, calls = defaultdict(float), defaultdict(int)
    for row in read_jsonl(run_dir / "timings.jsonl"):
        seconds[row["node"]] += row["seconds"]
        calls[row["node"]] += 1
    work = {  # (amount, unit) per node where a rate means something
        "baseline": (heldout, "held-out img/s (gen+judge)"),
        "generate": (candidates, "img/s"),
        "judge": (candidates, "judged img/s"),
        "curate": (dataset, "rows/s"),
        "train": (steps, "steps/s"),
        "evaluate": (heldout, "held-out img/s (gen+judge)"),
    }
    nodes = []
    for node in NODE_ORDER + sorted(set(seconds) - set(NODE_ORDER)):
        if node not in seconds:
            continue
        amount, unit = work.get(node, (None, None))
        rate = amount / seconds[node] if amount and seconds[node] > 0 else None
        nodes.append({"node": node, "calls": calls[node], "seconds": round(seconds[node], 3), "amount": amount,
                      "rate": rate, "unit": unit})
    return {
        "strategy": strategy, "run_dir": str(run_dir), "wall_s": round(wall, 2), "nodes": nodes, "loads_s": loads,
        "heldout_images": heldout, "candidate_images": candidates, "dataset_rows": dataset, "train_steps": steps,
        "boxes_per_image": round(boxes, 1),
        "train_batch": cfg.train.batch_size, "peak_allocated_gib": peak and round(peak[0], 2),
        "peak_reserved_gib": peak and round(peak[1], 2),
        "grpo": grpo and {  # the policy's own phases inside train
            "samples": sum(s["n_samples"] for s in grpo), "updates": steps,
            "samples_per_s": sum(s["n_samples"] for s in grpo) / max(1e-9, sum(s["sample_s"] for s in grpo)),
            "judged_per_s": sum(s["n_samples"] for s in grpo) / max(1e-9, sum(s["judge_s"] for s in grpo)),
            "update_steps_per_s": steps / max(1e-9, sum(s["update_s"] for s in grpo)),
        },
    }


# --- printing ---------------------------------------------------------------------------------


def machine(args) -> dict:
    import diffusers
    import transformers

    from atelier.tools.dtype import resolve_dtype, train_in_bf16

    if cuda(args.device):
        props = torch.cuda.get_device_properties(torch.device(args.device))
        name = f"{props.name} ({gib(props.total_memory):.0f} GiB)"
    else:
        name = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return {
        "device": args.device, "device_name": name, "torch": torch.__version__, "diffusers": diffusers.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "generator_dtype": resolve_dtype(args.dtype, args.device, autocast=False),
        "train_autocast": "bfloat16" if train_in_bf16(None, args.device) else "off (float32 weights' dtype)",
        "judges_dtype": "float32 (OWLv2 and CLIP load in float32)",
    }


def print_machine(m: dict) -> None:
    print(f"machine: {m['device_name']} | device {m['device']} | torch {m['torch']}, diffusers {m['diffusers']}, "
          f"transformers {m['transformers']}, python {m['python']}")
    print(f"dtypes: generator {m['generator_dtype']}, LoRA training autocast {m['train_autocast']}, judges {m['judges_dtype']}")


def print_result(r: dict, args) -> None:
    print(f"\n== {r['strategy']} == one round: {r['candidate_images']} candidates ({args.prompts} prompts x "
          f"{args.images_per_prompt}), {r['heldout_images']} held-out images per evaluation, {r['dataset_rows']} training "
          f"rows, {r['train_steps']} steps x batch {r['train_batch']}, {args.sampler_steps} sampler steps, "
          f"{r['boxes_per_image']} detector boxes per candidate")
    print(f"{'node':<14}{'calls':>6}{'seconds':>10}   throughput")
    for n in r["nodes"]:
        rate = f"{n['rate']:.3g} {n['unit']}" if n["rate"] is not None else ""
        if n["node"] == "baseline" and r["loads_s"]:
            rate += "  (includes the first model loads)"
        print(f"{n['node']:<14}{n['calls']:>6}{n['seconds']:>10.2f}   {rate}")
    print(f"{'round wall':<20}{r['wall_s']:>10.2f}   (start_run: plan .. report, model loads included)")
    if r["loads_s"]:
        loads = r["loads_s"]
        extra = f", weights on GPU {loads['weights_gib']} GiB" if "weights_gib" in loads else ""
        print(f"model loads alone: generator {loads['generator']}s, detector {loads['detector']}s, clip {loads['clip']}s{extra}")
    if r.get("grpo"):
        g = r["grpo"]
        print(f"grpo inside train: {g['samples']} policy samples at {g['samples_per_s']:.3g}/s (DDIM with log-probs), "
              f"judged at {g['judged_per_s']:.3g}/s, {g['updates']} update steps at {g['update_steps_per_s']:.3g}/s")
    if r["peak_allocated_gib"] is not None:
        print(f"peak GPU memory: {r['peak_allocated_gib']} GiB allocated, {r['peak_reserved_gib']} GiB reserved")


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    m = machine(args)
    print_machine(m)
    if args.size == "real" and not args.build_only and not cuda(args.device):
        print("note: real sizes on a CPU take a long time (an 860M UNet at 512 px); --size tiny is the CPU smoke run")
    save_dtype = torch.float16 if args.size == "real" else torch.float32
    started = time.time()
    models = build_all(args.work / f"models-{args.size}", size=args.size, save_dtype=save_dtype, rebuild=args.rebuild)
    sizes = {k: parameter_count(v) for k, v in models.items()}
    disk = sum(f.stat().st_size for v in models.values() for f in Path(v).rglob("*") if f.is_file())
    print(f"models ({args.size}, {time.time() - started:.1f}s to build or find, {disk / 1e9:.2f} GB on disk): "
          + ", ".join(f"{k} {v / 1e6:.1f}M params" for k, v in sizes.items()))
    results = {"machine": m, "args": {k: str(v) for k, v in vars(args).items()}, "params": sizes, "strategies": []}
    if not args.build_only:
        for index, strategy in enumerate(s.strip() for s in args.strategies.split(",") if s.strip()):
            r = run_one(args, strategy, models, index)
            print_result(r, args)
            results["strategies"].append(r)
    out = args.out or args.work / f"gpu_round-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"\nsummary: {out}")


if __name__ == "__main__":
    main()
