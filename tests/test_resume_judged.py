"""A run killed after an evaluation's judgments were written, before its metrics, resumes without
asking the judge again: a model judge's second answers could differ, and the calls cost."""

from loop_helpers import TINY, atelier, write_config
from openai_server import OpenAIServer, correct, schema_name


def _judge_calls(server) -> int:
    return sum(schema_name(body) == "YesNoAnswers" for body in server.requests)


def test_a_killed_evaluation_is_not_judged_twice(tmp_path):
    budget = {**TINY["budget"], "rounds": 1}
    counts = {}
    for name in ("straight", "killed"):
        (tmp_path / name).mkdir()
        with OpenAIServer(correct) as server:
            judge = {"backend": "openai", "base_url": server.url, "model": "scripted-vlm", "retry_backoff_s": 0.01}
            cfg = write_config(tmp_path / name, agents={"judge": judge}, budget=budget)
            if name == "killed":
                died = atelier("run", str(cfg), "--run-id", "r", env={"ATELIER_DIE_AT": "evaluate:judged"})
                assert died.returncode != 0 and (tmp_path / name / "runs" / "r" / "base" / "judgments.jsonl").exists()
                assert not (tmp_path / name / "runs" / "r" / "base" / "metrics.json").exists()
                done = atelier("resume", "r", "--run-dir", str(tmp_path / name / "runs"))
            else:
                done = atelier("run", str(cfg), "--run-id", "r")
            assert done.returncode == 0, done.stderr[-2000:]
            counts[name] = _judge_calls(server)
    assert counts["killed"] == counts["straight"] > 0
