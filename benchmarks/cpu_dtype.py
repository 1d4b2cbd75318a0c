"""float32 against bf16 autocast on this CPU, for the two things the demo spends its time on:
(a) sampling 64 images with the shipped shapes model (8 steps, default guidance) and (b) 20 LoRA
SFT steps at batch 16 on images it generated. Prints wall times, the bf16/float32 ratio, and what
`cpu_has_fast_bf16()` reports (which is what `dtype: auto` decides by; atelier.tools.dtype).

    .venv/bin/python benchmarks/cpu_dtype.py [--threads 2] [--n 64] [--sft-steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from atelier.tools.dtype import cpu_has_fast_bf16, resolve_dtype
from atelier.tools.sft import SFTConfig, train_lora_sft, write_sft_dataset
from atelier.worlds.shapes.heldout import heldout_captions
from atelier.worlds.shapes.model import DEFAULT_GUIDANCE, load_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=64, help="images sampled per dtype")
    parser.add_argument("--steps", type=int, default=8, help="sampling steps")
    parser.add_argument("--sft-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    checks = {name: getattr(torch.cpu, name, lambda: None)()
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")}
    print(f"torch {torch.__version__}, {args.threads} threads; cpu_has_fast_bf16() = {cpu_has_fast_bf16()} "
          f"({', '.join(f'{k}() = {v}' for k, v in checks.items())}); "
          f"auto -> {resolve_dtype('auto', 'cpu', autocast=True)} for the shapes model")

    pipe = load_pipeline()
    prompts = (heldout_captions() * 8)[: args.n]
    sample, images = {}, None
    for name in ("float32", "bfloat16"):
        pipe.set_compute_dtype(name)
        pipe(prompts[:2], seeds=[0, 1], num_inference_steps=2)  # warm-up of this dtype's kernels
        start = time.perf_counter()
        out = pipe(prompts, seeds=list(range(args.n)), num_inference_steps=args.steps,
                   guidance_scale=DEFAULT_GUIDANCE).images
        sample[name] = time.perf_counter() - start
        images = images or out
    pipe.set_compute_dtype("float32")

    train = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_sft_dataset(Path(tmp) / "data", [{"text": p} for p in prompts], images)
        for name, bf16 in (("float32", False), ("bfloat16", True)):
            cfg = SFTConfig(steps=args.sft_steps, batch_size=args.batch_size, bf16=bf16)
            start = time.perf_counter()
            train_lora_sft(pipe, data, Path(tmp) / f"adapter_{name}", cfg)
            train[name] = time.perf_counter() - start

    for what, t in ((f"sample {args.n} images, {args.steps} steps", sample),
                    (f"LoRA SFT {args.sft_steps} steps, batch {args.batch_size}", train)):
        print(f"{what}: float32 {t['float32']:.2f} s, bf16 autocast {t['bfloat16']:.2f} s, "
              f"bf16/float32 = {t['bfloat16'] / t['float32']:.2f}")


if __name__ == "__main__":
    main()
