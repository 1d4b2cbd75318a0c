"""The denoising objective shared by every trainer: the shapes base model, LoRA SFT on pixels
(shapes world) or VAE latents (Stable Diffusion), and Diffusion-DPO.

Works on any UNet2DConditionModel input. Supports epsilon and v-prediction, per-sample loss
weights (IPR's lambda) and min-SNR timestep weights. Noise and timesteps are drawn on the CPU
from an explicit generator, so a run never depends on the device or the global RNG.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr


def sample_noise_and_timesteps(
    scheduler, x0: torch.Tensor, generator: torch.Generator | None = None, min_timestep: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian noise shaped like `x0` and one training timestep per sample from
    [min_timestep, num_train_timesteps) (drawn in this order)."""
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
    t = torch.randint(min_timestep, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator).to(x0.device)
    return noise, t


def diffusion_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon) or the velocity (v_prediction)."""
    match scheduler.config.prediction_type:
        case "epsilon":
            return noise
        case "v_prediction":
            return scheduler.get_velocity(x0, noise, t)
        case other:
            raise ValueError(f"unsupported prediction_type {other!r} (epsilon or v_prediction)")


def min_snr_weights(scheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma timestep weights (Hang et al. 2023), float32, one per sample.

    The weight on the epsilon loss is min(snr, gamma) / snr; a v-prediction loss already carries
    a factor snr + 1 relative to it, so there it is min(snr, gamma) / (snr + 1).
    """
    snr = compute_snr(scheduler, t).float()
    clipped = snr.clamp(max=gamma)
    match scheduler.config.prediction_type:
        case "epsilon":
            # A zero-terminal-SNR schedule has snr = 0 at its last step, where the limit is 1.
            return torch.where(snr > 0, clipped / snr.clamp(min=torch.finfo(snr.dtype).tiny), torch.ones_like(snr))
        case "v_prediction":
            return clipped / (snr + 1)
        case other:
            raise ValueError(f"unsupported prediction_type {other!r} (epsilon or v_prediction)")


def denoising_errors(
    unet,
    scheduler,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    text_emb: torch.Tensor,
    added_cond_kwargs: dict | None = None,
) -> torch.Tensor:
    """Mean squared error of the UNet's prediction at (x0, noise, t), one value per sample (float32).
    `added_cond_kwargs` carries SDXL's pooled text embeddings and size/crop time ids."""
    xt = scheduler.add_noise(x0, noise, t)
    target = diffusion_target(scheduler, x0, noise, t)
    extra = {} if added_cond_kwargs is None else {"added_cond_kwargs": added_cond_kwargs}
    pred = unet(xt, t, encoder_hidden_states=text_emb, **extra).sample
    return F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=tuple(range(1, x0.ndim)))


def per_sample_loss(
    unet,
    scheduler,
    x0: torch.Tensor,
    text_emb: torch.Tensor,
    generator: torch.Generator | None = None,
    added_cond_kwargs: dict | None = None,
    snr_gamma: float | None = None,
    min_timestep: int = 0,
) -> torch.Tensor:
    """Fresh noise and timesteps (from min_timestep up), then the denoising error per sample
    (float32), min-SNR weighted when `snr_gamma` is given."""
    noise, t = sample_noise_and_timesteps(scheduler, x0, generator, min_timestep)
    errors = denoising_errors(unet, scheduler, x0, noise, t, text_emb, added_cond_kwargs)
    return errors if snr_gamma is None else errors * min_snr_weights(scheduler, t, snr_gamma)


def weighted_loss(per_sample: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """mean(w_i * l_i): a relabelled sample with w=0.5 pulls half as hard as a correct one."""
    if weights is None:
        return per_sample.mean()
    return (weights.to(per_sample) * per_sample).mean()
