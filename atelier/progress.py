"""Live progress of a run on the terminal: rich bars for the long nodes and an ETA per round.

While `atelier.loop` drives a run, `use(RunProgress(console))` makes it the active display;
nodes report through the module functions (`advance`, `train_step`), which do nothing when no
display is active (a node called from a test or a script). The bars:

  round 2/3    ETA round 4m10s, run 8m20s (from round 1: 4m12s)
  round 2 images generated  ━━━━━━━━━━━━━━━━━━━━━━━━━━━  96/128  0:00:21 < 0:00:07
  round 2 train             ━━━━━━━━━━━━━━━━━━━━━━━━━━━  120/400 loss 0.0412  6.1 it/s  0:00:19 < 0:00:45

A bar is removed when it completes; the loop then prints the node's line above the bars. On a
terminal the bars redraw in place (rich.live); piped to a file, rich draws nothing until the end,
and the flushed training log (round_NNN/adapter's train_log.jsonl) is what shows progress.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from atelier import trackers
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

_REFRESH_S = 0.25  # a forced redraw at most this often (plus the first and the last update of a bar)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def round_seconds(run_dir: Path, round_no: int) -> float | None:
    """Wall time of one round's nodes (write_prompts to decide) from the run's timings.jsonl;
    None when the round has no timings."""
    path = Path(run_dir) / "timings.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    total, seen = 0.0, False
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        if row.get("round") == round_no:
            total, seen = total + float(row.get("seconds", 0.0)), True
    return total if seen else None


class _Bar(BarColumn):
    """The bar, left blank for the round's line (a task without a total)."""

    def render(self, task: Task):
        return Text("") if task.total is None else super().render(task)


class _Count(MofNCompleteColumn):
    def render(self, task: Task) -> Text:
        return Text("") if task.total is None else super().render(task)


class _Remaining(TimeRemainingColumn):
    def render(self, task: Task) -> Text:
        return Text("") if task.total is None else Text("< ") + super().render(task)


class _Speed(ProgressColumn):
    """Steps (or images) per second, from rich's own moving estimate."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.3g} it/s" if task.speed else "", style="progress.data.speed")


class RunProgress:
    """The bars of one driven run on `console` (rich.progress.Progress, redrawn in place)."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"), _Bar(bar_width=30), _Count(),
            TextColumn("{task.fields[info]}"), _Speed(), TimeElapsedColumn(), _Remaining(),
            console=console, refresh_per_second=4)
        self._tasks: dict[str, TaskID] = {}
        self._drawn: dict[str, float] = {}
        self._lock = threading.Lock()
        self._round: TaskID | None = None
        self._round_info: tuple[int, int, float | None, float] | None = None  # round, rounds, estimate, started

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    # --- bars of a node -----------------------------------------------------------------------

    def update(self, label: str, completed: int, total: int, info: str = "") -> None:
        """Set the bar `label` to completed/total (created on first use; removed once complete)."""
        with self._lock:
            task = self._tasks.get(label)
            if task is None:
                task = self._tasks[label] = self.progress.add_task(label, total=total, info=info)
            self.progress.update(task, completed=completed, total=total, info=info)
            self._redraw(label, first=label not in self._drawn, last=completed >= total)
            if completed >= total:
                self.progress.remove_task(self._tasks.pop(label))
                self._drawn.pop(label, None)

    def advance(self, label: str, n: int, total: int, info: str = "") -> None:
        """Move the bar `label` on by `n` of `total`."""
        with self._lock:
            task = self._tasks.get(label)
            done = 0 if task is None else int(self.progress.tasks[self._index(task)].completed)
        self.update(label, min(done + n, total), total, info)

    def _index(self, task: TaskID) -> int:
        return next(i for i, t in enumerate(self.progress.tasks) if t.id == task)

    def _redraw(self, label: str, first: bool, last: bool) -> None:
        """Draw now (not at the next tick) on a bar's first and last update and every _REFRESH_S:
        a fast bar is seen moving, and a slow one costs no extra drawing."""
        now = time.monotonic()
        if first or last or now - self._drawn.get(label, 0.0) >= _REFRESH_S:
            self._drawn[label] = now
            self._round_eta()
            self.progress.refresh()

    # --- the round ----------------------------------------------------------------------------

    def round_started(self, round_no: int, rounds: int, previous_s: float | None) -> None:
        """A round began; `previous_s` (the last round's wall time) estimates this one's."""
        with self._lock:
            if self._round is not None:
                self.progress.remove_task(self._round)
            self._round_info = (round_no, rounds, previous_s, time.monotonic())
            self._round = self.progress.add_task(f"round {round_no}/{rounds}", total=None, info="")
            self._round_eta()

    def _round_eta(self) -> None:
        if self._round is None or self._round_info is None:
            return
        round_no, rounds, estimate, started = self._round_info
        if estimate is None:
            info = "ETA after the first round"
        else:
            left = max(0.0, estimate - (time.monotonic() - started))
            run_left = left + estimate * (rounds - round_no)
            info = f"ETA round {_duration(left)}, run {_duration(run_left)} (last round took {_duration(estimate)})"
        self.progress.update(self._round, info=info)

    def round_ended(self) -> None:
        with self._lock:
            if self._round is not None:
                self.progress.remove_task(self._round)
            self._round, self._round_info = None, None


_active: RunProgress | None = None


@contextmanager
def use(progress: RunProgress) -> Iterator[RunProgress]:
    """Make `progress` the display that nodes report to, and draw it, while the block runs."""
    global _active
    previous, _active = _active, progress
    try:
        with progress:
            yield progress
    finally:
        _active = previous


def advance(label: str, n: int, total: int, info: str = "") -> None:
    """Move the active display's bar `label` on by `n` of `total` (nothing without a display)."""
    if _active is not None:
        _active.advance(label, n, total, info)


def update(label: str, completed: int, total: int, info: str = "") -> None:
    """Set the active display's bar `label` to completed/total (nothing without a display)."""
    if _active is not None:
        _active.update(label, completed, total, info)


def train_step(round_no: int, step: int, steps: int, loss: float) -> None:
    """One optimizer step of a round's training: step of steps, with its loss (and it/s, ETA from
    the bar's own speed)."""
    trackers.train_step(round_no, step, steps, loss)  # TensorBoard / W&B, when the run reports to one
    if _active is not None:
        _active.update(f"round {round_no} train", step, steps, info=f"loss {loss:.4g}")
