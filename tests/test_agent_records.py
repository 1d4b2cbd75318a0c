"""What an agent's result may hold once it leaves its backend (atelier.agents.records): no API
key, whatever the server says back, and nothing unbounded, however much it says.

End to end, the tiny shapes loop runs with every role on a test server that (1) echoes the key
each request carried into its answers' free text and into invalid answers, and (2) answers with
5 MB: a valid plan whose rationale is 5 MB, and 5 MB of text that is not JSON. No file of the run
folder (checkpoints.sqlite included) nor its output holds the key, and the folder stays small.
"""

import json
import re
import uuid
import zlib

import pytest
from pydantic import BaseModel, Field

from atelier.agents import records
from atelier.agents.backend import AgentRequest, AgentResult
from atelier.agents.builtin_backend import BuiltinBackend
from atelier.agents.judge import MatchJudgeRequest, MatchVerdict, PairRubricJudgeRequest, RubricJudgeRequest
from atelier.agents.openai_backend import OpenAIBackend
from atelier.agents.planner import TargetSpec, plan_with_agent
from atelier.config import AgentConfig
from atelier.worlds.judgment import Asked
from atelier.worlds.shapes.metrics import asked_of
from atelier.worlds.shapes.plan import ShapesPlanRequest, plan
from atelier.worlds.shapes.render import render
from atelier.worlds.shapes.scene import parse
from loop_helpers import TINY, atelier, write_config
from openai_server import (MEGABYTES_5, EchoKey, OpenAIServer, Reply, correct, huge, huge_text, image_urls, right_answer,
                           schema_name, sequence)

ROLES = ("planner", "prompt_writer", "judge", "critic", "edit_writer")
CUT = re.compile(r"…\[cut: [\d,]+ characters\]")
PROMPT = "a red circle to the left of a blue square"


def unlucky(body: dict, n: int) -> bool:
    """Images whose judgments the server always botches."""
    return schema_name(body) == "YesNoAnswers" and zlib.crc32(image_urls(body)[0].encode()) % 4 == 0


def first_of_each_role(body: dict, n: int, seen: set = set()) -> bool:  # noqa: B006 - one server per test
    """The first planner and the first prompt-writer request: answered badly once, then re-asked."""
    name = schema_name(body)
    if name in ("TargetSpec", "WrittenPrompts") and name not in seen:
        seen.add(name)
        return True
    return False


def run_loop(tmp, script, env: dict, key_env: str | None = None) -> tuple:
    with OpenAIServer(script) as server:
        if hasattr(script, "server"):
            script.server = server
        agents = {role: {"backend": "openai", "base_url": server.url, "model": "scripted-vlm", "max_concurrency": 4,
                         "max_reasks": 1, "retry_backoff_s": 0.01} | ({"api_key_env": key_env} if key_env else {})
                  for role in ROLES}
        # A quarter of the judgments fail on purpose: above the default share that pauses a run.
        cfg = write_config(tmp, agents=agents, budget={**TINY["budget"], "rounds": 1},
                           decide={**TINY["decide"], "max_failed_share": 0.6})
        done = atelier("run", str(cfg), "--run-id", "run", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "runs" / "run", done, server


def judgments(run_dir) -> list[dict]:
    files = [*run_dir.rglob("judgments.jsonl"), *run_dir.rglob("batch_*.jsonl")]
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


# --- end to end -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo_run(tmp_path_factory):
    key = f"sk-test-{uuid.uuid4().hex}"
    seen: set = set()
    script = EchoKey(bad=lambda body, n: first_of_each_role(body, n, seen) or unlucky(body, n))
    run_dir, done, server = run_loop(tmp_path_factory.mktemp("echo"), script, {"ATELIER_ECHO_KEY": key}, "ATELIER_ECHO_KEY")
    return run_dir, done, server, key


def test_a_key_the_server_echoes_is_in_no_file_of_the_run_nor_its_output(echo_run):
    run_dir, done, server, key = echo_run
    assert server.headers and all(h.get("authorization") == f"Bearer {key}" for h in server.headers)
    assert any(key in json.dumps(b["messages"][2:]) for b in server.requests)  # it was said: re-asks carry it back
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "checkpoints.sqlite" for p in files)
    assert [str(p) for p in files if key.encode() in p.read_bytes()] == []
    assert key not in done.stdout and key not in done.stderr


