"""The pair rule of self-rewarding prompt optimisation: per user prompt, the highest- and the
lowest-scored rewrite form a preference pair, dropped when their scores tie.

A rewrite's image is scored by the judge on three 0-5 rubrics (aesthetics, alignment,
preference), `rubric_samples` times; each rubric's score is the mean of its samples and the
overall score is the sum of the three means (0-15). Samples whose answer failed are left out of
the means; a rewrite with no valid sample has no score and never competes.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import mean

RUBRICS = ("aesthetics", "alignment", "preference")
TIE = 1e-9  # means of a few integers: equal scores may differ by rounding only


def rubric_means(samples: Sequence[dict | None]) -> dict[str, float] | None:
    """{rubric: mean score} over the valid samples ({rubric: {"score": int, ...}}, None = a failed
    answer), or None when no sample is valid."""
    valid = [s for s in samples if s is not None]
    if not valid:
        return None
    return {r: mean(float(s[r]["score"]) for s in valid) for r in RUBRICS}


def overall_score(means: dict[str, float] | None) -> float | None:
    """Sum of the rubric means (0-15), None without means."""
    return None if means is None else sum(means[r] for r in RUBRICS)


def preference_pair(candidates: Sequence[dict]) -> tuple[dict | None, str]:
    """(pair, why) from one prompt's candidates {text, score, ...} in drawn order.

    pair = {"chosen": best candidate, "rejected": worst candidate} (the first drawn wins a tie at
    either end), or None with the reason: fewer than two scored rewrites, or best and worst tie
    (then the judge saw no difference, and the pair would teach nothing)."""
    scored = [c for c in candidates if c.get("score") is not None]
    if len(scored) < 2:
        return None, f"{len(scored)} scored rewrite{'s' if len(scored) != 1 else ''}; a pair needs two"
    best = max(scored, key=lambda c: c["score"])  # max/min keep the first of equals: the first drawn
    worst = min(scored, key=lambda c: c["score"])
    if best["score"] - worst["score"] <= TIE:
        return None, f"all {len(scored)} rewrites scored {best['score']:g}: a tie"
    if best["text"] == worst["text"]:
        return None, "best and worst are the same text"
    return {"chosen": best, "rejected": worst}, f"{best['score']:g} over {worst['score']:g}"
