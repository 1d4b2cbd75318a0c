"""A training stopped mid-way continues from its last step checkpoint and ends with the same
adapter, bit for bit, as one that was never stopped: the LoRA weights, AdamW's moments, the batch
order, the noise and caption-dropout streams and the training log are all restored."""

import json

import pytest
import torch

from atelier.tools.lora import ADAPTER_WEIGHTS
from atelier.tools.sft import TRAIN_LOG, SFTConfig, train_lora_sft, write_sft_dataset
from atelier.worlds.shapes.model import new_pipeline
from atelier.worlds.shapes.render import render
from atelier.worlds.shapes.scene import parse
from loop_helpers import TINY, atelier, write_config

CAPTIONS = ["a red circle", "two blue squares", "a green triangle to the left of a yellow circle"]
# Batches of 4 over 5 samples span epochs; caption dropout draws from its own stream.
CFG = SFTConfig(steps=7, batch_size=4, lr=1e-2, rank=4, alpha=8, seed=0, caption_dropout=0.3, checkpoint_every=3)


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return new_pipeline()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rows = [{"text": CAPTIONS[i % 3], "weight": 1.0, "source": "test"} for i in range(5)]
    directory = tmp_path_factory.mktemp("data") / "sft"
    write_sft_dataset(directory, rows, [render(parse(r["text"]), seed=i) for i, r in enumerate(rows)])
    return directory


def stop_at(step_to_stop: int, seen: list):
    def progress(step, steps, loss):
        seen.append(step)
        if step == step_to_stop:
            raise Stop
    return progress


def test_a_stopped_training_resumes_from_its_last_checkpoint_to_the_same_adapter(base, dataset, tmp_path):
    straight = train_lora_sft(base, dataset, tmp_path / "straight", CFG)
    assert not (tmp_path / ".straight.steps.pt").exists()  # spent once the adapter is saved
    first: list[int] = []
    with pytest.raises(Stop):
        train_lora_sft(base, dataset, tmp_path / "resumed", CFG, progress=stop_at(5, first))
    assert first == [1, 2, 3, 4, 5] and (tmp_path / ".resumed.steps.pt").exists() and not (tmp_path / "resumed").exists()
    second: list[int] = []
    resumed = train_lora_sft(base, dataset, tmp_path / "resumed", CFG, progress=stop_at(-1, second))
    assert second == [4, 5, 6, 7]  # from the checkpoint after step 3, not from step 0
    assert resumed["adapter_hash"] == straight["adapter_hash"]
    assert (tmp_path / "resumed" / ADAPTER_WEIGHTS).read_bytes() == (tmp_path / "straight" / ADAPTER_WEIGHTS).read_bytes()
    log = lambda name: [json.loads(line) for line in (tmp_path / name / TRAIN_LOG).read_text().splitlines()]  # noqa: E731
    assert log("resumed") == log("straight") and [row["step"] for row in log("resumed")] == list(range(7))
    assert not (tmp_path / ".resumed.steps.pt").exists()


def test_a_checkpoint_of_another_training_is_not_used(base, dataset, tmp_path):
    with pytest.raises(Stop):
        train_lora_sft(base, dataset, tmp_path / "a", CFG, progress=stop_at(4, []))
    other = CFG.model_copy(update={"lr": 5e-3})
    steps: list[int] = []
    train_lora_sft(base, dataset, tmp_path / "a", other, progress=stop_at(-1, steps))
    assert steps == list(range(1, 8))  # another learning rate: trained from the start


def test_a_damaged_checkpoint_trains_from_the_start(base, dataset, tmp_path):
    with pytest.raises(Stop):
        train_lora_sft(base, dataset, tmp_path / "d", CFG, progress=stop_at(4, []))
    (tmp_path / ".d.steps.pt").write_bytes(b"\x00" * 100)
    steps: list[int] = []
    train_lora_sft(base, dataset, tmp_path / "d", CFG, progress=stop_at(-1, steps))
    assert steps == list(range(1, 8))


def test_checkpoint_every_is_not_part_of_the_adapters_config(base, dataset, tmp_path):
    # Saving state never changes the weights, so an adapter trained without checkpoints is the same adapter.
    a = train_lora_sft(base, dataset, tmp_path / "with", CFG)
    b = train_lora_sft(base, dataset, tmp_path / "without", CFG.model_copy(update={"checkpoint_every": 0}))
    assert a["adapter_hash"] == b["adapter_hash"] and "checkpoint_every" not in CFG.model_dump(mode="json")


def test_a_run_killed_mid_training_resumes_from_the_saved_step(tmp_path):
    # train.steps 6, a checkpoint every 2: killed after step 5, the resumed process starts at step 4,
    # so it never reaches step 1's crash point (which would kill it again); its adapter is the
    # uninterrupted run's.
    budget = {**TINY["budget"], "rounds": 1}
    train = {**TINY["train"], "steps": 6, "checkpoint_every": 2}
    (tmp_path / "ref").mkdir()
    (tmp_path / "k").mkdir()
    ref = atelier("run", str(write_config(tmp_path / "ref", budget=budget, train=train)), "--run-id", "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    cfg = write_config(tmp_path / "k", budget=budget, train=train)
    killed = atelier("run", str(cfg), "--run-id", "k", env={"ATELIER_DIE_AT": "train_step:5"})
    assert killed.returncode == -9
    run_dir = tmp_path / "k" / "runs" / "k"
    assert (run_dir / "round_001" / ".adapter.steps.pt").exists()
    resumed = atelier("resume", "k", "--run-dir", str(run_dir.parent), env={"ATELIER_DIE_AT": "train_step:1"})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    weights = lambda d: (d / "round_001" / "adapter" / ADAPTER_WEIGHTS).read_bytes()  # noqa: E731
    assert weights(run_dir) == weights(tmp_path / "ref" / "runs" / "ref")
