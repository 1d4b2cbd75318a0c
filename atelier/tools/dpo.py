"""Diffusion-DPO (Wallace et al. 2023) on a LoRA: teach the model to prefer the winner image of
each pair more than the reference model does.

For a pair (winner w, loser l) with one shared noise and timestep, with per-sample squared
errors e = mean ||target - prediction||^2 of the trained model (θ) and of the reference:

    inside = -β/2 · ((e_θ(w) - e_ref(w)) - (e_θ(l) - e_ref(l)))
    loss   = -log σ(inside)

The target is the noise for epsilon models and the velocity for v-prediction ones. The reference
is the same UNet with its adapters disabled (no second copy of the UNet), so it is the base model
even when training continues from `init_adapter`. Works on SD 1.5 / 2.1 / SDXL latents and on the
shapes world's pixel pipeline alike (atelier.tools.model_inputs).

Logged per step: loss, implicit accuracy (share of pairs with inside > 0: the model prefers the
winner more than the reference does; a tie at exactly 0, as at the start, counts as not), the
implicit rewards r = -β/2 · (e_θ - e_ref) of winners and losers and their margin, and the raw
denoising losses of model and reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from pydantic import Field

from atelier.atomic import staged_dir
from atelier.tools.datasets import PreferencePair, as_path_list, read_dpo_pairs
from atelier.tools.diffusion_loss import denoising_errors, sample_noise_and_timesteps
from atelier.tools.lora import (
    attach_trainable_lora,
    restored_after_training,
    write_adapter,
)
from atelier.tools.lora_training import LoraTrainingConfig
from atelier.tools.model_inputs import TextConditioning, encode_images, encode_texts, unet_conditioning
from atelier.tools.train_loop import (
    TrainLog,
    adapter_metadata,
    adapter_summary,
    endless_batches,
    finished_adapter,
    init_adapter_metadata,
    run_optimizer_steps,
)

ADAPTER_NAME = "default"


class DPOConfig(LoraTrainingConfig):
    """Everything that decides the trained adapter, besides the pairs and the base model."""

    lr: float = Field(1e-5, gt=0, description="constant AdamW learning rate of the LoRA weights (DPO moves less than SFT)")
    beta: float = Field(5000.0, gt=0, description="β: strength of the pull toward the reference (5000 for SD 1.5 in the paper)")
    resolution: int | None = Field(None, ge=8, description="training image size (latent pipelines); None: default")
    gradient_checkpointing: bool = Field(False, description="recompute UNet activations in backward")


def diffusion_dpo_loss(
    model_err_w: torch.Tensor,
    model_err_l: torch.Tensor,
    ref_err_w: torch.Tensor,
    ref_err_l: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The Diffusion-DPO loss from per-sample squared errors (one value per pair each), and its
    metrics: implicit_accuracy, reward_winner, reward_loser, reward_margin (means over pairs)."""
    reward_w = -0.5 * beta * (model_err_w - ref_err_w)
    reward_l = -0.5 * beta * (model_err_l - ref_err_l)
    inside = reward_w - reward_l
    loss = -F.logsigmoid(inside).mean()
    metrics = {
        "implicit_accuracy": (inside > 0).float().mean().item(),
        "reward_winner": reward_w.mean().item(),
        "reward_loser": reward_l.mean().item(),
        "reward_margin": inside.mean().item(),
    }
    return loss, metrics


@contextmanager
def adapters_disabled(unet) -> Iterator[None]:
    """The reference model: the same UNet with its LoRA layers switched off."""
    unet.disable_adapters()
    try:
        yield
    finally:
        unet.enable_adapters()


