"""Planner: goal text -> TargetSpec (what matters, and which held-out metric measures it).

The builtin planner maps the goal's words onto the shapes world's vocabulary. A goal that names
nothing it knows is an error, not a guess. A model planner answers the same schema from the
`planner` prompt; if it gives no valid answer, the builtin plan is used and the failure is kept
in the run folder.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from atelier.agents.backend import AgentRequest
from atelier.agents.backends import backend_for
from atelier.agents.questions import YesNoQuestion, check_questions
from atelier.atomic import write_json_atomic
from atelier.config import AgentConfig
from atelier.worlds.shapes.scene import COLOURS, MAX_COUNT, RELATIONS, SHAPES, Colour, Relation, Shape

log = logging.getLogger("atelier.agents")

Metric = Literal["relation_accuracy_cond", "relation_accuracy_uncond", "count_accuracy", "count_accuracy_multi", "object_accuracy"]
METRICS: tuple[str, ...] = get_args(Metric)


class PlanError(ValueError):
    """The planner cannot turn the goal into a target."""


class TargetSpec(BaseModel):
    """What the loop should improve, in the shapes world's vocabulary."""

    model_config = ConfigDict(extra="forbid")
    objects: list[str] = Field(default_factory=list, description="object classes the goal is about, e.g. 'red circle'; [] = any")
    attributes: list[str] = Field(default_factory=list, description="attributes that must come out right, e.g. 'colour'")
    relations: list[Relation] = Field(default_factory=list, description="relations the model should get right")
    counts: list[Annotated[int, Field(ge=1, le=MAX_COUNT)]] = Field(
        default_factory=list, description="counts the model should get right (2 or 3)"
    )
    colours: list[Colour] = Field(default_factory=lambda: list(COLOURS), min_length=1, description="colours prompts may use")
    shapes: list[Shape] = Field(default_factory=lambda: list(SHAPES), min_length=1, description="shapes prompts may use")
    style: list[str] = Field(default_factory=list, description="style wishes, e.g. 'flat colours'; [] if none")
    questions: list[YesNoQuestion] = Field(
        default_factory=list, description="yes/no checks a judge applies to every image, beyond what each prompt asks"
    )
    metric: Metric = Field(description="held-out metric that measures the goal")
    rationale: str = Field("", description="which words of the goal led here")

    @model_validator(mode="after")
    def _consistent(self) -> TargetSpec:
        check_questions(self.questions)
        if self.metric.startswith("relation") and not self.relations:
            raise ValueError(f"metric {self.metric} needs at least one relation")
        if self.relations and len(self.colours) * len(self.shapes) < 2:
            raise ValueError("a relation needs two different objects: allow more colours or shapes")
        return self


# Words -> relations. Order matters only for the rationale text.
_RELATION_WORDS = {
    r"\bleft\b|\bright\b|left/right|\bhorizontal": ["left of", "right of"],
    r"\babove\b|\bbelow\b|\bunder\b|\bover\b|\bvertical|top|bottom": ["above", "below"],
    r"\brelation|\bspatial|\bposition|\bplacement|\bwhere\b|\bbeside": list(RELATIONS),
}
_COUNT_WORDS = r"\bcount|\bnumber|how many|\bnumeracy|\btwo\b|\bthree\b|\bmultiple"
_OBJECT_WORDS = r"\bobject|\bshape|\bcolou?r|\bdraw|\brender"
# Checks that hold whatever the prompt: whole shapes, nothing unasked for.
_GENERAL_QUESTIONS = [
    YesNoQuestion(id=1, text="Is every shape drawn whole, with clean edges?", positive=True, depends_on=[]),
    YesNoQuestion(id=2, text="Is there a shape that the prompt does not mention?", positive=False, depends_on=[]),
]


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
    objects = [f"{c} {s}" for c in colours for s in shapes] if named_objects else []
    return TargetSpec(
        objects=objects, attributes=["colour", "shape"], relations=relations, counts=counts, colours=colours,
        shapes=shapes, questions=list(_GENERAL_QUESTIONS), metric=metric, rationale="; ".join(why),
    )


class PlanRequest(AgentRequest):
    """goal -> TargetSpec"""

    role = "planner"
    mode = "default"
    answer_schema = TargetSpec
    goal: str = Field(description="the user's goal in plain language")

    def template_values(self) -> dict[str, str]:
        return {"goal": self.goal, "colours": ", ".join(COLOURS), "shapes": ", ".join(SHAPES),
                "relations": ", ".join(RELATIONS), "metrics": ", ".join(METRICS)}

    def answer_builtin(self) -> TargetSpec:
        return plan_builtin(self.goal)

    def check(self, answer: BaseModel) -> None:
        bad = [o for o in answer.objects if len(o.split()) != 2 or o.split()[0] not in COLOURS or o.split()[1] not in SHAPES]
        if bad:
            raise ValueError(f"objects {bad} are not '<colour> <shape>' names of the shapes world")


def plan_with_agent(config: AgentConfig, goal: str, record_dir: Path) -> TargetSpec:
    """The configured planner's spec. The answer is kept in record_dir/planner.json and reused
    when the node runs again (after a crash), so a resumed run plans exactly once."""
    record_file = Path(record_dir) / "planner.json"
    if record_file.exists():
        return TargetSpec.model_validate(json.loads(record_file.read_text())["spec"])
    result = backend_for(config, "planner").ask(PlanRequest(goal=goal))
    if result.ok:
        spec, fallback = result.answer, None
    else:
        log.warning("planner gave no valid plan (%s); using the builtin plan", result.error)
        spec, fallback = plan_builtin(goal), "builtin"
    write_json_atomic(record_file, {**result.record(), "fallback": fallback, "spec": spec.model_dump(mode="json")})
    return spec
