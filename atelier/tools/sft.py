"""LoRA supervised fine-tuning with per-sample loss weights (IPR's lambda: 1.0 for a correct
sample, 0.5 for a relabelled one).

Dataset: one or more folders in the image-folder layout other tools read: PNG images beside a
`metadata.jsonl` whose lines carry `file_name`, `text` and `weight` (other fields are kept but
ignored by training).

The trainer works on a deep copy of `pipe.unet`, so the caller's pipeline is never changed, even
when training fails. Given the same inputs and `cfg.seed`, a CPU run writes a byte-identical
adapter: batch order, noise and timesteps come from explicit generators, and the LoRA init from
a seeded RNG. (With bf16 autocast the bytes also depend on torch's thread count, which changes
how CPU kernels round; keep it fixed where adapters are compared.)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from pydantic import Field

from atelier.atomic import staged_dir
from atelier.tools.datasets import METADATA_FILE, read_sft_dataset, write_sft_dataset
from atelier.tools.diffusion_loss import per_sample_loss, weighted_loss
from atelier.tools.lora import (
    add_lora,
    load_adapter_into,
    write_adapter,
)
from atelier.tools.lora_training import LoraTrainingConfig
from atelier.tools.model_inputs import encode_texts, images_to_model_inputs, load_rgb
from atelier.tools.train_loop import (
    TRAIN_LOG,
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

__all__ = [
    "METADATA_FILE", "TRAIN_LOG", "SFTConfig", "images_to_model_inputs", "read_sft_dataset",
    "train_lora_sft", "write_sft_dataset",
]

ADAPTER_NAME = "default"


class SFTConfig(LoraTrainingConfig):
    """Everything that decides the trained adapter, besides the data and the base model."""

    caption_dropout: float = Field(
        0.0, ge=0, lt=1, description="share of samples trained on the empty caption, per step (keeps guidance's "
        "unconditional prediction anchored)"
    )
    min_timestep: int = Field(
        0, ge=0, le=999, description="train on timesteps from this one up (of 1000); a layout (which relation "
        "holds) is decided at the first, noisiest steps, so a high value spends the steps on it"
    )


# ---------------------------------------------------------------- model inputs


def _training_tensors(pipe, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Model inputs (N, C, H, W), text embeddings of the distinct texts (the empty caption's
    last), each row's text index, and the loss weights, all on the UNet's device."""
    device, dtype = pipe.unet.device, pipe.unet.dtype
    x0 = images_to_model_inputs(pipe, [load_rgb(r["path"]) for r in rows])
    texts, text_index = caption_table([r["text"] for r in rows])
    text_emb = encode_texts(pipe, texts).hidden.to(device, dtype)
    weights = torch.tensor([r["weight"] for r in rows], dtype=torch.float32, device=device)
    return x0, text_emb, text_index.to(device), weights


# ---------------------------------------------------------------- training


def train_lora_sft(
    pipe,
    dataset_dirs: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    cfg: SFTConfig,
    init_adapter: str | Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Train a LoRA on `pipe.unet` (a copy of it) and save it to `out_dir`.

    Continues from `init_adapter` when given (its rank, alpha and targets must match `cfg`).
    If `out_dir` already holds a finished adapter trained with the same config, returns its
    summary without training. `progress(step, steps, loss)` is called after every step.
    Returns {adapter_dir, adapter_hash, steps, final_loss (mean of the last 10 steps' losses),
    wall_time_s, n_samples, init_adapter_hash}.
    """
    out_dir = Path(out_dir)
    if (done := finished_adapter(out_dir, cfg.model_dump(mode="json"))) is not None:
        return adapter_summary(done, out_dir)
    if getattr(pipe.unet, "peft_config", None):
        raise ValueError(
            f"pipe.unet carries adapters {list(pipe.unet.peft_config)}; train from the clean base and "
            "pass the adapter to continue from as init_adapter"
        )
    init_meta = init_adapter_metadata(init_adapter, cfg)

    started = time.time()
    rows = read_sft_dataset(dataset_dirs)
    if not rows:
        raise ValueError(f"no samples in {dataset_dirs}")
    x0_all, text_emb, text_index, weights = _training_tensors(pipe, rows)
    unet = copy.deepcopy(pipe.unet)
    device = unet.device
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    # Seed the LoRA init without disturbing the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if init_adapter is None:
            params = add_lora(unet, cfg.rank, cfg.alpha, cfg.target_modules, ADAPTER_NAME)
        else:
            params = load_adapter_into(unet, init_adapter, ADAPTER_NAME)
    unet.train()
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    # Separate streams, so a change in batching never changes the noise, and vice versa.
    batches = endless_batches(len(rows), cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
    noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
    dropout_gen = torch.Generator().manual_seed(cfg.seed + 2)
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16)

    def micro_batches(step: int):
        for _ in range(cfg.grad_accum):
            idx = next(batches).to(device)
            captions = drop_captions(text_index[idx], len(text_emb), cfg.caption_dropout, dropout_gen)
            with torch.autocast(**autocast):
                x0, emb = x0_all[idx], text_emb[captions]
                per_sample = per_sample_loss(unet, noise_scheduler, x0, emb, noise_gen, min_timestep=cfg.min_timestep)
            yield weighted_loss(per_sample, weights[idx]), {}

    checkpoint = step_checkpoint(out_dir, cfg, dataset_dirs, init_adapter,
                                 {"batches": batches, "noise": noise_gen, "dropout": dropout_gen})
    with staged_dir(out_dir) as stage:
        with TrainLog(stage) as log:
            losses = run_optimizer_steps(
                params, optimizer, micro_batches, steps=cfg.steps, grad_accum=cfg.grad_accum,
                max_grad_norm=cfg.max_grad_norm, log=log, lr=cfg.lr, what="LoRA SFT", progress=progress,
                checkpoint=checkpoint,
            )
        meta = adapter_metadata(cfg, losses, started, len(rows), dataset_dirs, pipe, init_adapter, init_meta,
                                "atelier.tools.sft")
        meta = write_adapter(unet, stage, meta, ADAPTER_NAME)
    if checkpoint is not None:  # the adapter is saved: its step state is spent
        checkpoint.remove()
    return adapter_summary(meta, out_dir)
