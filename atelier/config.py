"""The run configuration: one YAML file, validated by pydantic (unknown keys are errors).

`load_config(path, overrides)` reads the file, applies `--set key.path=value` overrides (values
parsed as YAML scalars), validates, and raises ConfigError with one line naming the field.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from atelier.strategies.grpo_config import GRPOConfig
from atelier.strategies.grpo_config import check as check_grpo
from atelier.strategies.rewrite_config import RewriteConfig
from atelier.strategies.rewrite_config import check as check_rewrite
from atelier.strategies.rpo_config import RPOConfig
from atelier.strategies.rpo_config import check as check_rpo
from atelier.tools.model_folders import check_model_folder, is_shapes_model
from atelier.worlds.judgment import METRICS, Relation


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line naming the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Tokens that are valid identifiers: Hugging Face, GitHub, Groq, xAI, Google, Stripe-style prefixes.
_KEY_PREFIX = re.compile(r"^(hf_|ghp_|gho_|ghu_|ghs_|ghr_|github_pat_|gsk_|xai_|AIza|sk_live_|sk_test_|rk_live_)[A-Za-z0-9_]{12,}$")


def _looks_like_a_key(name: str) -> bool:
    """A token pasted where a variable name belongs: a known key prefix, or 20+ characters mixing
    lower and upper case with digits (variable names are UPPER_SNAKE or lower_snake by convention)."""
    mixed = any(c.islower() for c in name) and any(c.isupper() for c in name) and any(c.isdigit() for c in name)
    return bool(_KEY_PREFIX.match(name)) or (len(name) >= 20 and mixed)


class AgentConfig(_Strict):
    backend: Literal["builtin", "openai"] = Field(
        "builtin",
        description="who plays this role: 'builtin' = offline rules over detector output; "
        "'openai' = a model behind an OpenAI-protocol endpoint (a vLLM server or an API)",
    )
    base_url: str | None = Field(
        None, description="OpenAI-protocol endpoint of an 'openai' role, e.g. http://127.0.0.1:8000/v1 (vLLM)"
    )
    model: str | None = Field(None, description="model name the endpoint serves, e.g. Qwen/Qwen2.5-VL-7B-Instruct")
    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature; 0 = the most repeatable answers")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling: only the most likely tokens whose "
                                "probabilities add up to this are drawn; unset = the server's default (1)")
    max_tokens: int = Field(2048, ge=16, description="longest answer the model may write, in tokens")
    timeout_s: float = Field(120.0, gt=0, description="seconds one request may take before it counts as a transport error")
    max_concurrency: int = Field(
        8, ge=1, description="requests in flight at once to this endpoint (roles sharing a base_url share the bound)"
    )
    max_retries: int = Field(3, ge=0, description="retries, with exponential back-off, after transport errors, 429 and 5xx")
    retry_backoff_s: float = Field(0.5, ge=0, description="first back-off delay in seconds; doubles after every retry")
    max_reasks: int = Field(
        2, ge=0, description="times an answer that fails validation is sent back with the error before it is recorded as failed"
    )
    fallback: Literal["none", "builtin"] = Field(
        "none", description="planner and prompt_writer: what happens when the model gives no valid answer. 'none' = "
        "the run pauses (`atelier resume` continues once the endpoint answers; a prompt writer's valid prompts are "
        "kept, fewer than asked); 'builtin' = the builtin agent answers instead, recorded in the role's record and "
        "the report",
    )
    api_key_env: str | None = Field(
        None,
        description="name of the environment variable holding the API key (never the key itself); "
        "unset = no key, as a local vLLM server expects",
    )

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        # The message never repeats the value: it may be a key pasted by mistake.
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("must name an environment variable (letters, digits, '_'), not hold the key itself")
        if value is not None and _looks_like_a_key(value):
            raise ValueError("looks like an API key, not the name of the variable holding it; put the key in an "
                             "environment variable (e.g. OPENAI_API_KEY) and name that here")
        return value

    @model_validator(mode="after")
    def _endpoint_named(self) -> AgentConfig:
        if self.backend == "openai":
            missing = [name for name in ("base_url", "model") if not getattr(self, name)]
            if missing:
                raise ValueError(f"backend 'openai' needs {' and '.join(missing)}")
        return self


class AgentsConfig(_Strict):
    planner: AgentConfig = Field(default_factory=AgentConfig, description="goal text -> target spec")
    prompt_writer: AgentConfig = Field(default_factory=AgentConfig, description="target spec -> training prompts")
    judge: AgentConfig = Field(default_factory=AgentConfig, description="image + prompt -> judgment")
    critic: AgentConfig = Field(default_factory=AgentConfig, description="image + prompt -> critique of what is wrong")
    edit_writer: AgentConfig = Field(
        default_factory=AgentConfig, description="critique + prompt (+ image) -> at most three short edit instructions"
    )

    @model_validator(mode="after")
    def _fallback_roles(self) -> AgentsConfig:
        for name in ("judge", "critic", "edit_writer"):
            if getattr(self, name).fallback != "none":
                raise ValueError(f"{name}.fallback: only the planner and the prompt_writer can fall back to a builtin agent")
        return self

    def roles(self) -> dict[str, AgentConfig]:
        return {name: getattr(self, name) for name in type(self).model_fields}

    @model_validator(mode="after")
    def _one_bound_per_endpoint(self) -> AgentsConfig:
        # Roles on one server share its concurrency bound, so they must agree on it.
        bounds: dict[str, tuple[str, int]] = {}
        for name, agent in self.roles().items():
            if agent.backend != "openai":
                continue
            url = agent.base_url.rstrip("/")
            if url in bounds and bounds[url][1] != agent.max_concurrency:
                other, limit = bounds[url]
                raise ValueError(
                    f"{name} and {other} share {url} but set max_concurrency {agent.max_concurrency} and {limit}; use one value"
                )
            bounds.setdefault(url, (name, agent.max_concurrency))
        return self


class BudgetConfig(_Strict):
    rounds: int = Field(3, ge=1, le=100, description="improvement rounds at most")
    patience: int = Field(2, ge=1, description="stop after this many rounds in a row without promotion")
    prompts_per_round: int = Field(64, ge=1, description="new training prompts written each round")
    images_per_prompt: int = Field(4, ge=1, description="candidates generated per training prompt")
    heldout_prompts: int = Field(40, ge=1, le=1000, description="held-out prompts used to evaluate (the shapes world's "
                                 "split has 80; an open_vocab world writes at most this many, or fewer when its "
                                 "classes and places admit fewer)")
    images_per_heldout_prompt: int = Field(4, ge=1, le=16, description="images per held-out prompt at evaluation (each has its own seed; 16 at most)")
    guided_base_reference: bool = Field(
        True, description="when generation.candidate_guidance_scale differs from guidance_scale, also evaluate the base "
        "at it on the held-out prompts and seeds, so the report says whether training beat raising the guidance "
        "(one more held-out evaluation: about 1 min in the demo, or as many judge calls as an evaluation)",
    )
    batch_prompts: int = Field(16, ge=1, description="prompts per generate/judge task (the unit of fan-out and of resume)")


class TrainConfig(_Strict):
    steps: int = Field(300, ge=1, description="LoRA optimizer steps per round")
    batch_size: int = Field(16, ge=1, description="images per optimizer step")
    learning_rate: float = Field(1e-4, gt=0, description="AdamW learning rate of the LoRA weights")
    lora_rank: int = Field(8, ge=1, description="LoRA rank r")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA alpha; default = rank (scale 1)")
    relabel_weight: float = Field(0.5, ge=0, description="IPR lambda: loss weight of relabelled samples")
    correct_weight: float = Field(1.0, ge=0, description="loss weight of samples that were already correct")
    relabel: bool = Field(True, description="relabel wrong samples from detections; false = IPR ablation 'no relabelling'")
    accumulate: bool = Field(True, description="train on the datasets of all rounds so far, not just this round's")
    bf16: bool | None = Field(
        None, description="bf16 autocast while training; null = on a CUDA device that supports it, off on a CPU "
        "(float32 there is exact, and bf16 is 16-22x slower on CPUs without AVX512-BF16)",
    )
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step (effective batch = batch_size x this)")
    resolution: int | None = Field(
        None, ge=8, description="training image size of a diffusers model; null = the model's own (512 SD 1.5, 1024 SDXL)"
    )
    snr_gamma: float | None = Field(None, gt=0, description="min-SNR-gamma loss weighting of a diffusers model (5.0 in "
                                    "Hang et al. 2023); null = off")
    checkpoint_every: int = Field(
        50, ge=0, description="save the LoRA and optimizer state every this many steps (atomically, beside the "
        "round's adapter); a killed or stopped training resumes from the last save to the same adapter; 0 = never",
    )
    gradient_checkpointing: bool = Field(False, description="recompute UNet activations in backward: less GPU memory, slower")
    caption_dropout: float = Field(
        0.0, ge=0, lt=1, description="share of samples trained on the empty caption each step, to anchor the "
        "unconditional prediction that classifier-free guidance subtracts (0 = off; 0.1 cost the shapes demo 2-4 "
        "points of object accuracy)",
    )
    min_timestep: int = Field(
        0, ge=0, le=999, description="train only on timesteps from this one up (of 1000). Where objects sit, and so "
        "which relation holds, is decided in the noisiest steps; 0 = the usual uniform draw",
    )


    def lora_fields(self, seed: int, device: str) -> dict:
        """The settings every LoRA trainer shares (atelier.tools.lora_training), from this section."""
        from atelier.tools.dtype import train_in_bf16

        return {"steps": self.steps, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                "lr": self.learning_rate, "rank": self.lora_rank, "alpha": self.lora_alpha or self.lora_rank,
                "seed": seed, "bf16": train_in_bf16(self.bf16, device), "checkpoint_every": self.checkpoint_every}


class GenerationConfig(_Strict):
    steps: int = Field(
        8, ge=1, le=1000,  # atelier.worlds.shapes.model.DEFAULT_STEPS
        description="sampler steps per image (8 suits the shapes model's DPM-Solver++; about 25 a real model's dpm++2m)",
    )
    guidance_scale: float = Field(
        3.0, ge=1.0, description="classifier-free guidance scale (3 suits the shapes model; SD models are usually run at 5-7.5)"
    )
    candidate_guidance_scale: float | None = Field(
        None, ge=1.0, description="classifier-free guidance of the training candidates drawn from the base model "
        "(null = guidance_scale): they follow the prompt more often, and the adapter learns that. An adapter's "
        "candidates and every held-out image the loop decides on use guidance_scale (BENCHMARKS.md, 'Stronger "
        "guidance'); budget.guided_base_reference adds the base at this guidance as a reference for the report",
    )
    batch_size: int = Field(64, ge=1, description="images per forward batch")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="weights and activations of a diffusers model: float16/bfloat16 on a CUDA device, float32 on a CPU "
        "(float16 on a CPU is an error); the shapes model runs in float32 or under bfloat16 autocast (2x faster "
        "on CPUs with AVX512-BF16, same held-out figures; 16-22x slower on CPUs without it). 'auto' = bfloat16 on "
        "a CUDA device that supports it (else float16); on a CPU, float32, or bfloat16 autocast for the shapes "
        "model where the CPU has fast bf16",
    )
    scheduler: Literal["dpm++2m", "ddim", "euler", "euler_a"] = Field(
        "dpm++2m",
        description="sampler of a diffusers model, built from the model's own scheduler config so v-prediction is kept: "
        "dpm++2m = DPM-Solver++ 2M (fast, the default), ddim, euler, euler_a = Euler ancestral; "
        "the shapes model always samples with its own DPM-Solver++ 2M",
    )
    vae_tiling: bool = Field(False, description="decode latents in tiles: large images in less GPU memory (diffusers models)")
    vae_slicing: bool = Field(False, description="decode a batch one image at a time: less GPU memory (diffusers models)")
    cpu_offload: bool = Field(
        False, description="keep models in CPU memory and move each to the GPU only while it runs (needs a CUDA device)"
    )
    lora_scale: float = Field(1.0, ge=0, description="scale the LoRA adapter is applied at when generating (0 = the base model)")
    adapter_min_timestep: int = Field(
        0, ge=0, le=999, description="apply the LoRA adapter only at sampling timesteps from this one up (of 1000), the "
        "base model below: the noisy steps decide where objects sit (the relation), the late ones draw them, and an "
        "adapter trained on the model's own samples costs object accuracy there. 0 = every step",
    )

    @property
    def candidates_guided_apart(self) -> bool:
        """Whether the base's training candidates are sampled at a guidance of their own."""
        return self.candidate_guidance_scale is not None and self.candidate_guidance_scale != self.guidance_scale

    def candidate_guidance(self, adapter: str | None) -> float:
        """Guidance of a training candidate drawn with `adapter` (None = the base). Only the base's
        candidates get candidate_guidance_scale: an adapter has learned it already, and sampling it
        guided again compounds the guidance (the candidates' object accuracy fell from 0.76 to 0.60)."""
        from_base = adapter is None or self.lora_scale == 0
        if from_base and self.candidate_guidance_scale is not None:
            return self.candidate_guidance_scale
        return self.guidance_scale


