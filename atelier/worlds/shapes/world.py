"""The shapes world behind the World seam (atelier.worlds.base): the shipped pixel-space model,
its exact detector, its captions and held-out pairs, IPR relabels in its grammar, and the chance
and ceiling references of ground-truth renders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from atelier.agents.planner import TargetSpec
from atelier.agents.questions import ccsr_outcomes, ccsr_score
from atelier.tools.detection import Detection
from atelier.tools.generate import generation_options
from atelier.tools.sft import SFTConfig, train_lora_sft
from atelier.agents.critic import CritiqueRequest
from atelier.strategies.rpo_config import editor_name
from atelier.tools.dpo import DPOConfig, train_diffusion_dpo
from atelier.worlds.base import Editor, Progress, WorldPrompt
from atelier.worlds.shapes.critique import critique_request
from atelier.worlds.shapes.editors import LayoutEditor, SDEditEditor
from atelier.worlds.generator import LoadedGenerator
from atelier.worlds.judgment import answer_probe
from atelier.worlds.shapes.judge import judge_rows
from atelier.worlds.shapes.metrics import asked_of
from atelier.worlds.shapes.plan import plan as plan_goal
from atelier.worlds.shapes.prompts import heldout_prompts, write_prompts
from atelier.worlds.shapes.model import load_generator
from atelier.worlds.shapes.questions import shapes_questions
from atelier.worlds.shapes.references import REFERENCE_KINDS, reference_metrics
from atelier.worlds.shapes.relabel import relabel_judgment
from atelier.worlds.shapes.scene import parse


def prompt_of(text: str) -> WorldPrompt:
    return WorldPrompt(text=text, asked=asked_of(parse(text)))


class ShapesWorld:
    name = "shapes"

    def __init__(self, config):
        self.config = config
        self._generator: LoadedGenerator | None = None
        self.loads = 0  # pipelines loaded by this world (one per run)

    @property
    def generator(self) -> LoadedGenerator:
        if self._generator is None:
            g = self.config.generation
            self._generator = LoadedGenerator(load_generator(self.config.model, device=self.config.device, options=generation_options(g)),
                                              g.steps, g.batch_size, g.lora_scale, g.adapter_min_timestep)
            self.loads += 1
        return self._generator

    def plan(self, goal: str, record_dir: Path) -> TargetSpec:
        return plan_goal(goal, self.config.agents.planner, record_dir)

    def heldout_prompts(self, spec: TargetSpec, n: int, seed: int) -> list[WorldPrompt]:
        return [prompt_of(text) for text in heldout_prompts(spec, n, seed)]

    def training_prompts(self, spec: TargetSpec, n: int, seed: int, record_dir: Path,
                         heldout: Sequence[WorldPrompt]) -> list[WorldPrompt]:
        batch = write_prompts(spec, n, seed, self.config.agents.prompt_writer, record_dir)
        held = {p.text for p in heldout}
        if clash := [p for p in batch.prompts if p in held]:
            raise ValueError(f"training prompts repeat held-out prompts: {clash[:3]}")
        return [prompt_of(text) for text in batch.prompts]

    def sample(self, prompts: Sequence[str], seeds: Sequence[int], guidance: float,
               adapter: str | None) -> list[Image.Image]:
        return self.generator.sample(prompts, seeds, guidance, adapter)

    def judge(self, rows: Sequence[dict], spec: TargetSpec) -> list[dict]:
        judged = judge_rows(self.config.agents.judge, [{k: v for k, v in r.items() if k != "asked"} for r in rows])
        return [self._with_questions(row) for row in judged]

    @staticmethod
    def _with_questions(row: dict) -> dict:
        """The prompt's yes/no questions answered from the exact detector (what CCSR scores),
        where the judge kept detections and asked none itself."""
        if row.get("question_score") is not None or row.get("failed"):
            return row
        questions, probes = shapes_questions(parse(row["prompt"]))
        detections = [Detection.from_dict(d) for d in row["detections"]]
        outcome = ccsr_outcomes(questions, {q.id: answer_probe(p, detections) for q, p in zip(questions, probes)})
        return {**row, "questions": [{**q.model_dump(), "outcome": outcome[q.id]} for q in questions],
                "question_score": ccsr_score(questions, outcome)}

    def relabel(self, judgment: dict, heldout: Sequence[WorldPrompt]) -> str | None:
        # The shapes world's held-out split is fixed (its held-out pairs): relabel checks it itself.
        return relabel_judgment(judgment)

    def train_sft(self, datasets: Sequence[Path], out: Path, init_adapter: str | None, seed: int,
                  progress: Progress | None = None) -> dict:
        t = self.config.train
        sft = SFTConfig(**t.lora_fields(seed, self.config.device), caption_dropout=t.caption_dropout,
                        min_timestep=t.min_timestep)
        pipe = self.generator.base_pipeline()
        # Training encodes captions in float32 whatever the sampling dtype: the adapter must not
        # depend on whether this CPU samples under bf16.
        sampling_dtype = pipe.compute_dtype
        pipe.set_compute_dtype("float32")
        try:
            return train_lora_sft(pipe, list(datasets), out, sft, init_adapter=init_adapter, progress=progress)
        finally:
            pipe.compute_dtype = sampling_dtype

    # --- RPO: critique, edit, Diffusion-DPO ------------------------------------------------------

    def critique_request(self, row: dict) -> CritiqueRequest:
        """The critic's request about a judged image: its caption's objects and words, and the
        exact detector's output (what the builtin critic reads; a model critic sees the image)."""
        return critique_request(Path(row["file"]), row["prompt"])

    def editor(self) -> Editor:
        """The configured editor (rpo.editor): the layout editor, or SDEdit by the base model."""
        rpo, g = self.config.rpo, self.config.generation
        base = self.generator.base_pipeline
        match editor_name(self.config):
            case "layout":
                return LayoutEditor(base, rpo.blend_strength, g.steps, g.guidance_scale)
            case "sdedit":
                return SDEditEditor(base, rpo.strength, g.steps, g.guidance_scale)
        raise ValueError(f"rpo.editor {self.config.rpo.editor!r}: the shapes world edits with 'layout' or 'sdedit'")

    def train_dpo(self, pair_sources: Sequence[Path], out: Path, init_adapter: str | None, seed: int,
                  progress: Progress | None = None) -> dict:
        """A LoRA trained by Diffusion-DPO (atelier.tools.dpo) on preference pairs (parquet files),
        continuing from `init_adapter`, the reference being the base (adapters disabled); the
        train section's steps, batch and rank, rpo.beta and rpo.learning_rate."""
        t, rpo = self.config.train, self.config.rpo
        dpo = DPOConfig(**{**t.lora_fields(seed, self.config.device), "lr": rpo.learning_rate}, beta=rpo.beta)
        pipe = self.generator.base_pipeline()
        sampling_dtype = pipe.compute_dtype
        pipe.set_compute_dtype("float32")  # as train_sft: the adapter must not depend on this CPU's bf16
        try:
            return train_diffusion_dpo(pipe, list(pair_sources), out, dpo, init_adapter=init_adapter, progress=progress)
        finally:
            pipe.compute_dtype = sampling_dtype

    def references(self, prompts: Sequence[WorldPrompt], images_per_prompt: int,
                   seed_of: Callable[[int, int], int]) -> dict:
        references = reference_metrics([p.text for p in prompts], images_per_prompt, seed_of)
        return {kind: {"label": REFERENCE_KINDS[kind], **metrics} for kind, metrics in references.items()}

    def close(self) -> None:
        self._generator = None
