"""The generator on real diffusers pipelines (SD 1.5, SD 2.1-v, SDXL), loaded with the real
`from_pretrained` code from tiny models of the same architectures (tests/tiny_models.py)."""

import json

import numpy as np
import pytest
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

from atelier.cli import main as atelier_main
from atelier.config import ConfigError, parse_config
from atelier.worlds.shapes.model import DEFAULT_GUIDANCE, DEFAULT_STEPS, SHIPPED_MODEL_DIR
from atelier.tools.diffusers_generator import DiffusersOptions, make_scheduler
from atelier.tools.generate import GenerationRequest, generate, load_generator
from atelier.tools.model_folders import is_shapes_model
from atelier.worlds.shapes.model import load_generator as load_shapes_generator

STEPS = 3  # a handful of sampler steps: the tests check plumbing, not image quality



def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def make_request(prompts, seeds, **kwargs) -> GenerationRequest:
    return GenerationRequest(prompts, seeds, steps=STEPS, guidance_scale=5.0, **kwargs)


@pytest.fixture(scope="module")
def sd15_pipe(tiny_sd15):
    return load_generator(str(tiny_sd15))


@pytest.mark.parametrize(
    "model, pipeline_class, prediction",
    [
        ("tiny_sd15", "StableDiffusionPipeline", "epsilon"),
        ("tiny_sd21v", "StableDiffusionPipeline", "v_prediction"),
        ("tiny_sdxl", "StableDiffusionXLPipeline", "epsilon"),
    ],
)
def test_each_architecture_loads_and_generates_at_its_size(request, model, pipeline_class, prediction):
    pipe = load_generator(str(request.getfixturevalue(model)))
    assert type(pipe).__name__ == pipeline_class
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)  # the default sampler
    assert pipe.scheduler.config.prediction_type == prediction
    images = generate(pipe, make_request(["a red circle", "a photo of a cat"], [0, 1]))
    assert [im.size for im in images] == [(64, 64), (64, 64)]  # 8x8 latents, VAE factor 8
    assert all(im.mode == "RGB" for im in images)


def test_height_and_width_are_passed_through(sd15_pipe):
    (image,) = generate(sd15_pipe, make_request(["a cat"], [0], height=32, width=48))
    assert image.size == (48, 32)


def test_same_seed_same_pixels_and_image_depends_on_its_own_seed(sd15_pipe):
    prompts, seeds = ["a red circle", "a photo of a dog"], [5, 6]
    first = generate(sd15_pipe, make_request(prompts, seeds))
    again = generate(sd15_pipe, make_request(prompts, seeds))
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(first, again))
    # Image 1 drawn alone equals image 1 drawn in the batch, up to the rounding of batched CPU
    # matmuls: at most 2/255 per channel.
    (alone,) = generate(sd15_pipe, make_request(prompts[1:], seeds[1:]))
    assert np.abs(pixels(alone) - pixels(first[1])).max() <= 2
    # Batched in chunks of one, the batch is exactly the single-image runs.
    chunked = generate(sd15_pipe, make_request(prompts, seeds, batch_size=1))
    assert np.array_equal(pixels(chunked[1]), pixels(alone))
    (other_seed,) = generate(sd15_pipe, make_request(prompts[1:], [7]))
    assert np.abs(pixels(other_seed) - pixels(alone)).mean() > 5


@pytest.mark.parametrize(
    "name, cls",
    [("dpm++2m", DPMSolverMultistepScheduler), ("ddim", DDIMScheduler), ("euler", EulerDiscreteScheduler),
     ("euler_a", EulerAncestralDiscreteScheduler)],
)
def test_every_scheduler_keeps_v_prediction(tiny_sd21v, name, cls):
    base = DDIMScheduler.from_pretrained(tiny_sd21v, subfolder="scheduler")
    scheduler = make_scheduler(name, base.config)
    assert isinstance(scheduler, cls)
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.beta_schedule == "scaled_linear"


def test_ancestral_sampler_on_v_prediction_is_deterministic_per_seed(tiny_sd21v):
    pipe = load_generator(str(tiny_sd21v), options=DiffusersOptions(scheduler="euler_a"))
    assert isinstance(pipe.scheduler, EulerAncestralDiscreteScheduler)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    a = generate(pipe, make_request(["a cat", "a dog"], [3, 4]))
    b = generate(pipe, make_request(["a cat", "a dog"], [3, 4]))
    assert all(np.array_equal(pixels(x), pixels(y)) for x, y in zip(a, b))