class DecideConfig(_Strict):
    metric: str = Field(
        "auto", description="held-out metric to improve, one of " + ", ".join(METRICS) + "; 'auto' = chosen by the "
        "planner from the goal",
    )
    noise_sigmas: float = Field(
        1.0, ge=0, description="promote only if the gain exceeds this many standard errors of the difference"
    )
    max_drop: dict[str, float] = Field(
        default_factory=lambda: {"object_accuracy": 0.03},
        description="guards: never promote an adapter whose held-out <metric> falls more than this below the base's, "
        "e.g. {object_accuracy: 0.03, count_accuracy: 0.05}; a metric the evaluation does not have is skipped (on the "
        "shapes world every setting that raises relations costs counts: BENCHMARKS.md)",
    )
    max_failed_share: float = Field(
        0.2, ge=0, le=1, description="pause the run (status 'paused', `atelier resume` continues) when more than this "
        "share of a judge batch's or a held-out evaluation's judgments failed (the judge's endpoint gave no usable "
        "answer); failed judgments are left out of every metric either way; 1 = never pause",
    )
    paired: bool = Field(
        True, description="standard error of the gain from the paired images (same prompts and seeds, prompts as units); false = from the two Wilson intervals as if independent"
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_guards(cls, data):
        # Configs written before guards were named by metric: max_object_drop / max_count_drop.
        if isinstance(data, dict) and ("max_object_drop" in data or "max_count_drop" in data):
            data = dict(data)
            guards = dict(data.get("max_drop") or {"object_accuracy": 0.03})
            for old, metric in (("max_object_drop", "object_accuracy"), ("max_count_drop", "count_accuracy")):
                if old in data:
                    value = data.pop(old)
                    if value is None:
                        guards.pop(metric, None)
                    else:
                        guards[metric] = value
            data["max_drop"] = guards
        return data

    @field_validator("max_drop")
    @classmethod
    def _guards_named(cls, value: dict[str, float]) -> dict[str, float]:
        for metric, drop in value.items():
            if metric not in METRICS:
                raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
            if not 0 <= drop:
                raise ValueError(f"{metric}: a drop must be >= 0")
        return value


class VocabularyConfig(_Strict):
    classes: list[str] = Field(
        default_factory=list, description="open_vocab world: object classes the builtin planner and prompt writer use, "
        "e.g. [elephant, giraffe] or COCO names; a planner agent may choose others from the goal",
    )
    relations: list[Relation] = Field(
        default_factory=list, description="open_vocab world: relations of a spatial goal (left of, right of, above, "
        "below); prompts are then VISOR's 'a <class> to the left of a <class>'",
    )
    settings: list[str] = Field(
        default_factory=list, description="open_vocab world: places for CCSR-style prompts ('in the savanna'); "
        "[] = a few generic ones",
    )
    heldout_file: Path | None = Field(
        None, description="a file with one held-out prompt per line (used instead of writing them); relative paths are "
        "read from where the run starts",
    )

    @field_validator("classes")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        value = [v.strip() for v in value]
        if any(not v for v in value) or len(set(value)) != len(value):
            raise ValueError("classes must be distinct non-empty names")
        return value


class DetectorConfig(_Strict):
    architecture: Literal["owlv2", "grounding_dino"] = Field("owlv2", description="open-vocabulary detector family")
    model: str = Field("google/owlv2-base-patch16-ensemble", description="hub id or local folder of the detector")
    score_threshold: float | None = Field(
        None, ge=0, le=1, description="keep boxes scoring above this; null = 0.1 for OWLv2 (VISOR), 0.35 for Grounding DINO"
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="detector weights: 'auto' = bfloat16 on a CUDA device that has it (half the memory), float32 on a CPU"
    )


class ClipConfig(_Strict):
    model: str | None = Field(
        "openai/clip-vit-large-patch14", description="CLIP hub id or local folder for the CLIP score (torchmetrics' "
        "default model); null = no CLIP score",
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "float32", description="CLIP weights: float32 by default (0.4B parameters; in bf16 its scores move by up to "
        "0.08, eight times the win rate's 0.01 tie band); 'auto' = bfloat16 on a CUDA device that has it"
    )


class CCSRConfig(_Strict):
    detector_threshold: float = Field(
        0.5, ge=0, le=1, description="CCSR: keep a prompt's best-scoring image only when the detector finds a target "
        "class with at least this confidence",
    )


class LoggingConfig(_Strict):
    report_to: list[Literal["tensorboard", "wandb"]] | None = Field(
        None, description="experiment trackers that get the training loss per step, held-out metrics and a grid per "
        "round (accelerate's trackers; pip install 'atelier[tensorboard]' or 'atelier[wandb]'); unset = the "
        "environment variable ATELIER_REPORT_TO (comma-separated), else none",
    )

    @field_validator("report_to")
    @classmethod
    def _installed(cls, names: list[str] | None) -> list[str] | None:
        # A tracker whose package is missing fails the config check, before a run folder exists.
        import importlib.util

        for name in names or []:
            if importlib.util.find_spec(name) is None:
                raise ValueError(f"{name} is not installed; pip install 'atelier[{name}]'")
        return names


class Config(_Strict):
    goal: str = Field(min_length=3, description="what the model should get better at, in plain language")
    model: str = Field("shapes", description="'shapes' (the embedded world), or a hub id / local path (real models)")
    world: Literal["auto", "shapes", "open_vocab"] = Field(
        "auto", description="what knows the model and how to check it: 'shapes' (the embedded world), 'open_vocab' "
        "(a diffusers model + open-vocabulary detector + CLIP + VLM judge); 'auto' = shapes for 'shapes' or a shapes "
        "model folder, open_vocab otherwise",
    )
    strategy: Literal["ipr", "ccsr", "rpo", "grpo", "rewrite"] = Field(
        "ipr", description="how judged samples become training data: ipr = Iterative Prompt Relabeling (every sample, "
        "wrong ones relabelled); ccsr = Class-Conditional Self-Reward (best of N per prompt by yes/no questions, "
        "filtered by detector confidence); rpo = Rich Preference Optimization (critic -> edit instructions -> edited "
        "image -> preference pair -> Diffusion-DPO); grpo = online RL with the judge as reward (DDPO/Flow-GRPO-style "
        "group-relative policy gradient); rewrite = self-rewarding prompt rewriting (the generator stays frozen)",
    )
    seed: int = Field(0, description="seeds prompts, generation, training and evaluation")
    run_dir: Path = Field(Path("runs"), description="where runs are stored (one folder per run id)")
    device: str = Field("cpu", pattern=r"^(cpu|cuda|cuda:\d+|mps)$",
                        description="torch device: cpu, cuda, cuda:1 ... (never guessed)")
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads torch may use (default: torch's choice); a resumed run matches an uninterrupted one bit for bit only with the same count"
    )
    agents: AgentsConfig = Field(default_factory=AgentsConfig, description="which backend plays each agent role")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="how much work each round does")
    train: TrainConfig = Field(default_factory=TrainConfig, description="LoRA fine-tuning")
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="sampling settings")
    decide: DecideConfig = Field(default_factory=DecideConfig, description="when a new adapter is kept")
    vocabulary: VocabularyConfig = Field(default_factory=VocabularyConfig, description="open_vocab world: classes, relations, held-out prompts")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="open_vocab world: the open-vocabulary detector")
    clip: ClipConfig = Field(default_factory=ClipConfig, description="open_vocab world: the CLIP scorer")
    ccsr: CCSRConfig = Field(default_factory=CCSRConfig, description="settings of the ccsr strategy")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="experiment trackers (TensorBoard, W&B)")
    rpo: RPOConfig = Field(default_factory=RPOConfig, description="settings of the rpo strategy")
    grpo: GRPOConfig = Field(default_factory=GRPOConfig, description="settings of the grpo strategy")
    rewrite: RewriteConfig = Field(default_factory=RewriteConfig, description="settings of the rewrite strategy")

    @property
    def world_name(self) -> str:
        """'shapes' or 'open_vocab': the world this config runs in."""
        if self.world != "auto":
            return self.world
        return "shapes" if is_shapes_model(self.model) else "open_vocab"

    @model_validator(mode="after")
    def _dtype_fits_device(self) -> Config:
        if self.generation.dtype == "float16" and self.device.startswith("cpu"):
            raise ValueError(
                f"generation.dtype 'float16' on device {self.device!r}: float16 needs a CUDA device; use float32 on a CPU"
            )
        if self.generation.cpu_offload and self.device.startswith("cpu"):
            raise ValueError(f"generation.cpu_offload on device {self.device!r}: offloading needs a CUDA device")
        return self

    @model_validator(mode="after")
    def _device_exists(self) -> Config:
        # A GPU the machine does not have fails here, not after the run folder is made.
        if self.device.startswith("cuda"):
            import torch

            index = int(self.device.split(":")[1]) if ":" in self.device else 0
            if index >= torch.cuda.device_count():
                have = torch.cuda.device_count()
                raise ValueError(f"device {self.device!r}: this machine has {have or 'no'} CUDA device{'s' if have != 1 else ''}")
        return self

    @model_validator(mode="after")
    def _models_of_the_right_kind(self) -> Config:
        # Local folders are checked from their config files alone (no weights loaded); a hub id
        # cannot be checked offline and fails at load time with one line.
        match self.world_name:
            case "shapes":
                if not is_shapes_model(self.model):
                    raise ValueError(f"model {self.model!r}: the shapes world needs 'shapes' or a shapes model folder")
                if self.vocabulary.classes or self.vocabulary.relations:
                    raise ValueError("vocabulary: the shapes world has its own classes and relations; leave it empty")
                if self.budget.heldout_prompts > 80:
                    raise ValueError(f"budget.heldout_prompts {self.budget.heldout_prompts}: the shapes world's held-out "
                                     "split has 80 prompts")
                if self.generation.dtype == "float16":
                    raise ValueError("generation.dtype 'float16': the shapes model samples in float32 or under bfloat16 "
                                     "autocast (or 'auto')")
            case "open_vocab":
                check_model_folder(self.model, "text-to-image", "model")
                check_model_folder(self.detector.model, self.detector.architecture, "detector.model")
                if self.clip.model is not None:
                    check_model_folder(self.clip.model, "clip", "clip.model")
                if not self.vocabulary.classes and self.agents.planner.backend == "builtin":
                    raise ValueError("vocabulary.classes: the builtin planner needs the classes to write prompts for")
                heldout_file = self.vocabulary.heldout_file
                if heldout_file is not None and not Path(heldout_file).expanduser().is_file():
                    raise ValueError(f"vocabulary.heldout_file {str(heldout_file)!r}: no such file")
                if self.device.startswith("cpu"):
                    for field, dtype in (("detector.dtype", self.detector.dtype), ("clip.dtype", self.clip.dtype)):
                        if dtype == "float16":
                            raise ValueError(f"{field} 'float16' on device {self.device!r}: float16 needs a CUDA device")
        measured = self.world_metrics
        if self.decide.metric != "auto" and self.decide.metric not in measured:
            raise ValueError(f"decide.metric {self.decide.metric!r}: this world measures {', '.join(measured)}")
        if unmeasured := [m for m in self.decide.max_drop if m not in measured]:
            raise ValueError(f"decide.max_drop: {', '.join(unmeasured)} is not measured here; this world measures "
                             f"{', '.join(measured)}")
        return self

    @model_validator(mode="after")
    def _strategy_fits(self) -> Config:
        match self.strategy:
            case "rpo":
                check_rpo(self)
            case "grpo":
                check_grpo(self)
            case "rewrite":
                check_rewrite(self)
        return self

    @property
    def world_metrics(self) -> tuple[str, ...]:
        """The held-out metrics this config's evaluations produce (atelier.worlds.judgment)."""
        if self.world_name == "shapes":  # an exact detector and its questions; no CLIP scorer
            return tuple(m for m in METRICS if m != "clip_score")
        return tuple(m for m in METRICS if m not in ("colour_accuracy", "shape_accuracy")
                     and (m != "clip_score" or self.clip.model is not None))


