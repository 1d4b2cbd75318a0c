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
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from atelier.atomic import staged_dir
from atelier.tools.diffusion_loss import per_sample_loss, weighted_loss
from atelier.tools.lora import (
    ATTENTION_PROJECTIONS,
    add_lora,
    load_adapter_into,
    read_adapter_metadata,
    write_adapter,
)

METADATA_FILE = "metadata.jsonl"
TRAIN_LOG = "train_log.jsonl"
ADAPTER_NAME = "default"


class SFTConfig(BaseModel):
    """Everything that decides the trained adapter, besides the data and the base model."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(200, ge=1, description="optimizer steps")
    batch_size: int = Field(16, ge=1, description="samples per micro-batch")
    grad_accum: int = Field(
        1, ge=1, description="micro-batches per optimizer step (effective batch = batch_size * grad_accum)"
    )
    lr: float = Field(1e-4, gt=0, description="constant AdamW learning rate of the LoRA weights")
    rank: int = Field(8, ge=1, description="LoRA rank r")
    alpha: float | None = Field(
        None, gt=0, description="LoRA alpha; the update is scaled by alpha / rank; None: alpha = rank"
    )
    seed: int = Field(0, description="seeds the LoRA init, batch order, noise and timesteps")
    target_modules: tuple[str, ...] = Field(
        ATTENTION_PROJECTIONS, min_length=1, description="UNet module names (suffixes) that get a LoRA"
    )
    bf16: bool = Field(
        True, description="bf16 autocast for the UNet forward pass (CPU and CUDA); weights stay float32"
    )
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="clip the LoRA gradients to this global norm; None: no clipping"
    )


# ---------------------------------------------------------------- dataset


def write_sft_dataset(directory: str | Path, rows: list[dict], images: list[Image.Image]) -> Path:
    """Write images and their rows as an image folder; the folder appears complete or not at all.
    A row needs `text`; `weight` defaults to 1.0 and `file_name` to a numbered PNG name."""
    if len(rows) != len(images):
        raise ValueError(f"{len(rows)} rows for {len(images)} images")
    with staged_dir(directory) as stage:
        with open(stage / METADATA_FILE, "w") as f:
            for i, (row, image) in enumerate(zip(rows, images)):
                if not isinstance(row.get("text"), str):
                    raise ValueError(f"row {i} has no text: {row}")
                name = row.get("file_name", f"{i:06d}.png")
                if not name.endswith(".png") or "/" in name:
                    raise ValueError(f"row {i}: file_name must be a plain .png name, got {name!r}")
                image.convert("RGB").save(stage / name)
                line = {"file_name": name, "text": row["text"], "weight": float(row.get("weight", 1.0))}
                line.update({k: v for k, v in row.items() if k not in line})
                f.write(json.dumps(line) + "\n")
    return Path(directory)


def read_sft_dataset(dirs: str | Path | Sequence[str | Path]) -> list[dict]:
    """All rows of one or more image folders, each with `path` (absolute image path) and a
    float `weight` (1.0 where absent) added."""
    rows = []
    for d in _as_list(dirs):
        d = Path(d).resolve()
        meta = d / METADATA_FILE
        if not meta.is_file():
            raise FileNotFoundError(f"no {METADATA_FILE} in {d}")
        for n, line in enumerate(meta.read_text().splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            where = f"{meta}:{n}"
            if not isinstance(row.get("text"), str) or not isinstance(row.get("file_name"), str):
                raise ValueError(f"{where}: needs string 'file_name' and 'text'")
            weight = float(row.get("weight", 1.0))
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"{where}: weight must be finite and >= 0, got {weight}")
            path = d / row["file_name"]
            if not path.is_file():
                raise FileNotFoundError(f"{where}: image {path} is missing")
            rows.append({**row, "weight": weight, "path": str(path)})
    return rows


def _as_list(dirs: str | Path | Sequence[str | Path]) -> list[Path]:
    return [Path(dirs)] if isinstance(dirs, (str, Path)) else [Path(d) for d in dirs]


def _load_rgb(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


# ---------------------------------------------------------------- model inputs


def images_to_model_inputs(pipe, images: list[Image.Image]) -> torch.Tensor:
    """What the UNet denoises. Pixel-space pipelines: RGB scaled to [-1, 1]. A latent pipeline
    would encode with its VAE here, and nowhere else."""
    if getattr(pipe, "vae", None) is not None:
        raise NotImplementedError("latent pipelines: encode with pipe.vae and scale by vae.config.scaling_factor here")
    unet = pipe.unet
    size, channels = unet.config.sample_size, unet.config.in_channels
    pixels = np.stack([np.asarray(im.convert("RGB"), np.float32) for im in images])
    if pixels.shape[1:] != (size, size, channels):
        raise ValueError(f"images are {pixels.shape[1:]}, the UNet denoises {(size, size, channels)} (H, W, C)")
    x = torch.from_numpy(pixels / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()
    return x.to(unet.device, unet.dtype)


@torch.no_grad()
def _encode_texts(pipe, texts: list[str], chunk: int = 256) -> torch.Tensor:
    """Embeddings of distinct texts, computed once: the text encoder is frozen."""
    return torch.cat([pipe.encode(texts[i : i + chunk]) for i in range(0, len(texts), chunk)])


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless index batches: a fresh permutation per epoch, batches may span two epochs."""
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(n, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def _training_tensors(pipe, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Model inputs (N, C, H, W), text embeddings of the distinct texts, each row's text index,
    and the loss weights, all on the UNet's device."""
    device, dtype = pipe.unet.device, pipe.unet.dtype
    x0 = images_to_model_inputs(pipe, [_load_rgb(r["path"]) for r in rows])
    text_ids = {text: i for i, text in enumerate(dict.fromkeys(r["text"] for r in rows))}
    text_emb = _encode_texts(pipe, list(text_ids)).to(device, dtype)
    text_index = torch.tensor([text_ids[r["text"]] for r in rows], device=device)
    weights = torch.tensor([r["weight"] for r in rows], dtype=torch.float32, device=device)
    return x0, text_emb, text_index, weights


# ---------------------------------------------------------------- training


def _summary(meta: dict, out_dir: Path) -> dict:
    keys = ("steps", "final_loss", "wall_time_s", "n_samples", "init_adapter_hash")
    return {"adapter_dir": str(out_dir), "adapter_hash": meta["sha256"], **{k: meta[k] for k in keys}}


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
    if out_dir.exists():
        done = read_adapter_metadata(out_dir)
        if done is None:
            raise FileExistsError(f"{out_dir} exists but holds no finished adapter ({out_dir}/atelier_adapter.json)")
        if done.get("config") != cfg.model_dump(mode="json"):
            raise ValueError(f"{out_dir} holds an adapter trained with another config: {done.get('config')}")
        return _summary(done, out_dir)
    if getattr(pipe.unet, "peft_config", None):
        raise ValueError(
            f"pipe.unet carries adapters {list(pipe.unet.peft_config)}; train from the clean base and "
            "pass the adapter to continue from as init_adapter"
        )
    init_meta = None
    if init_adapter is not None:
        init_meta = read_adapter_metadata(init_adapter)
        if init_meta is None:
            raise FileNotFoundError(f"{init_adapter} holds no finished atelier adapter")
        _check_same_lora(init_meta, cfg)

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
    batches = _batches(len(rows), cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
    noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16)

    losses: list[float] = []
    with staged_dir(out_dir) as stage, open(stage / TRAIN_LOG, "w") as log:
        for step in range(cfg.steps):
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for _ in range(cfg.grad_accum):
                idx = next(batches).to(device)
                with torch.autocast(**autocast):
                    x0, emb = x0_all[idx], text_emb[text_index[idx]]
                    per_sample = per_sample_loss(unet, noise_scheduler, x0, emb, noise_gen)
                loss = weighted_loss(per_sample, weights[idx])
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"LoRA SFT loss is {loss.item()} at step {step}; "
                        f"lower lr (now {cfg.lr}) or check the base model"
                    )
                (loss / cfg.grad_accum).backward()
                step_loss += loss.item() / cfg.grad_accum
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            losses.append(step_loss)
            log.write(json.dumps({"step": step, "loss": step_loss, "lr": cfg.lr}) + "\n")
            if progress is not None:
                progress(step + 1, cfg.steps, step_loss)
        meta = {
            "config": cfg.model_dump(mode="json"),
            "steps": cfg.steps,
            "final_loss": float(np.mean(losses[-10:])),
            "wall_time_s": round(time.time() - started, 3),
            "n_samples": len(rows),
            "datasets": [str(d.resolve()) for d in _as_list(dataset_dirs)],
            "base_model": str(pipe.config.get("_name_or_path")),
            "init_adapter": None if init_adapter is None else str(Path(init_adapter).resolve()),
            "init_adapter_hash": None if init_meta is None else init_meta["sha256"],
            "trainer": "atelier.tools.sft",
            "torch": torch.__version__,
        }
        meta = write_adapter(unet, stage, meta, ADAPTER_NAME)
    return _summary(meta, out_dir)


def _check_same_lora(init_meta: dict, cfg: SFTConfig) -> None:
    """Continuing keeps the adapter's shape; a config asking for another one is a mistake."""
    want = {
        "rank": cfg.rank,
        "alpha": cfg.rank if cfg.alpha is None else cfg.alpha,
        "target_modules": sorted(cfg.target_modules),
    }
    have = {k: init_meta.get(k) for k in want}
    if have != want:
        raise ValueError(f"init_adapter has {have}, the config asks for {want}")
