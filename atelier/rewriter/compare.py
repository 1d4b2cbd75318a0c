"""Held-out images drawn from the rewriter's best guesses against the raw prompts' images, paired
image by image (same prompts, same seeds): gains with 95% intervals and win / tie / loss counts,
on the world's metrics and on the judge's rubric scores."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from math import sqrt
from statistics import mean, stdev

from atelier.worlds.judgment import METRICS, as_judgments, image_counts, paired_difference, summarize

Z95 = 1.96


def _key(row: dict) -> tuple[int, int]:
    return row["prompt_index"], row["seed"]


def win_tie_loss(new: Sequence[dict], old: Sequence[dict], metric: str) -> dict:
    """Per image on the same (prompt, seed): did the rewritten prompt's image score higher (win),
    the same (tie) or lower (loss) on `metric`? Images counted on both sides only."""
    old_by = {_key(r): image_counts(j) for r, j in zip(old, as_judgments(old))}
    wins = ties = losses = 0
    for r, j in zip(new, as_judgments(new)):
        a, n = image_counts(j)[metric]
        b, m = old_by.get(_key(r), {}).get(metric, (0, 0))
        if n and m:
            wins, ties, losses = wins + (a > b), ties + (a == b), losses + (a < b)
    return {"wins": wins, "ties": ties, "losses": losses}


def compare_metrics(new: Sequence[dict], old: Sequence[dict], metrics: Sequence[str] = METRICS) -> dict:
    """{metric: {rewritten, raw, gain, ci95 (paired, prompts as units), wins, ties, losses}} for
    the metrics both evaluations have; `new`/`old` are judgments.jsonl rows of the two evaluations."""
    a, b = summarize(new), summarize(old)
    out = {}
    for metric in metrics:
        if a[metric]["value"] is None or b[metric]["value"] is None:
            continue
        try:
            gain, se = paired_difference(new, old, metric)
        except ValueError:
            continue
        out[metric] = {"rewritten": a[metric]["value"], "raw": b[metric]["value"], "gain": gain,
                       "ci95": [gain - Z95 * se, gain + Z95 * se], **win_tie_loss(new, old, metric)}
    return out


def compare_scores(new: Sequence[dict], old: Sequence[dict], score: Callable[[dict], float | None]) -> dict:
    """A per-image score (e.g. the judge's rubric sum) compared the same way: mean difference with
    a 95% interval over prompts (each prompt's mean difference one unit), and win / tie / loss."""
    old_by = {_key(r): score(r) for r in old}
    per_prompt: dict[int, list[float]] = defaultdict(list)
    wins = ties = losses = 0
    for r in new:
        s, t = score(r), old_by.get(_key(r))
        if s is None or t is None:
            continue
        per_prompt[r["prompt_index"]].append(s - t)
        wins, ties, losses = wins + (s > t), ties + (s == t), losses + (s < t)
    diffs = [mean(d) for d in per_prompt.values()]
    if not diffs:
        return {"gain": None, "ci95": None, "wins": 0, "ties": 0, "losses": 0}
    half = Z95 * stdev(diffs) / sqrt(len(diffs)) if len(diffs) > 1 else float("inf")
    return {"gain": mean(diffs), "ci95": [mean(diffs) - half, mean(diffs) + half], "wins": wins, "ties": ties,
            "losses": losses, "prompts": len(diffs)}


def builtin_rubric_sum(asked_of: Callable[[int], object]) -> Callable[[dict], float | None]:
    """The builtin judge's rubric sum (0-15) of a judged image from its stored detections;
    `asked_of(prompt_index)` is what the prompt asks (atelier.worlds.judgment.Asked)."""
    from atelier.agents.judge import rubric_builtin
    from atelier.rewriter.pairs import RUBRICS
    from atelier.tools.detection import Detection

    def score(row: dict) -> float | None:
        if row.get("failed"):
            return None
        rubric = rubric_builtin(asked_of(row["prompt_index"]), [Detection.from_dict(d) for d in row.get("detections") or []])
        return float(sum(getattr(rubric, r).score for r in RUBRICS))

    return score
