"""Online RL with the judge as reward (`grpo`): DDPO (Black et al. 2023) with Flow-GRPO's
group-relative advantages and KL to the base (Liu et al. 2025), on a LoRA.

The loop's round gives the prompts: curate keeps one row per distinct training prompt of the
round's judged candidates (with what it asks, for the judge). Training then runs
`grpo.iterations` online iterations on them (atelier.strategies.grpo_trainer): the policy (the
UNet with the LoRA, DDIM at `grpo.eta`) draws `grpo.group_size` images per prompt, the world's
judge judges them, the reward (atelier.strategies.grpo_reward) is read from the judgment for
the run's metric, and a clipped policy-gradient step moves the LoRA. The loop's evaluate/decide
then gates the adapter as for every strategy, on the world's own sampler.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from atelier.strategies.grpo_reward import reward
from atelier.strategies.grpo_trainer import train_grpo
from atelier.tools.lora_training import LoraTrainingConfig
from atelier.worlds.base import Progress, World, WorldPrompt

# Under the round's folder (the parent of the adapter's).
WORK_DIR = "grpo"
LOG_FILE = "grpo_iterations.jsonl"
STORIES_FILE = "stories.jsonl"


def prompt_rows(judgments: Sequence[dict], heldout: Sequence[WorldPrompt]) -> list[dict]:
    """One dataset row per distinct prompt of the judged candidates (the first image stands for
    it in the dataset folder), never a held-out prompt; failed judgments count too (the prompt
    is still a prompt)."""
    held = {p.text for p in heldout}
    rows, seen = [], set()
    for j in judgments:
        text = j["prompt"]
        if text in seen or text in held:
            continue
        seen.add(text)
        row = {"file": j["file"], "text": text, "weight": 1.0, "kind": "prompt", "prompt": text}
        for key in ("asked", "target_class"):
            if j.get(key) is not None:
                row[key] = j[key]
        rows.append(row)
    return rows


def read_prompts(datasets: Sequence[Path]) -> list[dict]:
    """{text, asked?, target_class?} of every distinct prompt in the datasets' metadata.jsonl."""
    prompts: dict[str, dict] = {}
    for d in datasets:
        for line in (Path(d) / "metadata.jsonl").read_text().splitlines():
            row = json.loads(line)
            prompts.setdefault(row["text"], {"text": row["text"], "asked": row.get("asked"),
                                             "target_class": row.get("target_class")})
    return list(prompts.values())


def loaded_generator(world: World):
    """The world's LoadedGenerator: `world.generator` (shapes) or `world.models.generator` (open_vocab)."""
    generator = getattr(world, "generator", None)
    return generator if generator is not None else world.models.generator


class GRPO:
    name = "grpo"

    def __init__(self, config):
        self.config = config

    def extra_nodes(self) -> Sequence[tuple[str, object]]:
        return ()

    def curate(self, judgments: Sequence[dict], world: World, heldout: Sequence[WorldPrompt]) -> list[dict]:
        return prompt_rows(judgments, heldout)

    def metric(self, spec) -> str:
        if self.config.decide.metric != "auto":
            return self.config.decide.metric
        if spec is None:
            raise ValueError("grpo needs the run's target spec (or decide.metric) to know its reward")
        return spec.metric

    def train(self, world: World, datasets: Sequence[Path], out: Path, init_adapter: str | None, seed: int,
              progress: Progress | None = None, spec=None) -> dict:
        cfg, out = self.config, Path(out)
        metric = self.metric(spec)
        lora = LoraTrainingConfig(**cfg.train.lora_fields(seed, cfg.device) | {"bf16": False})
        pipe = loaded_generator(world).base_pipeline()
        # The policy runs in float32 whatever the sampling dtype, as the SFT trainers do: the
        # adapter must not depend on whether this CPU samples under bf16.
        sampling_dtype = getattr(pipe, "compute_dtype", None)
        if sampling_dtype is not None:
            pipe.set_compute_dtype("float32")
        try:
            return train_grpo(
                pipe, read_prompts(datasets), lambda rows: world.judge(rows, spec),
                lambda j: reward(j, metric, cfg.grpo), out, out.parent / WORK_DIR, out.parent / LOG_FILE,
                out.parent / STORIES_FILE, cfg.grpo, lora,
                guidance=cfg.grpo.guidance_scale or cfg.generation.guidance_scale,
                lora_min_timestep=cfg.generation.adapter_min_timestep, batch_size=cfg.generation.batch_size,
                init_adapter=init_adapter, progress=progress)
        finally:
            if sampling_dtype is not None:
                pipe.compute_dtype = sampling_dtype
