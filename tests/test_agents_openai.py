"""The `openai` backend against a real local HTTP server speaking the OpenAI chat protocol:
what the requests carry, the concurrency bound, re-asks, retries, recorded failures, roles on
different servers, and an API key that never leaves the process except in its header."""

import base64
import gzip
import io
import json
import logging
import re
import socketserver
import threading
import time
import uuid

import pytest
from PIL import Image

from atelier.agents.backend import AgentResult, RunPaused
from atelier.agents.judge import QuestionsJudgeRequest, YesNoAnswers
from atelier.agents import openai_backend
from atelier.agents.openai_backend import AgentEndpointError, OpenAIBackend
from atelier.agents.planner import plan_with_agent
from atelier.worlds.shapes.judge import judge_rows
from atelier.worlds.shapes.plan import ShapesPlanRequest, plan
from atelier.worlds.shapes.prompts import write_prompts_with_agent
from atelier.worlds.shapes.questions import shapes_questions
from atelier.worlds.shapes.relabel import relabel_judgment
from atelier.config import AgentConfig, ConfigError
from atelier.strategies.ipr import ipr_rows
from atelier.worlds.shapes.render import render
from atelier.worlds.shapes.scene import parse
from openai_server import (OpenAIServer, Reply, completion, correct, cut_connection, dropped, empty, html_page, http429,
                           http500, image_urls, invalid_json, not_json, right_answer, schema_name, schema_violation,
                           sequence, slow, truncated_json)

PROMPT = "a red circle to the left of two blue squares"


def agent(server: OpenAIServer, **fields) -> AgentConfig:
    settings = {"backend": "openai", "base_url": server.url, "model": "scripted-vlm", "retry_backoff_s": 0.01,
                "timeout_s": 5.0, "max_reasks": 2, "max_retries": 2} | fields
    return AgentConfig(**settings)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    render(parse(PROMPT), seed=1).save(path)
    return path


def questions_request(image, prompt=PROMPT) -> QuestionsJudgeRequest:
    questions, probes = shapes_questions(parse(prompt))
    return QuestionsJudgeRequest(image=image, prompt=prompt, questions=questions, probes=probes)


def ask(server, request, **fields) -> AgentResult:
    return OpenAIBackend(agent(server, **fields), "judge").ask(request)


# --- what a request carries -------------------------------------------------------------------


def test_requests_carry_the_image_as_a_png_data_url_and_the_json_schema(image):
    with OpenAIServer() as server:
        result = ask(server, questions_request(image), temperature=0.3)
    assert result.ok and result.attempts == 1 and isinstance(result.answer, YesNoAnswers)
    body = server.requests[0]
    assert body["model"] == "scripted-vlm" and body["temperature"] == 0.3
    (url,) = image_urls(body)
    assert url.startswith("data:image/png;base64,")
    png = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert png.format == "PNG" and min(png.size) >= 224  # a 32 px scene enlarged for the vision encoder
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "YesNoAnswers" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == ["answers"] and schema["additionalProperties"] is False
    assert '"default"' not in json.dumps(schema)
    system, user = body["messages"][0], body["messages"][1]
    assert system["role"] == "system" and "yes" in system["content"]
    assert "1. Is there a red circle?" in "".join(p.get("text", "") for p in user["content"])


# --- concurrency ------------------------------------------------------------------------------


def test_concurrency_never_exceeds_the_bound(image):
    with OpenAIServer(slow(0.1)) as server:
        results = OpenAIBackend(agent(server, max_concurrency=3), "judge").ask_many([questions_request(image)] * 24)
    assert all(r.ok for r in results) and len(server.requests) == 24
    assert server.max_in_flight == 3


def test_a_high_bound_is_reached(image):
    # Requests must go out faster than the server answers: nothing in the client (connection
    # pool, thread pool, per-call overhead) may hold the requests in flight below the bound.
    with OpenAIServer(slow(0.5)) as server:
        results = OpenAIBackend(agent(server, max_concurrency=32), "judge").ask_many([questions_request(image)] * 32)
    assert all(r.ok for r in results) and len(server.requests) == 32
    assert server.max_in_flight == 32


