"""Generator interface: prompts + seeds -> images, with the adapter and scale that made them.

Two worlds meet it. For the shapes world this loads the shipped (or a given) ShapesPipeline; any
other model (a hub id, or a folder whose model_index.json names a diffusers pipeline such as
StableDiffusionPipeline or StableDiffusionXLPipeline) goes through `diffusers_generator`. Either
way an adapter is loaded with the pipeline's own `load_lora_weights`, so anything that works here
works for any diffusers user of the same adapter folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from diffusers import DiffusionPipeline
from PIL import Image

from atelier.worlds.shapes.model import DEFAULT_GUIDANCE, DEFAULT_STEPS, SHIPPED_MODEL_DIR, ShapesPipeline, load_pipeline
from atelier.tools.diffusers_generator import DiffusersOptions, generate_diffusers, load_adapter, load_diffusers_pipeline


@dataclass(frozen=True)
class GenerationRequest:
    prompts: list[str]
    seeds: list[int]
    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    batch_size: int = 64
    height: int | None = None  # diffusers models only; None = the model's own size
    width: int | None = None


def resolve_model(model: str) -> Path:
    """'shapes' is the shipped model folder; anything else is a local shapes-model folder."""
    return SHIPPED_MODEL_DIR if model == "shapes" else Path(model)


def is_shapes_model(model: str | Path) -> bool:
    """'shapes', or a folder whose model_index.json names the shapes world's pipeline."""
    if str(model) == "shapes":
        return True
    index = Path(model) / "model_index.json"
    return index.exists() and json.loads(index.read_text()).get("_class_name") == ShapesPipeline.__name__


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
    model: str = "shapes",
    adapter: str | Path | None = None,
    scale: float = 1.0,
    device: str = "cpu",
    options: DiffusersOptions | None = None,
):
    """A pipeline ready to sample, with `adapter` loaded at `scale` (None = the base model).
    `options` (dtype, scheduler, memory switches) apply to diffusers models; the shapes model
    uses its dtype (float32, or bfloat16 autocast) and its own sampler; anything else is an error."""
    if Path(model).is_dir() and not (Path(model) / "model_index.json").exists():
        raise FileNotFoundError(
            f"no model at {model} (expected model_index.json); a shapes model comes from `atelier shapes train-base`"
        )
    if not is_shapes_model(model):
        return load_diffusers_pipeline(model, adapter, scale, device, options or DiffusersOptions())
    pipe = load_pipeline(resolve_model(model), device=device)
    if options is not None:
        pipe.set_compute_dtype(options.dtype)
    if adapter is not None:
        load_adapter(pipe, adapter, scale, (options or DiffusersOptions()).adapter_min_timestep)
    return pipe


def generate(pipe, request: GenerationRequest) -> list[Image.Image]:
    """Images in prompt order. Image i's starting noise comes from seed i alone; the same
    requests in the same batches give the same pixels (CPU matmuls may differ by batch size)."""
    if len(request.prompts) != len(request.seeds):
        raise ValueError(f"{len(request.seeds)} seeds for {len(request.prompts)} prompts")
    # Anything else that samples like ShapesPipeline (seeds=, num_inference_steps=) goes the shapes way.
    if isinstance(pipe, DiffusionPipeline) and not isinstance(pipe, ShapesPipeline):
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
