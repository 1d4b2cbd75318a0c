"""An adapter that acts only in the noisy sampling steps (generation.adapter_min_timestep), on the
shapes UNet, a saved shapes model and a tiny Stable Diffusion 1.5 pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main as atelier_main
from atelier.config import ConfigError, parse_config
from atelier.worlds.shapes.model import new_pipeline
from atelier.tools.adapter_gate import gate_adapter_by_timestep
from atelier.tools.diffusers_generator import DiffusersOptions
from atelier.tools.generate import GenerationRequest, generate, generation_options, load_generator
from atelier.worlds.shapes.model import load_generator as load_shapes_generator
from atelier.tools.lora import add_lora, save_adapter


def _random_lora(unet) -> None:
    """A LoRA whose B is not zero, so that it changes the UNet's output from the start."""
    add_lora(unet, rank=4)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)


@pytest.fixture(scope="module")
def shapes_model_and_adapter(tmp_path_factory):
    torch.manual_seed(0)
    pipe = new_pipeline()
    root = tmp_path_factory.mktemp("gate")
    pipe.save_pretrained(root / "model")
    _random_lora(pipe.unet)
    save_adapter(pipe.unet, root / "adapter", {"what": "random test adapter"})
    return root / "model", root / "adapter"


def _unet_out(unet, x, t, emb) -> torch.Tensor:
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=emb).sample


def test_the_gate_switches_the_adapter_by_timestep_at_every_call():
    torch.manual_seed(0)
    pipe = new_pipeline()
    unet = pipe.unet
    _random_lora(unet)
    x = torch.randn(2, 3, 32, 32)
    emb = pipe.encode(["a red circle", "a blue square"])
    on = {t: _unet_out(unet, x, torch.tensor(t), emb) for t in (900, 100)}
    unet.disable_adapters()
    off = {t: _unet_out(unet, x, torch.tensor(t), emb) for t in (900, 100)}
    unet.enable_adapters()
    assert not torch.allclose(on[900], off[900])  # the adapter matters at both timesteps

    handle = gate_adapter_by_timestep(unet, 500)
    # Noisy, clean, noisy again: the adapter comes back on after a late step.
    assert torch.equal(_unet_out(unet, x, torch.tensor(900), emb), on[900])
    assert torch.equal(_unet_out(unet, x, torch.tensor(100), emb), off[100])
    assert torch.equal(_unet_out(unet, x, torch.tensor(900), emb), on[900])
    # A timestep passed by keyword, as a batch of equal values, is read the same way.
    with torch.no_grad():
        by_keyword = unet(x, timestep=torch.tensor([100, 100]), encoder_hidden_states=emb).sample
    assert torch.equal(by_keyword, off[100])
    handle.remove()
    unet.enable_adapters()
    assert gate_adapter_by_timestep(unet, 0) is None  # 0 = every step: nothing to hook


def _shapes_images(model, adapter, min_timestep: int) -> np.ndarray:
    pipe = load_shapes_generator(str(model), adapter, options=DiffusersOptions(adapter_min_timestep=min_timestep))
    request = GenerationRequest(["a red circle", "two blue squares"], [3, 4], steps=4, guidance_scale=3.0)
    return np.stack([np.asarray(im, dtype=np.int16) for im in generate(pipe, request)])


def test_shapes_generator_with_a_gated_adapter(shapes_model_and_adapter):
    model, adapter = shapes_model_and_adapter
    base = _shapes_images(model, None, 0)
    full = _shapes_images(model, adapter, 0)
    assert np.abs(full - base).mean() > 1  # the adapter changes the images
    # A gate at 1 keeps every step of a 4-step sampler on; one above them all is the base model.
    assert np.array_equal(_shapes_images(model, adapter, 1), full)
    assert np.array_equal(_shapes_images(model, adapter, 1000), base)
    middle = _shapes_images(model, adapter, 500)
    assert not np.array_equal(middle, full) and not np.array_equal(middle, base)


def test_diffusers_pipeline_with_a_gated_adapter(tiny_sd15, tiny_sd15_lora):
    request = GenerationRequest(["a red circle"], [11], steps=3, guidance_scale=5.0)

    def image(adapter, min_timestep: int) -> np.ndarray:
        pipe = load_generator(str(tiny_sd15), adapter, options=DiffusersOptions(adapter_min_timestep=min_timestep))
        return np.asarray(generate(pipe, request)[0], dtype=np.int16)

    base, full = image(None, 0), image(tiny_sd15_lora, 0)
    assert np.abs(full - base).mean() > 2
    assert np.array_equal(image(tiny_sd15_lora, 1), full)
    assert np.abs(image(tiny_sd15_lora, 1000) - base).max() <= 1  # a disabled LoRA adds exact zeros


def test_the_config_field_reaches_the_generator_and_is_bounded():
    cfg = parse_config({"goal": "draw cats", "generation": {"adapter_min_timestep": 749}})
    assert generation_options(cfg.generation).adapter_min_timestep == 749
    assert parse_config({"goal": "draw cats"}).generation.adapter_min_timestep == 0
    with pytest.raises(ConfigError, match="adapter_min_timestep"):
        parse_config({"goal": "draw cats", "generation": {"adapter_min_timestep": 1000}})


def test_generate_cli_gates_the_adapter(tiny_sd15, tiny_sd15_lora, tmp_path, capsys):
    def cli_run(name: str, *extra: str) -> tuple[np.ndarray, dict]:
        out = tmp_path / name
        code = atelier_main(["generate", "--model", str(tiny_sd15), "--prompt", "a red circle", "--n", "1", "--seed", "11",
                             "--steps", "3", "--out", str(out), *extra])
        assert code == 0, capsys.readouterr().err
        (row,) = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
        return np.asarray(Image.open(out / row["file"]), dtype=np.int16), row

    base, _ = cli_run("base")
    full, _ = cli_run("full", "--adapter", str(tiny_sd15_lora))
    gated, row = cli_run("gated", "--adapter", str(tiny_sd15_lora), "--adapter-min-timestep", "999")
    assert np.abs(full - base).mean() > 2
    assert not np.array_equal(gated, full)  # the flag reaches the pipeline
    assert row["adapter_min_timestep"] == 999  # and the images say how they were made


def test_shapes_eval_cli_rejects_a_gate_out_of_range(capsys):
    assert atelier_main(["shapes", "eval", "--n", "1", "--adapter-min-timestep", "1000"]) == 2
    assert "--adapter-min-timestep" in capsys.readouterr().err
    # generate takes the same bounds as the config and shapes eval
    assert atelier_main(["generate", "--prompt", "a red circle", "--out", "unused", "--adapter-min-timestep", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--adapter-min-timestep must be between 0 and 999, got -1" in err and err.strip().count("\n") == 0
