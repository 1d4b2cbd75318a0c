"""Images/s of the shipped shapes model: 64 held-out prompts' images at 32x32 with the default
sampler, batched through ShapesPipeline in float32 and under bf16 autocast, next to a plain
one-prompt-at-a-time float32 loop measured in the same run (the reference). Also the detector's
images/s on the generated images.

    .venv/bin/python benchmarks/shapes_generation.py [--n 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from atelier.worlds.shapes.detect import detect_all
from atelier.worlds.shapes.heldout import heldout_captions
from atelier.worlds.shapes.model import DEFAULT_GUIDANCE, DEFAULT_STEPS, load_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--reference-n", type=int, default=8, help="images for the one-at-a-time reference loop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipeline()
    prompts = (heldout_captions() * 4)[: args.n]

    timings = {}
    for dtype in ("float32", "bfloat16"):
        pipe.set_compute_dtype(dtype)
        pipe(prompts[:2], seeds=[0, 1], num_inference_steps=2)  # warm-up of this dtype's kernels
        start = time.perf_counter()
        images = pipe(prompts, seeds=list(range(args.n)), num_inference_steps=args.steps,
                      guidance_scale=DEFAULT_GUIDANCE).images
        timings[dtype] = time.perf_counter() - start

    pipe.set_compute_dtype("float32")
    start = time.perf_counter()
    for i in range(args.reference_n):
        pipe(prompts[i], seeds=[i], num_inference_steps=args.steps, guidance_scale=DEFAULT_GUIDANCE)
    single = (time.perf_counter() - start) / args.reference_n

    start = time.perf_counter()
    for img in images:
        detect_all(img)
    detect = time.perf_counter() - start

    sampler = type(pipe.scheduler).__name__
    print(f"threads {args.threads}, {sampler} {args.steps} steps, guidance {DEFAULT_GUIDANCE}; target: 64 images in <= 10 s")
    print(f"one at a time, float32 (reference): {1 / single:.1f} images/s")
    for dtype, wall in timings.items():
        print(f"batched {dtype}: {args.n} images in {wall:.2f} s = {args.n / wall:.1f} images/s, "
              f"x{single * args.n / wall:.1f} the reference")
    print(f"detector on generated images: {args.n / detect:.0f} images/s")


if __name__ == "__main__":
    main()
