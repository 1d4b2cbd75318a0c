"""The shapes world's judge: the exact detector, or a model's answers to the prompt's yes/no
questions, turned into the loop's judgment rows.

The builtin path keeps all detections, so that relabelling and later reports can be redone from
disk. A model judge answers the questions of atelier.worlds.shapes.questions (no detections: IPR
then keeps its correct samples and drops the wrong ones it cannot relabel). A model that gives no
valid answer leaves a failed judgment (`failed`, `failure`; also `judge_failed`, `judge_error`,
`judge_raw`), which every metric leaves out, and the run goes on.

The request builders fill what the generic builtin judge answers from: the detector's output and
what the caption asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from atelier.agents.judge import (
    MatchJudgeRequest,
    PairRubricJudgeRequest,
    QuestionsJudgeRequest,
    RubricJudgeRequest,
    ask_judge,
)
from atelier.agents.questions import ccsr_outcomes, ccsr_score
from atelier.config import AgentConfig
from atelier.tools.detection import Detection
from atelier.worlds.shapes.detect import detect_all
from atelier.worlds.shapes.metrics import asked_of, judge_image
from atelier.worlds.shapes.questions import judgment_fields, shapes_questions
from atelier.worlds.shapes.scene import parse


def detect(image: Path | str) -> list[Detection]:
    """The exact detector on an image file."""
    return detect_all(Image.open(image).convert("RGB"))


def detections(image: Path | str) -> tuple[dict, ...]:
    """The exact detector's output on an image file, in the form requests carry."""
    return tuple(d.to_dict() for d in detect(image))


def questions_request(image: Path, prompt: str, with_detections: bool = True) -> QuestionsJudgeRequest:
    """The caption's yes/no questions about the image; with the detections the builtin judge
    answers from (a model judge needs none)."""
    questions, probes = shapes_questions(parse(prompt))
    return QuestionsJudgeRequest(image=image, prompt=prompt, questions=questions, probes=probes,
                                 detections=detections(image) if with_detections else ())


def rubric_request(image: Path, prompt: str) -> RubricJudgeRequest:
    return RubricJudgeRequest(image=image, prompt=prompt, asked=asked_of(parse(prompt)), detections=detections(image))


def pair_rubric_request(first: Path, second: Path, prompt: str) -> PairRubricJudgeRequest:
    return PairRubricJudgeRequest(first=first, second=second, prompt=prompt, asked=asked_of(parse(prompt)),
                                  first_detections=detections(first), second_detections=detections(second))


def match_request(image: Path, prompt: str) -> MatchJudgeRequest:
    return MatchJudgeRequest(image=image, prompt=prompt, asked=asked_of(parse(prompt)), detections=detections(image))


# --- the role in the loop ---------------------------------------------------------------------


def detect_rows(rows: Sequence[dict]) -> list[dict]:
    """rows: {file, prompt, ...} -> the same rows with the exact detector's judgment and all
    detections added."""
    out = []
    for row in rows:
        found = detect(row["file"])
        judgment = judge_image(parse(row["prompt"]), found, row.get("prompt_index", 0))
        out.append({**row, **judgment.model_dump(), "detections": [d.to_dict() for d in found]})
    return out


def _ask_questions(config: AgentConfig, rows: Sequence[dict]) -> list[dict]:
    """The configured judge answers each row's yes/no questions (all rows at once, as the
    endpoint's concurrency bound allows); the answers become the loop's judgment fields."""
    requests = [questions_request(row["file"], row["prompt"], with_detections=False) for row in rows]
    results = ask_judge(config, requests)
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
        failure = {} if result.ok else {
            "failed": True, "failure": {"role": "judge", "error": result.error, "raw": result.raw},
            "judge_error": result.error, "judge_raw": result.raw,
        }
        out.append({**row, **fields, "detections": [], "judge": judge, "judge_failed": not result.ok, **failure})
    return out


def judge_rows(judge_cfg: AgentConfig | str, rows: Sequence[dict]) -> list[dict]:
    """Judge the rows with the configured judge (a backend name alone means that backend with
    default settings: enough for 'builtin')."""
    config = judge_cfg if isinstance(judge_cfg, AgentConfig) else AgentConfig(backend=judge_cfg)
    match config.backend:
        case "builtin":
            return detect_rows(rows)
        case "openai":
            return _ask_questions(config, rows)
    raise ValueError(f"unknown judge backend {config.backend!r}")
