"""The denoising objective shared by every trainer (base model, LoRA SFT).

Works on any UNet2DConditionModel input: pixels for the shapes world, VAE latents for real
models. Supports epsilon and v-prediction, per-sample loss weights (IPR's lambda).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def diffusion_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    match scheduler.config.prediction_type:
        case "epsilon":
            return noise
        case "v_prediction":
            return scheduler.get_velocity(x0, noise, t)
        case other:
            raise ValueError(f"unsupported prediction_type {other!r} (epsilon or v_prediction)")


def per_sample_loss(
    unet,
    scheduler,
    x0: torch.Tensor,
    text_emb: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean squared error of the UNet's prediction, one value per sample (float32)."""
    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator).to(x0.device)
    xt = scheduler.add_noise(x0, noise, t)
    target = diffusion_target(scheduler, x0, noise, t)
    pred = unet(xt, t, encoder_hidden_states=text_emb).sample
    return F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=tuple(range(1, x0.ndim)))


def weighted_loss(per_sample: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """mean(w_i * l_i): a relabelled sample with w=0.5 pulls half as hard as a correct one."""
    if weights is None:
        return per_sample.mean()
    return (weights.to(per_sample) * per_sample).mean()
