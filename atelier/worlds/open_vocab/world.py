"""The open_vocab world behind the World seam (atelier.worlds.base): a diffusers text-to-image
model (SD 1.5 / 2.x / SDXL), an open-vocabulary detector (OWLv2 or Grounding DINO), CLIP score
and, when configured, a VLM judge.

    world = OpenVocabWorld(cfg)                   # nothing loaded yet
    spec = world.plan("realistic elephants and giraffes", run_dir)
    heldout = world.heldout_prompts(spec, 40, seed=0)
    prompts = world.training_prompts(spec, 64, seed=1, record_dir=round_dir, heldout=heldout)
    images = world.sample([p.text for p in prompts], seeds, guidance=7.5, adapter=None)
    rows = world.judge(rows, spec)                # Judgment fields + detections + clip_score
    world.train_sft([dataset], out, init_adapter=None, seed=0)

Each model loads once per run, when first used (atelier.worlds.open_vocab.models).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image

from atelier.agents.planner import TargetSpec
from atelier.config import Config
from atelier.runs import RunError
from atelier.tools.detection import Detection
from atelier.tools.edit import DEFAULT_STRENGTH, EditResult, edit
from atelier.tools.latent_sft import LatentSFTConfig, train_latent_lora_sft
from atelier.tools.relabel import relabel_objects
from atelier.agents.critic import CritiqueRequest
from atelier.strategies.rpo_config import editor_name
from atelier.tools.dpo import DPOConfig, train_diffusion_dpo
from atelier.worlds.base import Editor, Progress, WorldPrompt
from atelier.worlds.open_vocab.editor import DiffusersEditor, controlnet_pipe
from atelier.worlds.open_vocab import plan as planning
from atelier.worlds.open_vocab.judge import asked_of_row, judge_rows
from atelier.worlds.open_vocab.models import OpenVocabModels
from atelier.worlds.open_vocab.parse import asked_of_text
from atelier.worlds.open_vocab.prompt_agent import write_with_model
from atelier.worlds.open_vocab.prompts import read_heldout_file, write_heldout, write_training
from atelier.worlds.open_vocab.split import Split, check_disjoint, heldout_keys, is_heldout_prompt, make_split


def sft_config(cfg: Config, seed: int) -> LatentSFTConfig:
    """The latent LoRA SFT settings of the config's `train` section."""
    t = cfg.train
    return LatentSFTConfig(**t.lora_fields(seed, cfg.device), resolution=t.resolution, snr_gamma=t.snr_gamma,
                           gradient_checkpointing=t.gradient_checkpointing, caption_dropout=t.caption_dropout)


