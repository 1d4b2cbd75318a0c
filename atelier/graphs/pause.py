"""Pausing a run whose agents stopped answering: RunPaused and the judge-failure rule.

A judge endpoint that answers garbage, 500s or nothing leaves failed judgments (never
exceptions: atelier.worlds.judgment.failed_judgment). Failed judgments are left out of every
metric, but a batch or an evaluation in which most of them failed measures nothing: training
on it or deciding from it would be deciding on noise. Above `decide.max_failed_share` the node
writes nothing and raises RunPaused; the run's status says 'paused' with one line naming the
role, its endpoint and what it answered, and `atelier resume` judges the same images again once
the endpoint is fixed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from atelier.agents import records
from atelier.agents.backend import RunPaused, endpoint_of

__all__ = ["RunPaused", "failure_reason", "pause_on_failures"]


def failure_reason(judgments: Sequence[dict], config, where: str) -> str | None:
    """One line when more than `config.decide.max_failed_share` of `judgments` failed (a judge
    role gave no usable answer), naming the role, its endpoint, the most common error and the
    first answer it gave (cut, keys masked); None when the judgments can be used."""
    failed = [j for j in judgments if j.get("failed") or j.get("failure")]
    if not judgments or len(failed) / len(judgments) <= config.decide.max_failed_share:
        return None
    failure = failed[0].get("failure") or {}
    role = failure.get("role") or "judge"
    error, _ = Counter(" ".join(str((j.get("failure") or {}).get("error") or "no answer").split())
                       for j in failed).most_common(1)[0]
    raw = failure.get("raw")
    answered = "nothing" if not raw else repr(records.clean_text(" ".join(str(raw).split()), 120, records.current_keys()))
    return (f"{where}: {len(failed)} of {len(judgments)} judgments failed (more than decide.max_failed_share "
            f"{config.decide.max_failed_share:g}); {endpoint_of(getattr(config.agents, role, None), role)}: "
            f"{records.clean_text(error, 200, records.current_keys())}; it answered {answered}")


def pause_on_failures(judgments: Sequence[dict], config, where: str) -> None:
    """Raise RunPaused when `failure_reason` has a reason (before anything is written)."""
    if (reason := failure_reason(judgments, config, where)) is not None:
        raise RunPaused(reason)
