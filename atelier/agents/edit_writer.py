"""Edit-instruction writer: critique + prompt (+ image) -> at most three edit instructions.

The RPO rules: each instruction is concrete, at most eight words, and says what to change in the
image ("Add a second blue square"), never how to change the prompt. An image the critique finds
right needs none. The builtin writer turns the critique's deviations into instructions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from atelier.agents.backend import AgentRequest
from atelier.agents.critic import Critique

MAX_INSTRUCTIONS = 3
MAX_WORDS = 8
_SHORT_RELATION = {"left of": "left of", "right of": "right of", "above": "above", "below": "below"}

# The word limit is in the schema itself, so a server with constrained decoding enforces it too.
Instruction = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\S+(\s+\S+){0,7}$")]


class EditInstructions(BaseModel):
    """The edit-instruction writer's answer."""

    model_config = ConfigDict(extra="forbid")
    instructions: list[Instruction] = Field(
        max_length=MAX_INSTRUCTIONS,
        description="2-3 concrete edits to the image, at most 8 words each, most important first; [] if it needs none",
    )
    rationale: str = Field(max_length=400, description="one short sentence: which deviations they fix")


def _relation_of(phrase: str) -> str:
    for relation in ("left of", "right of", "above", "below"):
        if relation in phrase:
            return relation
    return "next to"


def _recolourable(name: str, extras: list[str]) -> tuple[str, str] | None:
    """An unasked object that differs from the missing `name` only in its first word (its colour):
    (that object, the missing object's colour words), or None."""
    words = name.split()
    for extra in extras:
        other = extra.split()
        if len(other) == len(words) > 1 and other[1:] == words[1:] and other[0] != words[0]:
            return extra, words[0]
    return None


def edit_builtin(critique: Critique) -> EditInstructions:
    """Instructions in the shapes world's layout-editor grammar (atelier.worlds.shapes.layout_edit):
    a missing object is added, or, when an unasked object differs from it only in colour,
    recoloured; a wrong count is redrawn to the number; a wrong relation puts the first object on
    the asked side; unasked objects are removed; faint ones redrawn."""
    extras = [d.objects[0] for d in critique.deviations if d.kind == "extra" and d.objects]
    recoloured: set[str] = set()
    instructions: list[str] = []
    for d in critique.deviations:
        match d.kind:
            case "missing":
                swap = _recolourable(d.objects[0], [e for e in extras if e not in recoloured]) if d.objects else None
                if swap is not None:
                    recoloured.add(swap[0])
                    instructions.append(f"Make the {swap[0]} {swap[1]}")
                else:
                    instructions.append(f"Add {d.phrase}")
            case "count" | "attribute":
                instructions.append(f"Draw exactly {d.phrase}")
            case "relation" if len(d.objects) == 2:
                a, b = d.objects
                instructions.append(f"Put {a} {_SHORT_RELATION.get(_relation_of(d.phrase), 'next to')} {b}")
    # Unasked objects last: a recoloured one may leave others of its kind behind.
    instructions += [f"Remove every {e}" for e in extras if e not in recoloured]
    faint = [a.removeprefix("the ").split(" is ")[0] for a in critique.artifacts]
    instructions += [f"Redraw the {name} cleanly" for name in faint if name not in extras]  # not what goes anyway
    kept = [i for i in dict.fromkeys(instructions) if len(i.split()) <= MAX_WORDS][:MAX_INSTRUCTIONS]  # each once
    return EditInstructions(instructions=kept, rationale=f"fixes {len(kept)} of {len(critique.deviations)} deviations"
                            if critique.deviations else "the image already matches the prompt")


class EditRequest(AgentRequest):
    """critique + prompt (+ image) -> edit instructions"""

    role = "edit_writer"
    mode = "default"
    answer_schema = EditInstructions
    prompt: str = Field(description="the prompt the image was made from")
    critique: Critique = Field(description="the critic's answer about the image")
    image: Path | None = Field(None, description="the image, shown to models that can see")

    def template_values(self) -> dict[str, str]:
        return {"prompt": self.prompt, "critique": self.critique.model_dump_json(indent=2),
                "image_note": "The image is attached." if self.image else "No image is attached; work from the critique."}

    def images(self) -> list[Path]:
        return [self.image] if self.image else []

    def answer_builtin(self) -> EditInstructions:
        return edit_builtin(self.critique)

    def check(self, answer: BaseModel) -> None:
        about_prompt = [i for i in answer.instructions if "prompt" in i.lower()]
        if about_prompt:
            raise ValueError(f"instructions change the image, not the prompt: {about_prompt}")
        if self.critique.deviations and not answer.instructions:
            raise ValueError("the critique lists deviations: give at least one instruction")
