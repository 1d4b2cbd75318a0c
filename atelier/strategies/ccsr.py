"""Class-Conditional Self-Reward (CCSR; Tang et al. 2024): the best of N per prompt, kept only when
the detector is confident the target class is there.

Per prompt, every candidate's yes/no questions are scored as in CCSR (positive: +1 on yes;
negative: -1 on yes, +1 on no; a question depending on an earlier "no" is skipped, scoring 0:
atelier.agents.questions). The highest-scoring candidate is kept (ties: the higher detector
confidence, then the first drawn), then filtered: the open-vocabulary detector's confidence for
the prompt's target classes must reach `ccsr.detector_threshold` (0.5 by default). The kept
images are trained on with their own prompts (LoRA SFT, weight 1).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from atelier.worlds.base import Progress, World, WorldPrompt


def target_confidence(judgment: dict) -> float:
    """The detector's confidence that the prompt's target classes are drawn: for each target
    class (the prompt's target_class, else every asked object) its best detection score, and
    the lowest of those (every target must be there). 0.0 when one is not found."""
    targets = [judgment["target_class"]] if judgment.get("target_class") else [g["name"] for g in judgment["groups"]]
    best = {name: 0.0 for name in targets}
    for d in judgment.get("detections", []):
        if d["label"] in best:
            best[d["label"]] = max(best[d["label"]], float(d["score"]))
    return min(best.values()) if best else 0.0


def best_of_n(judgments: Sequence[dict], threshold: float) -> list[dict]:
    """The kept candidate per prompt (in prompt order), each with `ccsr_score` and `confidence`
    added; prompts whose best candidate has no score or is below the threshold keep nothing.
    Failed judgments never compete."""
    by_prompt: dict[int, list[tuple[int, dict]]] = defaultdict(list)
    for order, j in enumerate(judgments):
        if not j.get("failed") and j.get("question_score") is not None:
            by_prompt[j["prompt_index"]].append((order, j))
    kept = []
    for prompt_index in sorted(by_prompt):
        order, best = max(by_prompt[prompt_index],
                          key=lambda item: (item[1]["question_score"], target_confidence(item[1]), -item[0]))
        confidence = target_confidence(best)
        if confidence >= threshold:
            kept.append({**best, "ccsr_score": best["question_score"], "confidence": confidence})
    return kept


class CCSR:
    name = "ccsr"

    def __init__(self, config):
        self.threshold = config.ccsr.detector_threshold

    def extra_nodes(self) -> Sequence[tuple[str, object]]:
        return ()

    def curate(self, judgments: Sequence[dict], world: World, heldout: Sequence[WorldPrompt]) -> list[dict]:
        # The kept images carry their own training prompts, which the world wrote outside the held-out set.
        return [{"file": j["file"], "text": j["prompt"], "weight": 1.0, "kind": "best_of_n", "prompt": j["prompt"],
                 "ccsr_score": j["ccsr_score"], "confidence": round(j["confidence"], 4)}
                for j in best_of_n(judgments, self.threshold)]

    def train(self, world: World, datasets: Sequence[Path], out: Path, init_adapter: str | None, seed: int,
              progress: Progress | None = None, spec=None) -> dict:
        return world.train_sft(datasets, out, init_adapter, seed, progress)