def dpo_loss_on_pairs(
    unet,
    scheduler,
    x0_w: torch.Tensor,
    x0_l: torch.Tensor,
    text: TextConditioning,
    noise: torch.Tensor,
    t: torch.Tensor,
    beta: float,
    time_ids_w: torch.Tensor | None = None,
    time_ids_l: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Diffusion-DPO loss of a batch of pairs: winner and loser share `noise` and `t`; the model
    (with grad) and the reference (adapters disabled, no grad) see the same inputs."""
    x0 = torch.cat([x0_w, x0_l])
    both_noise, both_t = torch.cat([noise, noise]), torch.cat([t, t])
    both_text = TextConditioning(
        torch.cat([text.hidden, text.hidden]), None if text.pooled is None else torch.cat([text.pooled, text.pooled])
    )
    time_ids = None if time_ids_w is None else torch.cat([time_ids_w, time_ids_l])
    cond = unet_conditioning(both_text, time_ids)
    model_err = denoising_errors(unet, scheduler, x0, both_noise, both_t, **cond)
    with torch.no_grad(), adapters_disabled(unet):
        ref_err = denoising_errors(unet, scheduler, x0, both_noise, both_t, **cond)
    (model_w, model_l), (ref_w, ref_l) = model_err.chunk(2), ref_err.chunk(2)
    loss, metrics = diffusion_dpo_loss(model_w, model_l, ref_w, ref_l, beta)
    metrics["model_loss"] = model_err.mean().item()
    metrics["ref_loss"] = ref_err.mean().item()
    return loss, metrics


def read_pairs(sources: str | Path | Sequence[str | Path]) -> list[PreferencePair]:
    """Pairs from parquet files / JSONL folders; ties carry no preference and are left out."""
    pairs = [p for s in as_path_list(sources) for p in read_dpo_pairs(s)]
    return [p for p in pairs if p.label_0 != 0.5]


def train_diffusion_dpo(
    pipe,
    pair_sources: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    cfg: DPOConfig,
    init_adapter: str | Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Train a LoRA on `pipe.unet` with Diffusion-DPO on preference pairs (parquet files or JSONL
    folders, atelier.tools.datasets) and save it to `out_dir` in the diffusers format, with
    `train_log.jsonl`. The pipeline is given back unchanged. Returns the same summary as the SFT
    trainers (n_samples counts pairs)."""
    out_dir = Path(out_dir)
    if (done := finished_adapter(out_dir, cfg.model_dump(mode="json"))) is not None:
        return adapter_summary(done, out_dir)
    init_meta = init_adapter_metadata(init_adapter, cfg)

    started = time.time()
    pairs = read_pairs(pair_sources)
    if not pairs:
        raise ValueError(f"no preference pairs (ties left out) in {pair_sources}")
    unet = pipe.unet
    winners, losers = zip(*(p.winner_and_loser() for p in pairs))
    inputs_w = encode_images(pipe, list(winners), cfg.resolution)
    inputs_l = encode_images(pipe, list(losers), cfg.resolution)
    x0_w, x0_l = inputs_w.x0.to(unet.dtype), inputs_l.x0.to(unet.dtype)
    texts = list(dict.fromkeys(p.caption for p in pairs))
    text_index = torch.tensor([texts.index(p.caption) for p in pairs])
    cached_text = encode_texts(pipe, texts)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    with restored_after_training(pipe):
        params = attach_trainable_lora(
            pipe, cfg.rank, cfg.alpha, cfg.target_modules, ADAPTER_NAME, cfg.seed, None, init_adapter
        )
        unet.train()
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        batches = endless_batches(len(pairs), cfg.batch_size * cfg.grad_accum, torch.Generator().manual_seed(cfg.seed))
        noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
        autocast = dict(device_type=unet.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)

        def micro_batches(step: int):
            idx = next(batches)
            noise, t = sample_noise_and_timesteps(noise_scheduler, x0_w[idx.to(unet.device)], noise_gen)
            for part in torch.arange(len(idx)).split(cfg.batch_size):
                sel = idx[part]
                dev_sel = sel.to(unet.device)
                with torch.autocast(**autocast):
                    loss_and_metrics = dpo_loss_on_pairs(
                        unet, noise_scheduler, x0_w[dev_sel], x0_l[dev_sel], cached_text[text_index[sel]],
                        noise[part], t[part], cfg.beta,
                        None if inputs_w.time_ids is None else inputs_w.time_ids[sel],
                        None if inputs_l.time_ids is None else inputs_l.time_ids[sel],
                    )
                yield loss_and_metrics

        with staged_dir(out_dir) as stage:
            with TrainLog(stage) as log:
                losses = run_optimizer_steps(
                    params, optimizer, micro_batches, steps=cfg.steps, grad_accum=cfg.grad_accum,
                    max_grad_norm=cfg.max_grad_norm, log=log, lr=cfg.lr, what="Diffusion-DPO", progress=progress,
                )
            meta = adapter_metadata(cfg, losses, started, len(pairs), pair_sources, pipe, init_adapter, init_meta,
                                    "atelier.tools.dpo", prediction_type=noise_scheduler.config.prediction_type,
                                    reference="base model (adapters disabled)")
            meta = write_adapter(unet, stage, meta, ADAPTER_NAME, loader=type(pipe))
    return adapter_summary(meta, out_dir)
