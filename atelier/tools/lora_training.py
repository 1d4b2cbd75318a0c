"""The settings every LoRA trainer shares (shapes SFT, latent SFT, Diffusion-DPO): one class, so a
field means the same in each and the loop's `train` section maps onto all of them one way."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from atelier.tools.lora import ATTENTION_PROJECTIONS


class LoraTrainingConfig(BaseModel):
    """Optimizer and LoRA settings; each trainer's config adds what only it has."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(500, ge=1, description="optimizer steps")
    batch_size: int = Field(4, ge=1, description="samples (or pairs) per micro-batch")
    grad_accum: int = Field(
        1, ge=1, description="micro-batches per optimizer step (effective batch = batch_size * grad_accum)"
    )
    lr: float = Field(1e-4, gt=0, description="constant AdamW learning rate of the LoRA weights")
    rank: int = Field(8, ge=1, description="LoRA rank r")
    alpha: float | None = Field(None, gt=0, description="LoRA alpha; the update is scaled by alpha / rank; None: alpha = rank")
    seed: int = Field(0, description="seeds the LoRA init, batch order, noise and timesteps")
    target_modules: tuple[str, ...] = Field(
        ATTENTION_PROJECTIONS, min_length=1, description="UNet module names (suffixes) that get a LoRA"
    )
    bf16: bool = Field(True, description="bf16 autocast for the forward passes (CPU and CUDA); weights stay float32")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the LoRA gradients to this global norm; None: no clipping")
    # Not part of what an adapter records as its config (exclude): saving state never changes the weights.
    checkpoint_every: int = Field(0, ge=0, exclude=True, description="save the training's state every this many "
                                  "steps, and continue from the last save after a kill; 0 = never")
