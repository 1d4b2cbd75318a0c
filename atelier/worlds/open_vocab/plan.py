"""The open_vocab world's planner: goal words -> a TargetSpec over the configured classes.

Builtin rules, in this order:
- a spatial goal (left, right, above, below, spatial, position ..., or vocabulary.relations
  set) -> those relations, VISOR prompts, metric relation_accuracy_cond;
- a counting goal (count, number, how many ...) -> counts 2 and 3, metric count_accuracy;
- anything else (an appearance goal: "realistic elephants and giraffes") -> CCSR's yes/no
  questions per class, positive and negative, metric question_score:
      1. Is there an elephant?                               +
      2. Does the elephant look like a real photograph?      +  (on 1)
      3. Is the elephant deformed or missing parts?          -  (on 1)
A model planner answers the same schema from the `planner_open_vocab` template; its answer is
checked, kept in the run folder and reused on a re-run. A planner that gives no valid answer
pauses the run, unless `agents.planner.fallback: builtin` asks for the rules instead (recorded
in agents/planner.json as `fallback`; never silent).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, Field

from atelier.agents.backend import AgentRequest, RunPaused, endpoint_of
from atelier.agents.backends import backend_for
from atelier.agents import records
from atelier.agents.planner import PlanError, TargetSpec, goal_words
from atelier.agents.questions import YesNoQuestion
from atelier.atomic import write_json_atomic
from atelier.config import AgentConfig, VocabularyConfig

log = logging.getLogger("atelier.agents")
from atelier.tools.phrases import count_phrase
from atelier.worlds.judgment import RELATIONS

# The held-out metrics an open_vocab goal may be measured by (no colour/shape attributes here).
GOAL_METRICS = ("relation_accuracy_cond", "relation_accuracy_uncond", "count_accuracy", "count_accuracy_multi",
                "object_accuracy", "ipr_accuracy", "question_score", "clip_score")

_RELATION_WORDS = {
    # 'right' alone is not spatial ("get counts right"); 'left' is.
    r"\bleft\b|\bright (?:of|side)\b|\bto the right\b|\bon the right\b|\bhorizontal": ["left of", "right of"],
    r"\babove\b|\bbelow\b|\bunder\b|\bover\b|\bvertical|\bon top\b": ["above", "below"],
    r"\brelation|\bspatial|\bposition|\bplacement|\bwhere\b|\bbeside": list(RELATIONS),
}
_COUNT_WORDS = r"\bcount|\bnumber|how many|\bnumeracy|\bquantit"


def appearance_questions(classes: list[str]) -> list[YesNoQuestion]:
    """Three CCSR questions per class: there, real-looking (on the first), deformed (on the first)."""
    questions: list[YesNoQuestion] = []
    for name in classes:
        first = len(questions) + 1
        questions += [
            YesNoQuestion(id=first, text=f"Is there {count_phrase(name, 1)}?", positive=True, depends_on=[]),
            YesNoQuestion(id=first + 1, text=f"Does the {name} look like a real photograph?", positive=True,
                          depends_on=[first]),
            YesNoQuestion(id=first + 2, text=f"Is the {name} deformed or missing parts?", positive=False,
                          depends_on=[first]),
        ]
    return questions


def plan_builtin(goal: str, vocabulary: VocabularyConfig) -> TargetSpec:
    classes = list(vocabulary.classes)
    if not classes:
        raise PlanError("vocabulary.classes: the builtin planner needs the classes to write prompts for")
    text = goal.lower()
    relations, counts, why = goal_words(text, _RELATION_WORDS, _COUNT_WORDS)
    if vocabulary.relations:  # the config's relations win over the goal's words
        relations = list(vocabulary.relations)
        why = [w for w in why if "counts" in w] + [f"vocabulary.relations -> {relations}"]
    questions: list[YesNoQuestion] = []
    if relations:
        if len(classes) < 2:
            raise PlanError(f"a spatial goal needs two classes at least; vocabulary.classes has {classes}")
        metric = "relation_accuracy_cond"
    elif counts:
        metric = "count_accuracy"
    else:
        questions = appearance_questions(classes)
        metric = "question_score"
        why.append("no placement or counting words: appearance, scored by yes/no questions per class")
    return TargetSpec(objects=classes, relations=relations, counts=counts, questions=questions, metric=metric,
                      rationale="; ".join(why))


def check_spec(spec: TargetSpec) -> None:
    """The open_vocab world's rules for a spec. ValueError naming what is off."""
    problems = []
    if not spec.objects:
        problems.append("objects: name the classes the goal is about (the detector is asked for them)")
    if spec.colours or spec.shapes:
        problems.append("colours and shapes belong to the shapes world; leave them empty")
    if spec.metric not in GOAL_METRICS:
        problems.append(f"metric {spec.metric!r} does not measure an open_vocab goal; use one of {', '.join(GOAL_METRICS)}")
    if spec.relations and len(spec.objects) < 2:
        problems.append("a relation needs two classes at least")
    if spec.metric.startswith("count") and not spec.counts:
        problems.append(f"metric {spec.metric} needs counts")
    if len(set(spec.objects)) != len(spec.objects):
        problems.append("objects repeat")
    if problems:
        raise ValueError("; ".join(problems))


