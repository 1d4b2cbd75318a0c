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
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from atelier.tools.datasets import as_path_list
from atelier.tools.lora import check_adapter_matches, read_adapter_metadata
from atelier.tools.model_folders import is_shapes_model

TRAIN_LOG = "train_log.jsonl"
TENSORBOARD_DIR = "tensorboard"

MicroBatches = Callable[[int], Iterator[tuple[torch.Tensor, dict[str, float]]]]


class TrainLog:
    """One JSON line per optimizer step; TensorBoard scalars too when `tensorboard` is installed
    (it is not a dependency)."""

    def __init__(self, directory: str | Path, tensorboard: bool = True):
        self.directory = Path(directory)
        self._file = open(self.directory / TRAIN_LOG, "w")
        self.rows: list[dict] = []  # what was written, for a step checkpoint to replay after a resume
        self._board = None
        if tensorboard and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._board = SummaryWriter(str(self.directory / TENSORBOARD_DIR))

    def write(self, step: int, **values: float) -> None:
        self.rows.append({"step": step, **values})
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()  # a user (or `tail -f`) sees each step as it ends, not at the end of training
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
    checkpoint: StepCheckpoint | None = None,
) -> list[float]:
    """Run `steps` optimizer steps; returns each step's loss (the mean over its micro-batches).
    Metrics yielded with the losses are averaged the same way and logged beside them. With a
    `checkpoint`, the training's state is saved every `checkpoint.every` steps and a training
    that was killed continues from the last save, to the same weights as an uninterrupted one."""
    losses: list[float] = []
    start = 0
    if checkpoint is not None and (restored := checkpoint.restore(params, optimizer)) is not None:
        start, losses, rows = restored
        for row in rows:  # the log of the steps before the kill, as they were written then
            log.write(**row)
    for step in range(start, steps):
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
        if checkpoint is not None and (step + 1) % checkpoint.every == 0 and step + 1 < steps:
            checkpoint.save(step + 1, params, optimizer, losses, log.rows)
        if progress is not None:
            progress(step + 1, steps, step_loss)
    return losses


def weights_finite(params: list[torch.Tensor]) -> bool:
    """Whether every weight is finite, with one device sync for all of them."""
    if not params:
        return True
    norms = torch._foreach_norm([p.detach() for p in params])
    return bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())


class EndlessBatches:
    """Endless index batches of `batch_size` from range(n): a fresh permutation per epoch drawn
    from `generator`, batches may span two epochs. Its state (the generator's and the indices
    drawn but not yet used) can be saved and restored, for step checkpoints."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.pending = torch.empty(0, dtype=torch.long)

    def __iter__(self) -> EndlessBatches:
        return self

    def __next__(self) -> torch.Tensor:
        while len(self.pending) < self.batch_size:
            self.pending = torch.cat([self.pending, torch.randperm(self.n, generator=self.generator)])
        batch, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
        return batch

    def get_state(self) -> dict:
        return {"generator": self.generator.get_state(), "pending": self.pending.clone()}

    def set_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.pending = state["pending"].clone()


def endless_batches(n: int, batch_size: int, generator: torch.Generator) -> EndlessBatches:
    return EndlessBatches(n, batch_size, generator)


class StepCheckpoint:
    """A training's state every `every` optimizer steps, in one file beside the adapter folder
    (`.<adapter>.steps.pt`, replaced atomically): the step, the LoRA weights, the optimizer's
    state, every random stream the trainer draws from (`streams`: name -> torch.Generator or
    EndlessBatches), the losses and the log so far. A saved state is used only by a training
    with the same `fingerprint` (config, data, init adapter); `remove()` once the adapter is saved.

    Restoring every stream and the optimizer exactly is what makes a resumed training end with
    the same weights as an uninterrupted one (bit for bit on CPU at the same thread count)."""

    def __init__(self, out_dir: str | Path, every: int, fingerprint: dict, streams: dict):
        out_dir = Path(out_dir)
        self.path = out_dir.parent / f".{out_dir.name}.steps.pt"
        self.every, self.streams = every, streams
        self.fingerprint = json.dumps(fingerprint, sort_keys=True, default=str)

    def save(self, step: int, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
             losses: list[float], log_rows: list[dict]) -> None:
        state = {"fingerprint": self.fingerprint, "step": step, "losses": list(losses), "log": list(log_rows),
                 "params": [p.detach().cpu().clone() for p in params], "optimizer": optimizer.state_dict(),
                 "streams": {name: s.get_state() for name, s in self.streams.items()}}
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)  # a kill mid-save leaves the previous checkpoint whole

    def restore(self, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> tuple[int, list[float], list[dict]] | None:
        """(next step, losses, log rows) after loading the saved state into `params`, the
        optimizer and the streams; None when there is none for this training (or it is unreadable)."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception:  # a damaged file (a disk that filled mid-save): train from the start
            return None
        if state.get("fingerprint") != self.fingerprint or len(state["params"]) != len(params):
            return None
        with torch.no_grad():
            for p, saved in zip(params, state["params"]):
                p.copy_(saved.to(p.device, p.dtype))
        optimizer.load_state_dict(state["optimizer"])
        for name, stream in self.streams.items():
            stream.set_state(state["streams"][name])
        return state["step"], state["losses"], state["log"]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def step_checkpoint(out_dir: str | Path, cfg, sources, init_adapter, streams: dict) -> StepCheckpoint | None:
    """The StepCheckpoint of a training into `out_dir` with `cfg` (a LoraTrainingConfig; its
    `checkpoint_every` 0 = none) on `sources` from `init_adapter`."""
    if not cfg.checkpoint_every:
        return None
    fingerprint = {"config": cfg.model_dump(mode="json"), "sources": [str(Path(d).resolve()) for d in as_path_list(sources)],
                   "init_adapter": None if init_adapter is None else str(Path(init_adapter).resolve())}
    return StepCheckpoint(out_dir, cfg.checkpoint_every, fingerprint, streams)


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
        "base_model": base_model_name(pipe),
        **extra,
        "init_adapter": None if init_adapter is None else str(Path(init_adapter).resolve()),
        "init_adapter_hash": None if init_meta is None else init_meta["sha256"],
        "trainer": trainer,
        "torch": torch.__version__,
    }


def base_model_name(pipe) -> str:
    """What an adapter records as its base: the hub id or path the pipeline was loaded from,
    'shapes' for the model shipped inside the package (never a site-packages path)."""
    name = str(pipe.config.get("_name_or_path"))
    package = Path(__file__).resolve().parent.parent
    try:
        inside = Path(name).resolve().is_relative_to(package)
    except (OSError, ValueError):
        inside = False
    return "shapes" if inside and is_shapes_model(name) else name


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
