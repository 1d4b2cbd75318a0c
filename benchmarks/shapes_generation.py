"""Images/s of the shipped shapes model: 64 held-out prompts' images at 32x32 with the default
sampler, batched through ShapesPipeline, next to a plain one-prompt-at-a-time loop measured in the
same run (the reference). Also the detector's images/s on the generated images.

    .venv/bin/python benchmarks/shapes_generation.py [--n 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from atelier.shapes.detect import detect_all
from atelier.shapes.heldout import heldout_captions
from atelier.shapes.model import DEFAULT_GUIDANCE, DEFAULT_STEPS, load_pipeline


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
    pipe(prompts[:2], seeds=[0, 1], num_inference_steps=2)  # warm-up

    start = time.perf_counter()
    images = pipe(prompts, seeds=list(range(args.n)), num_inference_steps=args.steps, guidance_scale=DEFAULT_GUIDANCE).images
    batched = time.perf_counter() - start

    start = time.perf_counter()
    for i in range(args.reference_n):
        pipe(prompts[i], seeds=[i], num_inference_steps=args.steps, guidance_scale=DEFAULT_GUIDANCE)
    single = (time.perf_counter() - start) / args.reference_n

    start = time.perf_counter()
    for img in images:
        detect_all(img)
    detect = time.perf_counter() - start

    print(f"threads {args.threads}, {args.steps} DDIM steps, guidance {DEFAULT_GUIDANCE}")
    print(f"batched: {args.n} images in {batched:.2f} s = {args.n / batched:.1f} images/s (target: 64 in <= 10 s)")
    print(f"one at a time (reference): {1 / single:.1f} images/s; batching speed-up x{single * args.n / batched:.1f}")
    print(f"detector on generated images: {args.n / detect:.0f} images/s")


if __name__ == "__main__":
    main()
