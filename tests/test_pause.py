"""A judge endpoint that stops answering pauses the run instead of finishing it on failed
judgments: exit 75, one line naming the role and the endpoint, status 'paused', nothing of the
paused node written; `atelier resume` after the endpoint is fixed completes the run with every
image judged."""

import json

import pytest

from loop_helpers import TINY, atelier, write_config
from openai_server import OpenAIServer, correct, http429, http500, not_json, schema_name, schema_violation, slow

JUDGE = {"backend": "openai", "model": "scripted-vlm", "max_retries": 0, "max_reasks": 0, "retry_backoff_s": 0.0,
         "timeout_s": 2.0}


def judge_only(broken):
    """The judge's requests get `broken` while it is set; everything else answers right."""
    def script(body, n):
        return broken[0](body, n) if broken and schema_name(body) == "YesNoAnswers" else correct(body, n)
    return script


def run_paused(tmp_path, url, **judge):
    cfg = write_config(tmp_path, agents={"judge": {**JUDGE, "base_url": url, **judge}}, budget={**TINY["budget"], "rounds": 1})
    done = atelier("run", str(cfg), "--run-id", "p")
    return done, tmp_path / "runs" / "p"


def assert_paused(done, run_dir, url):
    assert done.returncode == 75, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and lines[-1].startswith("atelier: paused:")
    assert url in lines[-1] and "the judge" in lines[-1] and "judgments failed" in lines[-1]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "paused" and url in status["reason"] and "atelier resume p" in status["reason"]
    assert not (run_dir / "base" / "judgments.jsonl").exists() and not (run_dir / "base" / "metrics.json").exists()


@pytest.mark.parametrize("mode", [schema_violation, not_json, http500, http429, slow(5.0)],
                         ids=["garbage", "not-json", "500", "429", "hanging"])
def test_a_judge_that_stops_answering_pauses_the_run(tmp_path, mode):
    with OpenAIServer(judge_only([mode])) as server:
        done, run_dir = run_paused(tmp_path, server.url, timeout_s=0.5)
    assert_paused(done, run_dir, server.url)


def test_a_refused_connection_pauses_the_run(tmp_path):
    with OpenAIServer() as server:
        url = server.url  # closed when the run starts: every connection is refused
    done, run_dir = run_paused(tmp_path, url)
    assert_paused(done, run_dir, url)


def test_resume_after_the_endpoint_is_fixed_judges_everything(tmp_path):
    broken = [http500]
    with OpenAIServer(judge_only(broken)) as server:
        done, run_dir = run_paused(tmp_path, server.url)
        assert_paused(done, run_dir, server.url)
        broken.clear()  # the endpoint is fixed
        resumed = atelier("resume", "p", "--run-dir", str(tmp_path / "runs"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    base = json.loads((run_dir / "base" / "metrics.json").read_text())
    assert base["n_failed"] == 0 and base["n_images"] == TINY["budget"]["heldout_prompts"] * TINY["budget"]["images_per_heldout_prompt"]
    judged = [json.loads(line) for f in (run_dir / "round_001" / "judge").glob("batch_*.jsonl") for line in f.read_text().splitlines()]
    assert judged and not any(j.get("failed") for j in judged)


def test_a_few_failures_below_the_share_are_left_out_not_paused(tmp_path):
    # One judge request in five fails: below decide.max_failed_share 0.5 the run finishes, and the
    # failed images are counted beside the metrics, never as wrong answers.
    def flaky(body, n):
        return http500(body, n) if schema_name(body) == "YesNoAnswers" and n % 5 == 0 else correct(body, n)
    with OpenAIServer(flaky) as server:
        cfg = write_config(tmp_path, agents={"judge": {**JUDGE, "base_url": server.url}},
                           budget={**TINY["budget"], "rounds": 1}, decide={**TINY["decide"], "max_failed_share": 0.5})
        done = atelier("run", str(cfg), "--run-id", "f")
    assert done.returncode == 0, done.stderr[-2000:]
    base = json.loads((tmp_path / "runs" / "f" / "base" / "metrics.json").read_text())
    judged = [json.loads(line) for line in (tmp_path / "runs" / "f" / "base" / "judgments.jsonl").read_text().splitlines()]
    n_failed = sum(bool(j.get("failed")) for j in judged)
    assert n_failed > 0 and base["n_failed"] == n_failed
    assert base["object_accuracy"]["n"] == len(judged) - n_failed
