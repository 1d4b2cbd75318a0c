"""Does an adapter beat turning up classifier-free guidance? The base and an adapter sampled at
several guidance scales on the same held-out prompts and seeds, and the adapter at its own
guidance against the base at every scale (paired differences, atelier/stats/paired.py).

The loop compares base and adapter at one guidance, as the efficacy target asks. This benchmark
asks the question a user would ask next: would sampling the base at a higher guidance have given
the same relation accuracy for fewer lost objects? (On the shapes world it does: BENCHMARKS.md,
"The loop's gain is guidance, learned".)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/guidance_frontier.py --adapter runs/RUN/round_001/adapter \
        [--guidances 2 3 4.5 6] [--adapter-guidance 3] [--adapter-min-timestep 749]
"""

from __future__ import annotations

import argparse
import time

from atelier.worlds.shapes.evaluate import generate_images, image_seed, judge_images
from atelier.worlds.shapes.heldout import heldout_scenes
from atelier.worlds.judgment import paired_difference
from atelier.tools.diffusers_generator import DiffusersOptions
from atelier.worlds.shapes.model import load_generator

KEYS = ("relation_accuracy_cond", "object_accuracy", "count_accuracy")
SHORT = {"relation_accuracy_cond": "relation", "object_accuracy": "objects", "count_accuracy": "counts"}


def judged_rows(pipe, scenes, images_per_prompt: int, seed: int, guidance: float) -> tuple[list[dict], dict]:
    """Judgments as the loop stores them (with their seeds, for pairing) and the metrics."""
    images = generate_images(pipe, scenes, images_per_prompt, seed, guidance_scale=guidance)
    judgments, metrics = judge_images(scenes, images)
    seeds = [image_seed(seed, i, k) for i in range(len(scenes)) for k in range(images_per_prompt)]
    return [{**j.model_dump(), "seed": s} for j, s in zip(judgments, seeds)], metrics


def figures(metrics: dict) -> str:
    return "  ".join(f"{SHORT[k]} {metrics[k]['value']:.3f}" for k in KEYS)


def differences(new: list[dict], old: list[dict]) -> str:
    parts = []
    for key in KEYS:
        d, se = paired_difference(new, old, key)
        parts.append(f"{SHORT[key]} {100 * d:+.1f}±{100 * se:.1f}")
    return "  ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", required=True, help="an adapter folder (a round's adapter/)")
    parser.add_argument("--model", default="shapes", help="the shapes model the adapter was trained on ('shapes' = the shipped one)")
    parser.add_argument("--guidances", type=float, nargs="+", default=[2.0, 3.0, 4.5, 6.0])
    parser.add_argument("--adapter-guidance", type=float, default=3.0,
                        help="the guidance the loop evaluated the adapter at (the demo's generation.guidance_scale)")
    parser.add_argument("--adapter-min-timestep", type=int, default=749, help="the demo's adapter gate")
    parser.add_argument("--n", type=int, default=80, help="held-out prompts")
    parser.add_argument("--images-per-prompt", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    args = parser.parse_args()

    scenes = heldout_scenes()[: args.n]
    base = load_generator(args.model, options=DiffusersOptions(dtype=args.dtype))
    tuned = load_generator(args.model, args.adapter,
                           options=DiffusersOptions(dtype=args.dtype, adapter_min_timestep=args.adapter_min_timestep))
    guidances = sorted(set(args.guidances) | {args.adapter_guidance})
    print(f"{args.n} held-out prompts x {args.images_per_prompt} images, {args.dtype}, seed {args.seed}; "
          f"adapter {args.adapter} gated at {args.adapter_min_timestep}; differences in points ± paired SE")
    base_rows, tuned_rows = {}, {}
    for g in guidances:
        start = time.perf_counter()
        base_rows[g], base_metrics = judged_rows(base, scenes, args.images_per_prompt, args.seed, g)
        tuned_rows[g], tuned_metrics = judged_rows(tuned, scenes, args.images_per_prompt, args.seed, g)
        print(f"guidance {g:4}: base    {figures(base_metrics)}\n"
              f"               adapter {figures(tuned_metrics)}\n"
              f"               adapter - base at the same guidance: {differences(tuned_rows[g], base_rows[g])}"
              f"   ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"\nthe adapter at guidance {args.adapter_guidance} against the base at each guidance:")
    for g in guidances:
        print(f"  base at {g:4}: {differences(tuned_rows[args.adapter_guidance], base_rows[g])}")


if __name__ == "__main__":
    main()
