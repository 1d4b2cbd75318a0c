"""Judge: image + prompt -> judgment, in three modes.

  questions  yes/no questions scored as in CCSR (skipping those that depend on an earlier "no");
  rubric     0-5 scores with a reason for aesthetics, alignment and preference, for one image or
             two side by side;
  match      a plain verdict: does the image show what the prompt asks?

The builtin judge answers from the exact detector's output with the VISOR rules (counts,
relation by box centres). In the loop, `judge_batch` fills the same row fields from either
backend: the builtin keeps all detections so that relabelling and later reports can be redone
from disk; a model judge answers the prompt's yes/no questions (no detections: IPR then keeps
its correct samples and drops the wrong ones it cannot relabel). A model that gives no valid
answer leaves a failed judgment (`judge_failed`, the error and the raw text) that counts as
wrong, and the run goes on.
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from atelier.agents.backend import AgentRequest, ImagePromptRequest
from atelier.agents.backends import backend_for
from atelier.agents.questions import YesNoQuestion, ccsr_outcomes, ccsr_score, check_questions
from atelier.worlds.shapes.questions import Probe, answer_probe, judgment_fields, shapes_questions
from atelier.config import AgentConfig
from atelier.worlds.shapes.detect import detect_all
from atelier.worlds.shapes.metrics import judge_image
from atelier.worlds.shapes.scene import parse

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


def _probe_outcomes(image: Path, prompt: str):
    scene = parse(prompt)
    detections = detect_all(Image.open(image).convert("RGB"))
    questions, probes = shapes_questions(scene)
    outcome = ccsr_outcomes(questions, {q.id: answer_probe(p, detections) for q, p in zip(questions, probes)})
    return questions, outcome, detections


def rubric_builtin(image: Path, prompt: str) -> Rubric:
    """Alignment: share of the prompt's questions satisfied (less one for unasked shapes);
    aesthetics: mean detector confidence, a stand-in for how cleanly the shapes are drawn."""
    questions, outcome, detections = _probe_outcomes(image, prompt)
    positive = [q for q in questions if q.positive]
    met = sum(outcome[q.id] == "yes" for q in positive)
    extra = any(outcome[q.id] == "yes" for q in questions if not q.positive)
    alignment = max(0, round(5 * met / len(positive)) - extra)
    aesthetics = round(5 * mean(d.score for d in detections)) if detections else 0
    preference = round((2 * alignment + aesthetics) / 3)
    return Rubric(
        aesthetics=RubricScore(score=aesthetics, reason=f"mean detector confidence over {len(detections)} shapes"),
        alignment=RubricScore(score=alignment, reason=f"{met} of {len(positive)} checks hold" + ("; unasked shapes" if extra else "")),
        preference=RubricScore(score=preference, reason="alignment counted twice, aesthetics once"),
    )


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

    def template_values(self) -> dict[str, str]:
        return {"prompt": self.prompt, "questions": "\n".join(f"{q.id}. {q.text}" for q in self.questions)}

    def answer_builtin(self) -> YesNoAnswers:
        detections = detect_all(Image.open(self.image).convert("RGB"))
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
    def answer_builtin(self) -> Rubric:
        return rubric_builtin(self.image, self.prompt)


class PairRubricJudgeRequest(AgentRequest):
    """two images + prompt -> scores of each and the preferred one"""

    role = "judge"
    mode = "rubric_pair"
    answer_schema = PairRubric
    first: Path = Field(description="the first image")
    second: Path = Field(description="the second image")
    prompt: str = Field(description="the prompt both images were made from")

    def template_values(self) -> dict[str, str]:
        return {"prompt": self.prompt}

    def images(self) -> list[Path]:
        return [self.first, self.second]

    def answer_builtin(self) -> PairRubric:
        a, b = rubric_builtin(self.first, self.prompt), rubric_builtin(self.second, self.prompt)
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
    def answer_builtin(self) -> MatchVerdict:
        j = judge_image(parse(self.prompt), detect_all(Image.open(self.image).convert("RGB")))
        ok = j.ipr_correct and j.object_ok
        wrong = [w for w, bad in (("objects", not j.object_ok), ("counts", not j.count_ok), ("relation", j.relation_ok is False)) if bad]
        return MatchVerdict(matches=ok, reason="objects, counts and relation as asked" if ok else "wrong " + ", ".join(wrong))


# --- the role in the loop ---------------------------------------------------------------------


def judge_builtin(rows: list[dict]) -> list[dict]:
    """rows: {file, prompt, ...} -> the same rows with detections and the judgment added."""
    out = []
    for row in rows:
        detections = detect_all(Image.open(row["file"]).convert("RGB"))
        judgment = judge_image(parse(row["prompt"]), detections, row.get("prompt_index", 0))
        out.append({**row, **judgment.model_dump(), "detections": [d.to_dict() for d in detections]})
    return out


def judge_with_agent(config: AgentConfig, rows: list[dict]) -> list[dict]:
    """The configured judge answers each row's yes/no questions (all rows at once, as the
    endpoint's concurrency bound allows); the answers become the loop's judgment fields."""
    requests = []
    for row in rows:
        questions, probes = shapes_questions(parse(row["prompt"]))
        requests.append(QuestionsJudgeRequest(image=row["file"], prompt=row["prompt"], questions=questions, probes=probes))
    results = backend_for(config, "judge").ask_many(requests)
    out = []
    for row, request, result in zip(rows, requests, results):
        outcome = ccsr_outcomes(request.questions, {a.id: a.answer for a in result.answer.answers}) if result.ok else None
        fields = judgment_fields(parse(row["prompt"]), request.probes, request.questions, outcome, row.get("prompt_index", 0))
        judge = {
            "backend": config.backend, "model": config.model, "mode": "questions",
            "questions": [{**q.model_dump(), "outcome": (outcome or {}).get(q.id)} for q in request.questions],
            "ccsr_score": ccsr_score(request.questions, outcome) if outcome is not None else None,
            "attempts": result.attempts, "retries": result.retries, "latency_s": round(result.latency_s, 4),
        }
        failure = {} if result.ok else {"judge_error": result.error, "judge_raw": result.raw}
        out.append({**row, **fields, "detections": [], "judge": judge, "judge_failed": not result.ok, **failure})
    return out


def judge_batch(agent: AgentConfig | str, rows: list[dict]) -> list[dict]:
    """Judge the rows with the configured judge (a backend name alone means that backend with
    default settings: enough for 'builtin')."""
    config = agent if isinstance(agent, AgentConfig) else AgentConfig(backend=agent)
    match config.backend:
        case "builtin":
            return judge_builtin(rows)
        case "openai":
            return judge_with_agent(config, rows)
    raise ValueError(f"unknown judge backend {config.backend!r}")
