"""A pipeline's UNet as a stochastic policy: DDIM with eta > 0, classifier-free guidance, and the
log-probability of every step (atelier.tools.ddim_logprob), for the shapes model (pixels,
v-prediction) and diffusers SD 1.5 / 2.x / SDXL (VAE latents, epsilon or v-prediction).

Trajectories are deterministic given their seeds: image i draws its starting noise and then one
noise tensor per step from one CPU generator seeded with seeds[i] (the shapes pipeline draws its
starting noise the same way), so a batch's make-up never changes an image, and a trajectory is
regenerated after a crash instead of stored. Why DDIM with eta rather than an SDE solver: the
DDIM step is Gaussian in closed form for both prediction types, from the scheduler's
`alphas_cumprod` alone, and its timesteps follow the model's own spacing (trailing for the
shapes model).

Held-out evaluation never uses this sampler: it keeps the world's own (DPM-Solver++ for the
shapes model).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler
from PIL import Image

from atelier.tools.ddim_logprob import DDIMStep, ddim_step_with_logprob
from atelier.tools.model_inputs import TextConditioning, encode_texts, is_latent, is_sdxl


@dataclass
class Trajectories:
    """n sampled trajectories of `steps` steps.

    latents: (steps + 1, n, C, H, W) float32, x_T first, the final sample last (CPU);
    log_probs: (steps, n) float32, summed over dimensions; NaN at a step without noise;
    timesteps: the `steps` sampling timesteps, noisiest first."""

    latents: torch.Tensor
    log_probs: torch.Tensor
    timesteps: list[int]


class PolicySampler:
    """`pipe`'s UNet (with whatever LoRA it carries) sampled by DDIM at `eta`, `steps` steps and
    classifier-free `guidance` (1 = none). The LoRA acts only at timesteps >= `lora_min_timestep`,
    as the world's gated sampler does (atelier.tools.adapter_gate); the base below."""

    def __init__(self, pipe, steps: int, guidance: float, eta: float, lora_min_timestep: int = 0,
                 batch_size: int = 32, resolution: int | None = None):
        if eta <= 0:
            raise ValueError(f"eta {eta}: a policy needs noise (eta > 0)")
        self.pipe, self.unet = pipe, pipe.unet
        self.guidance, self.eta, self.lora_min_timestep, self.batch_size = guidance, eta, lora_min_timestep, batch_size
        scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        scheduler.set_timesteps(steps)
        self.prediction_type = scheduler.config.prediction_type
        self.timesteps = [int(t) for t in scheduler.timesteps]
        abar = scheduler.alphas_cumprod.double()
        final = float(scheduler.final_alpha_cumprod)
        # (abar_t, abar_prev) per step, in float64: the last step may land on abar = 1 (no noise).
        self.alphas = [(float(abar[t]), float(abar[n]) if n >= 0 else final)
                       for t, n in zip(self.timesteps, [*self.timesteps[1:], -1])]
        scale = getattr(pipe, "vae_scale_factor", 1)
        size = (resolution // scale) if resolution else self.unet.config.sample_size
        self.shape = (self.unet.config.in_channels, size, size)
        self.resolution = size * scale

    # --- conditioning and the guided prediction -----------------------------------------------

    def conditioning(self, prompts: Sequence[str]) -> tuple[TextConditioning, TextConditioning | None]:
        """(prompt, empty-prompt) text conditioning; the second is None without guidance."""
        with torch.no_grad():
            cond = encode_texts(self.pipe, list(prompts))
            uncond = encode_texts(self.pipe, [""] * len(prompts)) if self.guidance != 1.0 else None
        return cond, uncond

    def lora_active(self, step: int) -> bool:
        return self.timesteps[step] >= self.lora_min_timestep

    def guided_output(self, x: torch.Tensor, step: int, cond: TextConditioning,
                      uncond: TextConditioning | None) -> torch.Tensor:
        """The guided UNet output at step `step` (float32), LoRA on or off as the gate says."""
        with self._lora(self.lora_active(step)):
            return self._guided(x, self.timesteps[step], cond, uncond)

    def reference_output(self, x: torch.Tensor, step: int, cond: TextConditioning,
                         uncond: TextConditioning | None) -> torch.Tensor:
        """The same with every LoRA disabled: the base model, for the KL term."""
        with self._lora(False):
            return self._guided(x, self.timesteps[step], cond, uncond)

    def _guided(self, x, t, cond, uncond):
        dtype = self.unet.dtype
        if uncond is None:
            return self._unet(x.to(dtype), t, cond).float()
        both = TextConditioning(torch.cat([uncond.hidden, cond.hidden]),
                                None if cond.pooled is None else torch.cat([uncond.pooled, cond.pooled]))
        out = self._unet(torch.cat([x, x]).to(dtype), t, both).float()
        u, c = out.chunk(2)
        return u + self.guidance * (c - u)

    def _unet(self, x, t, text: TextConditioning):
        kwargs = {}
        if is_sdxl(self.pipe):
            r = self.resolution
            ids = torch.tensor([[r, r, 0, 0, r, r]] * len(x), dtype=text.hidden.dtype, device=x.device)
            kwargs["added_cond_kwargs"] = {"text_embeds": text.pooled, "time_ids": ids}
        return self.unet(x, t, encoder_hidden_states=text.hidden.to(self.unet.dtype), **kwargs).sample

    @contextmanager
    def _lora(self, on: bool):
        carries_lora = bool(getattr(self.unet, "peft_config", None))
        if not carries_lora or on:
            yield
            return
        self.unet.disable_lora()
        try:
            yield
        finally:
            self.unet.enable_lora()

    # --- steps ----------------------------------------------------------------------------------

    def has_noise(self, step: int) -> bool:
        a_t, a_prev = self.alphas[step]
        return a_prev < 1.0 and self.eta > 0

    def step(self, output: torch.Tensor, x: torch.Tensor, step: int, noise: torch.Tensor | None = None,
             prev_sample: torch.Tensor | None = None) -> DDIMStep:
        a_t, a_prev = self.alphas[step]
        return ddim_step_with_logprob(output, x, a_t, a_prev, self.eta, self.prediction_type, noise, prev_sample)

    def _last_step(self, output: torch.Tensor, x: torch.Tensor, step: int) -> torch.Tensor:
        # Onto abar = 1 the step is deterministic: x_prev = x0_hat.
        from atelier.tools.ddim_logprob import predicted_x0_and_eps

        a_t, _ = self.alphas[step]
        x0, _ = predicted_x0_and_eps(output, x, torch.as_tensor(a_t, dtype=x.dtype), self.prediction_type)
        return x0

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], seeds: Sequence[int]) -> Trajectories:
        """One trajectory per (prompt, seed), in batches of `batch_size`."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        parts = [self._sample_batch(prompts[i : i + self.batch_size], seeds[i : i + self.batch_size])
                 for i in range(0, len(prompts), self.batch_size)]
        return Trajectories(torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1),
                            list(self.timesteps))

    def _sample_batch(self, prompts, seeds):
        device = self.unet.device
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

        def draw() -> torch.Tensor:
            return torch.stack([torch.randn(self.shape, generator=g) for g in generators]).to(device)

        x = draw()
        cond, uncond = self.conditioning(prompts)
        latents, log_probs = [x.cpu()], []
        for i in range(len(self.timesteps)):
            out = self.guided_output(x, i, cond, uncond)
            if self.has_noise(i):
                step = self.step(out, x, i, noise=draw())
                x, lp = step.prev_sample, step.log_prob
            else:
                x, lp = self._last_step(out, x, i), torch.full((len(x),), float("nan"), device=device)
            latents.append(x.cpu())
            log_probs.append(lp.float().cpu())
        return torch.stack(latents), torch.stack(log_probs)

    # --- images ---------------------------------------------------------------------------------

    @torch.no_grad()
    def decode(self, samples: torch.Tensor) -> list[Image.Image]:
        """Final samples (n, C, H, W) as RGB images: pixels for the shapes model, VAE-decoded
        latents otherwise."""
        device = self.unet.device
        if not is_latent(self.pipe):
            pixels = samples.float()
        else:
            vae = self.pipe.vae
            latents = samples.to(device, vae.dtype) / vae.config.scaling_factor
            if (shift := getattr(vae.config, "shift_factor", None)) is not None:
                latents = latents + shift
            pixels = torch.cat([vae.decode(latents[i : i + 8]).sample.float() for i in range(0, len(latents), 8)])
        arrays = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(np.ascontiguousarray(a)) for a in arrays]
