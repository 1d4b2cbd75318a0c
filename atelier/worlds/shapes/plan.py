"""The shapes world's planner: goal words -> a TargetSpec in the world's vocabulary.

The builtin planner maps the goal's words onto colours, shapes, relations and counts. A goal that
names nothing it knows is an error, not a guess. A model planner answers the same schema from
the `planner` template, filled with this world's vocabulary and checked against it; if it gives
no valid answer, the builtin plan is used and the failure is kept in the run folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from atelier.agents.planner import PlanError, PlanRequest, TargetSpec, goal_words, plan_with_agent
from atelier.agents.questions import YesNoQuestion
from atelier.config import AgentConfig
from atelier.worlds.shapes.scene import COLOURS, MAX_COUNT, RELATIONS, SHAPES

# The held-out metrics a shapes goal is measured by.
GOAL_METRICS = ("relation_accuracy_cond", "relation_accuracy_uncond", "count_accuracy", "count_accuracy_multi",
                "object_accuracy")

# Words -> relations. Order matters only for the rationale text.
_RELATION_WORDS = {
    # 'right' alone is not spatial ("get counts right"); 'left' is.
    r"\bleft\b|\bright (?:of|side)\b|\bto the right\b|\bon the right\b|\bhorizontal": ["left of", "right of"],
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
    relations, counts, why = goal_words(text, _RELATION_WORDS, _COUNT_WORDS)
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
    spec = TargetSpec(
        objects=objects, attributes=["colour", "shape"], relations=relations, counts=counts, colours=colours,
        shapes=shapes, questions=list(_GENERAL_QUESTIONS), metric=metric, rationale="; ".join(why),
    )
    try:
        check_spec(spec)
    except ValueError as e:
        raise PlanError(f"cannot plan the goal {goal!r} in the shapes world: {e}") from None
    return spec


def check_spec(spec: TargetSpec) -> None:
    """The shapes world's rules for a spec: its colours, shapes, counts and metrics only, and
    enough objects for a relation. ValueError naming what is off."""
    problems = []
    if bad := [o for o in spec.objects if len(o.split()) != 2 or o.split()[0] not in COLOURS or o.split()[1] not in SHAPES]:
        problems.append(f"objects {bad} are not '<colour> <shape>' names of the shapes world")
    if bad := [c for c in spec.colours if c not in COLOURS]:
        problems.append(f"colours {bad} are not the shapes world's ({', '.join(COLOURS)})")
    if bad := [s for s in spec.shapes if s not in SHAPES]:
        problems.append(f"shapes {bad} are not the shapes world's ({', '.join(SHAPES)})")
    if bad := [n for n in spec.counts if n > MAX_COUNT]:
        problems.append(f"counts {bad} are more than the shapes world draws (at most {MAX_COUNT})")
    if spec.metric not in GOAL_METRICS:
        problems.append(f"metric {spec.metric!r} does not measure a shapes goal; use one of {', '.join(GOAL_METRICS)}")
    if spec.relations and len(spec.colours or COLOURS) * len(spec.shapes or SHAPES) < 2:
        problems.append("a relation needs two different objects: allow more colours or shapes")
    if problems:
        raise ValueError("; ".join(problems))


class ShapesPlanRequest(PlanRequest):
    """goal -> TargetSpec in the shapes world's colours, shapes, relations and counts"""

    def template_values(self) -> dict[str, str]:
        return {"goal": self.goal, "colours": ", ".join(COLOURS), "shapes": ", ".join(SHAPES),
                "relations": ", ".join(RELATIONS), "metrics": ", ".join(GOAL_METRICS)}

    def answer_builtin(self) -> TargetSpec:
        return plan_builtin(self.goal)

    def check(self, answer: BaseModel) -> None:
        check_spec(answer)


def plan(goal: str, planner_cfg: AgentConfig, record_dir: Path) -> TargetSpec:
    """The spec of a goal from the configured planner (builtin: the rules above, no record)."""
    match planner_cfg.backend:
        case "builtin":
            return plan_builtin(goal)
        case "openai":
            return plan_with_agent(planner_cfg, ShapesPlanRequest(goal=goal), record_dir, fallback=lambda: plan_builtin(goal))
    raise ValueError(f"agents.planner: unknown backend {planner_cfg.backend!r}")
