"""LoRA adapters and the SFT trainer, on an untrained shapes pipeline and a handful of renders."""

from __future__ import annotations

import copy
import json

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from peft.utils import get_peft_model_state_dict
from PIL import Image
from safetensors import safe_open

from atelier.worlds.shapes.model import ShapesPipeline, new_pipeline
from atelier.worlds.shapes.render import render
from atelier.worlds.shapes.scene import parse
from atelier.tools.diffusion_loss import per_sample_loss, weighted_loss
from atelier.tools.lora import ADAPTER_METADATA, ADAPTER_WEIGHTS, adapter_hash, load_adapter_into
from atelier.tools.sft import (
    TRAIN_LOG,
    SFTConfig,
    read_sft_dataset,
    train_lora_sft,
    write_sft_dataset,
)

CAPTIONS = ["a red circle", "two blue squares", "a green triangle to the left of a yellow circle"]
# A high learning rate, so that three steps move the adapter far enough to change images.
TINY = SFTConfig(steps=3, batch_size=4, lr=1e-2, rank=4, alpha=8, seed=0)


def _sample(pipe: ShapesPipeline) -> np.ndarray:
    return pipe(CAPTIONS[:2], seeds=[3, 4], num_inference_steps=4, output_type="np").images



@pytest.fixture(scope="module")
def base() -> ShapesPipeline:
    torch.manual_seed(0)
    pipe = new_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rows, images = [], []
    for i in range(6):
        text = CAPTIONS[i % len(CAPTIONS)]
        rows.append({"text": text, "weight": 1.0 if i % 2 == 0 else 0.5, "source": "test"})
        images.append(render(parse(text), seed=i))
    directory = tmp_path_factory.mktemp("data") / "sft"
    write_sft_dataset(directory, rows, images)
    return directory, rows, images


@pytest.fixture(scope="module")
def trained(base, dataset, tmp_path_factory):
    before = _sample(base)
    out = tmp_path_factory.mktemp("adapters") / "a"
    summary = train_lora_sft(base, dataset[0], out, TINY)
    return out, summary, before


def test_dataset_round_trip(dataset):
    directory, rows, images = dataset
    read = read_sft_dataset([directory])
    assert [r["text"] for r in read] == [r["text"] for r in rows]
    assert [r["weight"] for r in read] == [r["weight"] for r in rows]
    assert all(r["source"] == "test" for r in read)
    for r, image in zip(read, images):
        assert Path(r["path"]).is_absolute()
        assert np.array_equal(np.asarray(Image.open(r["path"])), np.asarray(image.convert("RGB")))
    with pytest.raises(FileExistsError):
        write_sft_dataset(directory, rows, images)
    assert not any(p.name.endswith(".partial") for p in directory.parent.iterdir())


