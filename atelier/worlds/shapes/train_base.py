"""`atelier shapes train-base`: train the shapes world's text-to-image model from rendered scenes.

Reproducible from its recipe (seed, steps, batch, learning rate, scene mix); the recipe, the wall
time and the final loss are written into a model card beside the weights. The pipeline is saved
every `save_every` steps, so a killed training loses at most that much.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from atelier.worlds.shapes.model import MAX_TOKENS, ShapesPipeline, new_pipeline
from atelier.worlds.shapes.render import render
from atelier.worlds.shapes.sampling import SceneMix, draw_scene
from atelier.worlds.shapes.scene import caption
from atelier.tools.diffusion_loss import per_sample_loss, weighted_loss


class RelationDrill(BaseModel):
    """A share of every batch spent on related scenes at shared layouts and late timesteps, the rest
    trained as usual: relations are taught without the object skills paying for it (BENCHMARKS.md)."""

    model_config = ConfigDict(extra="forbid")
    share: float = Field(0.25, gt=0, lt=1, description="share of each batch that is drill samples")
    layout_pool: int = Field(8, ge=1, description="drill layouts come from this many shared seeds")
    min_timestep: int = Field(975, ge=0, le=999, description="drill samples train on timesteps from this one up")


class BaseRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(0, description="seeds weights, scene draws and noise")
    steps: int = Field(3000, ge=1, description="optimizer steps")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0, description="peak AdamW learning rate (cosine decay to 10%)")
    warmup: int = Field(200, ge=0)
    schedule_steps: int | None = Field(
        None, ge=1, description="length of the cosine learning-rate schedule; None = steps. Larger than steps "
        "stops a run part-way down its schedule (how a curriculum phase was cut, reproducibly)"
    )
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA of weights; the EMA is what is saved")
    caption_dropout: float = Field(0.1, ge=0, le=1, description="share of empty captions, for guidance")
    image_size: int = Field(32, ge=16)
    bf16: bool = Field(True, description="bf16 autocast for the forward pass (CPU and CUDA)")
    mix: SceneMix = Field(default_factory=SceneMix)
    layout_pool: int | None = Field(
        None, ge=1, description="draw every layout from this many shared seeds instead of a fresh one per image. "
        "Scenes of one structure then share their boxes: a curriculum that lets relations be learned, which "
        "random layouts alone do not in a CPU budget (BENCHMARKS.md, layout curriculum). None = fresh layouts"
    )
    min_timestep: int = Field(
        0, ge=0, le=999, description="train on timesteps from this one up (of 1000). 975 trains only where the input "
        "holds almost no image, so the target is the caption's expected layout: the relation phase"
    )
    drill: RelationDrill | None = Field(
        None, description="mix relation drill samples into every batch; None = none (layout_pool and "
        "min_timestep above then apply to the whole batch)"
    )
    save_every: int = Field(500, ge=1)
    init_from: str | None = Field(
        None, description="model folder to continue from (a curriculum phase); None trains from scratch"
    )


def _drill_size(recipe: BaseRecipe) -> int:
    return 0 if recipe.drill is None else max(1, round(recipe.drill.share * recipe.batch_size))


def _batch(rng: np.random.Generator, recipe: BaseRecipe) -> tuple[torch.Tensor, list[str]]:
    """Images in [-1, 1] and captions; the first `_drill_size` samples are the drill."""
    images, texts = [], []
    n_drill = _drill_size(recipe)
    drill_mix = SceneMix(single=0, counted=0, pair=0, triple=0, related=1.0, max_count=recipe.mix.max_count)
    for i in range(recipe.batch_size):
        drilled = i < n_drill
        scene = draw_scene(rng, drill_mix if drilled else recipe.mix)
        pool = recipe.drill.layout_pool if drilled else recipe.layout_pool
        layout_seed = int(rng.integers(pool or 2**31))
        img = np.asarray(render(scene, layout_seed, recipe.image_size), np.float32)
        images.append(img / 127.5 - 1.0)
        texts.append("" if rng.random() < recipe.caption_dropout else caption(scene))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, texts


def _lr_factor(step: int, recipe: BaseRecipe) -> float:
    if step < recipe.warmup:
        return (step + 1) / recipe.warmup
    progress = min(1.0, (step - recipe.warmup) / max(1, (recipe.schedule_steps or recipe.steps) - recipe.warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train_base(out_dir: str | Path, recipe: BaseRecipe, device: str = "cpu") -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    if recipe.init_from is None:
        pipe = new_pipeline(recipe.image_size).to(device)
    else:
        pipe = ShapesPipeline.from_pretrained(recipe.init_from).to(device)
        if pipe.unet.config.sample_size != recipe.image_size:
            raise ValueError(f"{recipe.init_from} makes {pipe.unet.config.sample_size}px images, recipe wants {recipe.image_size}")
    ema = copy.deepcopy(pipe)
    for m in (ema.unet, ema.text_encoder):
        m.requires_grad_(False)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    params = list(pipe.unet.parameters()) + list(pipe.text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, recipe))
    log = open(out_dir / "train_log.jsonl", "w")
    started, losses = time.time(), []
    pairs = list(zip(list(pipe.unet.parameters()) + list(pipe.text_encoder.parameters()),
                     list(ema.unet.parameters()) + list(ema.text_encoder.parameters())))
    with Progress(TextColumn("train-base"), BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.4f}"),
                  TimeRemainingColumn()) as bar:
        task = bar.add_task("train", total=recipe.steps, loss=float("nan"))
        for step in range(recipe.steps):
            x, texts = _batch(rng, recipe)
            x = x.to(device)
            ids = pipe.tokenizer(texts, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                                 return_tensors="pt").input_ids.to(device)
            with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=recipe.bf16):
                emb = pipe.text_encoder(ids).last_hidden_state
                n = _drill_size(recipe)
                parts = [per_sample_loss(pipe.unet, noise_scheduler, x[n:], emb[n:], gen, min_timestep=recipe.min_timestep)]
                if n:
                    parts.append(per_sample_loss(pipe.unet, noise_scheduler, x[:n], emb[:n], gen,
                                                 min_timestep=recipe.drill.min_timestep))
                loss = weighted_loss(torch.cat(parts), None)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            decay = min(recipe.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for p, e in pairs:
                    e.lerp_(p, 1 - decay)
            losses.append(loss.item())
            log.write(json.dumps({"step": step, "loss": loss.item(), "lr": sched.get_last_lr()[0],
                                  "elapsed_s": round(time.time() - started, 2)}) + "\n")
            bar.update(task, advance=1, loss=float(np.mean(losses[-50:])))
            if step % 50 == 0:
                log.flush()
            if (step + 1) % recipe.save_every == 0 or step + 1 == recipe.steps:
                log.flush()
                ema.save_pretrained(out_dir)
                _write_card(out_dir, recipe, step + 1, time.time() - started, float(np.mean(losses[-100:])), device)
    log.close()
    return out_dir


def _write_card(out_dir: Path, recipe: BaseRecipe, steps_done: int, wall_s: float, loss: float, device: str) -> None:
    card = {
        "recipe": recipe.model_dump(),
        "steps_done": steps_done,
        "wall_time_s": round(wall_s, 1),
        "final_loss_ema100": round(loss, 5),
        "device": device,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
        "command": f"atelier shapes train-base --recipe recipe.json --out {out_dir.name}",
    }
    if recipe.init_from:
        # The phase this one continued from, with its own provenance: the chain reproduces the model.
        previous = Path(recipe.init_from) / "recipe.json"
        card["continued_from"] = json.loads(previous.read_text()) if previous.exists() else None
    (out_dir / "recipe.json").write_text(json.dumps(card, indent=2))
    (out_dir / "README.md").write_text(
        "# shapes-world base model\n\n"
        "A pixel-space text-to-image diffusion model of the atelier shapes world "
        "(diffusers UNet2DConditionModel + 2-layer CLIPTextModel, word-level tokenizer), trained by "
        "`atelier shapes train-base` on procedurally rendered scenes. It is deliberately imperfect: "
        "the scene mix holds few counted and related scenes, so counts and relations are weak, as in "
        "real models. Held-out object pairs (atelier/shapes/heldout.py) never appear in its data.\n\n"
        f"- steps: {steps_done} of {recipe.steps}, batch {recipe.batch_size}, lr {recipe.lr}, seed {recipe.seed}\n"
        + (f"- continued from: {recipe.init_from}\n" if recipe.init_from else "")
        + f"- scene mix: {recipe.mix.model_dump()}\n"
        + (f"- relation drill: {recipe.drill.model_dump()}\n" if recipe.drill else "")
        + f"- caption dropout: {recipe.caption_dropout}; EMA decay {recipe.ema_decay}; bf16 autocast {recipe.bf16}\n"
        f"- wall time: {wall_s / 60:.1f} min on {device} ({platform.machine()}, {torch.get_num_threads()} threads)\n"
        f"- final training loss (mean of last 100 steps): {loss:.4f}\n\n"
        "Sampler (scheduler/): DPM-Solver++ 2M, trailing timesteps, 8 steps, guidance 3.\n\n"
        "Full recipe and provenance: recipe.json; per-step loss: train_log.jsonl.\n"
    )
