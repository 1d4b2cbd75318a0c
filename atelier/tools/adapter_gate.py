"""Apply a LoRA adapter only in the noisiest sampling steps.

Where objects sit, and so which relation holds, is decided in the first, noisiest steps; the
late steps draw the objects themselves. An adapter fine-tuned on a model's own samples moves
both. On the shapes world its early-step change carries the relation gain and its late-step
change costs object accuracy (BENCHMARKS.md, "An adapter for the noisy steps only"), so sampling
with the adapter on from the first step down to `min_timestep` and off below keeps the gain and
the objects.

Works on any diffusers UNet that holds peft adapters (PeftAdapterMixin's enable/disable_adapters):
a forward pre-hook reads the call's timestep. Text-encoder adapters are not gated (the prompt is
encoded once per image, not per step).
"""

from __future__ import annotations

import torch
from torch.utils.hooks import RemovableHandle


def _timestep(args: tuple, kwargs: dict) -> float:
    t = args[1] if len(args) > 1 else kwargs["timestep"]
    # Sampling passes one timestep for the whole batch (a scalar or a batch of equal values).
    return float(torch.as_tensor(t).flatten()[0])


def gate_adapter_by_timestep(unet, min_timestep: int) -> RemovableHandle | None:
    """Switch `unet`'s adapters on for timesteps >= min_timestep and off below, at every call.
    min_timestep 0 leaves the adapter on throughout (no hook). Returns the hook's handle."""
    if min_timestep <= 0:
        return None
    state = {"on": True}

    def switch(module, args, kwargs):
        on = _timestep(args, kwargs) >= min_timestep
        if on != state["on"]:  # walking every LoRA layer costs little, but only on a change
            (module.enable_adapters if on else module.disable_adapters)()
            state["on"] = on

    return unet.register_forward_pre_hook(switch, with_kwargs=True)
