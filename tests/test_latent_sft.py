"""Latent LoRA SFT on tiny SD 1.5, SD 2.1-v and SDXL pipelines built from configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from PIL import Image
from safetensors import safe_open

from atelier.tools.datasets import write_sft_dataset
from atelier.tools.diffusion_loss import diffusion_target, min_snr_weights, per_sample_loss, weighted_loss
from atelier.tools.latent_sft import LatentSFTConfig, train_latent_lora_sft
from atelier.tools.lora import ADAPTER_WEIGHTS
from atelier.tools.train_loop import TRAIN_LOG

CAPTIONS = ["a red cat", "a blue dog", "two horses"]
FAST = LatentSFTConfig(steps=3, batch_size=2, lr=1e-2, rank=4, snr_gamma=5.0)



@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(0)
    # Not square and not 64 px: resize + center crop, and SDXL's original-size time ids, are exercised.
    images = [Image.fromarray(rng.integers(0, 256, (80, 72, 3), dtype=np.uint8)) for _ in range(4)]
    rows = [{"text": CAPTIONS[i % 3], "weight": 1.0 if i % 2 == 0 else 0.5} for i in range(4)]
    return write_sft_dataset(tmp_path_factory.mktemp("data") / "sft", rows, images)


def _load(cls, path):
    pipe = cls.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample(pipe) -> np.ndarray:
    return pipe(CAPTIONS[0], num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)).images


@pytest.mark.parametrize("model", ["tiny_sd15", "tiny_sd21v"])
def test_weighted_min_snr_loss_matches_float64(model, request):
    folder = request.getfixturevalue(model)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    sched = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    prediction = {"tiny_sd15": "epsilon", "tiny_sd21v": "v_prediction"}[model]
    assert sched.config.prediction_type == prediction  # taken from the pipeline's scheduler config
    gen = torch.Generator().manual_seed(3)
    x0, emb = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 77, 32, generator=gen)
    w = torch.tensor([1.0, 0.5, 0.25])
    with torch.no_grad():
        got = weighted_loss(per_sample_loss(unet, sched, x0, emb, torch.Generator().manual_seed(7), snr_gamma=5.0), w)
        g = torch.Generator().manual_seed(7)  # the same draws, the objective written out in float64
        noise = torch.randn(x0.shape, generator=g).double()
        t = torch.randint(0, 1000, (3,), generator=g)
        a = sched.alphas_cumprod.double()[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0.double() + (1 - a).sqrt() * noise
        target = noise if prediction == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0.double()
        pred = unet(xt.float(), t, encoder_hidden_states=emb).sample.double()
        snr = (a / (1 - a)).flatten()
        snr_w = torch.minimum(snr, torch.tensor(5.0, dtype=torch.float64)) / (snr if prediction == "epsilon" else snr + 1)
        want = (w.double() * snr_w * ((pred - target) ** 2).mean(dim=(1, 2, 3))).mean()
    assert abs(got.item() - want.item()) <= 1e-5 * want.item()


def test_min_snr_weight_at_zero_snr_is_one():
    sched = DDPMScheduler(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    t = torch.tensor([999, 10])
    assert sched.alphas_cumprod[999] == 0
    weights = min_snr_weights(sched, t, 5.0)
    assert weights[0] == 1.0 and torch.isfinite(weights).all()


def test_sd15_lora_loads_in_fresh_pipeline_and_scale_zero_restores(tiny_sd15, dataset, tmp_path):
    pipe = _load(StableDiffusionPipeline, tiny_sd15)
    before = _sample(pipe)
    summary = train_latent_lora_sft(pipe, dataset, tmp_path / "a", FAST)
    # The caller's pipeline is handed back as it was.
    assert not getattr(pipe.unet, "peft_config", None) and not pipe.unet.training
    assert np.array_equal(_sample(pipe), before)
    with safe_open(tmp_path / "a" / ADAPTER_WEIGHTS, "pt") as f:
        assert all(k.startswith("unet.") for k in f.keys())
    log = [json.loads(line) for line in (tmp_path / "a" / TRAIN_LOG).read_text().splitlines()]
    assert [e["step"] for e in log] == [0, 1, 2] and all(np.isfinite(e["loss"]) for e in log)
    assert train_latent_lora_sft(pipe, dataset, tmp_path / "a", FAST) == summary  # finished: not retrained

    fresh = _load(StableDiffusionPipeline, tiny_sd15)
    fresh.load_lora_weights(tmp_path / "a", adapter_name="sft")
    assert not np.array_equal(_sample(fresh), before)
    fresh.set_adapters(["sft"], [0.0])
    assert np.array_equal(_sample(fresh), before)


def test_sdxl_with_text_encoder_lora(tiny_sdxl, dataset, tmp_path):
    pipe = _load(StableDiffusionXLPipeline, tiny_sdxl)
    before = _sample(pipe)
    cfg = FAST.model_copy(update={"train_text_encoder": True, "gradient_checkpointing": True})
    train_latent_lora_sft(pipe, dataset, tmp_path / "xl", cfg)
    assert np.array_equal(_sample(pipe), before)
    assert not pipe.unet.is_gradient_checkpointing
    with safe_open(tmp_path / "xl" / ADAPTER_WEIGHTS, "pt") as f:
        prefixes = {k.split(".")[0] for k in f.keys()}
    assert prefixes == {"unet", "text_encoder", "text_encoder_2"}

    fresh = _load(StableDiffusionXLPipeline, tiny_sdxl)
    fresh.load_lora_weights(tmp_path / "xl", adapter_name="sft")
    assert set(fresh.text_encoder_2.peft_config) == {"sft"}
    assert not np.array_equal(_sample(fresh), before)
    fresh.set_adapters(["sft"], [0.0])
    assert np.array_equal(_sample(fresh), before)


def test_v_prediction_model_trains_on_the_v_target(tiny_sd21v, dataset, tmp_path):
    pipe = _load(StableDiffusionPipeline, tiny_sd21v)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    x0, noise, t = torch.ones(1, 4, 8, 8), torch.zeros(1, 4, 8, 8), torch.tensor([500])
    assert torch.equal(diffusion_target(sched, x0, noise, t), sched.get_velocity(x0, noise, t))
    train_latent_lora_sft(pipe, dataset, tmp_path / "v", FAST.model_copy(update={"steps": 1}))
    assert json.loads((tmp_path / "v" / "atelier_adapter.json").read_text())["prediction_type"] == "v_prediction"


def test_grad_accumulation_matches_one_big_batch(tiny_sd15, dataset, tmp_path):
    """2 micro-batches of 2 see the same samples, noise, timesteps and dropped captions as 1 batch
    of 4 (the trainer draws them per optimizer step), so losses and the adapter agree up to float
    rounding."""
    pipe = _load(StableDiffusionPipeline, tiny_sd15)
    exact = dict(bf16=False, steps=2, snr_gamma=None, caption_dropout=0.5)
    one = FAST.model_copy(update={**exact, "batch_size": 4, "grad_accum": 1})
    two = FAST.model_copy(update={**exact, "batch_size": 2, "grad_accum": 2})
    train_latent_lora_sft(pipe, dataset, tmp_path / "one", one)
    train_latent_lora_sft(pipe, dataset, tmp_path / "two", two)
    losses = [[json.loads(line)["loss"] for line in (tmp_path / d / TRAIN_LOG).read_text().splitlines()]
              for d in ("one", "two")]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    with safe_open(tmp_path / "one" / ADAPTER_WEIGHTS, "pt") as a, safe_open(tmp_path / "two" / ADAPTER_WEIGHTS, "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys()) and len(a.keys()) > 0
        for k in a.keys():
            # Adam divides by the gradient RMS, so rounding in tiny gradients shows up to ~1e-5 here.
            torch.testing.assert_close(a.get_tensor(k), b.get_tensor(k), rtol=1e-3, atol=1e-4)


def test_nan_loss_is_refused_and_nothing_is_written(tiny_sd15, dataset, tmp_path):
    pipe = _load(StableDiffusionPipeline, tiny_sd15)
    with torch.no_grad():
        pipe.unet.conv_in.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="step 0"):
        train_latent_lora_sft(pipe, dataset, tmp_path / "nan", FAST)
    assert not (tmp_path / "nan").exists()
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    assert not getattr(pipe.unet, "peft_config", None)
