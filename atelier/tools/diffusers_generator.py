"""Real text-to-image models through diffusers: SD 1.5, SD 2.x (v-prediction too), SDXL.

A model is a hub id or a local pipeline folder, loaded with `AutoPipelineForText2Image`, which
picks the pipeline class its model_index.json names. Device and dtype are always given, never
guessed: float16/bfloat16 belong on a CUDA device, float32 on the CPU. Every image gets its own
torch.Generator seeded with its own seed, so an image depends on its seed and prompt alone, not
on the batch it was drawn in (up to the float rounding of batched matmuls).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)
from diffusers.utils import logging as diffusers_logging
from PIL import Image
from transformers.utils import logging as transformers_logging

from atelier.tools.adapter_gate import gate_adapter_by_timestep
from atelier.tools.model_folders import looks_local
from atelier.tools.dtype import resolve_dtype
from atelier.tools.lora import adapter_lora_keys, check_adapter_loaded, pipeline_lora_modules

ADAPTER_NAME = "atelier"
DEFAULT_STEPS = 25  # enough for DPM-Solver++ 2M on SD-class models
DEFAULT_GUIDANCE = 7.5
SCHEDULERS = ("dpm++2m", "ddim", "euler", "euler_a")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class DiffusersOptions:
    """How a diffusers model is loaded and sampled (the config's `generation` section)."""

    dtype: str = "float32"
    scheduler: str = "dpm++2m"
    vae_tiling: bool = False
    vae_slicing: bool = False
    cpu_offload: bool = False
    adapter_min_timestep: int = 0  # the adapter acts only at sampling timesteps >= this (0 = every step)


def torch_dtype(name: str, device: str) -> torch.dtype:
    """The dtype named ("auto", "float32", "float16" or "bfloat16"), checked against the device:
    half precision on a CPU is slow or broken. "auto" resolves through
    `atelier.tools.dtype.resolve_dtype(..., autocast=False)`: bfloat16 (or float16 without native
    bf16) on CUDA, float32 on a CPU. "float16" on a CPU is an error; "bfloat16" on a CPU without
    AVX512-BF16/AMX runs, with a one-time warning (16-22x slower than float32 there)."""
    return DTYPES[resolve_dtype(name, device, autocast=False)]


def make_scheduler(name: str, config):
    """A sampler built from the model's own scheduler config, so its training settings
    (beta schedule, prediction_type such as v_prediction, timestep spacing) carry over."""
    match name:
        case "dpm++2m":
            return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
        case "ddim":
            return DDIMScheduler.from_config(config)
        case "euler":
            return EulerDiscreteScheduler.from_config(config)
        case "euler_a":
            return EulerAncestralDiscreteScheduler.from_config(config)
        case _:
            raise ValueError(f"scheduler {name!r}: expected one of {', '.join(SCHEDULERS)}")


def check_placement(device: str, options: DiffusersOptions) -> torch.dtype:
    """The dtype to load in ("auto" resolved, see `torch_dtype`), after checking that `options`
    can run on `device`."""
    dtype = torch_dtype(options.dtype, device)
    if options.cpu_offload and torch.device(device).type == "cpu":
        raise ValueError(f"cpu_offload on device {device!r}: offloading moves models to an accelerator; give a CUDA device")
    return dtype


def check_pipeline_folder(model: str | Path) -> None:
    """A local path must hold a pipeline; anything else is left to the hub ("org/name")."""
    # Never send a local path to the hub: say what is missing instead.
    if looks_local(model) and not (Path(model) / "model_index.json").exists():
        raise FileNotFoundError(f"no diffusers pipeline at {model} (expected model_index.json)")


def quiet_loading() -> None:
    # A loop loads models many times per round: their loading bars would bury the progress.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def load_adapter(pipe, adapter: str | Path, scale: float = 1.0, min_timestep: int = 0, allow_partial: bool = False):
    """A diffusers-format LoRA folder into `pipe`, applied at `scale`, at the sampling timesteps
    from `min_timestep` up (0 = every step; atelier.tools.adapter_gate). Returns the gate's hook
    handle (None without a gate), to remove it when the adapter is unloaded.

    The adapter must load whole: diffusers drops LoRA keys that match no module of the model
    (another architecture's adapter, renamed modules) without a word, and the pipeline would
    sample with the rest. Here that is a ValueError naming the keys, and the pipeline is left
    without the adapter; `allow_partial=True` warns instead and keeps the part that loaded."""
    # UNet-only adapters (atelier trains the UNet by default) make diffusers warn, once per
    # load, that the text encoder got no LoRA keys; that buries a loop's progress lines. The
    # keys that did not load are checked below instead.
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        pipe.load_lora_weights(str(adapter), adapter_name=ADAPTER_NAME)
        keys = adapter_lora_keys(pipe, adapter)
    finally:
        diffusers_logging.set_verbosity(level)
    try:
        check_adapter_loaded(adapter, keys, pipeline_lora_modules(pipe), ADAPTER_NAME, allow_partial)
    except ValueError:
        pipe.delete_adapters([ADAPTER_NAME])
        raise
    pipe.set_adapters([ADAPTER_NAME], [scale])
    return gate_adapter_by_timestep(pipe.unet, min_timestep)


def prepare_pipeline(pipe, device: str, options: DiffusersOptions, adapter: str | Path | None = None, scale: float = 1.0):
    """Sampler, LoRA adapter at `scale`, memory switches, and placement on `device`."""
    pipe.scheduler = make_scheduler(options.scheduler, pipe.scheduler.config)
    if adapter is not None:
        load_adapter(pipe, adapter, scale, options.adapter_min_timestep)
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    if options.vae_slicing:
        pipe.vae.enable_slicing()
    if options.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)  # each model moves to `device` only while it runs
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_diffusers_pipeline(
    model: str | Path,
    adapter: str | Path | None = None,
    scale: float = 1.0,
    device: str = "cpu",
    options: DiffusersOptions = DiffusersOptions(),
):
    """A text-to-image pipeline on `device`, in `options.dtype`, sampling with
    `options.scheduler`, with `adapter` (a diffusers-format LoRA folder) loaded at `scale`."""
    from diffusers import AutoPipelineForText2Image  # imports every pipeline family: only when needed

    dtype = check_placement(device, options)
    check_pipeline_folder(model)
    quiet_loading()
    pipe = AutoPipelineForText2Image.from_pretrained(str(model), dtype=dtype)
    return prepare_pipeline(pipe, device, options, adapter, scale)


def seeded_generators(seeds: list[int]) -> list[torch.Generator]:
    # CPU generators: the same seed gives the same starting noise on any device.
    return [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]


def generate_diffusers(
    pipe,
    prompts: list[str],
    seeds: list[int],
    steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    batch_size: int = 8,
    height: int | None = None,
    width: int | None = None,
) -> list[Image.Image]:
    """Images in prompt order, image i drawn from seeds[i]; height/width None = the model's size."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch_size):
        end = start + batch_size
        out = pipe(
            prompt=prompts[start:end],
            generator=seeded_generators(seeds[start:end]),
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            output_type="pil",
        )
        images.extend(out.images)
    return images
