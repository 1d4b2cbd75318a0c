"""What the run-table benchmarks (grpo_table.py, strategies.py) share: the shapes world's three
held-out metrics and a paired difference written as points with its 95% interval."""

from __future__ import annotations

from atelier.worlds.judgment import paired_difference

METRICS = (("relation_accuracy_cond", "relation"), ("object_accuracy", "objects"), ("count_accuracy", "counts"))


def paired_cell(new: list[dict], old: list[dict], metric: str) -> str:
    """new − old in points, `+d.d [lo, hi]` (paired over the same prompts and seeds; 95%, 1.96 SE)."""
    diff, se = paired_difference(new, old, metric)
    return f"{100 * diff:+.1f} [{100 * (diff - 1.96 * se):+.1f}, {100 * (diff + 1.96 * se):+.1f}]"