def test_the_echoed_key_is_masked_where_it_was_said(echo_run):
    run_dir, _, _, _ = echo_run
    said = f"the key is {records.MASK}"
    planner = json.loads((run_dir / "agents" / "planner.json").read_text())
    assert planner["ok"] and planner["attempts"] == 2 and said in planner["answer"]["rationale"]
    assert said in planner["spec"]["rationale"] and said in planner["raw"]
    plan_file = json.loads((run_dir / "plan.json").read_text())
    assert plan_file["spec"]["rationale"].endswith(said)
    writer = json.loads((run_dir / "round_001" / "agents" / "prompt_writer.json").read_text())
    assert any(said in e for r in writer["requests"] for e in r["errors"]) or any(r["attempts"] == 2 for r in writer["requests"])
    failed = [j for j in judgments(run_dir) if j["judge_failed"]]
    assert failed and all(said in j["judge_raw"] and said in j["failure"]["raw"] for j in failed)


@pytest.fixture(scope="module")
def huge_run(tmp_path_factory):
    seen: set = set()
    script = huge(bad=lambda body, n: first_of_each_role(body, n, seen) and schema_name(body) != "TargetSpec" or unlucky(body, n))
    run_dir, done, server = run_loop(tmp_path_factory.mktemp("huge"), script, {})
    return run_dir, done, server


def test_answers_of_five_megabytes_leave_a_small_run_folder(huge_run):
    run_dir, done, server = huge_run
    assert sum(len(json.dumps(b)) for b in server.requests) > 10 * MEGABYTES_5  # the re-asks carried them back
    sizes = {p: p.stat().st_size for p in run_dir.rglob("*") if p.is_file()}
    assert sum(sizes.values()) < 3_000_000, sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    assert sizes[run_dir / "checkpoints.sqlite"] < 1_000_000
    assert len(done.stdout) + len(done.stderr) < 100_000


def test_what_was_cut_says_so(huge_run):
    run_dir, _, _ = huge_run
    spec = json.loads((run_dir / "plan.json").read_text())["spec"]
    assert len(spec["rationale"]) == records.TEXT_LIMIT and CUT.search(spec["rationale"])
    assert spec["rationale"].startswith("the goal says left and right the model keeps talking")
    planner = json.loads((run_dir / "agents" / "planner.json").read_text())
    assert planner["ok"] and len(planner["raw"]) == records.RAW_LIMIT and CUT.search(planner["raw"])
    failed = [j for j in judgments(run_dir) if j["judge_failed"]]
    assert failed and all(len(j["judge_raw"]) == records.RAW_LIMIT and CUT.search(j["judge_raw"]) for j in failed)
    assert len({j["judge_raw"] for j in failed}) == 1  # the same text is cut the same way


# --- one backend, one request -----------------------------------------------------------------


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    render(parse(PROMPT), seed=1).save(path)
    return path


def agent(server, **fields) -> AgentConfig:
    return AgentConfig(**{"backend": "openai", "base_url": server.url, "model": "scripted-vlm", "retry_backoff_s": 0.01,
                          "timeout_s": 20.0, "max_reasks": 1, "max_retries": 0} | fields)


def backend(server, role="judge", **fields) -> OpenAIBackend:
    return OpenAIBackend(agent(server, **fields), role)


def asked() -> Asked:
    return asked_of(parse(PROMPT))


@pytest.mark.parametrize("make", [
    lambda image: RubricJudgeRequest(image=image, prompt=PROMPT, asked=asked()),
    lambda image: PairRubricJudgeRequest(first=image, second=image, prompt=PROMPT, asked=asked()),
    lambda image: MatchJudgeRequest(image=image, prompt=PROMPT, asked=asked()),
], ids=["rubric", "rubric_pair", "match"])
def test_a_judge_reason_that_repeats_the_key_is_masked(monkeypatch, image, make):
    key = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("ATELIER_ECHO_KEY", key)
    script = EchoKey()
    with OpenAIServer(script) as server:
        script.server = server
        result = backend(server, api_key_env="ATELIER_ECHO_KEY").ask(make(image))
    assert result.ok and key not in json.dumps(result.record()) and key not in result.answer.model_dump_json()
    assert f"the key is {records.MASK}" in json.dumps(result.answer.model_dump())