class OpenVocabPlanRequest(AgentRequest):
    """goal -> TargetSpec over open-vocabulary object classes"""

    role = "planner"
    mode = "open_vocab"
    answer_schema = TargetSpec
    goal: str = Field(description="the user's goal in plain language")
    classes: tuple[str, ...] = Field(default=(), description="the configured classes; () = the planner chooses")
    relations: tuple[str, ...] = Field(default=(), description="the configured relations; () = from the goal")

    def template_values(self) -> dict[str, str]:
        return {
            "goal": self.goal,
            "classes": ", ".join(self.classes) or "none configured: choose them from the goal",
            "relations": ", ".join(self.relations) or "from the goal (" + ", ".join(RELATIONS) + ")",
            "metrics": ", ".join(GOAL_METRICS),
        }

    def answer_builtin(self) -> TargetSpec:
        return plan_builtin(self.goal, VocabularyConfig(classes=list(self.classes), relations=list(self.relations)))

    def check(self, answer: BaseModel) -> None:
        check_spec(answer)
        if self.relations and sorted(answer.relations) != sorted(self.relations):
            raise ValueError(f"relations must be the configured ones: {list(self.relations)}")


def _one_line(text: str | None, limit: int = 300) -> str:
    text = " ".join((text or "no answer").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plan_with_model(planner: AgentConfig, goal: str, vocabulary: VocabularyConfig, record_dir: Path) -> TargetSpec:
    """The model planner's spec, kept in record_dir/planner.json and reused when that exists.
    PlanError (one line) when the model gives no valid answer after its re-asks."""
    record_file = Path(record_dir) / "planner.json"
    if record_file.exists():  # a record written before keys were masked is masked on the way back in
        stored = TargetSpec.model_validate(json.loads(record_file.read_text())["spec"])
        return records.clean_answer(stored, records.current_keys())
    request = OpenVocabPlanRequest(goal=goal, classes=tuple(vocabulary.classes), relations=tuple(vocabulary.relations))
    result = backend_for(planner, "planner").ask(request)
    used = None
    if result.ok:
        spec = result.answer
    elif planner.fallback == "builtin" and vocabulary.classes:
        log.warning("planner gave no valid plan (%s); agents.planner.fallback: using the builtin plan", _one_line(result.error))
        spec, used = plan_builtin(goal, vocabulary), "builtin"
    else:
        raise RunPaused(f"plan: {endpoint_of(planner, 'planner')} gave no valid plan after {result.attempts} answers: "
                        f"{records.clean_text(_one_line(result.error), 200, records.current_keys())}"
                        + (" (agents.planner.fallback: builtin would use the builtin plan instead)" if vocabulary.classes else ""))
    write_json_atomic(record_file, {**result.record(), "fallback": used, "spec": spec.model_dump(mode="json")})
    return spec


def plan(goal: str, planner: AgentConfig, vocabulary: VocabularyConfig, record_dir: Path) -> TargetSpec:
    match planner.backend:
        case "builtin":
            return plan_builtin(goal, vocabulary)
        case "openai":
            return plan_with_model(planner, goal, vocabulary, record_dir)
    raise ValueError(f"agents.planner: unknown backend {planner.backend!r}")
