"""How far can a LoRA move the shapes base's held-out relation accuracy with perfect data?

The IPR loop trains on the model's own samples, judged and relabelled. This benchmark replaces
them with an oracle: ground-truth renders of the same kind of training prompts (the builtin
prompt writer for the demo's goal, never a held-out pair), every caption exactly right, weight 1.
If even these move relation accuracy little, the ceiling is the base model, not IPR's labels.

Prints the base and the oracle LoRA side by side on the held-out split (Wilson 95% CIs). Each
variant is `--lr`, `--steps`, `--prompts` (x 4 renders); defaults are the demo's budget.

    .venv/bin/python benchmarks/relation_ceiling.py [--prompts 64] [--steps 300] [--lr 3e-4] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from atelier.worlds.shapes.plan import plan_builtin
from atelier.worlds.shapes.prompts import write_prompts_builtin
from atelier.report import format_share
from atelier.worlds.shapes.evaluate import evaluate_model
from atelier.worlds.shapes.render import render
from atelier.worlds.shapes.scene import parse
from atelier.worlds.shapes.model import load_generator
from atelier.tools.sft import SFTConfig, train_lora_sft, write_sft_dataset

GOAL = "get spatial relations (left, right, above, below) right for two objects"  # examples/shapes.yaml
KEYS = ("relation_accuracy_cond", "object_accuracy", "count_accuracy_multi", "colour_accuracy")
RENDERS_PER_PROMPT = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64, help="training prompts (x 4 renders each)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--heldout-prompts", type=int, default=80)
    parser.add_argument("--images-per-prompt", type=int, default=4, help="held-out images per prompt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="keep the dataset and adapter here (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    prompts = write_prompts_builtin(plan_builtin(GOAL), args.prompts, seed=0).prompts
    rows, images = [], []
    for i, prompt in enumerate(prompts):
        for k in range(RENDERS_PER_PROMPT):
            rows.append({"text": prompt, "weight": 1.0, "kind": "oracle"})
            images.append(render(parse(prompt), seed=RENDERS_PER_PROMPT * i + k))

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        write_sft_dataset(work / "oracle_data", rows, images)
        cfg = SFTConfig(steps=args.steps, batch_size=16, lr=args.lr, rank=args.rank, alpha=args.rank, seed=1, bf16=False)
        started = time.time()
        train_lora_sft(load_generator("shapes", None), work / "oracle_data", work / "oracle_adapter", cfg)
        train_s = time.time() - started
        evals = {
            label: evaluate_model(adapter=adapter, n_prompts=args.heldout_prompts, images_per_prompt=args.images_per_prompt,
                                  dtype="bfloat16")
            for label, adapter in (("base", None), ("oracle LoRA", str(work / "oracle_adapter")))
        }

    print(f"oracle data: {len(rows)} renders of {len(prompts)} training prompts; LoRA rank {args.rank}, "
          f"lr {args.lr:g}, {args.steps} steps x batch 16 ({train_s:.0f} s); held-out "
          f"{args.heldout_prompts} prompts x {args.images_per_prompt} images, bf16, 95% CIs")
    print(f"{'':12s}  " + "  ".join(f"{k:27s}" for k in KEYS))
    for label, metrics in evals.items():
        print(f"{label:12s}  " + "  ".join(f"{format_share(metrics.get(k), 3):27s}" for k in KEYS))
    base, oracle = (evals[k]["relation_accuracy_cond"]["value"] for k in ("base", "oracle LoRA"))
    print(f"relation accuracy (cond.) gain with perfect labels: {oracle - base:+.3f}")


if __name__ == "__main__":
    main()
