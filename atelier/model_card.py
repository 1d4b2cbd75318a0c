"""A model card (README.md) in every adapter folder a run trains: what the adapter is for, what it
was trained from, its held-out metrics with intervals, the exact sampling settings it was
evaluated with (including the timestep gate), and a diffusers snippet that reproduces them.

The front matter is Hugging Face's model-card metadata (huggingface_hub.ModelCardData), so the
folder can be pushed to the Hub as it is. `base_model` is the hub id the run was given, 'shapes'
for atelier's shipped model, or a path relative to the run folder: never a machine's absolute path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from huggingface_hub import ModelCardData

from atelier.atomic import write_text_atomic
from atelier.config import Config
from atelier.report.summary import format_share
from atelier.runs import read_json
from atelier.tools.lora import ADAPTER_METADATA

CARD = "README.md"
CARD_METRICS = ("relation_accuracy_cond", "object_accuracy", "count_accuracy", "ipr_accuracy", "question_score",
                "clip_score")


def base_model_name(model: str, run_dir: Path) -> str:
    """'shapes', a hub id as given, or a local model folder relative to the run folder."""
    if model == "shapes" or not Path(model).exists():
        return model
    return os.path.relpath(Path(model).absolute(), Path(run_dir).absolute())


def _snippet(cfg: Config, run_dir: Path, adapter_dir: Path, prompt: str, seed: int) -> str:
    """Python that samples `prompt` at `seed` as the run's held-out evaluation did, run from the
    run folder."""
    g = cfg.generation
    adapter = os.path.relpath(adapter_dir.absolute(), run_dir.absolute())
    gate = (f"gate_adapter_by_timestep(pipe.unet, {g.adapter_min_timestep})  # the adapter only at timesteps >= "
            f"{g.adapter_min_timestep}, the base below, as evaluated\n" if g.adapter_min_timestep else "")
    gate_import = "from atelier.tools.adapter_gate import gate_adapter_by_timestep\n" if gate else ""
    if cfg.world_name == "shapes":
        base = ("str(SHIPPED_MODEL_DIR)" if cfg.model == "shapes" else repr(base_model_name(cfg.model, run_dir)))
        return (
            "from diffusers import DiffusionPipeline\n"
            + gate_import
            + ("from atelier.worlds.shapes.model import SHIPPED_MODEL_DIR\n" if cfg.model == "shapes" else "")
            + f"\nbase = {base}\n"
            "pipe = DiffusionPipeline.from_pretrained(base, custom_pipeline=f\"{base}/pipeline.py\", trust_remote_code=True)\n"
            f"pipe.load_lora_weights({adapter!r}, adapter_name=\"atelier\")\n"
            f"pipe.set_adapters([\"atelier\"], [{g.lora_scale!r}])\n"
            + gate
            + f"image = pipe([{prompt!r}], seeds=[{seed}], num_inference_steps={g.steps}, "
            f"guidance_scale={g.guidance_scale!r}).images[0]\n"
            "image.save(\"sample.png\")\n"
        )
    schedulers = {"dpm++2m": "DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)",
                  "ddim": "DDIMScheduler.from_config(pipe.scheduler.config)",
                  "euler": "EulerDiscreteScheduler.from_config(pipe.scheduler.config)",
                  "euler_a": "EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)"}
    scheduler = schedulers[g.scheduler].split(".")[0]
    # the run's device and dtype ('auto': float16 on a GPU, as atelier.tools.dtype picks without bf16; float32 on a CPU)
    dtype = g.dtype if g.dtype != "auto" else "float32" if cfg.device == "cpu" else "float16"
    return (
        "import torch\n"
        f"from diffusers import AutoPipelineForText2Image, {scheduler}\n"
        + gate_import
        + f"\npipe = AutoPipelineForText2Image.from_pretrained({base_model_name(cfg.model, run_dir)!r}, "
        f"torch_dtype=torch.{dtype}).to({cfg.device!r})\n"
        f"pipe.scheduler = {schedulers[g.scheduler]}  # {g.scheduler}, as evaluated\n"
        f"pipe.load_lora_weights({adapter!r}, adapter_name=\"atelier\")\n"
        f"pipe.set_adapters([\"atelier\"], [{g.lora_scale!r}])\n"
        + gate
        + f"image = pipe({prompt!r}, num_inference_steps={g.steps}, guidance_scale={g.guidance_scale!r},\n"
        f"             generator=torch.Generator(\"cpu\").manual_seed({seed})).images[0]  # atelier seeds on the CPU\n"
        "image.save(\"sample.png\")\n"
    )


def _metric_rows(metrics: dict, base: dict, keys: list[str]) -> str:
    rows = []
    for key in keys:
        have, was = (metrics.get(key) or {}), (base.get(key) or {})
        if have.get("value") is None:
            continue
        delta = f"{have['value'] - was['value']:+.3f}" if was.get("value") is not None else "n/a"
        rows.append(f"| {key} | {format_share(was)} | {format_share(have)} | {delta} |")
    return "\n".join(rows)


def card_text(adapter_dir: Path, *, run_dir: Path, cfg: Config, goal: str, metric: str, record: dict, base: dict,
              prompt: str, seed: int) -> str:
    """The model card of one round's adapter. `record` is the round's decision (round, metrics,
    promoted, gain, noise, reason); `prompt` and `seed` are the first held-out image's."""
    meta = {}
    if (adapter_dir / ADAPTER_METADATA).exists():
        meta = read_json(adapter_dir / ADAPTER_METADATA)
    g = cfg.generation
    base_name = base_model_name(cfg.model, run_dir)
    data = ModelCardData(base_model=None if base_name == "shapes" else base_name, library_name="diffusers",
                         tags=["text-to-image", "lora", "diffusers", "atelier", cfg.strategy],
                         inference=False)
    keys = [metric, *(k for k in CARD_METRICS if k != metric)]
    decision = "promoted (kept as the best so far)" if record.get("promoted") else "rolled back (not kept)"
    gate = (f"the adapter applied only at sampling timesteps >= {g.adapter_min_timestep} (of 1000), the base model "
            "below" if g.adapter_min_timestep else "the adapter applied at every sampling step")
    sampler = "DPM-Solver++ 2M (the shapes model's own)" if cfg.world_name == "shapes" else g.scheduler
    training = {k: meta[k] for k in ("trainer", "rank", "alpha", "steps", "final_loss", "n_samples", "target_modules")
                if k in meta}
    return (
        f"---\n{data.to_yaml()}\n---\n\n"
        f"# atelier LoRA: {goal}\n\n"
        f"A LoRA adapter trained by atelier's `{cfg.strategy}` strategy in round {record['round']} of run "
        f"`{run_dir.name}` (atelier {meta.get('atelier_version') or _version()}), on "
        f"{'atelier' + chr(39) + 's shipped shapes model' if base_name == 'shapes' else f'`{base_name}`'}.\n\n"
        f"- **Goal:** {goal}\n- **Target metric:** `{metric}`\n- **Decision:** {decision}: {record.get('reason')}\n"
        f"- **Weights:** `pytorch_lora_weights.safetensors` (diffusers LoRA format; `atelier export {run_dir.name} "
        f"--format kohya` writes the kohya / A1111 / ComfyUI key layout)\n\n"
        "## Held-out metrics\n\n"
        "Same held-out prompts and seeds for the base and this adapter; 95% Wilson intervals (shares) or "
        "Student's t intervals (means).\n\n"
        "| metric | base | this adapter | change |\n|---|---|---|---|\n"
        + _metric_rows(record.get("metrics") or {}, base, keys) + "\n\n"
        "## How it was sampled (use the same settings)\n\n"
        f"| setting | value |\n|---|---|\n| sampler | {sampler} |\n| steps | {g.steps} |\n"
        f"| guidance_scale | {g.guidance_scale:g} |\n| LoRA scale | {g.lora_scale:g} |\n"
        f"| timestep gate | {gate} |\n| dtype | {g.dtype} |\n\n"
        "```python\n" + _snippet(cfg, run_dir, adapter_dir, prompt, seed) + "```\n\n"
        "Run it from the run folder. It draws the first held-out prompt at its evaluation seed"
        + (" (the shapes pipeline seeds each image itself)." if cfg.world_name == "shapes" else ".")
        + (" The gate is atelier's (a forward pre-hook on the UNet that turns the adapter off below the timestep); "
           "without atelier, a `callback_on_step_end` that calls `pipe.disable_lora()` once the next timestep is "
           f"below {g.adapter_min_timestep} does the same." if g.adapter_min_timestep else "")
        + "\n\n## Training\n\n```json\n" + json.dumps(training, indent=1) + "\n```\n"
    )


def _version() -> str:
    from atelier.version import atelier_version

    return atelier_version()


def write_model_card(adapter_dir: Path, **fields) -> Path:
    """README.md in `adapter_dir` (atomically; rewritten with every report). Fields: card_text's."""
    path = Path(adapter_dir) / CARD
    write_text_atomic(path, card_text(Path(adapter_dir), **fields))
    return path
