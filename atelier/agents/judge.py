"""Judge: image + prompt -> judgment, in three modes.

  questions  yes/no questions scored as in CCSR (skipping those that depend on an earlier "no");
  rubric     0-5 scores with a reason for aesthetics, alignment and preference, for one image or
             two side by side;
  match      a plain verdict: does the image show what the prompt asks?

The builtin judge answers from what the request carries: the world's detector output
(`Detection.to_dict()` form) and what the prompt asks (`atelier.worlds.judgment.Asked`), with the
VISOR rules (counts, relation by box centres). It never runs a detector itself: the world fills
those fields before it asks (atelier.worlds.shapes.judge). A model judge answers from the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import mean
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from atelier.agents.backend import AgentRequest, AgentResult, ImagePromptRequest
from atelier.agents.backends import backend_for
from atelier.agents.questions import YesNoQuestion, check_questions
from atelier.config import AgentConfig
from atelier.tools.detection import Detection
from atelier.worlds.judgment import Asked, Probe, answer_probe, judge_detections

# --- answer schemas ---------------------------------------------------------------------------


class YesNo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(description="the question's id")
    answer: Literal["yes", "no"] = Field(description="what the image shows")


class YesNoAnswers(BaseModel):
    """One answer per question."""

    model_config = ConfigDict(extra="forbid")
    answers: list[YesNo] = Field(description="one answer for every question, by id")


class RubricScore(BaseModel):
    model_config = ConfigDict(extra="forbid")
    score: int = Field(ge=0, le=5, description="0 (worst) to 5 (best)")
    reason: str = Field(max_length=400, description="one short sentence: what the score rests on")


class Rubric(BaseModel):
    """Scores of one image."""

    model_config = ConfigDict(extra="forbid")
    aesthetics: RubricScore = Field(description="how well made the image is, whatever it shows")
    alignment: RubricScore = Field(description="how faithfully it shows what the prompt asks")
    preference: RubricScore = Field(description="how much a person who wrote the prompt would like it")


class PairRubric(BaseModel):
    """Scores of two images for one prompt, side by side."""

    model_config = ConfigDict(extra="forbid")
    first: Rubric = Field(description="scores of the first image")
    second: Rubric = Field(description="scores of the second image")
    preferred: Literal["first", "second", "tie"] = Field(description="the better image overall")
    reason: str = Field(max_length=400, description="one short sentence: why")


class MatchVerdict(BaseModel):
    """Does the image show what the prompt asks?"""

    model_config = ConfigDict(extra="forbid")
    matches: bool = Field(description="true only if every object, count and relation of the prompt is right")
    reason: str = Field(max_length=400, description="one short sentence: what is right or wrong")


# --- builtin rules ----------------------------------------------------------------------------


def detections_of(dicts: Sequence[dict]) -> list[Detection]:
    return [Detection.from_dict(d) for d in dicts]


def _needs(asked: Asked | None, role_mode: str) -> Asked:
    if asked is None:
        raise ValueError(f"the builtin {role_mode} judge needs what the prompt asks (`asked`) and the detections, "
                         "filled by the world")
    return asked


def _checks(asked: Asked, detections: Sequence[Detection]) -> tuple[int, int, bool]:
    """(positive checks met, positive checks, anything unasked drawn) of the prompt's objects,
    counts and relation: per object 'is it there' and, if so, 'in the asked number'; 'does the
    relation hold' once every object is there; 'is there anything else' (a flaw)."""
    names = tuple(o.name for o in asked.objects)
    present = [answer_probe(Probe(kind="exists", objects=(o.name,)), detections) == "yes" for o in asked.objects]
    exact = [p and answer_probe(Probe(kind="count", objects=(o.name,), count=o.count), detections) == "yes"
             for p, o in zip(present, asked.objects)]
    met, total = sum(present) + sum(exact), 2 * len(names)
    if asked.relation is not None:
        total += 1
        met += all(present) and answer_probe(Probe(kind="relation", objects=names[:2], relation=asked.relation), detections) == "yes"
    extra = answer_probe(Probe(kind="only_named", objects=names), detections) == "yes"
    return int(met), total, extra


def rubric_builtin(asked: Asked, detections: Sequence[Detection]) -> Rubric:
    """Alignment: share of the prompt's checks satisfied (less one for unasked objects);
    aesthetics: mean detector confidence, a stand-in for how cleanly the objects are drawn."""
    met, total, extra = _checks(asked, detections)
    alignment = max(0, (round(5 * met / total) if total else 5) - extra)
    aesthetics = round(5 * mean(d.score for d in detections)) if detections else 0
    preference = round((2 * alignment + aesthetics) / 3)
    return Rubric(
        aesthetics=RubricScore(score=aesthetics, reason=f"mean detector confidence over {len(detections)} shapes"),
        alignment=RubricScore(score=alignment, reason=f"{met} of {total} checks hold" + ("; unasked shapes" if extra else "")),
        preference=RubricScore(score=preference, reason="alignment counted twice, aesthetics once"),
    )


