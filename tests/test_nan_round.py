"""A training that diverges (a NaN loss) is a rejected round, not a crashed run: the round's
adapter is rolled back with the trainer's one-line reason, the best adapter stays, no adapter
folder is left behind, and the run goes on (or stops by its budget) and writes its report. The
failure is recorded under the round folder, so a resumed run reaches the same decisions."""

import json
import re

import pytest
import torch

from atelier.tools.train_loop import TrainLog, run_optimizer_steps
from loop_helpers import TINY, atelier, write_config

NAN_LR = 1e6  # the tiny shapes SFT's weights overflow in step 1 at this rate, its loss is NaN at step 2
# The trainers' guard: the loss is NaN/inf, or a step left the weights so (atelier.tools.train_loop).
DIVERGED = re.compile(r"LoRA SFT (loss is (nan|inf) at|weights are not finite after) step \d+")


def _diverging_config(tmp_path):
    return write_config(tmp_path, train={**TINY["train"], "learning_rate": NAN_LR})


def _decisions(run_dir):
    return [json.loads((run_dir / f"round_{r:03d}" / "decision.json").read_text()) for r in (1, 2)]


@pytest.fixture(scope="module")
def diverged_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nan")
    done = atelier("run", str(_diverging_config(tmp)), "--run-id", "nan")
    return tmp / "runs" / "nan", done


def test_a_nan_loss_rolls_the_round_back_and_the_run_finishes(diverged_run):
    run_dir, done = diverged_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "report:" in done.stdout and (run_dir / "report" / "report.html").exists()
    for decision in _decisions(run_dir):
        assert decision["promoted"] is False and decision["adapter"] is None
        assert DIVERGED.search(decision["reason"]) and f"lower lr (now {NAN_LR})" in decision["reason"]
        assert "\n" not in decision["reason"]
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert report["best"]["adapter"] is None and report["best"]["round"] is None  # the base stays best
    assert [r["promoted"] for r in report["rounds"]] == [False, False]
    assert all(DIVERGED.search(r["reason"]) for r in report["rounds"])
    assert report["stop_reason"]
    for r in (1, 2):
        round_folder = run_dir / f"round_{r:03d}"
        # No adapter folder (finished-looking or staged) is left; the failure is recorded instead.
        assert not (round_folder / "adapter").exists() and not list(round_folder.glob(".adapter*"))
        assert DIVERGED.search(json.loads((round_folder / "train_error.json").read_text())["error"])
        assert not (round_folder / "eval").exists()  # nothing was evaluated


def test_the_run_status_lists_the_rejected_rounds(diverged_run):
    run_dir, _ = diverged_run
    out = atelier("status", "nan", "--run-dir", str(run_dir.parent), "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["state"] == "finished"
    assert [r["round"] for r in status["rounds"]] == [1, 2]


def test_killed_after_a_failed_training_resumes_to_the_same_decisions(diverged_run, tmp_path):
    run_dir, _ = diverged_run
    cfg = _diverging_config(tmp_path)
    killed = atelier("run", str(cfg), "--run-id", "r", env={"ATELIER_DIE_AT": "train"})
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    resumed_dir = tmp_path / "runs" / "r"
    assert (resumed_dir / "round_001" / "train_error.json").exists()
    resumed = atelier("resume", "r", "--run-dir", str(resumed_dir.parent))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _decisions(resumed_dir) == _decisions(run_dir)


def test_weights_that_overflow_in_the_last_step_are_refused(tmp_path):
    """A finite loss can still take a step to infinite weights; the guard looks at the weights too,
    or a one-step training would save an adapter of infs."""
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=1e30)

    def micro_batches(step):
        yield (weight * 1e30).sum(), {}

    with TrainLog(tmp_path, tensorboard=False) as log, pytest.raises(FloatingPointError, match="not finite after step 0"):
        run_optimizer_steps([weight], optimizer, micro_batches, steps=1, grad_accum=1, max_grad_norm=None, log=log,
                            lr=1e30, what="test")
