"""The shapes world's two editors behind the Editor interface (atelier.worlds.base.Editor).

- `layout`: the instructions carried out on the image's detected objects
  (atelier.worlds.shapes.layout_edit), optionally blended by a light SDEdit pass.
- `sdedit`: the shapes model itself redraws the image from partial noise under the text
  "<prompt>. <instruction>. ..." (SDEdit, Meng et al. 2022: noise the original to `strength`,
  then denoise it; the RPO recipe in this world).

Both report, per instruction, whether the exact detector confirms on the edited image what the
instruction promised (for `sdedit`, read in the layout editor's grammar; an instruction outside
it is 'unparsed' and counts as not done).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from atelier.tools.edit import edit_prompt
from atelier.worlds.shapes.detect import detect_all
from atelier.worlds.shapes.layout_edit import (
    InstructionOutcome,
    LayoutEdit,
    UnparsedInstruction,
    confirmed,
    layout_edit,
    parse_instruction,
)


@dataclass
class Edited:
    """An edit's image and its record: method, seed, settings, per-instruction outcomes."""

    image: Image.Image = field(repr=False)
    outcomes: list[InstructionOutcome]
    settings: dict

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and all(o.done for o in self.outcomes)

    def record(self) -> dict:
        return {**self.settings, "ok": self.ok, "outcomes": [vars(o) for o in self.outcomes]}


def _pixels(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), np.float32) / 127.5 - 1).permute(2, 0, 1)


@torch.no_grad()
def sdedit(pipe, image: Image.Image, text: str, seed: int, strength: float, steps: int, guidance: float) -> Image.Image:
    """SDEdit on the shapes pixel pipeline: `image` noised to the timestep `strength` of the way
    into the sampler's schedule, then denoised under `text` with classifier-free guidance. The
    noise comes from `seed` alone. int(steps * strength) steps run; 0 is refused (ValueError)."""
    run = int(steps * strength)
    if not 0 < strength <= 1 or run < 1:
        raise ValueError(f"strength {strength} with {steps} steps runs {run} denoising steps; need at least 1")
    device, dtype = pipe.unet.device, pipe.unet.dtype
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps[steps - run:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(steps - run)
    x0 = _pixels(image)[None].to(device, dtype)
    noise = torch.randn(x0.shape[1:], generator=torch.Generator().manual_seed(seed))[None].to(device, dtype)
    x = scheduler.add_noise(x0, noise, timesteps[:1])
    cond = torch.cat([pipe.encode([""]), pipe.encode([text])]).to(dtype)
    for t in timesteps:
        with pipe._autocast():
            out = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=cond).sample.float()
        uncond, cond_out = out.chunk(2)
        x = scheduler.step(uncond + guidance * (cond_out - uncond), t, x).prev_sample
    pixels = ((x[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(pixels)


def _checked(instructions: Sequence[str], before, after, size: int) -> list[InstructionOutcome]:
    """Each instruction read in the layout grammar and checked by the detector on the edit."""
    outcomes = []
    for text in instructions:
        try:
            op = parse_instruction(text)
        except UnparsedInstruction as e:
            outcomes.append(InstructionOutcome(text, "unparsed", True, False, str(e)))
            continue
        done = confirmed(op, before, after, size)
        outcomes.append(InstructionOutcome(text, op.kind, True, done, "" if done else "the detector does not confirm it"))
    return outcomes


class LayoutEditor:
    """Instructions carried out on detected objects; `blend_strength` > 0 adds a light SDEdit pass
    of the base model over the result (then each instruction is checked again on the blend)."""

    name = "layout"

    def __init__(self, pipe_of=None, blend_strength: float = 0.0, steps: int = 8, guidance: float = 3.0):
        self.pipe_of, self.blend_strength, self.steps, self.guidance = pipe_of, blend_strength, steps, guidance

    def edit(self, image: Image.Image, prompt: str, instructions: Sequence[str], seed: int) -> LayoutEdit | Edited:
        edited = layout_edit(image, list(instructions), seed, prompt=prompt)
        if self.blend_strength <= 0 or not any(o.applied for o in edited.outcomes):
            return edited
        blended = sdedit(self.pipe_of(), edited.image, prompt, seed, self.blend_strength, self.steps, self.guidance)
        outcomes = _checked(instructions, detect_all(image.convert("RGB")), detect_all(blended), blended.size[0])
        for o, first in zip(outcomes, edited.outcomes):
            if first.kind == "unparsed" or not first.applied:
                o.applied, o.done, o.reason = False, False, first.reason
        return Edited(blended, outcomes, {"method": "layout+sdedit", "seed": seed, "strength": self.blend_strength,
                                          "steps": self.steps, "guidance_scale": self.guidance})


class SDEditEditor:
    """The shapes model redraws the image from partial noise under the prompt and instructions."""

    name = "sdedit"

    def __init__(self, pipe_of, strength: float, steps: int, guidance: float):
        self.pipe_of, self.strength, self.steps, self.guidance = pipe_of, strength, steps, guidance

    def edit(self, image: Image.Image, prompt: str, instructions: Sequence[str], seed: int) -> Edited:
        text = edit_prompt(prompt, list(instructions))
        edited = sdedit(self.pipe_of(), image, text, seed, self.strength, self.steps, self.guidance)
        outcomes = _checked(instructions, detect_all(image.convert("RGB")), detect_all(edited), edited.size[0])
        return Edited(edited, outcomes, {"method": "sdedit", "seed": seed, "prompt": text, "strength": self.strength,
                                         "steps": self.steps, "guidance_scale": self.guidance})
