"""Planner: goal text -> TargetSpec (what matters, and which held-out metric measures it).

The builtin planner maps the goal's words onto the shapes world's vocabulary. A goal that names
nothing it knows is an error, not a guess.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from atelier.shapes.scene import COLOURS, RELATIONS, SHAPES


class PlanError(ValueError):
    """The planner cannot turn the goal into a target."""


class TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    relations: list[str] = Field(default_factory=list, description="relations the model should get right")
    counts: list[int] = Field(default_factory=list, description="counts the model should get right (2 or 3)")
    colours: list[str] = Field(default_factory=lambda: list(COLOURS), description="colours prompts may use")
    shapes: list[str] = Field(default_factory=lambda: list(SHAPES), description="shapes prompts may use")
    metric: str = Field(description="held-out metric that measures the goal")
    rationale: str = Field("", description="which words of the goal led here")


# Words -> relations. Order matters only for the rationale text.
_RELATION_WORDS = {
    r"\bleft\b|\bright\b|left/right|\bhorizontal": ["left of", "right of"],
    r"\babove\b|\bbelow\b|\bunder\b|\bover\b|\bvertical|top|bottom": ["above", "below"],
    r"\brelation|\bspatial|\bposition|\bplacement|\bwhere\b|\bbeside": list(RELATIONS),
}
_COUNT_WORDS = r"\bcount|\bnumber|how many|\bnumeracy|\btwo\b|\bthree\b|\bmultiple"
_OBJECT_WORDS = r"\bobject|\bshape|\bcolou?r|\bdraw|\brender"


def plan_builtin(goal: str) -> TargetSpec:
    text = goal.lower()
    why: list[str] = []
    relations: list[str] = []
    for pattern, rels in _RELATION_WORDS.items():
        if m := re.search(pattern, text):
            relations += [r for r in rels if r not in relations]
            why.append(f"'{m.group(0)}' -> {rels}")
    counts: list[int] = []
    if m := re.search(_COUNT_WORDS, text):
        counts = [2, 3]
        why.append(f"'{m.group(0)}' -> counts 2-3")
    colours = [c for c in COLOURS if re.search(rf"\b{c}\b", text)] or list(COLOURS)
    shapes = [s for s in SHAPES if re.search(rf"\b{s}s?\b", text)] or list(SHAPES)
    named_objects = len(colours) < len(COLOURS) or len(shapes) < len(SHAPES)
    if named_objects:
        why.append(f"objects limited to colours {colours} and shapes {shapes}")
    if relations:
        metric = "relation_accuracy_cond"
    elif counts:
        metric = "count_accuracy_multi"
    elif named_objects or re.search(_OBJECT_WORDS, text):
        metric = "object_accuracy"
    else:
        raise PlanError(
            f"cannot map the goal {goal!r} onto the shapes world: name relations (left/right, above/below), "
            f"counts, colours ({', '.join(COLOURS)}) or shapes ({', '.join(SHAPES)})"
        )
    return TargetSpec(
        relations=relations, counts=counts, colours=colours, shapes=shapes, metric=metric, rationale="; ".join(why)
    )
