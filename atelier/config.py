"""The run configuration: one YAML file, validated by pydantic (unknown keys are errors).

`load_config(path, overrides)` reads the file, applies `--set key.path=value` overrides (values
parsed as YAML scalars), validates, and raises ConfigError with one line naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line naming the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AgentConfig(_Strict):
    backend: Literal["builtin"] = Field(
        "builtin", description="who plays this role: 'builtin' = offline rules over detector output"
    )


class AgentsConfig(_Strict):
    planner: AgentConfig = Field(default_factory=AgentConfig, description="goal text -> target spec")
    prompt_writer: AgentConfig = Field(default_factory=AgentConfig, description="target spec -> training prompts")
    judge: AgentConfig = Field(default_factory=AgentConfig, description="image + prompt -> judgment")


class BudgetConfig(_Strict):
    rounds: int = Field(3, ge=1, le=100, description="improvement rounds at most")
    patience: int = Field(2, ge=1, description="stop after this many rounds in a row without promotion")
    prompts_per_round: int = Field(64, ge=1, description="new training prompts written each round")
    images_per_prompt: int = Field(4, ge=1, description="candidates generated per training prompt")
    heldout_prompts: int = Field(40, ge=1, le=80, description="held-out prompts used to evaluate (of the 80 in the split)")
    images_per_heldout_prompt: int = Field(4, ge=1, description="images per held-out prompt at evaluation")
    batch_prompts: int = Field(16, ge=1, description="prompts per generate/judge task (the unit of fan-out and of resume)")


class TrainConfig(_Strict):
    steps: int = Field(300, ge=1, description="LoRA optimizer steps per round")
    batch_size: int = Field(16, ge=1, description="images per optimizer step")
    learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate of the LoRA weights")
    lora_rank: int = Field(8, ge=1, description="LoRA rank r")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA alpha; default = rank (scale 1)")
    relabel_weight: float = Field(0.5, ge=0, description="IPR lambda: loss weight of relabelled samples")
    correct_weight: float = Field(1.0, ge=0, description="loss weight of samples that were already correct")
    relabel: bool = Field(True, description="relabel wrong samples from detections; false = IPR ablation 'no relabelling'")
    accumulate: bool = Field(True, description="train on the datasets of all rounds so far, not just this round's")
    bf16: bool = Field(False, description="bf16 autocast while training (faster on GPUs; CPU fp32 is exact)")


class GenerationConfig(_Strict):
    steps: int = Field(20, ge=1, le=1000, description="sampler steps per image")
    guidance_scale: float = Field(3.0, ge=1.0, description="classifier-free guidance scale")
    batch_size: int = Field(64, ge=1, description="images per forward batch")


class DecideConfig(_Strict):
    metric: Literal[
        "auto", "relation_accuracy_cond", "relation_accuracy_uncond", "count_accuracy", "count_accuracy_multi", "object_accuracy"
    ] = Field("auto", description="held-out metric to improve; 'auto' = chosen by the planner from the goal")
    noise_sigmas: float = Field(
        1.0, ge=0, description="promote only if the gain exceeds this many standard errors of the difference"
    )
    max_object_drop: float = Field(
        0.03, ge=0, le=1, description="never promote an adapter whose held-out object accuracy drops more than this below the base"
    )


class Config(_Strict):
    goal: str = Field(min_length=3, description="what the model should get better at, in plain language")
    model: str = Field("shapes", description="'shapes' (the embedded world), or a hub id / local path (real models)")
    strategy: Literal["ipr"] = Field("ipr", description="how mistakes become training data: ipr = Iterative Prompt Relabeling")
    seed: int = Field(0, description="seeds prompts, generation, training and evaluation")
    run_dir: Path = Field(Path("runs"), description="where runs are stored (one folder per run id)")
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:1 ... (never guessed)")
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads torch may use (default: torch's choice); a resumed run matches an uninterrupted one bit for bit only with the same count"
    )
    agents: AgentsConfig = Field(default_factory=AgentsConfig, description="which backend plays each agent role")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="how much work each round does")
    train: TrainConfig = Field(default_factory=TrainConfig, description="LoRA fine-tuning")
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="sampling settings")
    decide: DecideConfig = Field(default_factory=DecideConfig, description="when a new adapter is kept")

    @model_validator(mode="after")
    def _model_supported(self) -> Config:
        # The loop runs the shapes world today: the shipped model or a shapes-model folder
        # (`atelier shapes train-base --out DIR`). Hub ids of real models come with their tools.
        if self.model != "shapes" and not (Path(self.model) / "model_index.json").exists():
            raise ValueError(
                f"model {self.model!r}: expected 'shapes' or a folder holding a shapes-world pipeline (model_index.json)"
            )
        return self


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
        _set_path(data, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return data


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


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
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level")
    return parse_config(apply_overrides(data, overrides or []))
