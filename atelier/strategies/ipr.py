"""Iterative Prompt Relabeling (Chatterjee et al. 2024): every generated sample becomes training data.

A sample whose counts and relation match its prompt keeps the prompt (weight 1.0). A wrong one
gets the world's relabel, a prompt that describes what was drawn (weight lambda, 0.5 by
default): counts wrong -> the objects and counts found; counts right, relation wrong -> the
relation seen. A relabel the world cannot say is dropped. Trainer: LoRA SFT with per-sample
weighted loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from atelier.worlds.base import Progress, World, WorldPrompt


def ipr_rows(judgments: Sequence[dict], relabel_weight: float, correct_weight: float, do_relabel: bool,
             relabel: Callable[[dict], str | None]) -> list[dict]:
    """Training rows (file, text, weight, kind, prompt) from judged samples.

    `judgments` rows carry: file, prompt, ipr_correct and what `relabel(judgment)` reads (the
    world's detections, count_ok, relation_ok). Failed judgments are skipped: nothing is known of
    the image. With do_relabel=False (the IPR ablation) wrong samples keep their prompt and get
    the relabel weight."""
    rows = []
    for j in judgments:
        if j.get("failed"):
            continue
        if j["ipr_correct"]:
            rows.append({"file": j["file"], "text": j["prompt"], "weight": correct_weight, "kind": "correct", "prompt": j["prompt"]})
            continue
        if not do_relabel:
            rows.append({"file": j["file"], "text": j["prompt"], "weight": relabel_weight, "kind": "wrong_kept", "prompt": j["prompt"]})
            continue
        text = relabel(j)
        if text is not None:
            rows.append({"file": j["file"], "text": text, "weight": relabel_weight, "kind": "relabelled", "prompt": j["prompt"]})
    return rows


class IPR:
    name = "ipr"

    def __init__(self, config):
        self.train_config = config.train

    def extra_nodes(self) -> Sequence[tuple[str, object]]:
        return ()

    def curate(self, judgments: Sequence[dict], world: World, heldout: Sequence[WorldPrompt]) -> list[dict]:
        t = self.train_config
        return ipr_rows(judgments, t.relabel_weight, t.correct_weight, t.relabel, lambda j: world.relabel(j, heldout))

    def train(self, world: World, datasets: Sequence[Path], out: Path, init_adapter: str | None, seed: int,
              progress: Progress | None = None, spec=None) -> dict:
        return world.train_sft(datasets, out, init_adapter, seed, progress)
