"""Settings of the `grpo` strategy: online RL with the judge as reward (issue 20). Imported by atelier.config; keep it light (pydantic only)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GRPOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    iterations: int = Field(8, ge=1, description="online iterations per round: sample -> judge -> reward -> update")
    prompts_per_iteration: int = Field(16, ge=1, description="prompts sampled each iteration (drawn from the round's "
                                       "training prompts)")
    group_size: int = Field(8, ge=2, description="G: images per prompt per iteration; advantages are relative within "
                            "each prompt's group")
    sampler_steps: int = Field(8, ge=2, le=1000, description="DDIM steps of the policy's samples (held-out evaluation "
                               "keeps the world's own sampler and generation.steps)")
    eta: float = Field(1.0, gt=0, le=1, description="DDIM eta of the policy's samples (1 = DDPM's posterior noise)")
    guidance_scale: float | None = Field(None, ge=1, description="classifier-free guidance of the policy's samples; "
                                         "null = generation.guidance_scale, the guidance held-out images are judged at")
    train_steps: int | None = Field(3, ge=1, description="train on the first this many (noisiest) denoising steps, "
                                    "where the shapes world's layout is decided; null = every step with noise")
    updates_per_iteration: int = Field(2, ge=1, description="optimizer steps per iteration (the samples split into "
                                       "this many minibatches, each trained on all of its steps)")
    clip_range: float = Field(1e-4, gt=0, description="PPO clip of the per-dimension likelihood ratio (DDPO: 1e-4)")
    advantage_clip: float = Field(5.0, gt=0, description="bound on |advantage| (DDPO's adv_clip_max)")
    kl_coef: float = Field(0.01, ge=0, description="beta: weight of the KL to the base (adapters disabled); 0 = "
                           "no KL term (and no reference forward pass)")
    partial_credit: float = Field(0.5, ge=0, le=1, description="reward of an image that misses the goal, times the "
                                  "share of the prompt's objects it shows (the goal met = 1): objects are never "
                                  "traded for the goal")
    count_credit: float = Field(0.0, ge=0, description="reward added when every object is drawn as often as asked")


def check(config) -> None:
    """Cross-field checks of a whole Config using this strategy; raise ValueError(one line)."""
    if config.strategy != "grpo":
        return
    g = config.grpo
    if g.train_steps is not None and g.train_steps >= g.sampler_steps:
        raise ValueError(f"grpo.train_steps {g.train_steps} must be below grpo.sampler_steps {g.sampler_steps} "
                         "(the last step has no noise, hence no log-probability)")
    if g.updates_per_iteration > g.prompts_per_iteration * g.group_size:
        raise ValueError(f"grpo.updates_per_iteration {g.updates_per_iteration} exceeds the samples of an iteration "
                         f"({g.prompts_per_iteration} x {g.group_size})")
