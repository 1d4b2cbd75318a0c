"""LoRA SFT for real diffusers pipelines (Stable Diffusion 1.5 / 2.1 / SDXL) on cached VAE
latents, with per-sample loss weights (IPR's lambda) and optional min-SNR weighting.

The objective is the shapes trainer's (atelier.tools.diffusion_loss): epsilon or v target from
the scheduler config, per-sample MSE, times min-SNR weights, times the sample weights, averaged.
What differs is the input: each image is VAE-encoded once and each caption text-encoded once
(atelier.tools.model_inputs), where diffusers' train_text_to_image_lora.py encodes both again at
every step. Pixel-space pipelines (the shapes world) work too; their "latents" are pixels.

The LoRA is trained on the pipeline's own UNet (and text encoders with `train_text_encoder`),
then removed again, so the caller gets its pipeline back unchanged (no copy of the UNet).

Noise, timesteps and batches are drawn per optimizer step for the whole effective batch
(batch_size * grad_accum) and then split into micro-batches, so gradient accumulation changes
memory and time, never the samples: 2 micro-batches of k see what 1 batch of 2k sees.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from pydantic import Field

from atelier.atomic import staged_dir
from atelier.tools.datasets import read_sft_dataset
from atelier.tools.diffusion_loss import denoising_errors, min_snr_weights, sample_noise_and_timesteps, weighted_loss
from atelier.tools.lora import (
    TEXT_ENCODER_PROJECTIONS,
    TEXT_ENCODERS,
    attach_trainable_lora,
    restored_after_training,
    write_adapter,
)
from atelier.tools.lora_training import LoraTrainingConfig
from atelier.tools.model_inputs import encode_images, encode_texts, load_rgb, unet_conditioning
from atelier.tools.train_loop import (
    TrainLog,
    adapter_metadata,
    adapter_summary,
    caption_table,
    drop_captions,
    endless_batches,
    finished_adapter,
    init_adapter_metadata,
    run_optimizer_steps,
    step_checkpoint,
)

ADAPTER_NAME = "default"


class LatentSFTConfig(LoraTrainingConfig):
    """Everything that decides the trained adapter, besides the data and the base model."""

    train_text_encoder: bool = Field(False, description="LoRA on the text encoder(s) too; captions are then re-encoded every step")
    text_encoder_target_modules: tuple[str, ...] = Field(TEXT_ENCODER_PROJECTIONS, min_length=1)
    resolution: int | None = Field(None, ge=8, description="training image size; None: the pipeline's default size")
    snr_gamma: float | None = Field(None, gt=0, description="min-SNR-gamma loss weighting (5.0 in the paper); None: off")
    gradient_checkpointing: bool = Field(False, description="recompute UNet activations in backward: less memory, slower")
    caption_dropout: float = Field(
        0.0, ge=0, lt=1, description="share of samples trained on the empty caption, per step (keeps guidance's "
        "unconditional prediction anchored; diffusers' --proportion_empty_prompts)"
    )


def train_latent_lora_sft(
    pipe,
    dataset_dirs: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    cfg: LatentSFTConfig,
    init_adapter: str | Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Train a LoRA on `pipe` from SFT image folders and save it to `out_dir` in the diffusers
    format (a fresh pipeline's `load_lora_weights` reads it), with `train_log.jsonl`.

    If `out_dir` already holds an adapter trained with the same config, returns its summary
    without training. Returns {adapter_dir, adapter_hash, steps, final_loss, wall_time_s,
    n_samples, init_adapter_hash}.
    """
    out_dir = Path(out_dir)
    if (done := finished_adapter(out_dir, cfg.model_dump(mode="json"))) is not None:
        return adapter_summary(done, out_dir)
    init_meta = init_adapter_metadata(init_adapter, cfg)

    started = time.time()
    rows = read_sft_dataset(dataset_dirs)
    if not rows:
        raise ValueError(f"no samples in {dataset_dirs}")
    unet = pipe.unet
    inputs = encode_images(pipe, [load_rgb(r["path"]) for r in rows], cfg.resolution)
    x0_all = inputs.x0.to(unet.dtype)
    texts, text_index = caption_table([r["text"] for r in rows])
    cached_text = None if cfg.train_text_encoder else encode_texts(pipe, texts)
    weights = torch.tensor([r["weight"] for r in rows], dtype=torch.float32, device=unet.device)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    text_encoders = {n: getattr(pipe, n) for n in TEXT_ENCODERS if getattr(pipe, n, None) is not None}

    with restored_after_training(pipe):
        params = attach_trainable_lora(
            pipe, cfg.rank, cfg.alpha, cfg.target_modules, ADAPTER_NAME, cfg.seed,
            cfg.text_encoder_target_modules if cfg.train_text_encoder else None, init_adapter,
        )
        unet.train()
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        if cfg.train_text_encoder:
            for te in text_encoders.values():
                te.train()
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        # Separate streams, so a change in batching never changes the noise, and vice versa.
        batches = endless_batches(len(rows), cfg.batch_size * cfg.grad_accum, torch.Generator().manual_seed(cfg.seed))
        noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
        dropout_gen = torch.Generator().manual_seed(cfg.seed + 2)
        autocast = dict(device_type=unet.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)

        def micro_batches(step: int):
            idx = next(batches)
            x0 = x0_all[idx.to(unet.device)]
            noise, t = sample_noise_and_timesteps(noise_scheduler, x0, noise_gen)
            step_text_idx = drop_captions(text_index[idx], len(texts), cfg.caption_dropout, dropout_gen)
            for part in torch.arange(len(idx)).split(cfg.batch_size):
                rows_idx, text_idx = idx[part], step_text_idx[part]
                with torch.autocast(**autocast):
                    if cached_text is None:
                        text = encode_texts(pipe, [texts[i] for i in text_idx], grad=True)
                    else:
                        text = cached_text[text_idx]
                    time_ids = None if inputs.time_ids is None else inputs.time_ids[rows_idx]
                    errors = denoising_errors(
                        unet, noise_scheduler, x0[part], noise[part], t[part], **unet_conditioning(text, time_ids)
                    )
                if cfg.snr_gamma is not None:
                    errors = errors * min_snr_weights(noise_scheduler, t[part], cfg.snr_gamma)
                yield weighted_loss(errors, weights[rows_idx]), {}

        checkpoint = step_checkpoint(out_dir, cfg, dataset_dirs, init_adapter,
                                     {"batches": batches, "noise": noise_gen, "dropout": dropout_gen})
        with staged_dir(out_dir) as stage:
            with TrainLog(stage) as log:
                losses = run_optimizer_steps(
                    params, optimizer, micro_batches, steps=cfg.steps, grad_accum=cfg.grad_accum,
                    max_grad_norm=cfg.max_grad_norm, log=log, lr=cfg.lr, what="latent LoRA SFT", progress=progress,
                    checkpoint=checkpoint,
                )
            meta = adapter_metadata(cfg, losses, started, len(rows), dataset_dirs, pipe, init_adapter, init_meta,
                                    "atelier.tools.latent_sft", prediction_type=noise_scheduler.config.prediction_type)
            trained_encoders = text_encoders if cfg.train_text_encoder else None
            meta = write_adapter(unet, stage, meta, ADAPTER_NAME, trained_encoders, loader=type(pipe))
    if checkpoint is not None:  # the adapter is saved: its step state is spent
        checkpoint.remove()
    return adapter_summary(meta, out_dir)