def test_roles_sharing_an_endpoint_share_its_bound(image):
    with OpenAIServer(slow(0.1)) as server:
        judge = OpenAIBackend(agent(server, max_concurrency=2), "judge")
        critic = OpenAIBackend(agent(server, max_concurrency=2), "critic")
        threads = [threading.Thread(target=b.ask_many, args=([questions_request(image)] * 8,)) for b in (judge, critic)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(server.requests) == 16 and server.max_in_flight == 2


# --- invalid answers are re-asked, then recorded ----------------------------------------------


def test_invalid_answers_are_reasked_with_the_validation_error(image):
    with OpenAIServer(sequence(invalid_json, schema_violation, correct)) as server:
        result = ask(server, questions_request(image), max_reasks=2)
    assert result.ok and result.attempts == 3 and len(server.requests) == 3
    assert "Invalid JSON" in result.errors[0] and "answers" in result.errors[1]
    second = server.requests[1]["messages"]
    assert second[-2] == {"role": "assistant", "content": '{"answers": [yes, no'}
    assert second[-1]["role"] == "user" and "could not be used" in second[-1]["content"] and "Invalid JSON" in second[-1]["content"]
    third = server.requests[2]["messages"]
    assert "Extra inputs are not permitted" in third[-1]["content"] or "Field required" in third[-1]["content"]
    assert all(schema_name(b) == "YesNoAnswers" for b in server.requests)  # every re-ask keeps the schema


@pytest.mark.parametrize("script, raw", [(schema_violation, '{"verdict": "looks fine to me"}'), (empty, ""),
                                         (invalid_json, '{"answers": [yes, no')])
def test_reasks_stop_at_the_limit_and_the_failure_keeps_the_raw_text(image, script, raw):
    with OpenAIServer(script) as server:
        result = ask(server, questions_request(image), max_reasks=1)
    assert not result.ok and result.answer is None
    assert len(server.requests) == 2 and result.attempts == 2
    assert result.raw == raw and result.error


def test_answers_that_break_the_requests_rules_are_reasked(image):
    def one_answer_missing(body, n):
        return Reply(content=json.dumps({"answers": [{"id": 1, "answer": "yes"}]}))

    with OpenAIServer(sequence(one_answer_missing)) as server:
        result = ask(server, questions_request(image))
    assert result.ok and result.attempts == 2
    assert "have no answer" in server.requests[1]["messages"][-1]["content"]


def test_answers_cut_off_at_the_token_limit_are_reasked(image):
    def cut_off(body, n):
        return Reply(content='{"answers": [{"id": 1, "ans', finish_reason="length")

    with OpenAIServer(sequence(cut_off)) as server:
        result = ask(server, questions_request(image))
    assert result.ok and result.attempts == 2 and "cut off" in result.errors[0]


# --- transport errors are retried with back-off -----------------------------------------------


def test_server_errors_are_retried_then_succeed(image):
    with OpenAIServer(sequence(http500, http500)) as server:
        result = ask(server, questions_request(image), max_retries=2, retry_backoff_s=0.05)
    assert result.ok and result.retries == 2 and result.attempts == 1 and len(server.requests) == 3
    assert result.latency_s >= 0.05 + 0.1  # back-off 0.05 s, then 0.1 s


def test_persistent_server_errors_become_a_failed_result(image):
    with OpenAIServer(http500) as server:
        result = ask(server, questions_request(image), max_retries=3)
    assert not result.ok and len(server.requests) == 4 and "500" in result.error


def test_slow_answers_time_out_and_are_retried(image):
    with OpenAIServer(sequence(slow(1.0), then=correct)) as server:
        result = ask(server, questions_request(image), timeout_s=0.3, max_retries=1)
    assert result.ok and result.retries == 1 and len(server.requests) == 2


def not_a_completion(body, n):
    return Reply(body=json.dumps({"error": {"message": "model is loading"}}).encode())


def empty_choices(body, n):
    return Reply(body=json.dumps({"id": "x", "object": "chat.completion", "choices": []}).encode())


BROKEN_REPLIES = {"html page with 200": html_page, "text labelled json": not_json, "json cut by a proxy": truncated_json,
                  "connection closed mid-body": cut_connection, "connection closed, no reply": dropped,
                  "json that is no completion": not_a_completion, "no choices": empty_choices,
                  "429": http429, "500": http500}


@pytest.mark.parametrize("script", BROKEN_REPLIES.values(), ids=BROKEN_REPLIES.keys())
def test_broken_replies_are_retried_then_succeed(image, script):
    with OpenAIServer(sequence(script, script)) as server:
        result = ask(server, questions_request(image), max_retries=2)
    assert result.ok and result.retries == 2 and result.attempts == 1 and len(server.requests) == 3


@pytest.mark.parametrize("script", BROKEN_REPLIES.values(), ids=BROKEN_REPLIES.keys())
def test_broken_replies_become_a_failed_result_with_a_one_line_error(image, script, caplog):
    with OpenAIServer(script) as server:
        result = ask(server, questions_request(image), max_retries=1)
    assert not result.ok and result.answer is None and len(server.requests) == 2 and result.retries == 1
    assert result.error.startswith("gave up after 2 tries: ") and "\n" not in result.error and len(result.error) < 500


def test_a_reply_that_is_not_json_is_named_in_the_error(image):
    with OpenAIServer(html_page) as server:
        result = ask(server, questions_request(image), max_retries=0)
    assert "not JSON" in result.error and "text/html" in result.error and "Bad Gateway" in result.error
    with OpenAIServer(truncated_json) as server:
        result = ask(server, questions_request(image), max_retries=0)
    assert "not JSON" in result.error
    with OpenAIServer(not_a_completion) as server:
        result = ask(server, questions_request(image), max_retries=0)
    assert "model is loading" in result.error


@pytest.mark.parametrize("unsized", [False, True], ids=["content-length", "read until close"])
def test_a_reply_over_the_size_bound_is_not_read(image, monkeypatch, unsized):
    monkeypatch.setattr(openai_backend, "MAX_REPLY_BYTES", 100_000)

    def right_but_unsized(body, n):
        return Reply(body=completion(body, n, right_answer(body)), unsized=unsized)

    with OpenAIServer(right_but_unsized) as server:  # under the bound, however it is sent: read
        assert ask(server, questions_request(image)).ok
    with OpenAIServer(lambda body, n: Reply(body=b"x" * 200_000, unsized=unsized)) as server:
        result = ask(server, questions_request(image), max_retries=0)
    assert not result.ok and "over 100,000 bytes" in result.error


def test_a_small_compressed_reply_that_inflates_past_the_bound_is_not_read(image, monkeypatch):
    monkeypatch.setattr(openai_backend, "MAX_REPLY_BYTES", 100_000)
    bomb = gzip.compress(b"x" * 1_000_000)
    assert len(bomb) < 100_000
    with OpenAIServer(lambda body, n: Reply(body=bomb, encoding="gzip")) as server:
        result = ask(server, questions_request(image), max_retries=0)
    assert not result.ok and "over 100,000 bytes" in result.error


def test_an_endpoint_that_refuses_us_stops_the_rest_of_the_batch(image):
    def first_refused(body, n):
        return Reply(status=404) if n == 0 else slow(0.4)(body, n)

    with OpenAIServer(first_refused) as server:
        backend = OpenAIBackend(agent(server, max_concurrency=2), "judge")
        with pytest.raises(AgentEndpointError, match="404"):
            backend.ask_many([questions_request(image)] * 8)
        time.sleep(1.0)  # two more rounds of requests, had the batch gone on
    assert len(server.requests) <= 2


@pytest.mark.parametrize("model, sent", [("gpt-5-mini", False), ("openai/gpt-5", False), ("gpt-5-chat-latest", True),
                                         ("Qwen/Qwen2.5-VL-7B-Instruct", True)])
def test_temperature_is_left_out_only_for_models_that_refuse_it(image, model, sent):
    with OpenAIServer() as server:
        assert ask(server, questions_request(image), model=model).ok
    assert ("temperature" in server.requests[0]) is sent


def test_openai_organization_and_project_come_from_the_environment(image, monkeypatch):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-atelier")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-atelier")
    with OpenAIServer() as server:
        assert ask(server, questions_request(image)).ok
    assert server.headers[0]["openai-organization"] == "org-atelier" and server.headers[0]["openai-project"] == "proj-atelier"


