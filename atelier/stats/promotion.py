"""The promotion rule: keep a new adapter only when it beats the best so far by more than its
noise on the target metric, and no guarded metric falls too far below the base's."""

from __future__ import annotations

import math
from collections.abc import Mapping


def standard_error(metric: dict) -> float:
    """A metric's standard error from its 95% interval's half-width / 1.96."""
    lo, hi = metric["ci95"]
    return (hi - lo) / (2 * 1.96)


def promotion(candidate: dict, best: dict, base: dict, metric: str, sigmas: float, max_drop: Mapping[str, float],
              paired: tuple[float, float] | None = None,
              guard_changes: Mapping[str, float] | None = None) -> tuple[bool, float, float, str]:
    """(promoted, gain, noise, reason). Promote iff gain > sigmas x (standard error of the gain)
    on `metric` and, for each guarded metric in `max_drop` (name -> largest allowed drop), the
    candidate is no more than that below the base (a guard the evaluations cannot measure is
    skipped). The standard error is `paired` (gain, se) when given: both evaluations on the same
    prompts and seeds (atelier.stats.paired); otherwise sqrt(se_c^2 + se_b^2) from the two
    intervals, as if independent. `guard_changes` (guarded metric -> candidate minus base over the
    images judged on both sides, atelier.worlds.judgment.paired_difference) replaces the two
    values' difference where given, so that images whose judgment failed on one side only never
    count as a drop. ValueError when the candidate or best lacks `metric`."""
    if candidate.get(metric, {}).get("value") is None or best.get(metric, {}).get("value") is None:
        raise ValueError(f"no held-out {metric} to decide on (nothing to count, or every judgment failed)")
    c, b = candidate[metric]["value"], best[metric]["value"]
    gain, noise = (c - b, math.sqrt(standard_error(candidate[metric]) ** 2 + standard_error(best[metric]) ** 2)) \
        if paired is None else paired
    kind = "noise" if paired is None else "paired noise"
    for guarded, limit in max_drop.items():
        have, was = candidate.get(guarded, {}).get("value"), base.get(guarded, {}).get("value")
        if guard_changes is not None and guard_changes.get(guarded) is not None:
            drop = -guard_changes[guarded]
        elif have is None or was is None:
            continue
        else:
            drop = was - have
        if drop > limit:
            name = guarded.replace("_", " ")
            return False, gain, noise, f"{name} fell {drop:.3f} below the base (limit {limit})"
    if gain > sigmas * noise:
        return True, gain, noise, f"{metric} {b:.3f} -> {c:.3f}: gain {gain:+.3f} > {sigmas} x {kind} {noise:.3f}"
    return False, gain, noise, f"{metric} {b:.3f} -> {c:.3f}: gain {gain:+.3f} not above {sigmas} x {kind} {noise:.3f}"
