"""A stochastic DDIM step (eta > 0) that also returns the step's log-probability: the policy of
online RL on a diffusion model.

DDIM (Song et al. 2021, eq. 12) with eta > 0 is a Gaussian transition
    x_{t-1} ~ N(mu_theta(x_t, t), sigma_t^2 I),
    mu_theta = sqrt(abar_prev) * x0_hat + sqrt(1 - abar_prev - sigma_t^2) * eps_hat,
    sigma_t  = eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev),
where x0_hat and eps_hat come from the UNet's output (epsilon or v-prediction). DDPO (Black et
al. 2023) treats each such step as an action of a policy whose log-probability is that Gaussian's
log-density at the sampled x_{t-1}; eta = 1 gives DDPM's posterior variance.

Here the log-probability is the exact log-density summed over the sample's dimensions (a test
checks it against torch.distributions.Normal in float64); trainers that want DDPO's per-dimension
scale divide by the dimension count (atelier.tools.policy_gradient).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class DDIMStep:
    """One transition, per sample: `prev_sample` (n, ...), its `log_prob` (n,) under the policy,
    the Gaussian's `mean` (n, ...) and its standard deviation `std` (scalar tensor)."""

    prev_sample: torch.Tensor
    log_prob: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


def predicted_x0_and_eps(model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: torch.Tensor,
                         prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, eps_hat) from the UNet's output at x_t = sqrt(abar) x0 + sqrt(1 - abar) eps.
    v-prediction (Salimans & Ho 2022): v = sqrt(abar) eps - sqrt(1 - abar) x0. ValueError for
    another prediction type."""
    beta_prod_t = 1 - alpha_prod_t
    match prediction_type:
        case "epsilon":
            eps = model_output
            x0 = (sample - beta_prod_t.sqrt() * eps) / alpha_prod_t.sqrt()
        case "v_prediction":
            x0 = alpha_prod_t.sqrt() * sample - beta_prod_t.sqrt() * model_output
            eps = alpha_prod_t.sqrt() * model_output + beta_prod_t.sqrt() * sample
        case other:
            raise ValueError(f"unsupported prediction_type {other!r} (epsilon or v_prediction)")
    return x0, eps


def ddim_std(alpha_prod_t: torch.Tensor, alpha_prod_prev: torch.Tensor, eta: float) -> torch.Tensor:
    """sigma_t of the step t -> prev (Song et al. 2021, eq. 16), times eta."""
    variance = (1 - alpha_prod_prev) / (1 - alpha_prod_t) * (1 - alpha_prod_t / alpha_prod_prev)
    return eta * variance.clamp(min=0).sqrt()


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, std^2 I) summed over every dimension but the first: (n,)."""
    dims = tuple(range(1, x.ndim))
    log_density = -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return log_density.sum(dim=dims)


def ddim_step_with_logprob(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    alpha_prod_t: float | torch.Tensor,
    alpha_prod_prev: float | torch.Tensor,
    eta: float,
    prediction_type: str,
    noise: torch.Tensor | None = None,
    prev_sample: torch.Tensor | None = None,
) -> DDIMStep:
    """One DDIM step x_t -> x_prev with its log-probability.

    Give `noise` (standard normal, shaped like `sample`) to draw x_prev = mean + std * noise, or
    `prev_sample` to score a transition drawn before (the policy-gradient update does this with
    grad). The computation runs in `sample`'s dtype. ValueError when the step has no noise (std
    0: eta 0, or a last step onto abar = 1), where a log-probability does not exist."""
    if (noise is None) == (prev_sample is None):
        raise ValueError("give exactly one of noise (to sample) or prev_sample (to score)")
    dtype, device = sample.dtype, sample.device
    a_t = torch.as_tensor(alpha_prod_t, dtype=dtype, device=device)
    a_prev = torch.as_tensor(alpha_prod_prev, dtype=dtype, device=device)
    x0, eps = predicted_x0_and_eps(model_output.to(dtype), sample, a_t, prediction_type)
    std = ddim_std(a_t, a_prev, eta)
    if not std > 0:
        raise ValueError(f"a DDIM step with std {float(std)} has no log-probability (eta {eta}, abar_prev {float(a_prev)})")
    direction = (1 - a_prev - std**2).clamp(min=0).sqrt() * eps
    mean = a_prev.sqrt() * x0 + direction
    if prev_sample is None:
        prev_sample = mean + std * noise.to(dtype)
    return DDIMStep(prev_sample, gaussian_log_prob(prev_sample.to(dtype), mean, std), mean, std)