def test_unknown_scheduler_is_named_in_the_error(tiny_sd15):
    with pytest.raises(ValueError, match="'heun'"):
        load_generator(str(tiny_sd15), options=DiffusersOptions(scheduler="heun"))


def test_half_precision_on_cpu_is_a_clear_error(tiny_sd15):
    with pytest.raises(ValueError, match="float16.*CUDA"):
        load_generator(str(tiny_sd15), device="cpu", options=DiffusersOptions(dtype="float16"))
    with pytest.raises(ValueError, match="cpu_offload"):
        load_generator(str(tiny_sd15), device="cpu", options=DiffusersOptions(cpu_offload=True))
    with pytest.raises(ConfigError, match="generation.dtype 'float16'"):
        parse_config({"goal": "draw cats", "device": "cpu", "generation": {"dtype": "float16"}})
    with pytest.raises(ValueError, match="shapes model runs in float32 or bfloat16"):
        load_shapes_generator("shapes", options=DiffusersOptions(dtype="float16"))


def test_generation_config_defaults_leave_the_shapes_world_unchanged():
    gen = parse_config({"goal": "draw cats"}).generation
    assert (gen.steps, gen.guidance_scale, gen.batch_size) == (DEFAULT_STEPS, DEFAULT_GUIDANCE, 64)
    assert (gen.dtype, gen.scheduler, gen.lora_scale) == ("auto", "dpm++2m", 1.0)
    assert not (gen.vae_tiling or gen.vae_slicing or gen.cpu_offload)


def test_lora_at_scale_one_changes_the_output_and_at_zero_restores_the_base(sd15_pipe, tiny_sd15, tiny_sd15_lora):
    req = make_request(["a red circle"], [11])
    (base,) = generate(sd15_pipe, req)
    (with_lora,) = generate(load_generator(str(tiny_sd15), tiny_sd15_lora, scale=1.0), req)
    (scale_zero,) = generate(load_generator(str(tiny_sd15), tiny_sd15_lora, scale=0.0), req)
    assert np.abs(pixels(with_lora) - pixels(base)).mean() > 2
    assert np.abs(pixels(scale_zero) - pixels(base)).max() <= 1  # a zero-scaled LoRA adds exact zeros


def test_memory_switches_reach_the_vae(tiny_sd15):
    pipe = load_generator(str(tiny_sd15), options=DiffusersOptions(vae_tiling=True, vae_slicing=True))
    assert pipe.vae.use_tiling and pipe.vae.use_slicing
    (image,) = generate(pipe, make_request(["a cat"], [0]))
    assert image.size == (64, 64)


def test_shapes_models_are_told_apart_from_diffusers_pipelines(tiny_sd15, tmp_path):
    assert is_shapes_model("shapes") and is_shapes_model(SHIPPED_MODEL_DIR)
    assert not is_shapes_model(tiny_sd15) and not is_shapes_model("stabilityai/sdxl-turbo")
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_generator(str(tmp_path))


def test_generate_cli_with_a_local_diffusers_model(tiny_sd15, tmp_path, capsys):
    out = tmp_path / "gen"
    code = atelier_main(["generate", "--model", str(tiny_sd15), "--prompt", "a photo of a cat", "--prompt", "a red circle",
                         "--n", "2", "--seed", "10", "--steps", str(STEPS), "--scheduler", "euler", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == [10, 11, 12, 13]
    assert [r["prompt"] for r in rows] == ["a photo of a cat"] * 2 + ["a red circle"] * 2
    for r in rows:
        assert {"prompt", "seed", "model", "adapter", "scale", "file"} <= set(r)
        assert r["model"] == str(tiny_sd15) and r["scheduler"] == "euler" and r["steps"] == STEPS
        assert (out / r["file"]).exists()


def test_generate_cli_float16_on_cpu_is_one_line_exit_2(tiny_sd15, tmp_path, capsys):
    code = atelier_main(["generate", "--model", str(tiny_sd15), "--prompt", "a cat", "--dtype", "float16",
                         "--out", str(tmp_path / "gen")])
    err = capsys.readouterr().err
    assert code == 2 and "float16" in err and err.strip().count("\n") == 0
