"""The difference of one metric between two evaluations of the same prompts and seeds.

The loop scores the base and every candidate on identical (prompt, seed) pairs, so most images
barely change between them. Treating the two as independent (Wilson on each) then overstates
the noise of their difference: on the shapes world by 1.5 to 3 times. This takes the pairing
into account, and also the clustering by prompt that Wilson ignores (the images of one prompt
succeed or fail together): a delta-method standard error of the ratio of totals, with prompts
as the independent units. A share is a ratio of (successes, trials), a mean of (sum, count):
the same formula serves both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def paired_ratio_difference(new: Mapping[int, tuple[float, float]], old: Mapping[int, tuple[float, float]]) -> tuple[float, float]:
    """(R_new - R_old, its standard error) where R = sum(a) / sum(n) over prompts, from each
    prompt's (a, n) on both sides. ValueError when the prompts differ, fewer than two prompts,
    or a side has nothing to count."""
    if sorted(new) != sorted(old):
        raise ValueError("the two evaluations are not on the same prompts")
    total_new = sum(n for _, n in new.values())
    total_old = sum(n for _, n in old.values())
    if total_new == 0 or total_old == 0:
        raise ValueError("nothing to count")
    r_new = sum(a for a, _ in new.values()) / total_new
    r_old = sum(a for a, _ in old.values()) / total_old
    prompts = sorted(new)
    m = len(prompts)
    if m < 2:
        raise ValueError("a paired standard error needs at least two prompts")
    # Each prompt's influence on the ratio (a - R n) / N, new minus old; their spread is the noise.
    d = [(new[i][0] - r_new * new[i][1]) / total_new - (old[i][0] - r_old * old[i][1]) / total_old for i in prompts]
    return r_new - r_old, math.sqrt(m / (m - 1) * sum(x * x for x in d))
