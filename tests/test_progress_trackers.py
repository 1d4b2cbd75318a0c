"""The run's numbers in TensorBoard through accelerate's tracker: the training loss at every step,
held-out metrics per round equal to the run's, the report's grid per round; an unknown tracker is
one line before the run starts training."""

import json

import pytest

from atelier.trackers import RunTrackers, tracker_names
from loop_helpers import atelier, write_config

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="the tensorboard extra is not installed")


def _events(folder):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_scalars_and_images_reach_tensorboard(tmp_path):
    from PIL import Image

    trackers = RunTrackers(["tensorboard"], tmp_path, "r1")
    trackers.log({"train/loss": 0.5}, step=1)
    trackers.log({"train/loss": 0.25}, step=2)
    trackers.log_image("heldout/base_vs_best", Image.new("RGB", (40, 20), "red"), step=1)
    trackers.close()
    acc = _events(tmp_path / "tensorboard" / "r1")
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 0.5), (2, 0.25)]
    image = acc.Images("heldout/base_vs_best")[0]
    assert (image.step, image.width, image.height) == (1, 40, 20)


def test_a_run_reports_its_loss_and_held_out_metrics(tmp_path):
    done = atelier("run", str(write_config(tmp_path)), "--run-id", "tb", env={"ATELIER_REPORT_TO": "tensorboard"})
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "runs" / "tb"
    acc = _events(run_dir / "tensorboard" / "tb")
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 9))  # 2 rounds x 4 steps
    logged = [json.loads(x) for r in ("round_001", "round_002") for x in (run_dir / r / "adapter" / "train_log.jsonl").read_text().splitlines()]
    assert [round(e.value, 5) for e in acc.Scalars("train/loss")] == [round(x["loss"], 5) for x in logged]
    report = json.loads((run_dir / "report" / "report.json").read_text())
    metric = report["metric"]
    expected = [report["base"][metric]["value"]] + [r["candidate"][metric]["value"] for r in report["rounds"]]
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars(f"heldout/{metric}")] == \
        [(i, round(v, 6)) for i, v in enumerate(expected)]
    assert [e.step for e in acc.Images("heldout/base_vs_best")] == [1, 2]  # after round 1, and the final report


def test_an_unknown_tracker_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("ATELIER_REPORT_TO", "tensorboard, mlflow")
    with pytest.raises(ValueError, match="unknown tracker 'mlflow'"):
        tracker_names(None)
    done = atelier("run", str(write_config(tmp_path)), "--run-id", "x", env={"ATELIER_REPORT_TO": "mlflow"})
    assert done.returncode == 2 and "unknown tracker 'mlflow'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_configs_report_to_wins_over_the_environment(monkeypatch):
    from atelier.config import parse_config

    monkeypatch.setenv("ATELIER_REPORT_TO", "wandb")
    assert tracker_names(parse_config({"goal": "left and right", "logging": {"report_to": ["tensorboard"]}})) == ["tensorboard"]
    assert tracker_names(parse_config({"goal": "left and right", "logging": {"report_to": []}})) == []
    monkeypatch.setenv("ATELIER_REPORT_TO", "tensorboard")
    assert tracker_names(parse_config({"goal": "left and right"})) == ["tensorboard"]  # unset: the environment
