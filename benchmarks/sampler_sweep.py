"""Held-out quality and speed of the shipped shapes model across sampler settings (solver, steps,
guidance scale), plus a shuffled-caption baseline that shows how much the text steers: each
image is judged against another prompt's caption.

    .venv/bin/python benchmarks/sampler_sweep.py [--n 80] [--settings dpm:8:3 ddim:12:3 ddim:20:3 dpm:6:3]
    # the guidance sweep behind generation.candidate_guidance_scale (BENCHMARKS.md):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sampler_sweep.py --images-per-prompt 8 --dtype bfloat16 --settings dpm:8:3 dpm:8:4.5 dpm:8:6 dpm:8:9 dpm:8:12
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from diffusers import DDIMScheduler

from atelier.report import format_share
from atelier.worlds.shapes.evaluate import generate_images, judge_images
from atelier.worlds.shapes.heldout import heldout_scenes
from atelier.worlds.shapes.model import load_pipeline

KEYS = ("object_accuracy", "colour_accuracy", "shape_accuracy", "count_accuracy_multi", "relation_accuracy_cond")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=80, help="held-out prompts")
    parser.add_argument("--images-per-prompt", type=int, default=4, help="images per prompt, each with its own seed")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="bfloat16 = bf16 autocast, the demo's setting")
    parser.add_argument("--settings", nargs="+", default=["dpm:8:3", "ddim:12:3", "ddim:20:3", "dpm:6:3", "dpm:8:2"],
                        help="solver:steps:guidance; solver is dpm (DPM-Solver++ 2M, the default) or ddim")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pipe = load_pipeline()
    pipe.set_compute_dtype(args.dtype)
    solvers = {
        "dpm": pipe.scheduler,
        # The sampler shipped before DPM-Solver++: DDIM, trailing timesteps, x0 clipped to [-1, 1].
        "ddim": DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing", clip_sample=True,
                                          set_alpha_to_one=True),
    }
    scenes = heldout_scenes()[: args.n]
    shuffled = [scenes[i] for i in np.random.default_rng(args.seed).permutation(len(scenes))]
    images_per_prompt = args.images_per_prompt
    print(f"{args.n} held-out prompts x {images_per_prompt} images, {args.dtype}; Wilson 95% CIs")
    for setting in args.settings:
        solver, steps, guidance = setting.split(":")
        pipe.scheduler = solvers[solver]
        start = time.perf_counter()
        images = generate_images(pipe, scenes, images_per_prompt, args.seed, int(steps), float(guidance))
        wall = time.perf_counter() - start
        _, metrics = judge_images(scenes, images)
        print(f"{solver:>4} steps {steps:>3} guidance {guidance:>4}: {images_per_prompt * args.n / wall:5.1f} images/s  "
              + "  ".join(f"{k} {format_share(metrics[k])}" for k in KEYS))
        if setting == args.settings[0]:
            _, base = judge_images(shuffled, images)
            print("   same images judged against shuffled captions: "
                  + "  ".join(f"{k} {format_share(base[k])}" for k in KEYS))


if __name__ == "__main__":
    main()