class RawServer:
    """A TCP server on 127.0.0.1 that reads one HTTP request per connection and answers with
    `reply` as raw bytes (whatever they are), then waits `stall` seconds and closes."""

    def __init__(self, reply: bytes, stall: float = 0.0):
        self.reply, self.stall, self.requests = reply, stall, 0
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = self.request.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, body = data.split(b"\r\n\r\n", 1)
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                while len(body) < length:
                    body += self.request.recv(65536)
                outer.requests += 1
                self.request.sendall(outer.reply)
                time.sleep(outer.stall)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()


RAW_REPLIES = {
    "not http at all": (b"SSH-2.0-OpenSSH_9.6\r\n", 0.0),
    "content-length that is no number": (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}", 0.0),
    "headers, then silence": (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", 3.0),
}


@pytest.mark.parametrize("reply, stall", RAW_REPLIES.values(), ids=RAW_REPLIES.keys())
def test_replies_below_the_protocol_are_retried_then_a_failed_result(image, reply, stall):
    with RawServer(reply, stall) as server:
        cfg = AgentConfig(backend="openai", base_url=server.url, model="m", max_retries=1, retry_backoff_s=0.01, timeout_s=0.5)
        result = OpenAIBackend(cfg, "judge").ask(questions_request(image))
    assert not result.ok and result.retries == 1 and server.requests == 2
    assert result.error.startswith("gave up after 2 tries: ") and "\n" not in result.error


def test_a_redirect_is_not_followed_and_names_where_it_points(image):
    reply = b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere.invalid/v1/chat/completions\r\nContent-Length: 0\r\n\r\n"
    with RawServer(reply) as server, pytest.raises(AgentEndpointError, match="307.*elsewhere.invalid.*not followed"):
        OpenAIBackend(AgentConfig(backend="openai", base_url=server.url, model="m"), "judge").ask(questions_request(image))
    assert server.requests == 1


def test_a_planner_behind_a_broken_endpoint_falls_back_when_the_config_says_so(tmp_path):
    with OpenAIServer(not_json) as server:
        spec = plan("get left and right right", agent(server, max_retries=1, fallback="builtin"), tmp_path)
    record = json.loads((tmp_path / "planner.json").read_text())
    assert not record["ok"] and record["fallback"] == "builtin" and "not JSON" in record["error"]
    assert spec.metric == "relation_accuracy_cond"


def test_unreachable_endpoint_is_a_failed_result_not_a_crash(image):
    with OpenAIServer() as server:
        url = server.url
    result = OpenAIBackend(AgentConfig(backend="openai", base_url=url, model="m", max_retries=1, retry_backoff_s=0.01), "judge").ask(
        questions_request(image))
    assert not result.ok and "gave up after 2 tries" in result.error


def test_an_endpoint_that_refuses_the_model_is_a_config_error(image):
    with OpenAIServer(lambda body, n: Reply(status=404)) as server, pytest.raises(AgentEndpointError, match="404"):
        ask(server, questions_request(image))


# --- the judge in the loop --------------------------------------------------------------------


def test_judge_rows_fills_the_loops_rows_and_records_failures(tmp_path):
    prompts = [PROMPT, "a green triangle above a yellow square", "two red circles"]
    rows = []
    for i, prompt in enumerate(prompts):
        path = tmp_path / f"p{i}.png"
        render(parse(prompt), seed=i).save(path)
        rows.append({"file": str(path), "prompt": prompt, "prompt_index": i, "seed": i})
    failing = image_urls_of(rows[1]["file"])

    def script(body, n):
        return schema_violation(body, n) if image_urls(body)[0] == failing else correct(body, n)

    with OpenAIServer(script) as server:
        judged = judge_rows(agent(server, max_reasks=1), rows)
    assert len(judged) == 3 and [j["prompt_index"] for j in judged] == [0, 1, 2]
    ok, failed, counted = judged
    assert failed["judge_failed"] and failed["judge_raw"] == '{"verdict": "looks fine to me"}' and failed["judge_error"]
    assert failed["failed"] and failed["failure"] == {"role": "judge", "error": failed["judge_error"], "raw": failed["judge_raw"]}
    assert not ok["failed"] and ok["failure"] is None
    assert not failed["ipr_correct"] and failed["relation_ok"] is False and failed["detections"] == []
    assert not ok["judge_failed"] and ok["judge"]["ccsr_score"] is not None and ok["detections"] == []
    assert counted["count_ok"] and counted["relation_ok"] is None and counted["ipr_correct"]
    # IPR copes with judgments that have no detections: correct samples stay, wrong ones are dropped.
    training = ipr_rows(judged, relabel_weight=0.5, correct_weight=1.0, do_relabel=True, relabel=relabel_judgment)
    assert {r["file"] for r in training} == {j["file"] for j in judged if j["ipr_correct"]}


def image_urls_of(path) -> str:
    from atelier.agents.images import png_data_url

    return png_data_url(path)


def test_judge_rows_keeps_the_builtin_path():
    assert judge_rows("builtin", []) == [] and judge_rows(AgentConfig(), []) == []


# --- two roles, two servers; the API key stays secret -----------------------------------------


def test_two_roles_reach_two_servers_with_the_key_from_the_environment(tmp_path, monkeypatch, caplog, image):
    key = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("ATELIER_TEST_KEY", key)
    caplog.set_level(logging.DEBUG)
    with OpenAIServer(sequence(invalid_json)) as planner_server, OpenAIServer(sequence(http500)) as writer_server:
        planner = agent(planner_server, api_key_env="ATELIER_TEST_KEY")
        writer = agent(writer_server, api_key_env="ATELIER_TEST_KEY", max_concurrency=4)
        spec = plan("get left and right right", planner, tmp_path / "agents")
        batch = write_prompts_with_agent(writer, spec, 20, seed=1, record_dir=tmp_path / "round_001" / "agents")
    assert set(planner_server.schemas()) == {"TargetSpec"}
    assert set(writer_server.schemas()) == {"WrittenPrompts"} and len(writer_server.requests) == 3  # 16 + 4, one retried
    assert spec.relations == ["left of", "right of"] and len(batch.prompts) == 20 and batch.filled_by_builtin == 0
    for server in (planner_server, writer_server):
        assert all(h.get("authorization") == f"Bearer {key}" for h in server.headers)
    records = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert records and not any(key.encode() in r for r in records)
    assert key not in caplog.text and "Bearer" not in caplog.text


def test_a_missing_key_variable_is_named_without_a_value(monkeypatch):
    monkeypatch.delenv("ATELIER_ABSENT_KEY", raising=False)
    cfg = AgentConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m", api_key_env="ATELIER_ABSENT_KEY")
    with pytest.raises(ConfigError, match="ATELIER_ABSENT_KEY is not set"):
        OpenAIBackend(cfg, "judge")


def test_a_key_echoed_by_the_server_is_redacted(monkeypatch, image):
    key = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("ATELIER_TEST_KEY", key)
    with OpenAIServer(lambda body, n: Reply(content=f"my key is {key}")) as server:
        result = ask(server, questions_request(image), api_key_env="ATELIER_TEST_KEY", max_reasks=0)
    assert not result.ok and key not in json.dumps(result.record()) and "[redacted]" in result.raw


def test_the_planner_plans_once_per_run(tmp_path):
    with OpenAIServer() as server:
        first = plan("get left and right right", agent(server), tmp_path)
        again = plan("get left and right right", agent(server), tmp_path)
    assert first == again and len(server.requests) == 1
    record = json.loads((tmp_path / "planner.json").read_text())
    assert record["ok"] and record["fallback"] is None and record["raw"]


def test_a_planner_that_never_validates_falls_back_to_the_builtin_plan_when_asked_to(tmp_path):
    with OpenAIServer(schema_violation) as server:
        spec = plan("get left and right right", agent(server, max_reasks=1, fallback="builtin"), tmp_path)
    record = json.loads((tmp_path / "planner.json").read_text())
    assert not record["ok"] and record["fallback"] == "builtin" and record["raw"] == '{"verdict": "looks fine to me"}'
    assert spec.metric == "relation_accuracy_cond" and len(server.requests) == 2


def test_a_planner_without_a_fallback_pauses_the_run_naming_its_endpoint(tmp_path):
    # agents.planner.fallback defaults to 'none': a broken planner is never silently replaced.
    for helper in (lambda cfg: plan("get left and right right", cfg, tmp_path),
                   lambda cfg: plan_with_agent(cfg, ShapesPlanRequest(goal="get left and right right"), tmp_path, fallback=None)):
        with OpenAIServer(schema_violation) as server, pytest.raises(RunPaused) as paused:
            helper(agent(server, max_reasks=0))
        assert server.url in str(paused.value) and "no valid plan" in str(paused.value) and "\n" not in str(paused.value)
    assert not (tmp_path / "planner.json").exists()

