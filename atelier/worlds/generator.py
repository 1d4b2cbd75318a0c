"""A text-to-image pipeline loaded once per run, with LoRA adapters swapped in and out.

Reloading a pipeline for every batch costs seconds on the shapes model and minutes on SDXL;
`LoadedGenerator` keeps one and changes only the adapter: `unload_lora_weights` restores the
base modules exactly (peft's layers hold the untouched base weights), so the base sampled after
an adapter is the base sampled before it. Counting `loads` lets tests check that a round
loads its pipeline once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from atelier.runs import RunError
from atelier.tools.diffusers_generator import load_adapter
from atelier.tools.lora import PartialAdapterError
from atelier.tools.generate import GenerationRequest, generate


class LoadedGenerator:
    """`pipe` with at most one adapter loaded at a time (at `scale`, gated to sampling
    timesteps >= `min_timestep`, atelier.tools.adapter_gate)."""

    def __init__(self, pipe, steps: int, batch_size: int, scale: float = 1.0, min_timestep: int = 0):
        self.pipe = pipe
        self.steps, self.batch_size, self.scale, self.min_timestep = steps, batch_size, scale, min_timestep
        self.adapter: str | None = None
        self._gate = None

    def use(self, adapter: str | Path | None) -> None:
        """Swap `adapter` in (None = the base model); nothing to do when it is loaded already."""
        adapter = None if adapter is None else str(adapter)
        if adapter == self.adapter:
            return
        if self.adapter is not None:
            if self._gate is not None:
                self._gate.remove()
                self._gate = None
            self.pipe.unload_lora_weights()
            self.adapter = None
        if adapter is not None:
            try:
                self._gate = load_adapter(self.pipe, adapter, self.scale, self.min_timestep)
            except BaseException as e:
                self.pipe.unload_lora_weights()  # a half-loaded adapter must not stay in the base
                if isinstance(e, KeyboardInterrupt | SystemExit | RunError):
                    raise
                if isinstance(e, PartialAdapterError):  # already one line naming the keys that match nothing
                    raise RunError(str(e)) from None
                # A truncated or overwritten weights file (a disk that filled, a copy cut short): one line.
                first = str(e).splitlines()[0] if str(e) else ""
                raise RunError(f"adapter {adapter} cannot be loaded ({type(e).__name__}: {first[:200]}); "
                               "its files are damaged: restore them, or start a new run") from None
            self.adapter = adapter

    def sample(self, prompts: Sequence[str], seeds: Sequence[int], guidance: float, adapter: str | Path | None,
               height: int | None = None, width: int | None = None) -> list[Image.Image]:
        self.use(adapter)
        return generate(self.pipe, GenerationRequest(list(prompts), list(seeds), self.steps, guidance, self.batch_size,
                                                     height, width))

    def base_pipeline(self):
        """The pipeline with no adapter loaded: what trainers start from."""
        self.use(None)
        return self.pipe
