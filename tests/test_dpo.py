"""Diffusion-DPO: the loss against float64, the reference (adapters disabled), and training on
the shapes pixel pipeline, a v-prediction SD 2.1 and SDXL."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from peft import LoraConfig
from PIL import Image

from atelier.worlds.shapes.model import new_pipeline
from atelier.worlds.shapes.render import render
from atelier.worlds.shapes.scene import parse
from atelier.tools.datasets import PreferencePair, write_dpo_jsonl, write_dpo_parquet
from atelier.tools.diffusion_loss import denoising_errors
from atelier.tools.dpo import DPOConfig, diffusion_dpo_loss, dpo_loss_on_pairs, train_diffusion_dpo
from atelier.tools.model_inputs import TextConditioning
from atelier.tools.train_loop import TRAIN_LOG

FAST = DPOConfig(steps=6, batch_size=3, lr=3e-3, beta=500.0, rank=4)
METRICS = {"loss", "implicit_accuracy", "reward_winner", "reward_loser", "reward_margin", "model_loss", "ref_loss"}



def _log(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / TRAIN_LOG).read_text().splitlines()]


def test_loss_matches_float64():
    g = torch.Generator().manual_seed(0)
    mw, ml, rw, rl = (torch.rand(5, generator=g) for _ in range(4))
    beta = 50.0
    loss, metrics = diffusion_dpo_loss(mw, ml, rw, rl, beta)
    inside = -beta / 2 * ((mw.double() - rw.double()) - (ml.double() - rl.double()))
    want = -torch.log(torch.sigmoid(inside)).mean()
    assert abs(loss.item() - want.item()) <= 1e-6 * want.item()
    assert metrics["implicit_accuracy"] == pytest.approx((inside > 0).double().mean().item())
    assert metrics["reward_margin"] == pytest.approx(inside.mean().item(), rel=1e-5)
    assert metrics["reward_winner"] == pytest.approx((-beta / 2 * (mw - rw)).double().mean().item(), rel=1e-5)


def test_model_that_already_prefers_the_winner():
    """Lower error than the reference on winners, higher on losers: accuracy 1, loss < log 2."""
    ref_w, ref_l = torch.full((4,), 0.5), torch.full((4,), 0.5)
    loss, metrics = diffusion_dpo_loss(ref_w - 0.01, ref_l + 0.01, ref_w, ref_l, beta=100.0)
    assert metrics["implicit_accuracy"] == 1.0 and loss.item() < math.log(2)
    assert metrics["reward_margin"] > 0
    # And the other way round.
    loss, metrics = diffusion_dpo_loss(ref_w + 0.01, ref_l - 0.01, ref_w, ref_l, beta=100.0)
    assert metrics["implicit_accuracy"] == 0.0 and loss.item() > math.log(2)


def test_reference_is_the_unet_with_adapters_disabled(tiny_sd15):
    unet = UNet2DConditionModel.from_pretrained(tiny_sd15, subfolder="unet")
    base = copy.deepcopy(unet)
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_v"], init_lora_weights=False))
    sched = DDPMScheduler.from_pretrained(tiny_sd15, subfolder="scheduler")
    g = torch.Generator().manual_seed(1)
    x0_w, x0_l = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    text = TextConditioning(torch.randn(2, 77, 32, generator=g))
    noise, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([100, 700])
    with torch.no_grad():
        loss, metrics = dpo_loss_on_pairs(unet, sched, x0_w, x0_l, text, noise, t, beta=10.0)
        x0, both = torch.cat([x0_w, x0_l]), dict(noise=torch.cat([noise, noise]), t=torch.cat([t, t]))
        ref = denoising_errors(base, sched, x0, both["noise"], both["t"], torch.cat([text.hidden] * 2))
        model = denoising_errors(unet, sched, x0, both["noise"], both["t"], torch.cat([text.hidden] * 2))
    assert metrics["ref_loss"] == pytest.approx(ref.mean().item(), rel=1e-6)
    assert metrics["model_loss"] == pytest.approx(model.mean().item(), rel=1e-6)
    want, _ = diffusion_dpo_loss(*model.chunk(2), *ref.chunk(2), beta=10.0)
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    # Winner = loser: with shared noise and timestep the two halves cancel exactly.
    same, metrics = dpo_loss_on_pairs(unet, sched, x0_w, x0_w, text, noise, t, beta=10.0)
    assert same.item() == pytest.approx(math.log(2)) and metrics["reward_margin"] == 0.0


def _shapes_pairs() -> list[PreferencePair]:
    """Winner: the scene as the caption says; loser: a rendering of another scene."""
    captions = ["a red circle", "two blue squares", "a green triangle to the left of a yellow circle"]
    wrong = ["a blue square", "a yellow circle", "a red triangle"]
    return [PreferencePair.from_images(c, render(parse(c), seed=i), render(parse(w), seed=i))
            for i, (c, w) in enumerate(zip(captions, wrong))]


def test_dpo_on_the_shapes_pixel_pipeline(tmp_path):
    torch.manual_seed(0)
    pipe = new_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pairs = write_dpo_jsonl(tmp_path / "pairs", _shapes_pairs())
    before = pipe("a red circle", seeds=[0], num_inference_steps=2, output_type="np").images
    summary = train_diffusion_dpo(pipe, pairs, tmp_path / "rpo", FAST.model_copy(update={"steps": 8, "lr": 1e-2}))
    assert not getattr(pipe.unet, "peft_config", None)
    assert np.array_equal(pipe("a red circle", seeds=[0], num_inference_steps=2, output_type="np").images, before)
    log = _log(tmp_path / "rpo")
    assert [e["step"] for e in log] == list(range(8)) and all(METRICS <= set(e) for e in log)
    # A zero-initialised LoRA is the reference: the first step is a tie.
    assert log[0]["loss"] == pytest.approx(math.log(2)) and log[0]["reward_margin"] == 0.0
    # It learns to prefer the winners: on the last steps' pairs, loss well below log 2.
    last = log[-4:]
    assert np.mean([e["loss"] for e in last]) < math.log(2) / 2
    assert np.mean([e["implicit_accuracy"] for e in last]) > 0.9 and all(e["reward_margin"] > 0 for e in last)
    assert summary["n_samples"] == 3

    broken = copy.deepcopy(pipe)
    with torch.no_grad():
        broken.unet.conv_in.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="Diffusion-DPO loss is nan at step 0"):
        train_diffusion_dpo(broken, pairs, tmp_path / "nan", FAST)
    assert not (tmp_path / "nan").exists()


@pytest.mark.parametrize(("model", "cls"), [("tiny_sd21v", StableDiffusionPipeline), ("tiny_sdxl", StableDiffusionXLPipeline)])
def test_dpo_adapter_loads_into_a_fresh_pipeline(model, cls, request, tmp_path):
    folder = request.getfixturevalue(model)
    rng = np.random.default_rng(0)
    pairs = [PreferencePair.from_images(c, Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
                                        Image.new("RGB", (64, 64), (128, 128, 128)))
             for c in ["a red cat", "a blue dog", "two horses"]]
    source = write_dpo_parquet(tmp_path / "pairs.parquet", pairs)
    pipe = cls.from_pretrained(folder)
    train_diffusion_dpo(pipe, source, tmp_path / "dpo", FAST.model_copy(update={"steps": 2}))
    meta = json.loads((tmp_path / "dpo" / "atelier_adapter.json").read_text())
    assert meta["prediction_type"] == ("v_prediction" if model == "tiny_sd21v" else "epsilon")
    assert all(np.isfinite(e["loss"]) for e in _log(tmp_path / "dpo"))

    def sample(p):
        p.set_progress_bar_config(disable=True)
        return p("a red cat", num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)).images

    fresh = cls.from_pretrained(folder)
    before = sample(fresh)
    fresh.load_lora_weights(tmp_path / "dpo", adapter_name="dpo")
    assert not np.array_equal(sample(fresh), before)
    fresh.set_adapters(["dpo"], [0.0])
    assert np.array_equal(sample(fresh), before)
