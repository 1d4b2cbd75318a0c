"""Yes/no questions about an image, and their score as in CCSR.

A question is positive ("Is there a red circle?": yes is good, +1) or negative ("Is there a shape
the prompt does not name?": yes is a flaw, -1; no, +1). A question may depend on earlier ones
("Is the red circle left of the blue square?" on "Is there a red circle?"); when one of those
was not answered "yes", it is skipped, scores 0, and its answer is never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Answer = Literal["yes", "no"]
Outcome = Literal["yes", "no", "skipped"]


class YesNoQuestion(BaseModel):
    """One question a judge answers by looking at the image."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: int = Field(ge=1, description="1-based number of the question; dependencies refer to it")
    text: str = Field(min_length=3, description="a question answered by yes or no from the image alone")
    positive: bool = Field(description="true: 'yes' is what the prompt asks for (+1); false: 'yes' is a flaw (-1, 'no' +1)")
    depends_on: list[int] = Field(
        description="ids of earlier questions that must be answered 'yes' for this one to make sense; [] if none"
    )


def check_questions(questions: Sequence[YesNoQuestion]) -> None:
    """Ids unique; every dependency points at an earlier question."""
    seen: set[int] = set()
    for q in questions:
        if q.id in seen:
            raise ValueError(f"question id {q.id} appears twice")
        later = [d for d in q.depends_on if d not in seen]
        if later:
            raise ValueError(f"question {q.id} depends on {later}, which are not earlier questions")
        seen.add(q.id)


def ccsr_outcomes(questions: Sequence[YesNoQuestion], answers: Mapping[int, Answer]) -> dict[int, Outcome]:
    """Each question's outcome; a question whose dependency was not 'yes' (or that has no answer)
    is skipped."""
    outcome: dict[int, Outcome] = {}
    for q in questions:
        if q.id not in answers or any(outcome.get(d) != "yes" for d in q.depends_on):
            outcome[q.id] = "skipped"
        else:
            outcome[q.id] = answers[q.id]
    return outcome


def ccsr_score(questions: Sequence[YesNoQuestion], outcome: Mapping[int, Outcome]) -> int:
    """Positive: +1 on yes; negative: -1 on yes, +1 on no; skipped: 0."""
    score = 0
    for q in questions:
        match outcome.get(q.id, "skipped"), q.positive:
            case "yes", True:
                score += 1
            case "yes", False:
                score -= 1
            case "no", False:
                score += 1
    return score
