"""`atelier resume RUN --set key=value` changes what can be fixed without changing results (the
device, an agent's endpoint, concurrency), validated as at `run`, and refuses anything that
changes results, as it refuses a config.yaml whose seed was edited by hand."""

import json

import pytest
import yaml

from loop_helpers import TINY, atelier, write_config
from openai_server import OpenAIServer, correct, http500, schema_name

JUDGE = {"backend": "openai", "model": "scripted-vlm", "max_retries": 0, "max_reasks": 0, "retry_backoff_s": 0.0}


@pytest.fixture()
def paused_run(tmp_path):
    """A run paused at its baseline because its judge's endpoint answers 500 to every request."""
    broken = lambda body, n: http500(body, n) if schema_name(body) == "YesNoAnswers" else correct(body, n)  # noqa: E731
    with OpenAIServer(broken) as server:
        cfg = write_config(tmp_path, agents={"judge": {**JUDGE, "base_url": server.url}}, budget={**TINY["budget"], "rounds": 1})
        done = atelier("run", str(cfg), "--run-id", "e")
    assert done.returncode == 75, done.stderr[-2000:]
    return tmp_path / "runs" / "e"


def resume(run_dir, *sets):
    return atelier("resume", run_dir.name, "--run-dir", str(run_dir.parent), *[a for s in sets for a in ("--set", s)])


def test_a_moved_endpoint_is_set_on_resume_and_kept(paused_run):
    with OpenAIServer() as fixed:
        done = resume(paused_run, f"agents.judge.base_url={fixed.url}", "agents.judge.max_concurrency=2")
    assert done.returncode == 0, done.stderr[-2000:]
    stored = yaml.safe_load((paused_run / "config.yaml").read_text())
    assert stored["agents"]["judge"]["base_url"] == fixed.url and stored["agents"]["judge"]["max_concurrency"] == 2
    edits = [json.loads(line) for line in (paused_run / "config_edits.jsonl").read_text().splitlines()]
    assert edits[-1]["set"] == [f"agents.judge.base_url={fixed.url}", "agents.judge.max_concurrency=2"]
    assert json.loads((paused_run / "base" / "metrics.json").read_text())["n_failed"] == 0


@pytest.mark.parametrize("setting, message", [
    ("seed=5", "--set seed: changes the run's results"),
    ("generation.guidance_scale=9", "--set generation.guidance_scale: changes the run's results"),
    ("agents.judge.model=other-vlm", "--set agents.judge.model: changes the run's results"),
    ("device=banana", "device: String should match pattern"),
    ("agents.judge.max_concurrency=0", "agents.judge.max_concurrency: Input should be greater than or equal to 1"),
])
def test_edits_that_change_results_or_are_invalid_are_one_line(paused_run, setting, message):
    before = (paused_run / "config.yaml").read_text()
    done = resume(paused_run, setting)
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert (paused_run / "config.yaml").read_text() == before
    assert json.loads((paused_run / "status.json").read_text())["state"] == "paused"


def test_a_seed_edited_by_hand_is_refused(paused_run):
    stored = yaml.safe_load((paused_run / "config.yaml").read_text())
    stored["seed"] = 8
    (paused_run / "config.yaml").write_text(yaml.safe_dump(stored))
    done = resume(paused_run)
    assert done.returncode == 2 and "seed: 7 -> 8" in done.stderr and "start a new run" in done.stderr, done.stderr
