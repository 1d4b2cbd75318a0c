"""The open_vocab world's editors behind the Editor interface (atelier.worlds.base.Editor): the RPO
recipe (Zhao et al. 2024) on diffusers models, through atelier.tools.edit.

- `controlnet`: ControlNet img2img with the original image as the control image and the text =
  the prompt followed by the instructions; the ControlNet holds the layout while the text acts.
- `sdedit`: plain img2img (SDEdit) under the same text, the fallback without a ControlNet.

Both run on the loaded generator's components (`AutoPipelineForImage2Image.from_pipe`, adding
the ControlNet), so no second copy of the model is loaded. There is no exact detector in this
world: whether an instruction was carried out is left to the judge, which scores the original
and the edit on the same questions (each instruction is recorded with `done` None).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PIL import Image

from atelier.tools.edit import EditResult, edit


@dataclass
class DiffusionEdit:
    """An img2img edit and how it was made; `ok` is True once the pipeline ran."""

    result: EditResult
    instructions: list[str] = field(default_factory=list)

    @property
    def image(self) -> Image.Image:
        return self.result.image

    @property
    def ok(self) -> bool:
        return True

    def record(self) -> dict:
        return {**self.result.record(), "ok": True,
                "outcomes": [{"instruction": i, "kind": "free text", "applied": True, "done": None, "reason": ""}
                             for i in self.instructions]}


def controlnet_pipe(generator_pipe, controlnet: str, dtype):
    """The ControlNet img2img pipeline over a loaded text-to-image pipeline's components."""
    from diffusers import AutoPipelineForImage2Image, ControlNetModel

    net = ControlNetModel.from_pretrained(str(controlnet), dtype=dtype).to(generator_pipe.device)
    pipe = AutoPipelineForImage2Image.from_pipe(generator_pipe, controlnet=net)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class DiffusersEditor:
    """`pipe_of()` gives the img2img pipeline (ControlNet or plain) to edit with."""

    def __init__(self, name: str, pipe_of: Callable[[], object], strength: float, steps: int, guidance: float):
        self.name, self.pipe_of = name, pipe_of
        self.strength, self.steps, self.guidance = strength, steps, guidance

    def edit(self, image: Image.Image, prompt: str, instructions: Sequence[str], seed: int) -> DiffusionEdit:
        result = edit(self.pipe_of(), image, prompt, list(instructions), seed, strength=self.strength, steps=self.steps,
                      guidance_scale=self.guidance)
        return DiffusionEdit(result, list(instructions))