def match_builtin(asked: Asked, detections: Sequence[Detection], prompt: str) -> MatchVerdict:
    j = judge_detections(asked, detections, prompt)
    ok = j.ipr_correct and j.object_ok
    wrong = [w for w, bad in (("objects", not j.object_ok), ("counts", not j.count_ok), ("relation", j.relation_ok is False)) if bad]
    return MatchVerdict(matches=ok, reason="objects, counts and relation as asked" if ok else "wrong " + ", ".join(wrong))


def _rank(rubric: Rubric) -> tuple[int, int, int]:
    return rubric.preference.score, rubric.alignment.score, rubric.aesthetics.score


# --- requests ---------------------------------------------------------------------------------


class QuestionsJudgeRequest(ImagePromptRequest):
    """image + prompt + yes/no questions -> one answer per question"""

    role = "judge"
    mode = "questions"
    answer_schema = YesNoAnswers
    questions: tuple[YesNoQuestion, ...] = Field(min_length=1, description="the questions, in order")
    probes: tuple[Probe | None, ...] = Field(
        default=(), description="machine-checkable forms of the questions for the builtin judge; None where only a model can answer"
    )
    detections: tuple[dict, ...] = Field(default=(), description="the world's detector output (Detection.to_dict()), for the builtin judge")

    def template_values(self) -> dict[str, str]:
        return {"prompt": self.prompt, "questions": "\n".join(f"{q.id}. {q.text}" for q in self.questions)}

    def answer_builtin(self) -> YesNoAnswers:
        detections = detections_of(self.detections)
        return YesNoAnswers(answers=[YesNo(id=q.id, answer=answer_probe(p, detections))
                                     for q, p in zip(self.questions, self.probes) if p is not None])

    def check(self, answer: BaseModel) -> None:
        check_questions(self.questions)
        asked = [q.id for q in self.questions]
        given = [a.id for a in answer.answers]
        if len(set(given)) != len(given):
            raise ValueError("answer each question exactly once")
        if unknown := sorted(set(given) - set(asked)):
            raise ValueError(f"there are no questions {unknown}; the ids are {asked}")
        if missing := sorted(set(asked) - set(given)):
            raise ValueError(f"questions {missing} have no answer")


class RubricJudgeRequest(ImagePromptRequest):
    """image + prompt -> 0-5 scores with reasons"""

    role = "judge"
    mode = "rubric"
    answer_schema = Rubric
    asked: Asked | None = Field(None, description="what the prompt asks, for the builtin judge")
    detections: tuple[dict, ...] = Field(default=(), description="the world's detector output, for the builtin judge")

    def answer_builtin(self) -> Rubric:
        return rubric_builtin(_needs(self.asked, "rubric"), detections_of(self.detections))


class PairRubricJudgeRequest(AgentRequest):
    """two images + prompt -> scores of each and the preferred one"""

    role = "judge"
    mode = "rubric_pair"
    answer_schema = PairRubric
    first: Path = Field(description="the first image")
    second: Path = Field(description="the second image")
    prompt: str = Field(description="the prompt both images were made from")
    asked: Asked | None = Field(None, description="what the prompt asks, for the builtin judge")
    first_detections: tuple[dict, ...] = Field(default=(), description="detector output on the first image")
    second_detections: tuple[dict, ...] = Field(default=(), description="detector output on the second image")

    def template_values(self) -> dict[str, str]:
        return {"prompt": self.prompt}

    def images(self) -> list[Path]:
        return [self.first, self.second]

    def answer_builtin(self) -> PairRubric:
        asked = _needs(self.asked, "rubric_pair")
        a = rubric_builtin(asked, detections_of(self.first_detections))
        b = rubric_builtin(asked, detections_of(self.second_detections))
        preferred = "tie" if _rank(a) == _rank(b) else ("first" if _rank(a) > _rank(b) else "second")
        return PairRubric(first=a, second=b, preferred=preferred, reason="higher preference, then alignment, then aesthetics")

    def check(self, answer: BaseModel) -> None:
        first, second = answer.first.preference.score, answer.second.preference.score
        if (answer.preferred == "first" and first < second) or (answer.preferred == "second" and second < first):
            raise ValueError(f"preferred is {answer.preferred!r} but that image has the lower preference score")


class MatchJudgeRequest(ImagePromptRequest):
    """image + prompt -> does it match?"""

    role = "judge"
    mode = "match"
    answer_schema = MatchVerdict
    asked: Asked | None = Field(None, description="what the prompt asks, for the builtin judge")
    detections: tuple[dict, ...] = Field(default=(), description="the world's detector output, for the builtin judge")

    def answer_builtin(self) -> MatchVerdict:
        return match_builtin(_needs(self.asked, "match"), detections_of(self.detections), self.prompt)


# --- the role in the loop ---------------------------------------------------------------------


def ask_judge(config: AgentConfig, requests: Sequence[AgentRequest]) -> list[AgentResult]:
    """The configured judge's results for the requests, in order (all at once, as the
    endpoint's concurrency bound allows); a failed answer is a failed result, never an error."""
    return backend_for(config, "judge").ask_many(list(requests))