class OpenVocabWorld:
    name = "open_vocab"

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.models = OpenVocabModels(cfg)
        self._spec: TargetSpec | None = None
        self._controlnet_editor = None

    @property
    def loads(self):
        """Models loaded so far, by name (generator, detector, clip): one each per run."""
        return self.models.loads

    # --- vocabulary and prompts ---------------------------------------------------------------

    def classes(self, spec: TargetSpec | None = None) -> list[str]:
        spec = spec or self._spec
        names = list(spec.objects) if spec is not None else []
        return list(dict.fromkeys(names + list(self.cfg.vocabulary.classes)))

    def split(self, spec: TargetSpec) -> Split:
        """The frozen held-out split of the spec's classes and the configured settings."""
        return make_split(spec.objects or self.cfg.vocabulary.classes, self.cfg.vocabulary.settings)

    @property
    def compositions_held(self) -> bool:
        """A user's held-out file keeps its prompts' compositions out of training and relabels,
        not just their words (atelier.worlds.open_vocab.split.heldout_keys)."""
        return self.cfg.vocabulary.heldout_file is not None

    def _remember(self, spec: TargetSpec) -> None:
        self._spec = spec

    def plan(self, goal: str, record_dir: Path) -> TargetSpec:
        spec = planning.plan(goal, self.cfg.agents.planner, self.cfg.vocabulary, Path(record_dir))
        self._remember(spec)
        return spec

    def heldout_prompts(self, spec: TargetSpec, n: int, seed: int) -> list[WorldPrompt]:
        if self.cfg.vocabulary.heldout_file is not None:
            prompts = read_heldout_file(self.cfg.vocabulary.heldout_file, self.classes(spec), n)
        else:
            prompts = write_heldout(spec, self.split(spec), n, seed)
        self._remember(spec)
        return prompts

    def training_prompts(self, spec: TargetSpec, n: int, seed: int, record_dir: Path,
                         heldout: Sequence[WorldPrompt]) -> list[WorldPrompt]:
        self._remember(spec)
        writer = self.cfg.agents.prompt_writer
        match writer.backend:
            case "builtin":
                prompts = write_training(spec, self.split(spec), n, seed, heldout, self.compositions_held)
            case "openai":
                prompts = write_with_model(writer, spec, self.split(spec), n, seed, Path(record_dir), heldout,
                                           self.compositions_held)
            case _:
                raise ValueError(f"agents.prompt_writer: unknown backend {writer.backend!r}")
        check_disjoint(prompts, heldout, self.compositions_held)
        return prompts

    # --- generation, judging, relabelling ---------------------------------------------------

    def sample(self, prompts: Sequence[str], seeds: Sequence[int], guidance: float,
               adapter: str | None) -> list[Image.Image]:
        return self.models.generator.sample(prompts, seeds, guidance, adapter)

    def judge(self, rows: Sequence[dict], spec: TargetSpec) -> list[dict]:
        self._remember(spec)
        clip = self.models.clip
        return judge_rows(rows, spec.questions, self.classes(spec), self.models.detector, clip, self.cfg.agents.judge)

    def relabel(self, judgment: dict, heldout: Sequence[WorldPrompt]) -> str | None:
        """IPR's relabel from the stored detections; None when it would say a held-out prompt
        again (by text or composition: atelier.worlds.open_vocab.split). Reads nothing but its
        arguments, so a resumed run relabels as the uninterrupted one did."""
        asked = asked_of_row(judgment)
        if not asked.objects or (asked.relation is not None and len(asked.objects) != 2):
            return None
        detections = [Detection.from_dict(d) for d in judgment.get("detections", [])]
        text = relabel_objects([(o.name, o.count) for o in asked.objects], asked.relation, detections)
        if text is None or is_heldout_prompt(text, asked_of_text(text, [o.name for o in asked.objects]),
                                             heldout_keys(heldout, self.compositions_held)):
            return None
        return text

    # --- training, references, editing --------------------------------------------------------

    def train_sft(self, datasets: Sequence[Path], out: Path, init_adapter: str | None, seed: int,
                  progress: Progress | None = None) -> dict:
        pipe = self.models.generator.base_pipeline()
        sft = sft_config(self.cfg, seed)
        if pipe.unet.dtype == torch.float16 and not sft.bf16:
            # float16 activations with no loss scaling underflow: refuse rather than train on zeros.
            raise RunError("the pipeline is in float16 (generation.dtype 'auto' on a GPU without bfloat16, or "
                           "'float16'), and LoRA training needs bfloat16 or float32: set generation.dtype: float32")
        return train_latent_lora_sft(pipe, list(datasets), out, sft, init_adapter=init_adapter,
                                     progress=progress)

    def references(self, prompts: Sequence[WorldPrompt], images_per_prompt: int,
                   seed_of: Callable[[int, int], int]) -> dict:
        return {}  # real images have no free chance or ceiling

    def edit(self, image: Image.Image, prompt: str, instructions: Sequence[str], seed: int,
             strength: float = DEFAULT_STRENGTH, adapter: str | None = None) -> EditResult:
        """`image` edited by `instructions` (SDEdit on the loaded pipeline's components, with
        `adapter` in; None = the base), at the config's steps and guidance."""
        g = self.cfg.generation
        return edit(self.models.editor(adapter), image, prompt, list(instructions), seed, strength=strength,
                    steps=g.steps, guidance_scale=g.guidance_scale)

    # --- RPO: critique, editor, Diffusion-DPO ---------------------------------------------------

    def critique_request(self, row: dict) -> CritiqueRequest:
        """The critic's request about a judged image: what its prompt asks and the detector's
        output stored with its judgment (a model critic sees the image)."""
        return CritiqueRequest(image=Path(row["file"]), prompt=row["prompt"], asked=asked_of_row(row),
                               detections=tuple(row.get("detections", [])))

    def editor(self) -> Editor:
        """rpo.editor: ControlNet img2img (rpo.controlnet) or SDEdit, on the base model's components."""
        rpo, g = self.cfg.rpo, self.cfg.generation
        match editor_name(self.cfg):
            case "controlnet":
                def pipe_of():
                    if self._controlnet_editor is None:
                        base = self.models.generator.base_pipeline()
                        self._controlnet_editor = controlnet_pipe(base, rpo.controlnet, base.unet.dtype)
                    self.models.generator.use(None)
                    return self._controlnet_editor
                return DiffusersEditor("controlnet", pipe_of, rpo.strength, g.steps, g.guidance_scale)
            case "sdedit":
                return DiffusersEditor("sdedit", lambda: self.models.editor(None), rpo.strength, g.steps, g.guidance_scale)
        raise ValueError(f"rpo.editor {rpo.editor!r}: the open_vocab world edits with 'controlnet' or 'sdedit'")

    def train_dpo(self, pair_sources: Sequence[Path], out: Path, init_adapter: str | None, seed: int,
                  progress: Progress | None = None) -> dict:
        """A LoRA trained by Diffusion-DPO (atelier.tools.dpo) on preference pairs, continuing from
        `init_adapter`, the reference being the base (adapters disabled); the train section's LoRA
        settings, rpo.beta and rpo.learning_rate."""
        t, rpo = self.cfg.train, self.cfg.rpo
        dpo = DPOConfig(**{**t.lora_fields(seed, self.cfg.device), "lr": rpo.learning_rate}, beta=rpo.beta,
                        resolution=t.resolution, gradient_checkpointing=t.gradient_checkpointing)
        pipe = self.models.generator.base_pipeline()
        if pipe.unet.dtype == torch.float16 and not dpo.bf16:
            raise RunError("the pipeline is in float16 (generation.dtype 'auto' on a GPU without bfloat16, or "
                           "'float16'), and LoRA training needs bfloat16 or float32: set generation.dtype: float32")
        return train_diffusion_dpo(pipe, list(pair_sources), out, dpo, init_adapter=init_adapter, progress=progress)

    def close(self) -> None:
        self._controlnet_editor = None
        self.models.close()