def test_every_configured_key_is_masked_as_the_environment_holds_it_now(monkeypatch, image):
    """The planner's server says the judge's key: masked too, and a key changed since the judge's
    backend was made is masked as it is now."""
    judge_key, new_judge_key, planner_key = (f"sk-{name}-{uuid.uuid4().hex}" for name in ("judge", "new", "planner"))
    monkeypatch.setenv("ATELIER_JUDGE_KEY", judge_key)
    monkeypatch.setenv("ATELIER_PLANNER_KEY", planner_key)
    with OpenAIServer(lambda body, n: Reply(content=f"keys: {judge_key} {new_judge_key} {planner_key}")) as server:
        backend(server, api_key_env="ATELIER_JUDGE_KEY")  # the judge's role is configured
        monkeypatch.setenv("ATELIER_JUDGE_KEY", new_judge_key)
        result = backend(server, role="planner", api_key_env="ATELIER_PLANNER_KEY", max_reasks=0).ask(
            ShapesPlanRequest(goal="left and right"))
    assert not result.ok
    text = json.dumps(result.record())
    assert all(k not in text for k in (new_judge_key, planner_key)) and text.count(records.MASK) >= 2
    # the judge's old key is no longer configured anywhere: this process never sent it since
    assert judge_key in result.raw