def _set_path(data: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        if not isinstance(node.get(k, {}), dict):
            raise ConfigError(f"--set {dotted}: {k!r} is not a section")
        node = node.setdefault(k, {})
    node[keys[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key.strip()}: not a YAML value ({str(e).splitlines()[0]})") from None
        _set_path(data, key.strip(), value)
    return data


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")  # pydantic's prefix says nothing to a user
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


# What `atelier resume RUN --set` may change: where and how the run talks to its machines and
# endpoints. Everything else (seeds, prompts, budgets, models, guidance...) changes results, and
# a resumed run's evaluations must stay paired with the ones already made.
FIXABLE_ON_RESUME = ("device", "torch_threads", "decide.max_failed_share", "agents.*.base_url", "agents.*.api_key_env",
                     "agents.*.max_concurrency", "agents.*.timeout_s", "agents.*.max_retries", "agents.*.retry_backoff_s")


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def fixable_on_resume(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in FIXABLE_ON_RESUME)


def result_fields(cfg: Config) -> dict:
    """The config's fields that change a run's results, as {dotted key: value} (run_dir and
    FIXABLE_ON_RESUME left out): what must not change between a run's start and its resume."""
    return {k: v for k, v in _flat(cfg.model_dump(mode="json")).items() if k != "run_dir" and not fixable_on_resume(k)}


def changed_result_fields(before: dict, after: dict) -> list[str]:
    """'key: old -> new' for every result field that differs between two `result_fields`."""
    return [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]


def edit_for_resume(data: dict, overrides: list[str]) -> Config:
    """The stored config `data` with `--set key=value` overrides applied and validated as at
    `run`; ConfigError (one line) for a key that is not FIXABLE_ON_RESUME."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not fixable_on_resume(key):
            raise ConfigError(f"--set {key}: changes the run's results, so a resumed run cannot take it (its evaluations "
                              f"are paired on the stored settings); resume may change {', '.join(FIXABLE_ON_RESUME)}")
    return parse_config(apply_overrides(data, overrides))


def parse_config(data: dict) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_one_line(e)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; give a config file (examples/shapes.yaml)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it ({type(e).__name__})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level")
    return parse_config(apply_overrides(data, overrides or []))
