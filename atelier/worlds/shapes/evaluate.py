"""Evaluate a shapes pipeline on scenes: generate seeded images, detect, judge, aggregate.

Generation and judging are separate so that the loop can judge images it already has on disk.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from atelier.worlds.shapes.detect import ShapesDetector
from atelier.worlds.shapes.heldout import heldout_scenes
from atelier.worlds.shapes.metrics import Judgment, judge_image, summarize
from atelier.worlds.shapes.scene import Scene, caption
from atelier.tools.diffusers_generator import DiffusersOptions
from atelier.tools.generate import GenerationRequest, generate
from atelier.worlds.shapes.model import load_generator

from atelier.worlds.shapes.model import DEFAULT_GUIDANCE, DEFAULT_STEPS

MAX_IMAGES_PER_PROMPT = 16  # image_seed leaves room for 16 images per prompt


def image_seed(seed: int, prompt_index: int, k: int) -> int:
    """The seed of image k of prompt `prompt_index` in an evaluation seeded by `seed`."""
    return seed * 100003 + prompt_index * MAX_IMAGES_PER_PROMPT + k


def generate_images(
    pipe,
    scenes: Sequence[Scene],
    images_per_prompt: int = 4,
    seed: int = 0,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    batch_size: int = 64,
) -> list[list[Image.Image]]:
    """images[i][k]: image k of scene i, each from its own deterministic seed."""
    if not 1 <= images_per_prompt <= MAX_IMAGES_PER_PROMPT:
        raise ValueError(f"images_per_prompt must be in 1..{MAX_IMAGES_PER_PROMPT}, got {images_per_prompt}")
    jobs = [(i, k) for i in range(len(scenes)) for k in range(images_per_prompt)]
    request = GenerationRequest([caption(scenes[i]) for i, _ in jobs], [image_seed(seed, i, k) for i, k in jobs],
                                num_inference_steps, guidance_scale, batch_size)
    images: list[list[Image.Image]] = [[] for _ in scenes]
    for (i, _), image in zip(jobs, generate(pipe, request)):
        images[i].append(image)
    return images


def judge_images(
    scenes: Sequence[Scene], images: Sequence[Sequence[Image.Image]], detector: ShapesDetector | None = None
) -> tuple[list[Judgment], dict]:
    """Judge images[i][k] against scenes[i]; returns every judgment and the aggregate metrics.

    Every object found is kept (not only the prompt's), so colour and shape accuracy can tell
    a wrong colour from a missing object.
    """
    if len(images) != len(scenes):
        raise ValueError(f"{len(images)} image lists for {len(scenes)} scenes")
    detector = detector or ShapesDetector()
    judgments = [
        judge_image(scene, detector.detect_all(image), prompt_index=i)
        for i, (scene, per_prompt) in enumerate(zip(scenes, images))
        for image in per_prompt
    ]
    return judgments, summarize(judgments)


def evaluate(
    pipe,
    scenes: Sequence[Scene],
    images_per_prompt: int = 4,
    seed: int = 0,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    batch_size: int = 64,
) -> dict:
    """Metrics of `pipe` on `scenes` (see metrics.summarize), with the seed that reproduces them."""
    images = generate_images(pipe, scenes, images_per_prompt, seed, num_inference_steps, guidance_scale, batch_size)
    _, metrics = judge_images(scenes, images)
    return {**metrics, "seed": seed, "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale}


def evaluate_model(
    model: str = "shapes",
    adapter: str | None = None,
    n_prompts: int = 80,
    seed: int = 0,
    device: str = "cpu",
    images_per_prompt: int = 4,
    dtype: str = "float32",
    adapter_min_timestep: int = 0,
) -> dict:
    """Held-out metrics of a shapes model folder ('shapes' = the shipped one), optionally with a LoRA
    (acting only at sampling timesteps >= adapter_min_timestep)."""
    scenes = heldout_scenes()
    if not 1 <= n_prompts <= len(scenes):
        raise ValueError(f"n_prompts must be in 1..{len(scenes)}, got {n_prompts}")
    options = DiffusersOptions(dtype=dtype, adapter_min_timestep=adapter_min_timestep)
    pipe = load_generator(model, adapter, device=device, options=options)
    metrics = evaluate(pipe, scenes[:n_prompts], images_per_prompt=images_per_prompt, seed=seed)
    return {**metrics, "model": model, "adapter": adapter, "dtype": dtype, "adapter_min_timestep": adapter_min_timestep}
