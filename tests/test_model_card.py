"""Every adapter a run trains carries a model card (README.md): base model without a machine path,
held-out metrics with intervals, the exact sampling settings with the timestep gate, and a snippet
that, run as it is from the run folder, redraws the adapter's held-out image bit for bit."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from atelier.model_card import base_model_name
from report_helpers import tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def _card(run_dir, round_no: int) -> str:
    return (run_dir / f"round_{round_no:03d}" / "adapter" / "README.md").read_text()


def test_every_adapter_folder_has_a_card_with_its_settings(run):
    run_dir, _ = run
    for r in (1, 2):
        card = _card(run_dir, r)
        front = yaml.safe_load(card.split("---")[1])
        assert front["library_name"] == "diffusers" and "lora" in front["tags"] and "ipr" in front["tags"]
        assert "base_model" not in front  # the shipped shapes model has no hub id; the text names it
        assert "/work/" not in card and "/tmp/" not in card and str(run_dir) not in card  # no machine path
        assert f"round {r} of run `tiny`" in card
        assert "| guidance_scale | 3 |" in card and "| steps | 3 |" in card
        assert "timesteps >= 500" in card and "gate_adapter_by_timestep(pipe.unet, 500)" in card
        assert re.search(r"\| relation_accuracy_cond \| \d\.\d{3} \[\d\.\d\d, \d\.\d\d\] \| \d\.\d{3} \[", card)


def test_the_cards_snippet_redraws_the_held_out_image(run, tmp_path):
    run_dir, _ = run
    card = _card(run_dir, 1)
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    script = tmp_path / "snippet.py"
    script.write_text(snippet)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=run_dir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    drawn = np.asarray(Image.open(run_dir / "sample.png").convert("RGB"))
    evaluated = np.asarray(Image.open(run_dir / "round_001" / "eval" / "images" / "p000_0.png").convert("RGB"))
    (run_dir / "sample.png").unlink()
    assert np.array_equal(drawn, evaluated)  # the adapter, gated, at the evaluation's seed and settings


def test_base_model_is_a_hub_id_or_a_path_relative_to_the_run(tmp_path):
    model = tmp_path / "models" / "sd"
    model.mkdir(parents=True)
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    assert base_model_name("stable-diffusion-v1-5/stable-diffusion-v1-5", run_dir) == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert base_model_name(str(model), run_dir) == os.path.join("..", "..", "models", "sd")
    assert base_model_name("shapes", run_dir) == "shapes"


def test_a_diffusers_models_card_snippet_draws_what_atelier_generate_draws(tmp_path):
    """The open_vocab card on a tiny SD 1.5 with a tiny LoRA: the snippet (diffusers only, plus
    atelier's gate) and `atelier generate` with the same settings give the same image."""
    from atelier.config import parse_config
    from atelier.model_card import card_text
    from tiny_models import build_tiny_lora, build_tiny_sd15

    model = build_tiny_sd15(tmp_path / "models" / "sd15")
    run_dir = tmp_path / "runs" / "r1"
    adapter = build_tiny_lora(model, run_dir / "round_001" / "adapter")
    cfg = parse_config({"goal": "a dog to the left of a cat", "model": str(model), "strategy": "ccsr",
                        "vocabulary": {"classes": ["dog", "cat"]},
                        "generation": {"steps": 3, "guidance_scale": 5.0, "adapter_min_timestep": 500, "dtype": "float32"}})
    record = {"round": 1, "promoted": True, "reason": "test", "metrics": {}}
    card = card_text(adapter, run_dir=run_dir, cfg=cfg, goal=cfg.goal, metric="clip_score", record=record, base={},
                     prompt="a dog to the left of a cat", seed=11)
    assert "base_model: ../../models/sd15" in card and str(tmp_path) not in card
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    (tmp_path / "snippet.py").write_text(snippet)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(tmp_path / "snippet.py")], cwd=run_dir, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "generated"
    made = subprocess.run([sys.executable, "-m", "atelier.cli", "generate", "--model", str(model), "--adapter", str(adapter),
                           "--prompt", "a dog to the left of a cat", "--n", "1", "--seed", "11", "--steps", "3",
                           "--guidance", "5", "--adapter-min-timestep", "500", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    drawn = np.asarray(Image.open(run_dir / "sample.png").convert("RGB")).astype(int)
    generated = np.asarray(Image.open(out / "00000.png").convert("RGB")).astype(int)
    assert drawn.shape == generated.shape and np.abs(drawn - generated).max() <= 1  # same sampler, seed, gate, scale
