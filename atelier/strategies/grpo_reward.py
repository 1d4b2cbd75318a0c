"""The `grpo` strategy's reward: a judgment (atelier.worlds.judgment) as a number, per goal.

The goal is read from the run's metric. An image that meets it scores 1; one that misses it
scores `partial_credit` times the share of the prompt's objects it shows, so the policy never
gains by dropping objects for the goal (a relation only holds with both objects present, and a
missing object costs credit). `count_credit` adds a bonus when every object is drawn as often
as asked. A failed judgment has no reward (None): nothing is known of the image.
"""

from __future__ import annotations

from atelier.strategies.grpo_config import GRPOConfig


def goal_met(judgment: dict, metric: str) -> float:
    """How far the image meets the goal the metric measures, in [0, 1]."""
    match metric:
        case "relation_accuracy_cond" | "relation_accuracy_uncond":
            if judgment.get("relation") is None:  # a prompt without a relation: its objects are the goal
                return float(bool(judgment["object_ok"]))
            return float(judgment.get("relation_ok") is True)
        case "count_accuracy" | "count_accuracy_multi":
            return float(bool(judgment["count_ok"]))
        case "ipr_accuracy":
            return float(bool(judgment["ipr_correct"]))
        case "object_accuracy":
            return float(bool(judgment["object_ok"]))
        case "colour_accuracy" | "shape_accuracy":
            key = metric.removesuffix("_accuracy") + "_ok"
            return float(judgment.get(key) is True)
        case "question_score":
            # CCSR's score counts +1 per right answer: its share of the questions asked.
            questions = judgment.get("questions") or []
            score = judgment.get("question_score")
            return 0.0 if not questions or score is None else max(0.0, min(1.0, score / len(questions)))
        case "clip_score":
            return max(0.0, min(1.0, (judgment.get("clip_score") or 0.0) / 100.0))
    raise ValueError(f"no grpo reward for metric {metric!r}")


def objects_shown(judgment: dict) -> float:
    """Share of the prompt's objects found at least once (found -1: present in another number)."""
    groups = judgment.get("groups") or []
    if not groups:
        return float(bool(judgment.get("object_ok")))
    return sum(1 for g in groups if g["found"] != 0) / len(groups)


def reward(judgment: dict, metric: str, cfg: GRPOConfig) -> float | None:
    """The image's reward, or None for a failed judgment."""
    if judgment.get("failed"):
        return None
    met = goal_met(judgment, metric)
    value = met if met >= 1.0 else max(met, cfg.partial_credit * objects_shown(judgment))
    if cfg.count_credit and judgment.get("count_ok"):
        value += cfg.count_credit
    return value
