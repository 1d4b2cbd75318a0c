"""The difference of one held-out metric between two evaluations of the same prompts and seeds.

The loop scores the base and every candidate on identical (prompt, seed) pairs, so most images
barely change between them. Treating the two shares as independent (Wilson on each) then
overstates the noise of their difference: on the shapes world by 1.5 to 3 times. This takes
the pairing into account, and also the clustering by prompt that Wilson ignores (the images of
one prompt succeed or fail together): a delta-method standard error of the ratio of totals,
with prompts as the independent units.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from atelier.worlds.shapes.metrics import SHARE_KEYS, ImageJudgment, image_counts


def _per_prompt(rows: Sequence[dict], metric: str) -> dict[int, tuple[int, int]]:
    totals: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        a, n = image_counts(ImageJudgment.model_validate(row))[metric]
        totals[row["prompt_index"]][0] += a
        totals[row["prompt_index"]][1] += n
    return {i: (a, n) for i, (a, n) in totals.items()}


def paired_difference(new: Sequence[dict], old: Sequence[dict], metric: str) -> tuple[float, float]:
    """(new - old, its standard error) of `metric` over judged images stored by the loop
    (`judgments.jsonl` rows: prompt_index, seed and the ImageJudgment fields). Both must hold
    the same (prompt_index, seed) pairs; ValueError otherwise, or when a side has nothing to count."""
    if metric not in SHARE_KEYS:
        raise ValueError(f"no paired difference for metric {metric!r}")
    keys_new = sorted((r["prompt_index"], r["seed"]) for r in new)
    keys_old = sorted((r["prompt_index"], r["seed"]) for r in old)
    if keys_new != keys_old:
        raise ValueError("the two evaluations are not on the same prompts and seeds")
    per_new, per_old = _per_prompt(new, metric), _per_prompt(old, metric)
    total_new = sum(n for _, n in per_new.values())
    total_old = sum(n for _, n in per_old.values())
    if total_new == 0 or total_old == 0:
        raise ValueError(f"nothing to count for {metric}")
    r_new = sum(a for a, _ in per_new.values()) / total_new
    r_old = sum(a for a, _ in per_old.values()) / total_old
    # Each prompt's influence on the ratio (a - R n) / N, new minus old; their spread is the noise.
    prompts = sorted(per_new)
    m = len(prompts)
    if m < 2:
        raise ValueError("a paired standard error needs at least two prompts")
    d = [(per_new[i][0] - r_new * per_new[i][1]) / total_new - (per_old[i][0] - r_old * per_old[i][1]) / total_old for i in prompts]
    return r_new - r_old, math.sqrt(m / (m - 1) * sum(x * x for x in d))