def test_adapter_is_diffusers_format(trained):
    out, summary, _ = trained
    with safe_open(out / ADAPTER_WEIGHTS, "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("unet.") and ".lora." in k for k in keys)
    meta = json.loads((out / ADAPTER_METADATA).read_text())
    assert (meta["rank"], meta["alpha"], meta["steps"]) == (4, 8, 3)
    assert meta["sha256"] == adapter_hash(out) == summary["adapter_hash"]
    log = [json.loads(line) for line in (out / TRAIN_LOG).read_text().splitlines()]
    assert [entry["step"] for entry in log] == [0, 1, 2] and all(np.isfinite(e["loss"]) for e in log)


def test_caller_pipeline_untouched(base, trained):
    _, _, before = trained
    assert not getattr(base.unet, "peft_config", None)
    assert np.array_equal(_sample(base), before)


def test_load_lora_weights_then_scale_zero_restores_base(base, trained, tmp_path):
    out, _, before = trained
    base.save_pretrained(tmp_path / "model")
    pipe = ShapesPipeline.from_pretrained(tmp_path / "model")
    pipe.set_progress_bar_config(disable=True)
    assert np.array_equal(_sample(pipe), before)
    pipe.load_lora_weights(out, adapter_name="sft")
    assert pipe.unet.peft_config["sft"].lora_alpha == 8  # alpha travels in the file's metadata
    assert not np.array_equal(_sample(pipe), before)
    pipe.set_adapters("sft", 0.0)
    assert np.array_equal(_sample(pipe), before)
    pipe.set_adapters(["sft"], [1.0])
    pipe.disable_lora()
    assert np.array_equal(_sample(pipe), before)
    pipe.unload_lora_weights()
    assert not getattr(pipe.unet, "peft_config", None)
    assert np.array_equal(_sample(pipe), before)


def test_training_is_deterministic(base, dataset, trained, tmp_path):
    out, summary, _ = trained
    (tmp_path / ".b.partial").mkdir()  # as a killed run would leave it
    (tmp_path / ".b.partial" / TRAIN_LOG).write_text("junk\n")
    again = train_lora_sft(base, dataset[0], tmp_path / "b", TINY)
    assert (tmp_path / "b" / ADAPTER_WEIGHTS).read_bytes() == (out / ADAPTER_WEIGHTS).read_bytes()
    assert again["adapter_hash"] == summary["adapter_hash"]
    other = train_lora_sft(base, dataset[0], tmp_path / "c", TINY.model_copy(update={"seed": 1}))
    assert other["adapter_hash"] != summary["adapter_hash"]


def test_finished_adapter_is_not_retrained(base, dataset, trained):
    out, summary, _ = trained
    calls = []
    assert train_lora_sft(base, dataset[0], out, TINY, progress=lambda *a: calls.append(a)) == summary
    assert calls == []
    with pytest.raises(ValueError, match="another config"):
        train_lora_sft(base, dataset[0], out, TINY.model_copy(update={"lr": 1e-3}))


def test_continue_from_adapter(base, dataset, trained, tmp_path):
    out, summary, _ = trained
    unet = copy.deepcopy(base.unet)
    params = load_adapter_into(unet, out, "init")
    assert params and all(p.requires_grad for p in params)
    assert {n for n, p in unet.named_parameters() if p.requires_grad} == {
        n for n, p in unet.named_parameters() if ".lora_" in n
    }
    cont = train_lora_sft(base, dataset[0], tmp_path / "cont", TINY, init_adapter=out)
    assert cont["init_adapter_hash"] == summary["adapter_hash"]
    assert cont["adapter_hash"] != summary["adapter_hash"]
    with pytest.raises(ValueError, match="init_adapter has"):
        train_lora_sft(base, dataset[0], tmp_path / "bad", TINY.model_copy(update={"rank": 2}), init_adapter=out)


def test_weighted_loss_matches_float64(base, dataset):
    _, _, images = dataset
    unet, sched = base.unet, DDPMScheduler.from_config(base.scheduler.config)
    x0 = torch.from_numpy(np.stack([np.asarray(im, np.float32) for im in images[:2]]) / 127.5 - 1).permute(0, 3, 1, 2)
    emb = base.encode(CAPTIONS[:2]).detach()
    w = torch.tensor([1.0, 0.5])
    with torch.no_grad():
        got = weighted_loss(per_sample_loss(unet, sched, x0, emb, torch.Generator().manual_seed(7)), w)
        # The same draws, the objective written out in float64.
        g = torch.Generator().manual_seed(7)
        noise = torch.randn(x0.shape, generator=g).double()
        t = torch.randint(0, 1000, (2,), generator=g)
        a = sched.alphas_cumprod.double()[t].view(-1, 1, 1, 1)
        x0d = x0.double()
        xt = a.sqrt() * x0d + (1 - a).sqrt() * noise
        v = a.sqrt() * noise - (1 - a).sqrt() * x0d
        pred = unet(xt.float(), t, encoder_hidden_states=emb).sample.double()
        per = ((pred - v) ** 2).mean(dim=(1, 2, 3))
        want = (1.0 * per[0] + 0.5 * per[1]) / 2
    assert got.dtype == torch.float32
    assert abs(got.item() - want.item()) <= 1e-5 * want.item()


def test_nan_loss_is_refused(base, dataset, tmp_path):
    broken = copy.deepcopy(base)
    with torch.no_grad():
        broken.unet.conv_in.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="step 0"):
        train_lora_sft(broken, dataset[0], tmp_path / "nan", TINY)
    assert not (tmp_path / "nan").exists()
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_drop_captions_replaces_a_share_with_the_empty_caption():
    from atelier.tools.train_loop import caption_table, drop_captions

    texts, index = caption_table([f"caption {i % 7}" for i in range(10_000)])
    assert len(texts) == 8 and texts[-1] == "" and index.max() == 6
    assert torch.equal(drop_captions(index, len(texts), 0.0, torch.Generator().manual_seed(0)), index)
    dropped = drop_captions(index, len(texts), 0.1, torch.Generator().manual_seed(0))
    changed = dropped != index
    assert (dropped[changed] == 7).all()
    assert 0.09 < changed.float().mean().item() < 0.11
    assert torch.equal(dropped, drop_captions(index, len(texts), 0.1, torch.Generator().manual_seed(0)))
    # A sample whose caption is already empty points at the one empty entry, still last.
    texts, index = caption_table(["a", "", "b"])
    assert texts == ["a", "b", ""] and index.tolist() == [0, 2, 1]


