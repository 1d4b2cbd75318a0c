"""Generator interface: prompts + seeds -> images, with the adapter and scale that made them.

For the shapes world this loads the shipped (or a given) ShapesPipeline; an adapter is loaded
with the pipeline's own `load_lora_weights`, so anything that works here works for any
diffusers user of the same adapter folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from atelier.shapes.model import DEFAULT_GUIDANCE, DEFAULT_STEPS, SHIPPED_MODEL_DIR, load_pipeline

ADAPTER_NAME = "atelier"


@dataclass(frozen=True)
class GenerationRequest:
    prompts: list[str]
    seeds: list[int]
    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    batch_size: int = 64


def resolve_model(model: str) -> Path:
    """'shapes' is the shipped model folder; anything else is a local shapes-model folder."""
    return SHIPPED_MODEL_DIR if model == "shapes" else Path(model)


def load_generator(model: str = "shapes", adapter: str | Path | None = None, scale: float = 1.0, device: str = "cpu"):
    """A pipeline ready to sample, with `adapter` loaded at `scale` (None = the base model)."""
    pipe = load_pipeline(resolve_model(model), device=device)
    if adapter is not None:
        pipe.load_lora_weights(str(adapter), adapter_name=ADAPTER_NAME)
        pipe.set_adapters([ADAPTER_NAME], [scale])
    return pipe


def generate(pipe, request: GenerationRequest) -> list[Image.Image]:
    """Images in prompt order. Image i's starting noise comes from seed i alone; the same
    requests in the same batches give the same pixels (CPU matmuls may differ by batch size)."""
    if len(request.prompts) != len(request.seeds):
        raise ValueError(f"{len(request.seeds)} seeds for {len(request.prompts)} prompts")
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
