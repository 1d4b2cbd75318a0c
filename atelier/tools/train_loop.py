"""The optimizer loop every LoRA trainer shares (shapes SFT, latent SFT, Diffusion-DPO): gradient
accumulation, a NaN/inf guard, gradient clipping, and a per-step training log.

The guard raises FloatingPointError with one line (what diverged, at which step, the lr): the
loop's `train` node turns exactly that into a rejected round, so the message is its reason.

A trainer supplies `micro_batches(step)`: a generator yielding (loss, metrics) for each
micro-batch of one optimizer step. Each loss is back-propagated before the next micro-batch is
computed, so only one micro-batch's activations live at a time.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from atelier.tools.datasets import as_path_list
from atelier.tools.lora import check_adapter_matches, read_adapter_metadata

TRAIN_LOG = "train_log.jsonl"
TENSORBOARD_DIR = "tensorboard"

MicroBatches = Callable[[int], Iterator[tuple[torch.Tensor, dict[str, float]]]]


class TrainLog:
    """One JSON line per optimizer step; TensorBoard scalars too when `tensorboard` is installed
    (it is not a dependency)."""

    def __init__(self, directory: str | Path, tensorboard: bool = True):
        self.directory = Path(directory)
        self._file = open(self.directory / TRAIN_LOG, "w")
        self._board = None
        if tensorboard and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._board = SummaryWriter(str(self.directory / TENSORBOARD_DIR))

    def write(self, step: int, **values: float) -> None:
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        if self._board is not None:
            for name, value in values.items():
                self._board.add_scalar(name, value, step)

    def close(self) -> None:
        self._file.close()
        if self._board is not None:
            self._board.close()

    def __enter__(self) -> TrainLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_optimizer_steps(
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    micro_batches: MicroBatches,
    *,
    steps: int,
    grad_accum: int,
    max_grad_norm: float | None,
    log: TrainLog,
    lr: float,
    what: str,
    progress: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """Run `steps` optimizer steps; returns each step's loss (the mean over its micro-batches).
    Metrics yielded with the losses are averaged the same way and logged beside them."""
    losses: list[float] = []
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        step_loss, step_metrics = 0.0, {}
        for loss, metrics in micro_batches(step):
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{what} loss is {loss.item()} at step {step}; lower lr (now {lr}) or check the base model"
                )
            (loss / grad_accum).backward()
            step_loss += loss.item() / grad_accum
            for name, value in metrics.items():
                step_metrics[name] = step_metrics.get(name, 0.0) + value / grad_accum
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        # A finite loss can still take a step to infinite weights (a huge lr, an overflowing
        # gradient); without this a last step would save an adapter of infs and NaNs.
        if not weights_finite(params):
            raise FloatingPointError(
                f"{what} weights are not finite after step {step}; lower lr (now {lr}) or check the base model"
            )
        losses.append(step_loss)
        log.write(step, loss=step_loss, lr=lr, **step_metrics)
        if progress is not None:
            progress(step + 1, steps, step_loss)
    return losses


def weights_finite(params: list[torch.Tensor]) -> bool:
    """Whether every weight is finite, with one device sync for all of them."""
    if not params:
        return True
    norms = torch._foreach_norm([p.detach() for p in params])
    return bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())


def endless_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless index batches: a fresh permutation per epoch, batches may span two epochs."""
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(n, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def caption_table(captions: list[str]) -> tuple[list[str], torch.Tensor]:
    """The distinct captions, the empty caption always last (what `drop_captions` swaps in), and
    each sample's index into them; texts are encoded once per distinct caption."""
    texts = list(dict.fromkeys([*(c for c in captions if c), ""]))
    position = {text: i for i, text in enumerate(texts)}
    return texts, torch.tensor([position[c] for c in captions])


def drop_captions(text_index: torch.Tensor, n_texts: int, rate: float, generator: torch.Generator) -> torch.Tensor:
    """`text_index` (into a `caption_table` of `n_texts` captions) with a `rate` share of its
    entries, drawn from `generator`, set to the empty caption: the usual guard against a LoRA
    trained only on captions drifting the unconditional prediction that classifier-free guidance
    subtracts (the base models were trained so). Rate 0 draws nothing."""
    if rate <= 0:
        return text_index
    drop = torch.rand(len(text_index), generator=generator) < rate
    return torch.where(drop.to(text_index.device), torch.full_like(text_index, n_texts - 1), text_index)


def finished_adapter(out_dir: str | Path, config: dict) -> dict | None:
    """The metadata of the adapter already in `out_dir` when it was trained with `config`; None
    when `out_dir` does not exist. Anything else there is an error, never silently replaced."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return None
    done = read_adapter_metadata(out_dir)
    if done is None:
        raise FileExistsError(f"{out_dir} exists but holds no finished adapter ({out_dir}/atelier_adapter.json)")
    if done.get("config") != config:
        raise ValueError(f"{out_dir} holds an adapter trained with another config: {done.get('config')}")
    return done


def adapter_metadata(
    cfg,
    losses: list[float],
    started: float,
    n_samples: int,
    sources,
    pipe,
    init_adapter: str | Path | None,
    init_meta: dict | None,
    trainer: str,
    **extra,
) -> dict:
    """What an adapter records about its training; `extra` (e.g. prediction_type) goes after
    the base model. The key order is fixed: the shapes adapters' bytes depend on it."""
    return {
        "config": cfg.model_dump(mode="json"),
        "steps": cfg.steps,
        "final_loss": float(np.mean(losses[-10:])),
        "wall_time_s": round(time.time() - started, 3),
        "n_samples": n_samples,
        "datasets": [str(d.resolve()) for d in as_path_list(sources)],
        "base_model": str(pipe.config.get("_name_or_path")),
        **extra,
        "init_adapter": None if init_adapter is None else str(Path(init_adapter).resolve()),
        "init_adapter_hash": None if init_meta is None else init_meta["sha256"],
        "trainer": trainer,
        "torch": torch.__version__,
    }


def init_adapter_metadata(init_adapter: str | Path | None, cfg) -> dict | None:
    """The metadata of the adapter a training continues from (None: it starts fresh); an
    unfinished adapter, or one whose rank, alpha or targets differ from `cfg`, is an error."""
    if init_adapter is None:
        return None
    if (meta := read_adapter_metadata(init_adapter)) is None:
        raise FileNotFoundError(f"{init_adapter} holds no finished atelier adapter")
    check_adapter_matches(meta, cfg.rank, cfg.alpha, cfg.target_modules)
    return meta


def adapter_summary(meta: dict, out_dir: Path) -> dict:
    """What every trainer returns: {adapter_dir, adapter_hash, steps, final_loss, wall_time_s,
    n_samples, init_adapter_hash}."""
    keys = ("steps", "final_loss", "wall_time_s", "n_samples", "init_adapter_hash")
    return {"adapter_dir": str(out_dir), "adapter_hash": meta["sha256"], **{k: meta[k] for k in keys}}
