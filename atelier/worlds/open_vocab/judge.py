"""Judging open_vocab images: the detector's VISOR verdicts, CLIP score, yes/no questions.

Every image: the open-vocabulary detector is asked for the prompt's objects (labels = class
names) and `judge_detections` gives the Judgment (objects, counts, relation by box centres);
the detections are kept on the row, so relabelling can be redone from disk. With a CLIP model,
each image's CLIP score. The yes/no questions (atelier.worlds.open_vocab.questions): a model
judge (agents.judge backend 'openai') answers them all; the builtin judge answers those with a
probe from the detections and leaves the rest skipped. A model that gives no valid answer
leaves the row failed (`failed`, `failure`: role, error, raw), with the detector's verdicts
kept, and the run goes on.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from atelier.agents.backends import backend_for
from atelier.agents.judge import QuestionsJudgeRequest
from atelier.agents.questions import YesNoQuestion, ccsr_outcomes, ccsr_score
from atelier.config import AgentConfig
from atelier.tools.detection import Detection
from atelier.worlds.judgment import Asked, Judgment, Probe, answer_probe, judge_detections
from atelier.worlds.open_vocab.questions import row_questions


def load_rgb(path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def asked_of_row(row: dict) -> Asked:
    asked = row.get("asked")
    if asked is None:
        return Asked()
    return asked if isinstance(asked, Asked) else Asked.model_validate(asked)


def _with_outcomes(judgment: Judgment, questions: Sequence[YesNoQuestion], answers: dict[int, str]) -> Judgment:
    outcome = ccsr_outcomes(questions, answers)
    return judgment.model_copy(update={
        "questions": [{**q.model_dump(), "outcome": outcome[q.id]} for q in questions],
        "question_score": ccsr_score(questions, outcome),
    })


def judge_rows(rows: Sequence[dict], spec_questions: Sequence[YesNoQuestion], classes: Sequence[str], detector,
               clip, judge: AgentConfig) -> list[dict]:
    """rows {file, prompt, prompt_index, seed, asked, ...} -> the rows + Judgment fields + detections."""
    rows = list(rows)
    if not rows:
        return []
    images = [load_rgb(row["file"]) for row in rows]
    asked = [asked_of_row(row) for row in rows]
    names = [list(dict.fromkeys(o.name for o in a.objects)) for a in asked]
    detections: list[list[Detection]] = detector.detect(images, names)
    clip_scores = clip.score(images, [row["prompt"] for row in rows]) if clip is not None else [None] * len(rows)
    judgments = [
        judge_detections(a, found, row["prompt"], row.get("prompt_index", 0)).model_copy(update={"clip_score": score})
        for row, a, found, score in zip(rows, asked, detections, clip_scores)
    ]
    questions = [row_questions(a, spec_questions, classes) for a in asked]

    if judge.backend == "openai":
        judgments = _ask_model(rows, judgments, questions, judge)
    else:
        judgments = [
            _with_outcomes(j, qs, {q.id: answer_probe(p, found) for q, p in zip(qs, probes) if p is not None})
            if qs else j
            for j, (qs, probes), found in zip(judgments, questions, detections)
        ]
    return [{**row, **j.model_dump(), "detections": [d.to_dict() for d in found]}
            for row, j, found in zip(rows, judgments, detections)]


def _ask_model(rows: list[dict], judgments: list[Judgment], questions: list[tuple[list[YesNoQuestion], list[Probe | None]]],
               judge: AgentConfig) -> list[Judgment]:
    asking = [i for i, (qs, _) in enumerate(questions) if qs]
    requests = [QuestionsJudgeRequest(image=rows[i]["file"], prompt=rows[i]["prompt"], questions=tuple(questions[i][0]),
                                      probes=tuple(questions[i][1])) for i in asking]
    results = backend_for(judge, "judge").ask_many(requests) if requests else []
    out = list(judgments)
    for i, result in zip(asking, results):
        if result.ok:
            out[i] = _with_outcomes(out[i], questions[i][0], {a.id: a.answer for a in result.answer.answers})
        else:
            # The detector's verdicts (objects, counts, relation, CLIP) stand and are counted; only
            # the questions are unanswered: question_score None leaves the image out of that metric.
            out[i] = out[i].model_copy(update={
                "question_score": None, "failure": {"role": "judge", "error": result.error, "raw": result.raw},
            })
    return out
