"""The loop's state and its runtime context.

State holds small records and paths only; images, datasets and adapters stay in the run folder,
so a checkpoint is kilobytes. The context (config, run folder) is not checkpointed: `resume`
rebuilds it from the run folder's config.yaml.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NotRequired, TypedDict

from atelier.config import Config
from atelier.strategies.base import Strategy
from atelier.worlds.base import World


def merge_batches(current: list[str] | None, update: list[str] | None) -> list[str]:
    """Judged-batch files of the current round: an empty list resets, otherwise append."""
    if not update:
        return []
    return sorted(set(current or []) | set(update))


class RoundRecord(TypedDict):
    round: int
    metrics: dict  # held-out metrics (atelier.worlds.judgment.summarize)
    promoted: bool
    adapter: str | None  # None when a round had no training data or its training failed
    gain: float | None  # candidate - best, on the target metric
    noise: float | None  # standard error of that difference
    reason: str


class LoopState(TypedDict, total=False):
    spec: dict  # TargetSpec
    metric: str  # the held-out metric the goal is measured by
    heldout_file: str
    base_metrics: dict
    round: int  # the round in progress (1-based)
    prompts_file: str
    judged: Annotated[list[str], merge_batches]
    dataset: str
    candidate_adapter: str | None  # None: no training data, or the training failed
    train_error: str | None  # why this round's training failed (one line), None when it did not; set by train each round
    candidate_metrics: dict
    best_adapter: str | None  # None = the base model
    best_metrics: dict
    rounds: Annotated[list[RoundRecord], operator.add]
    no_improve: int
    stop_reason: str
    report: str


class BatchTask(TypedDict):
    """What one generate/judge fan-out task gets: a slice of the round's prompts."""

    round: int
    batch: int
    prompts_file: str
    start: int
    end: int
    adapter: str | None
    n_prompts: NotRequired[int]  # the round's prompts, for the progress bars (absent in tasks checkpointed before it)


@dataclass(frozen=True)
class LoopContext:
    """What every node gets besides the state: the config, the run folder, the world (models
    loaded once per process) and the strategy. Never checkpointed: `resume` rebuilds it."""

    config: Config
    run_dir: Path
    world: World | None = None
    strategy: Strategy | None = None
