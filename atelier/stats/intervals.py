"""Shares and means with 95% intervals, and the difference of two shares.

A metric is a dict {'value', 'ci95', 'n'} (value and ci95 None when there is nothing to count),
the same for a share (Wilson score interval) and a mean (Student's t interval), so reports and
the promotion rule read both alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats


def wilson_interval(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial share; sound at 0 and at 1, unlike the normal one
    (Wilson, 1927), as scipy computes it (`binomtest(...).proportion_ci(method="wilson")`) at the
    confidence level of `z` (1.96: 95%). ValueError when total <= 0."""
    if total <= 0:
        raise ValueError("no trials")
    ci = stats.binomtest(successes, total).proportion_ci(confidence_level=2 * stats.norm.cdf(z) - 1, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def share(successes: int, total: int) -> dict:
    """{'value', 'ci95', 'n'}: successes / total with its Wilson interval."""
    if total == 0:
        return {"value": None, "ci95": None, "n": 0}
    return {"value": successes / total, "ci95": list(wilson_interval(successes, total)), "n": total}


def mean(values: Sequence[float]) -> dict:
    """{'value', 'ci95', 'n'}: the mean with Student's t 95% interval (the interval collapses to
    the value for a single observation or no spread)."""
    n = len(values)
    if n == 0:
        return {"value": None, "ci95": None, "n": 0}
    m = sum(values) / n
    if n == 1:
        return {"value": m, "ci95": [m, m], "n": 1}
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"value": m, "ci95": [m - half, m + half], "n": n}


def difference_ci(new: dict, old: dict) -> dict | None:
    """new - old for two shares from `share`, with Newcombe's 95% interval built from their Wilson
    intervals (Newcombe 1998, method 10). It treats the two as independent; on paired evaluations
    (the same prompts and seeds) that is conservative: the true interval is narrower."""
    if new.get("value") is None or old.get("value") is None:
        return None
    p1, (l1, u1) = new["value"], new["ci95"]
    p2, (l2, u2) = old["value"], old["ci95"]
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return {"value": d, "ci95": [lo, hi]}
