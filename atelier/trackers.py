"""A run's numbers in TensorBoard or Weights & Biases, through accelerate's trackers (optional
extras: `pip install 'atelier[tensorboard]'`, or wandb): the training loss at every step, each
round's held-out metrics (the base at step 0, round r at step r) and the report's base-vs-best
grid per round.

Which trackers: the config's `logging.report_to` when the config has that section, else the
environment variable ATELIER_REPORT_TO (comma-separated: tensorboard, wandb). TensorBoard writes
under <run>/tensorboard/<run id>; W&B uses its own login and project settings (WANDB_PROJECT, ...).
While `use(trackers)` holds, `train_step` and `heldout` log to them and do nothing otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

SUPPORTED = ("tensorboard", "wandb")
ENV = "ATELIER_REPORT_TO"


def tracker_names(cfg) -> list[str]:
    """The trackers a run reports to: cfg.logging.report_to, else $ATELIER_REPORT_TO."""
    names = getattr(getattr(cfg, "logging", None), "report_to", None)
    if names is None:
        names = [n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip()]
    unknown = [n for n in names if n not in SUPPORTED]
    if unknown:
        raise ValueError(f"report_to: unknown tracker {unknown[0]!r}; one of {', '.join(SUPPORTED)}")
    return list(names)


class RunTrackers:
    """accelerate's TensorBoardTracker / WandBTracker for one run, started at once (a tracker whose
    package is missing is a one-line ValueError naming the extra to install)."""

    def __init__(self, names: Sequence[str], run_dir: Path, run_id: str):
        from accelerate.tracking import TensorBoardTracker, WandBTracker

        self.trackers = []
        for name in names:
            match name:
                case "tensorboard":
                    tracker = TensorBoardTracker(run_id, Path(run_dir) / "tensorboard")
                case "wandb":
                    tracker = WandBTracker(run_id, dir=str(run_dir))
                case _:
                    raise ValueError(f"report_to: unknown tracker {name!r}; one of {', '.join(SUPPORTED)}")
            try:
                tracker.start()
            except ImportError as e:
                raise ValueError(f"report_to {name}: {e.name or name} is not installed; pip install 'atelier[{name}]' "
                                 f"or {name}") from None
            self.trackers.append(tracker)

    def log(self, values: dict[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def log_image(self, name: str, image: Image.Image, step: int) -> None:
        array = np.asarray(image.convert("RGB"))
        for tracker in self.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images({name: array}, step=step, dataformats="HWC")
            else:
                tracker.log_images({name: [image]}, step=step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


_active: RunTrackers | None = None


@contextmanager
def use(trackers: RunTrackers | None) -> Iterator[RunTrackers | None]:
    """Make `trackers` the ones train_step and heldout log to while the block runs; closed after."""
    global _active
    previous, _active = _active, trackers
    try:
        yield trackers
    finally:
        _active = previous
        if trackers is not None:
            trackers.close()


def train_step(round_no: int, step: int, steps: int, loss: float) -> None:
    """The training loss at a run-wide step ((round - 1) x steps + step)."""
    if _active is not None:
        _active.log({"train/loss": loss, "train/round": round_no}, step=(round_no - 1) * steps + step)


def heldout(round_no: int, metrics: dict, grid: Path | None = None) -> None:
    """A round's held-out metrics (values of {'value', 'ci95', 'n'} entries; round 0 = the base)
    and, when given, the report's grid image."""
    if _active is None:
        return
    values = {f"heldout/{k}": m["value"] for k, m in metrics.items() if isinstance(m, dict) and m.get("value") is not None}
    values |= {f"heldout/{k}_ci95_low": m["ci95"][0] for k, m in metrics.items()
               if isinstance(m, dict) and m.get("ci95") is not None}
    _active.log(values, step=round_no)
    if grid is not None and grid.exists():
        with Image.open(grid) as image:
            _active.log_image("heldout/base_vs_best", image, step=round_no)
