"""The World seam: what knows the model and how to check it. The graph calls only this.

A world loads its generator once per run and swaps adapters in and out; it plans goals in its
vocabulary, writes training prompts and a frozen held-out split, judges images into
`Judgment`s (atelier.worlds.judgment), relabels a wrong image for IPR, trains a LoRA SFT
adapter on its model, and says where its metrics sit between chance and perfect when it can.
Two worlds: `shapes` (atelier.worlds.shapes: the embedded CPU world with an exact detector) and
`open_vocab` (atelier.worlds.open_vocab: diffusers SD 1.5 / 2.x / SDXL, an open-vocabulary
detector, CLIP score and a VLM judge). `atelier.worlds.load_world` picks one by a plain match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from atelier.agents.planner import TargetSpec
from atelier.worlds.judgment import Asked

Progress = Callable[[int, int, float], None]  # (step, steps, loss) after every optimizer step


class WorldPrompt(BaseModel):
    """A prompt and what it asks for; the loop stores lists of these (prompts.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    text: str = Field(description="the prompt given to the model")
    asked: Asked = Field(default_factory=Asked, description="objects, counts and relation the judge checks")
    target_class: str | None = Field(None, description="the class the prompt was written for (CCSR), if any")


class Editor(Protocol):
    """RPO's edit step: an image, its prompt and edit instructions -> the edited image. One per
    world: atelier.worlds.shapes.editors (layout, sdedit), atelier.worlds.open_vocab.editor
    (ControlNet img2img, SDEdit)."""

    name: str

    def edit(self, image: Image.Image, prompt: str, instructions: Sequence[str], seed: int):
        """An object with `image` (the original's size), `ok` (every instruction carried out, as
        far as the editor can check) and `record()` (JSON-ready: method, seed, settings and
        per-instruction outcomes). An instruction it cannot carry out is recorded, never raised."""
        ...


class World(Protocol):
    name: str

    def plan(self, goal: str, record_dir: Path) -> TargetSpec:
        """The goal as a target in this world's vocabulary (the planner agent, or builtin rules).
        PlanError (a ValueError) for a goal that names nothing the world can check."""
        ...

    def heldout_prompts(self, spec: TargetSpec, n: int, seed: int) -> list[WorldPrompt]:
        """At most `n` held-out prompts that measure the spec; frozen in the run at plan time."""
        ...

    def training_prompts(self, spec: TargetSpec, n: int, seed: int, record_dir: Path,
                         heldout: Sequence[WorldPrompt]) -> list[WorldPrompt]:
        """`n` training prompts for a round (fewer only if the spec admits fewer); never one of
        `heldout` (checked)."""
        ...

    def sample(self, prompts: Sequence[str], seeds: Sequence[int], guidance: float,
               adapter: str | None) -> list[Image.Image]:
        """One image per (prompt, seed) from the loaded generator with `adapter` swapped in
        (None = the base); the image depends on its prompt, seed and guidance alone."""
        ...

    def judge(self, rows: Sequence[dict], spec: TargetSpec) -> list[dict]:
        """rows {file, prompt, prompt_index, seed, asked, ...} -> the same rows with the
        `Judgment` fields (and `detections`) added; a judge that cannot answer leaves a failed
        judgment, never an exception."""
        ...

    def relabel(self, judgment: dict, heldout: Sequence[WorldPrompt]) -> str | None:
        """IPR: the prompt that describes what a wrong image shows, or None when the world
        cannot say it or it would say one of the run's frozen `heldout` prompts again."""
        ...

    def train_sft(self, datasets: Sequence[Path], out: Path, init_adapter: str | None, seed: int,
                  progress: Progress | None = None) -> dict:
        """A LoRA trained by SFT on the image folders (metadata.jsonl: file_name, text, weight),
        continuing from `init_adapter`, saved atomically to `out`; returns its summary."""
        ...

    def references(self, prompts: Sequence[WorldPrompt], images_per_prompt: int,
                   seed_of: Callable[[int, int], int]) -> dict:
        """{kind: metrics} of chance and ceiling references on the same prompts and seeds, where
        the world can compute them for free ({} otherwise)."""
        ...

    def critique_request(self, row: dict):
        """RPO: the critic's request (atelier.agents.critic.CritiqueRequest) about a judged image row."""
        ...

    def editor(self) -> Editor:
        """RPO: the configured editor of this world (rpo.editor)."""
        ...

    def train_dpo(self, pair_sources: Sequence[Path], out: Path, init_adapter: str | None, seed: int,
                  progress: Progress | None = None) -> dict:
        """RPO: a LoRA trained by Diffusion-DPO on preference pairs (parquet files), the reference
        being the base with adapters disabled, continuing from `init_adapter`, saved atomically."""
        ...

    def close(self) -> None:
        """Free the loaded models."""
        ...
