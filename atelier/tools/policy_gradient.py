"""The pieces of a group-relative policy-gradient update on a diffusion policy.

- GRPO advantage (Shao et al. 2024, DeepSeekMath; Flow-GRPO, Liu et al. 2025): a sample's reward
  minus its group's mean, over the group's standard deviation; a group of one prompt's samples
  whose rewards are all equal says nothing about what to change, so its advantages are 0;
- PPO's clipped surrogate (Schulman et al. 2017) on the per-step likelihood ratio, as DDPO
  (Black et al. 2023) applies it to denoising steps, with log-probabilities averaged per
  dimension (DDPO's scale: a sum over thousands of pixels makes every ratio 0 or inf);
- the KL between the policy's and the reference's Gaussian steps of one standard deviation:
  ||mu - mu_ref||^2 / (2 sigma^2), averaged per dimension (Flow-GRPO's KL term).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def group_advantages(rewards: Sequence[float | None], groups: Sequence[object], clip: float | None = None,
                     eps: float = 1e-8) -> tuple[np.ndarray, float]:
    """GRPO advantages, float64 (n,), and the share of groups with zero reward variance.

    `rewards[i]` is None for a sample without a reward (a failed judgment): its advantage is 0
    and it is left out of its group's mean and std. A group with fewer than two rewards, or
    whose rewards are all equal, gets advantages 0. `clip` bounds |advantage| (DDPO's
    adv_clip_max). Std is the population std (ddof 0), as DDPO and Flow-GRPO compute it."""
    if len(rewards) != len(groups):
        raise ValueError(f"{len(rewards)} rewards for {len(groups)} group labels")
    advantages = np.zeros(len(rewards), dtype=np.float64)
    members: dict[object, list[int]] = {}
    for i, g in enumerate(groups):
        if rewards[i] is not None:
            members.setdefault(g, []).append(i)
    flat = 0
    for idx in members.values():
        r = np.array([rewards[i] for i in idx], dtype=np.float64)
        std = r.std()
        if len(r) < 2 or std <= eps:
            flat += 1
            continue
        advantages[idx] = (r - r.mean()) / std
    if clip is not None:
        advantages = np.clip(advantages, -clip, clip)
    return advantages, (flat / len(members) if members else 1.0)


def clipped_policy_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                        clip_range: float, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, averaged over samples, and the share of samples clipped.

    `log_prob` and `old_log_prob` are (n,) sums over `dims` dimensions (atelier.tools.ddim_logprob);
    the ratio is exp((log_prob - old_log_prob) / dims)."""
    ratio = torch.exp((log_prob - old_log_prob) / dims)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    clip_fraction = ((ratio - 1).abs() > clip_range).float().mean()
    return loss, clip_fraction


def gaussian_step_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std^2 I) || N(ref_mean, std^2 I)) per sample, averaged per dimension: (n,)."""
    dims = tuple(range(1, mean.ndim))
    return ((mean - ref_mean) ** 2).mean(dim=dims) / (2 * std**2)
