"""Live progress: the bars a user sees during a tiny run (read from the terminal output rich drew),
the round's ETA, and a training log that is on disk step by step, not at the end."""

import json
import re

import pytest

from atelier.progress import round_seconds
from atelier.tools.train_loop import TRAIN_LOG, TrainLog
from report_helpers import screen_lines, tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def test_the_training_bar_moves_step_by_step_with_its_loss(run):
    _, done = run
    steps = set()
    for line in screen_lines(done.stderr):
        if m := re.search(r"round 1 train\b.*?(\d+)/4 loss ([0-9.e+-]+)", line):
            steps.add(int(m.group(1)))
            float(m.group(2))  # a number, as the log has it
    # the first step was drawn as it ended (before the second was computed), and so was the last;
    # steps in between are drawn at most every 0.25 s
    assert {1, 4} <= steps, steps


def test_generation_judging_and_held_out_bars_are_drawn(run):
    _, done = run
    text = "\n".join(screen_lines(done.stderr))
    assert re.search(r"round 1 prompts generated .*\b4/4\b", text)
    assert re.search(r"round 1 prompts judged .*\b4/4\b", text)
    assert re.search(r"held-out base \(sample, judge\) .*\b16/16\b", text)  # 4 prompts x 2 images, sampled then judged
    assert re.search(r"held-out round_001/eval \(sample, judge\)", text)


def test_the_second_round_shows_an_eta_from_the_first(run):
    run_dir, done = run
    first = round_seconds(run_dir, 1)
    assert first is not None and first > 0
    etas = [line for line in screen_lines(done.stderr) if "round 2/2" in line and "ETA round" in line]
    assert etas and "last round took" in etas[-1]
    assert any("ETA after the first round" in line for line in screen_lines(done.stderr) if "round 1/2" in line)


def test_the_report_is_rewritten_after_a_round_that_did_not_end_the_run(run):
    _, done = run
    assert "report updated:" in "\n".join(screen_lines(done.stderr))


def test_the_training_log_is_on_disk_after_each_step(tmp_path):
    with TrainLog(tmp_path, tensorboard=False) as log:
        log.write(0, loss=0.5, lr=1e-4)
        first = (tmp_path / TRAIN_LOG).read_text()  # read while the file is still open
        log.write(1, loss=0.25, lr=1e-4)
        second = (tmp_path / TRAIN_LOG).read_text()
    assert [json.loads(x)["loss"] for x in first.splitlines()] == [0.5]
    assert [json.loads(x)["step"] for x in second.splitlines()] == [0, 1]


def test_round_seconds_adds_up_a_rounds_nodes(tmp_path):
    rows = [{"node": "plan", "seconds": 1.0}, {"node": "generate", "seconds": 2.0, "round": 1},
            {"node": "train", "seconds": 3.5, "round": 1}, {"node": "train", "seconds": 9.0, "round": 2}]
    (tmp_path / "timings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"node": "cut')
    assert round_seconds(tmp_path, 1) == pytest.approx(5.5)
    assert round_seconds(tmp_path, 3) is None and round_seconds(tmp_path / "nowhere", 1) is None


def test_a_batch_knows_its_rounds_prompt_count_without_reading_the_file(tmp_path):
    from atelier.graphs.nodes import _round_prompts

    task = {"round": 1, "batch": 0, "prompts_file": str(tmp_path / "absent.json"), "start": 0, "end": 4, "adapter": None}
    assert _round_prompts({**task, "n_prompts": 12}) == 12  # the file is never opened
    (tmp_path / "prompts.json").write_text(json.dumps([{"text": f"p{i}"} for i in range(7)]))
    assert _round_prompts({**task, "prompts_file": str(tmp_path / "prompts.json")}) == 7  # a task checkpointed before
