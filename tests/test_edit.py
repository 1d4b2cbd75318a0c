"""The editor on real diffusers img2img pipelines (ControlNet img2img and SDEdit), loaded with
the real `from_pretrained` code from tiny models (tests/tiny_models.py)."""

import re

import numpy as np
import pytest
from PIL import Image, ImageDraw

from atelier.tools.edit import edit, edit_prompt, load_editor

STEPS = 4  # at strength 0.5, two denoising steps: the tests check plumbing, not image quality

PROMPT = "a red circle left of a blue square"
INSTRUCTIONS = ["make it more colorful", "add a blue sky"]


def scene(size=(64, 64)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((4, 20, 28, 44), fill="red")
    draw.rectangle((36, 20, 58, 42), fill="blue")
    return image


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def controlnet_editor(tiny_sd15, tiny_controlnet):
    return load_editor(str(tiny_sd15), controlnet=str(tiny_controlnet))


@pytest.fixture(scope="module")
def sdedit_editor(tiny_sd15):
    return load_editor(str(tiny_sd15))


def test_edit_prompt_is_the_prompt_followed_by_the_instructions():
    assert edit_prompt("a red circle.", ["make it blue", " add a sky. "]) == "a red circle. make it blue. add a sky."
    assert edit_prompt("a cat", []) == "a cat."


def test_controlnet_edit_keeps_the_size_and_records_its_settings(controlnet_editor):
    assert type(controlnet_editor).__name__ == "StableDiffusionControlNetImg2ImgPipeline"
    result = edit(controlnet_editor, scene(), PROMPT, INSTRUCTIONS, seed=3, strength=0.5, steps=STEPS)
    assert result.image.size == (64, 64) and result.image.mode == "RGB"
    assert result.record() == {"prompt": f"{PROMPT}. make it more colorful. add a blue sky.", "seed": 3, "strength": 0.5,
                               "steps": STEPS, "guidance_scale": 7.5, "method": "controlnet"}


def test_sdedit_edit_keeps_an_odd_size_and_records_its_settings(sdedit_editor):
    assert type(sdedit_editor).__name__ == "StableDiffusionImg2ImgPipeline"
    result = edit(sdedit_editor, scene((60, 52)), PROMPT, INSTRUCTIONS, seed=3, strength=0.5, steps=STEPS)
    assert result.image.size == (60, 52)  # the pipeline works at 56x48; the pair must match the original
    assert result.method == "sdedit" and result.seed == 3 and result.strength == 0.5 and result.steps == STEPS


@pytest.mark.parametrize("method", ["controlnet", "sdedit"])
def test_edits_are_deterministic_per_seed(request, method):
    editor = request.getfixturevalue(f"{method}_editor")
    a, b, c = (edit(editor, scene(), PROMPT, INSTRUCTIONS, seed=s, strength=0.5, steps=STEPS) for s in (5, 5, 6))
    assert np.array_equal(pixels(a.image), pixels(b.image))
    assert np.abs(pixels(a.image) - pixels(c.image)).mean() > 1


def test_the_control_image_steers_the_edit(controlnet_editor, sdedit_editor):
    # Same model, text, seed and strength: only the ControlNet's residuals differ.
    with_control = edit(controlnet_editor, scene(), PROMPT, INSTRUCTIONS, seed=8, strength=0.5, steps=STEPS)
    without = edit(sdedit_editor, scene(), PROMPT, INSTRUCTIONS, seed=8, strength=0.5, steps=STEPS)
    assert np.abs(pixels(with_control.image) - pixels(without.image)).mean() > 1


def test_sdxl_sdedit(tiny_sdxl):
    editor = load_editor(str(tiny_sdxl))
    assert type(editor).__name__ == "StableDiffusionXLImg2ImgPipeline"
    result = edit(editor, scene(), PROMPT, INSTRUCTIONS, seed=1, strength=0.5, steps=STEPS)
    assert result.image.size == (64, 64) and result.method == "sdedit"


def test_strength_out_of_range_is_a_clear_error(sdedit_editor):
    with pytest.raises(ValueError, match="strength 0.0"):
        edit(sdedit_editor, scene(), PROMPT, INSTRUCTIONS, seed=0, strength=0.0)


@pytest.mark.parametrize("method", ["controlnet", "sdedit"])
@pytest.mark.parametrize("strength, steps, fix", [(0.05, 10, "strength >= 0.1 or steps >= 20"),
                                                  (0.03, 25, "strength >= 0.04 or steps >= 34"),
                                                  (0.5, 1, "strength >= 1 or steps >= 2")])
def test_an_edit_too_weak_for_one_step_is_refused_before_sampling(request, method, strength, steps, fix):
    # diffusers runs int(steps * strength) denoising steps; 0 ends in the VAE's "cannot reshape
    # tensor of 0 elements". The error names strength, steps and what would work.
    editor = request.getfixturevalue(f"{method}_editor")
    with pytest.raises(ValueError, match=rf"^strength {strength} with {steps} steps .*0 denoising steps.*{re.escape(fix)}") as e:
        edit(editor, scene(), PROMPT, INSTRUCTIONS, seed=0, strength=strength, steps=steps)
    assert "\n" not in str(e.value)


def test_the_weakest_edit_named_works(sdedit_editor, tiny_sdxl):
    assert edit(sdedit_editor, scene(), PROMPT, INSTRUCTIONS, seed=0, strength=0.1, steps=10).steps == 10
    with pytest.raises(ValueError, match="strength 0.05 with 10 steps"):
        edit(load_editor(str(tiny_sdxl)), scene(), PROMPT, INSTRUCTIONS, seed=0, strength=0.05, steps=10)
    with pytest.raises(ValueError, match="steps 0: expected at least 1"):
        edit(sdedit_editor, scene(), PROMPT, INSTRUCTIONS, seed=0, strength=0.5, steps=0)


@pytest.mark.parametrize("steps", [3, 7, 10, 12, 25, 29, 49, 50, 98])
def test_the_named_minimum_is_exact(steps):
    from atelier.tools.edit import weakest_strength

    weakest = weakest_strength(steps)
    assert int(steps * weakest) >= 1 and int(steps * (weakest - 0.001)) < 1
