"""Planner: goal text -> TargetSpec (what matters, and which held-out metric measures it).

The spec is the same for every world: object classes, attributes, relations, counts, style,
yes/no checks and the one held-out metric (a name from atelier.worlds.judgment.METRICS). A world
asks its planner with a subclass of `PlanRequest` that fills the `planner` template with its
vocabulary and checks the answer against it (the shapes world: atelier.worlds.shapes.plan).
`plan_with_agent` asks the configured backend, keeps the answer in the run folder and, if the
model gives no valid answer, falls back to the world's builtin plan and says so there.
"""

from __future__ import annotations

import re

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from atelier.agents import records
from atelier.agents.backend import AgentRequest, RunPaused, endpoint_of
from atelier.agents.backends import backend_for
from atelier.agents.questions import YesNoQuestion, check_questions
from atelier.atomic import write_json_atomic
from atelier.config import AgentConfig
from atelier.worlds.judgment import METRICS, Relation

log = logging.getLogger("atelier.agents")

MAX_COUNT = 10


class PlanError(ValueError):
    """The planner cannot turn the goal into a target."""


class TargetSpec(BaseModel):
    """What the loop should improve, in the world's vocabulary."""

    model_config = ConfigDict(extra="forbid")
    objects: list[str] = Field(default_factory=list, description="object classes the goal is about, e.g. 'dog'; [] = any")
    attributes: list[str] = Field(default_factory=list, description="attributes that must come out right, e.g. 'colour'")
    relations: list[Relation] = Field(default_factory=list, description="relations the model should get right")
    counts: list[Annotated[int, Field(ge=1, le=MAX_COUNT)]] = Field(
        default_factory=list, description="counts the model should get right, e.g. 2 or 3"
    )
    colours: list[str] = Field(
        default_factory=list, description="the shapes world's palette prompts may use; [] = the world's all"
    )
    shapes: list[str] = Field(default_factory=list, description="the shapes world's shapes prompts may use; [] = the world's all")
    style: list[str] = Field(default_factory=list, description="style wishes, e.g. 'flat colours'; [] if none")
    questions: list[YesNoQuestion] = Field(
        default_factory=list, description="yes/no checks a judge applies to every image, beyond what each prompt asks"
    )
    metric: str = Field(description=f"held-out metric that measures the goal, one of: {', '.join(METRICS)}")
    rationale: str = Field("", description="which words of the goal led here")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; metrics are {', '.join(METRICS)}")
        return metric

    @model_validator(mode="after")
    def _consistent(self) -> TargetSpec:
        check_questions(self.questions)
        if self.metric.startswith("relation") and not self.relations:
            raise ValueError(f"metric {self.metric} needs at least one relation")
        return self


class PlanRequest(AgentRequest):
    """goal -> TargetSpec. A world subclasses it: its vocabulary in `template_values`, its rules
    in `check`, its builtin plan in `answer_builtin`."""

    role = "planner"
    mode = "default"
    answer_schema = TargetSpec
    goal: str = Field(description="the user's goal in plain language")

    def template_values(self) -> dict[str, str]:
        return {"goal": self.goal, "metrics": ", ".join(METRICS)}


def plan_with_agent(config: AgentConfig, request: PlanRequest, record_dir: Path,
                    fallback: Callable[[], TargetSpec] | None = None) -> TargetSpec:
    """The configured planner's spec. The answer is kept in record_dir/planner.json and reused
    when the node runs again (after a crash), so a resumed run plans exactly once; the spec, as
    every agent answer, has its keys masked and its texts bounded (atelier.agents.records). When the
    planner gives no valid answer, `fallback()` (the world's builtin plan) is used and recorded
    as such when `config.fallback` is 'builtin'; otherwise the run pauses (RunPaused)."""
    record_file = Path(record_dir) / "planner.json"
    records.register_key_env(config.api_key_env)
    if record_file.exists():  # cleaned again: a record kept before answers were cleaned may hold a key or 5 MB
        spec = TargetSpec.model_validate(json.loads(record_file.read_text())["spec"])
        try:
            return records.clean_answer(spec, records.current_keys())
        except ValueError as e:
            raise PlanError(f"{record_file} holds a plan that cannot be kept: {e}") from None
    result = backend_for(config, "planner").ask(request)
    if result.ok:
        spec, used = result.answer, None
    elif fallback is not None and config.fallback == "builtin":
        log.warning("planner gave no valid plan (%s); agents.planner.fallback: using the builtin plan", result.error)
        spec, used = records.clean_answer(fallback(), records.current_keys()), "builtin"
    else:
        raise RunPaused(f"plan: {endpoint_of(config, 'planner')} gave no valid plan after {result.attempts} answers: "
                        f"{records.clean_text(' '.join(str(result.error).split()), 200, records.current_keys())}"
                        " (agents.planner.fallback: builtin would use the builtin plan instead)")
    write_json_atomic(record_file, {**result.record(), "fallback": used, "spec": spec.model_dump(mode="json")})
    return spec


def goal_words(text: str, relation_words: dict[str, list[str]], count_words: str) -> tuple[list[str], list[int], list[str]]:
    """What a builtin planner reads off a goal's words: (relations, counts, why). Each world gives
    its own patterns (`relation_words`: regex -> the relations it names; `count_words`: a regex
    whose match means counts 2-3); `why` says which words led where, for the plan's rationale."""
    text = text.lower()
    relations: list[str] = []
    why: list[str] = []
    for pattern, named in relation_words.items():
        if m := re.search(pattern, text):
            relations += [r for r in named if r not in relations]
            why.append(f"'{m.group(0)}' -> {named}")
    counts: list[int] = []
    if m := re.search(count_words, text):
        counts = [2, 3]
        why.append(f"'{m.group(0)}' -> counts 2-3")
    return relations, counts, why
