"""End to end: a tiny run of the real loop with every agent role on the `openai` backend, against
a scripted OpenAI-protocol server. The planner's first answer is broken (re-asked), some images
never get a valid judgment (recorded as failed), and the run still finishes. The API key, given
in an environment variable, reaches the server and nothing else."""

import json
import uuid
import zlib

import pytest

from loop_helpers import TINY, atelier, write_config
from openai_server import OpenAIServer, correct, image_urls, invalid_json, schema_name, schema_violation

ROLES = ("planner", "prompt_writer", "judge", "critic", "edit_writer")


def unlucky(body: dict) -> bool:
    """Images whose judgments the scripted VLM always botches."""
    return schema_name(body) == "YesNoAnswers" and zlib.crc32(image_urls(body)[0].encode()) % 4 == 0


def script(body: dict, n: int):
    if n == 0:  # the planner's first answer
        return invalid_json(body, n)
    return schema_violation(body, n) if unlucky(body) else correct(body, n)


@pytest.fixture(scope="module")
def openai_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openai_loop")
    key = f"sk-test-{uuid.uuid4().hex}"
    with OpenAIServer(script) as server:
        agents = {role: {"backend": "openai", "base_url": server.url, "model": "scripted-vlm", "api_key_env": "ATELIER_TEST_KEY",
                         "max_concurrency": 4, "max_reasks": 1, "retry_backoff_s": 0.01} for role in ROLES}
        # A quarter of the images never get a valid judgment: above the default share that pauses a run.
        cfg = write_config(tmp, agents=agents, budget={**TINY["budget"], "rounds": 1},
                           decide={**TINY["decide"], "max_failed_share": 0.6})
        done = atelier("run", str(cfg), "--run-id", "vlm", env={"ATELIER_TEST_KEY": key})
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "runs" / "vlm", done, server, key


def test_the_run_finishes_with_the_agents_answers(openai_run):
    run_dir, done, server, _ = openai_run
    assert "report:" in done.stdout and (run_dir / "report" / "report.json").exists()
    assert set(server.schemas()) == {"TargetSpec", "WrittenPrompts", "YesNoAnswers"}
    planner = json.loads((run_dir / "agents" / "planner.json").read_text())
    assert planner["ok"] and planner["attempts"] == 2 and "Invalid JSON" in planner["errors"][0]
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["spec"]["relations"] == ["left of", "right of"] and plan["metric"] == "relation_accuracy_cond"
    writer = json.loads((run_dir / "round_001" / "agents" / "prompt_writer.json").read_text())
    prompts = json.loads((run_dir / "round_001" / "prompts.json").read_text())
    assert writer["filled_by_builtin"] == 0 and len(prompts) == TINY["budget"]["prompts_per_round"]
    assert [m["text"] for m in writer["metadata"]] == [p["text"] for p in prompts]


def test_judgments_come_from_the_vlm_and_failures_are_recorded(openai_run):
    run_dir, _, server, _ = openai_run
    # Held-out: the base, the base at the candidates' guidance (a reference) and round 1's candidate.
    files = [run_dir / "base" / "judgments.jsonl", run_dir / "base" / "at_candidate_guidance" / "judgments.jsonl",
             run_dir / "round_001" / "eval" / "judgments.jsonl", *sorted((run_dir / "round_001" / "judge").glob("batch_*.jsonl"))]
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    budget = TINY["budget"]
    assert len(rows) == 3 * budget["heldout_prompts"] * budget["images_per_heldout_prompt"] + budget["prompts_per_round"] * budget["images_per_prompt"]
    assert all(r["detections"] == [] and r["judge"]["model"] == "scripted-vlm" for r in rows)
    failed = [r for r in rows if r["judge_failed"]]
    assert failed and all(r["judge_raw"] == '{"verdict": "looks fine to me"}' and not r["ipr_correct"] for r in failed)
    assert all(r["judge"]["ccsr_score"] is not None for r in rows if not r["judge_failed"])
    judge_requests = [b for b in server.requests if schema_name(b) == "YesNoAnswers"]
    assert len(judge_requests) == len(rows) + len(failed)  # each failed judgment was asked twice
    assert all(image_urls(b)[0].startswith("data:image/png;base64,") for b in judge_requests)


def test_ipr_keeps_the_correct_samples_and_drops_what_it_cannot_relabel(openai_run):
    run_dir, _, _, _ = openai_run
    judged = [json.loads(line) for f in sorted((run_dir / "round_001" / "judge").glob("batch_*.jsonl"))
              for line in f.read_text().splitlines()]
    meta = [json.loads(line) for line in (run_dir / "round_001" / "dataset" / "metadata.jsonl").read_text().splitlines()]
    assert sorted(m["source"] for m in meta) == sorted(j["file"] for j in judged if j["ipr_correct"])
    assert all(m["kind"] == "correct" and m["weight"] == 1.0 for m in meta)


def test_the_api_key_is_used_and_appears_nowhere_else(openai_run):
    run_dir, done, server, key = openai_run
    assert server.headers and all(h.get("authorization") == f"Bearer {key}" for h in server.headers)
    assert key not in done.stdout and key not in done.stderr
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "checkpoints.sqlite" for p in files)
    leaks = [str(p) for p in files if key.encode() in p.read_bytes()]
    assert leaks == []
    config = (run_dir / "config.yaml").read_text()
    assert "api_key_env: ATELIER_TEST_KEY" in config