def test_caption_dropout_trains_on_the_empty_caption(base, dataset, tmp_path, monkeypatch):
    import atelier.tools.sft as sft
    from atelier.tools.model_inputs import encode_texts

    empty = encode_texts(base, [""]).hidden[0]
    seen = []
    real_loss = sft.per_sample_loss

    def recording_loss(unet, scheduler, x0, emb, generator, **kwargs):
        seen.extend(bool(torch.equal(e, empty)) for e in emb)
        return real_loss(unet, scheduler, x0, emb, generator, **kwargs)

    monkeypatch.setattr(sft, "per_sample_loss", recording_loss)
    cfg = TINY.model_copy(update={"steps": 10, "caption_dropout": 0.5})
    sft.train_lora_sft(base, dataset[0], tmp_path / "dropout", cfg)
    assert len(seen) == 40 and 8 <= sum(seen) <= 32  # about half of 40 samples, never all or none
    seen.clear()
    sft.train_lora_sft(base, dataset[0], tmp_path / "none", cfg.model_copy(update={"caption_dropout": 0.0}))
    assert len(seen) == 40 and sum(seen) == 0


def test_min_timestep_trains_only_on_late_timesteps(base, dataset, tmp_path, monkeypatch):
    from atelier.tools import diffusion_loss

    seen = []
    real = diffusion_loss.denoising_errors
    monkeypatch.setattr(diffusion_loss, "denoising_errors",
                        lambda unet, sch, x0, noise, t, emb, *a: seen.append(t.clone()) or real(unet, sch, x0, noise, t, emb, *a))
    train_lora_sft(base, dataset[0], tmp_path / "late", TINY.model_copy(update={"min_timestep": 975}))
    assert len(seen) == TINY.steps and all(t.min() >= 975 for t in seen)


def test_adapter_on_convolutions_loads_whole(base, dataset, tmp_path):
    """Targets beyond the attention projections (resnet convs, proj_in) must load back in full:
    diffusers reads a file's naming from its first key, so mixed names would drop the attention half."""
    targets = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "proj_in")
    out = tmp_path / "conv"
    train_lora_sft(base, dataset[0], out, TINY.model_copy(update={"target_modules": targets}))
    with safe_open(out / ADAPTER_WEIGHTS, "pt") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}
    assert any(".conv1." in k for k in saved) and any(".to_q." in k for k in saved)
    base.save_pretrained(tmp_path / "model")
    pipe = ShapesPipeline.from_pretrained(tmp_path / "model")
    pipe.load_lora_weights(out, adapter_name="sft")
    loaded = get_peft_model_state_dict(pipe.unet, adapter_name="sft")
    assert len(loaded) == len(saved)
    for key, value in loaded.items():
        assert torch.equal(value.float(), saved[f"unet.{key}"]), key
