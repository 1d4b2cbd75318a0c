"""Editor interface: image + prompt + instructions -> edited image (the edit step of RPO).

Two methods, chosen by whether a ControlNet is configured:
- "controlnet": ControlNet img2img. The original image is both the starting point and the
  control image, and the text is the original prompt followed by the edit instructions (the
  RPO recipe): the ControlNet holds the layout while the instructions change what they name.
- "sdedit": plain img2img (SDEdit), the fallback: noise the original to `strength` and denoise
  it under the same text.
Both go through diffusers' `AutoPipelineForImage2Image`, which picks the pipeline class for the
model (SD 1.5 / 2.x / SDXL, with or without ControlNet). The edit's noise comes from its seed
alone, so the same (image, prompt, instructions, seed, settings) gives the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from atelier.tools.diffusers_generator import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    DiffusersOptions,
    check_pipeline_folder,
    check_placement,
    prepare_pipeline,
    quiet_loading,
    seeded_generators,
)

DEFAULT_STRENGTH = 0.6  # enough noise for the instructions to act, little enough to keep the scene


@dataclass(frozen=True)
class EditResult:
    """The edited image and exactly how it was made."""

    image: Image.Image = field(repr=False)
    prompt: str  # the text the pipeline was given: original prompt + instructions
    seed: int
    strength: float
    steps: int
    guidance_scale: float
    method: str  # "controlnet" or "sdedit"

    def record(self) -> dict:
        """The settings, without the image: a row for a metadata file."""
        row = asdict(self)
        del row["image"]
        return row


def edit_prompt(prompt: str, instructions: list[str]) -> str:
    """The original prompt followed by the instructions, each as its own sentence."""
    sentences = [prompt.strip().rstrip(".")] + [i.strip().rstrip(".") for i in instructions if i.strip()]
    return ". ".join(sentences) + "."


def weakest_strength(steps: int) -> float:
    """The smallest strength, to three decimals, at which `steps` denoise at least once."""
    weakest = math.ceil(1000 / steps) / 1000
    while int(steps * weakest) < 1:  # the pipelines' own float arithmetic decides
        weakest = round(weakest + 0.001, 3)
    return min(weakest, 1.0)


def check_strength(strength: float, steps: int) -> None:
    """Refuse settings under which img2img would not denoise at all, before any sampling.

    diffusers' img2img pipelines (SD, SDXL, ControlNet) run int(steps * strength) denoising
    steps from the noised original; at 0 they hand an empty latent batch to the VAE, which fails
    with "cannot reshape tensor of 0 elements"."""
    if steps < 1:
        raise ValueError(f"steps {steps}: expected at least 1")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength {strength}: expected a value in (0, 1]")
    if int(steps * strength) < 1:
        needed = math.ceil(1 / strength)
        while int(needed * strength) < 1:
            needed += 1
        raise ValueError(
            f"strength {strength} with {steps} steps leaves int({steps} x {strength}) = 0 denoising steps, "
            f"an edit that cannot run; use strength >= {weakest_strength(steps):g} or steps >= {needed}"
        )


def load_editor(
    model: str | Path,
    controlnet: str | Path | None = None,
    device: str = "cpu",
    options: DiffusersOptions = DiffusersOptions(),
    adapter: str | Path | None = None,
    scale: float = 1.0,
):
    """An img2img pipeline for `model` (hub id or local folder): with `controlnet` (hub id or
    folder of a ControlNetModel) the ControlNet img2img pipeline, without it plain img2img."""
    from diffusers import AutoPipelineForImage2Image, ControlNetModel

    dtype = check_placement(device, options)
    check_pipeline_folder(model)
    quiet_loading()
    extra = {}
    if controlnet is not None:
        extra["controlnet"] = ControlNetModel.from_pretrained(str(controlnet), dtype=dtype)
    pipe = AutoPipelineForImage2Image.from_pretrained(str(model), dtype=dtype, **extra)
    return prepare_pipeline(pipe, device, options, adapter, scale)


def edit_method(editor) -> str:
    return "controlnet" if editor.components.get("controlnet") is not None else "sdedit"


@torch.no_grad()
def edit(
    editor,
    image: Image.Image,
    prompt: str,
    instructions: list[str],
    seed: int,
    strength: float = DEFAULT_STRENGTH,
    steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    controlnet_scale: float = 1.0,
) -> EditResult:
    """`image` edited by `instructions`, at the original image's size. The pipeline denoises
    int(steps * strength) steps; settings that give none are refused (`check_strength`)."""
    check_strength(strength, steps)
    text = edit_prompt(prompt, instructions)
    method = edit_method(editor)
    image = image.convert("RGB")
    kwargs = dict(
        prompt=text,
        image=image,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=seeded_generators([seed]),
        output_type="pil",
    )
    if method == "controlnet":
        kwargs.update(control_image=image, controlnet_conditioning_scale=controlnet_scale)
    edited = editor(**kwargs).images[0]
    # The pipelines round sizes down to a multiple of the VAE's factor; a pair must match.
    if edited.size != image.size:
        edited = edited.resize(image.size, Image.Resampling.LANCZOS)
    return EditResult(edited, text, seed, strength, steps, guidance_scale, method)
