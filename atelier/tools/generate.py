"""Generator interface: prompts + seeds -> images, with the adapter and scale that made them.

Any diffusers text-to-image model (a hub id, or a folder whose model_index.json names a pipeline
such as StableDiffusionPipeline or StableDiffusionXLPipeline) loads through `diffusers_generator`;
the shapes world loads its own pipeline (atelier.worlds.shapes.model.load_generator), which
samples from per-image seeds directly (`samples_by_seed`). Either way an adapter is loaded with
the pipeline's own `load_lora_weights`, so anything that works here works for any diffusers user
of the same adapter folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from atelier.tools.diffusers_generator import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    DiffusersOptions,
    generate_diffusers,
    load_diffusers_pipeline,
)


@dataclass(frozen=True)
class GenerationRequest:
    prompts: list[str]
    seeds: list[int]
    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    batch_size: int = 64
    height: int | None = None  # diffusers models only; None = the model's own size
    width: int | None = None


def generation_options(generation) -> DiffusersOptions:
    """The diffusers options held in a config's `generation` section."""
    return DiffusersOptions(
        dtype=generation.dtype,
        scheduler=generation.scheduler,
        vae_tiling=generation.vae_tiling,
        vae_slicing=generation.vae_slicing,
        cpu_offload=generation.cpu_offload,
        adapter_min_timestep=generation.adapter_min_timestep,
    )


def load_generator(
    model: str,
    adapter: str | Path | None = None,
    scale: float = 1.0,
    device: str = "cpu",
    options: DiffusersOptions | None = None,
):
    """A diffusers pipeline ready to sample, with `adapter` loaded at `scale` (None = the base)."""
    if Path(model).is_dir() and not (Path(model) / "model_index.json").exists():
        raise FileNotFoundError(f"no model at {model} (expected model_index.json)")
    return load_diffusers_pipeline(model, adapter, scale, device, options or DiffusersOptions())


def generate(pipe, request: GenerationRequest) -> list[Image.Image]:
    """Images in prompt order. Image i's starting noise comes from seed i alone; the same
    requests in the same batches give the same pixels (CPU matmuls may differ by batch size)."""
    if len(request.prompts) != len(request.seeds):
        raise ValueError(f"{len(request.seeds)} seeds for {len(request.prompts)} prompts")
    if not getattr(pipe, "samples_by_seed", False):
        return generate_diffusers(pipe, request.prompts, request.seeds, request.steps, request.guidance_scale,
                                  request.batch_size, request.height, request.width)
    images: list[Image.Image] = []
    for start in range(0, len(request.prompts), request.batch_size):
        end = start + request.batch_size
        out = pipe(
            request.prompts[start:end],
            seeds=request.seeds[start:end],
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
            output_type="pil",
        )
        images.extend(out.images)
    return images
