"""What every strategy meets (atelier.strategies): a dataset from a round's judged samples, and
the training that turns datasets into an adapter."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from atelier.agents.planner import TargetSpec
from atelier.worlds.base import Progress, World, WorldPrompt


class Strategy(Protocol):
    """The methods every strategy has. Two optional hooks, looked up with getattr by the loop's
    nodes (atelier.graphs.nodes), change what the generator is given, for a strategy whose
    "adapter" is a prompt rewriter rather than a LoRA (rewrite):
      - `rewrite_for_training(prompts, rewriter, record_file, seed) -> list[list[str]]`: generate
        draws these rewrites of each training prompt, the generator frozen;
      - `best_rewrites(prompts, rewriter, record_file) -> list[str]`: held-out evaluation of a
        candidate draws its best guess of each prompt, judged against the user's prompt."""

    name: str

    def extra_nodes(self) -> Sequence[tuple[str, object]]:
        """(name, node) pairs run in this order between judge and curate; () for none."""
        ...

    def curate(self, judgments: Sequence[dict], world: World, heldout: Sequence[WorldPrompt]) -> list[dict]:
        """Training rows {file, text, weight, kind, prompt} from a round's judgments ([] = none);
        no row's text may be one of the run's frozen `heldout` prompts."""
        ...

    def train(self, world: World, datasets: Sequence[Path], out: Path, init_adapter: str | None, seed: int,
              progress: Progress | None = None, spec: TargetSpec | None = None) -> dict:
        """Train the round's adapter from `datasets` (this round's, or all so far) into `out`.
        `spec` is the run's target, for strategies that judge while they train (grpo)."""
        ...