def test_registered_key_variables_of_the_whole_config_are_masked(monkeypatch):
    key = f"sk-critic-{uuid.uuid4().hex}"
    monkeypatch.setenv("ATELIER_CRITIC_KEY", key)
    from atelier.config import AgentsConfig
    records.register_key_envs(AgentsConfig(critic={"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                                                   "api_key_env": "ATELIER_CRITIC_KEY"}))
    result = AgentResult(role="judge", mode="match", ok=True, answer=MatchVerdict(matches=True, reason=f"saw {key}"),
                         raw=f"raw {key}", error=None).clean()
    assert key not in json.dumps(result.record()) and result.answer.reason == f"saw {records.MASK}"


def test_an_error_body_that_repeats_the_key_is_masked(monkeypatch, image):
    key = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("ATELIER_ECHO_KEY", key)
    body = json.dumps({"error": {"message": f"bad request for key {key}", "type": "invalid_request_error"}}).encode()
    with OpenAIServer(lambda b, n: Reply(status=400, body=body)) as server:
        result = backend(server, api_key_env="ATELIER_ECHO_KEY").ask(MatchJudgeRequest(image=image, prompt=PROMPT))
    assert not result.ok and "request rejected" in result.error and key not in json.dumps(result.record())


def test_a_valid_answer_with_five_megabytes_of_rationale_is_kept_cut(tmp_path):
    with OpenAIServer(huge()) as server:
        spec = plan("get left and right right", agent(server), tmp_path)
    assert len(spec.rationale) == records.TEXT_LIMIT and spec.rationale.endswith(f"…[cut: {MEGABYTES_5 + 29:,} characters]")
    assert spec.relations == ["left of", "right of"] and len(server.requests) == 1
    assert (tmp_path / "planner.json").stat().st_size < 40_000
    assert plan("get left and right right", agent(server), tmp_path) == spec  # resumed: the same plan


def test_five_megabytes_that_are_not_json_are_kept_cut(image):
    with OpenAIServer(huge(bad=lambda body, n: True)) as server:
        result = backend(server).ask(MatchJudgeRequest(image=image, prompt=PROMPT))
    assert not result.ok and result.attempts == 2 and len(result.raw) == records.RAW_LIMIT
    assert result.raw.endswith(f"…[cut: {MEGABYTES_5 + 13:,} characters]")
    assert len(json.dumps(result.record())) < records.RAW_LIMIT + 3 * records.ERROR_LIMIT + 1000


def test_an_answer_of_a_million_list_entries_is_sent_back(tmp_path):
    big = json.loads(right_answer({"response_format": {"json_schema": {"name": "TargetSpec"}}}))
    big["style"] = ["flat"] * 200_000
    with OpenAIServer(sequence(lambda body, n: Reply(content=json.dumps(big)))) as server:
        spec = plan("get left and right right", agent(server), tmp_path)
    assert len(server.requests) == 2 and spec.style == []
    reask = server.requests[1]["messages"][-1]["content"]
    assert f"answer in at most {records.ANSWER_LIMIT:,}" in (reask if isinstance(reask, str) else json.dumps(reask))


def test_a_plan_kept_before_answers_were_cleaned_is_cleaned_when_read(monkeypatch, tmp_path):
    key = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("ATELIER_OLD_KEY", key)
    spec = TargetSpec(relations=["left of"], metric="relation_accuracy_cond", rationale=f"{key} {huge_text(100_000)}")
    (tmp_path / "planner.json").write_text(json.dumps({"spec": spec.model_dump(mode="json")}))
    config = AgentConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m", api_key_env="ATELIER_OLD_KEY")
    read = plan_with_agent(config, ShapesPlanRequest(goal="left"), tmp_path)
    assert read.rationale.startswith(records.MASK) and len(read.rationale) == records.TEXT_LIMIT


# --- the rules --------------------------------------------------------------------------------


def test_a_cut_is_deterministic_bounded_and_idempotent():
    text = huge_text(10_000)
    once = records.cut(text, 4_000)
    assert once == records.cut(text, 4_000) and len(once) == 4_000 and once.endswith("…[cut: 10,000 characters]")
    assert records.cut(once, 4_000) == once and records.cut("short", 4_000) == "short"


def test_keys_are_masked_in_json_escaped_form_and_short_values_are_left_alone():
    key = 'x\\y"secret'  # as the parsed answer holds it; in the raw JSON text it is escaped
    assert records.mask(json.dumps({"a": key}), [key]) == '{"a": "[redacted]"}' and records.mask(key, [key]) == "[redacted]"
    assert records.current_keys("abc") == [k for k in records.current_keys() if k != "abc"]



def test_answers_are_cleaned_whatever_the_key_looks_like_and_left_alone_when_clean():
    # clean_answer skips its walk when the answer's JSON shows no key: a key whose JSON form
    # differs from itself (a quote, a backslash) must still be found in the answer's strings.
    class Said(BaseModel):
        reason: str

    for key in ('x\\y"secret', "sk-plain-1234"):
        assert records.clean_answer(Said(reason=f"it said {key} here"), [key]).reason == f"it said {records.MASK} here"
    clean = Said(reason="all there")
    assert records.clean_answer(clean, ["sk-plain-1234"]) is clean
    long = Said(reason="y" * (records.TEXT_LIMIT + 10))
    assert records.clean_answer(long, []).reason.endswith(f"[cut: {records.TEXT_LIMIT + 10:,} characters]")

class Pattern(BaseModel):
    text: str = Field(pattern=r"^x+$")


def test_an_answer_that_cutting_makes_invalid_is_refused():
    with pytest.raises(ValueError, match="keep every text under 2,000 characters"):
        records.clean_answer(Pattern(text="x" * 3_000), [])
    answer = Pattern(text="x" * 10)
    assert records.clean_answer(answer, []) is answer


class SayingRequest(AgentRequest):
    """A builtin rule that repeats what the request says (a goal's words in a rationale)."""

    role = "judge"
    mode = "match"
    answer_schema = MatchVerdict
    said: str

    def answer_builtin(self) -> MatchVerdict:
        return MatchVerdict(matches=True, reason=self.said)


def test_the_builtin_backend_cleans_its_results_too(monkeypatch):
    key = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("ATELIER_BUILTIN_KEY", key)
    records.register_key_env("ATELIER_BUILTIN_KEY")
    result = BuiltinBackend().ask(SayingRequest(said=f"the key is {key}"))
    assert result.ok and key not in result.raw and result.answer.reason == f"the key is {records.MASK}"


def test_a_correct_answer_is_kept_as_it_is(image):
    with OpenAIServer(correct) as server:
        result = backend(server).ask(MatchJudgeRequest(image=image, prompt=PROMPT))
    assert result.ok and result.answer == MatchVerdict(matches=True, reason="all there") and records.MASK not in result.raw
