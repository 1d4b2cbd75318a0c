"""Retries honour the server's Retry-After: a real HTTP server (tests/openai_server.py) answers
429 with `Retry-After: 1` (or an HTTP date), and the openai backend waits at least that long
before it asks again, however short its own back-off."""

import email.utils
import time

import pytest

from atelier.agents.openai_backend import MAX_RETRY_AFTER_S, OpenAIBackend, StatusError, retry_after_s
from atelier.agents.judge import QuestionsJudgeRequest
from atelier.config import AgentConfig
from atelier.worlds.shapes.questions import shapes_questions
from atelier.worlds.shapes.render import render
from atelier.worlds.shapes.scene import parse
from openai_server import OpenAIServer, correct, http429, sequence

PROMPT = "a red circle to the left of a blue square"


class RetryAfterServer(OpenAIServer):
    """The scripted server, with a Retry-After header on every 429 it sends."""

    def __init__(self, script, retry_after: str):
        self.retry_after = retry_after
        self.times: list[float] = []
        super().__init__(script)

    def _handler(self):
        server, base = self, super()._handler()

        class Handler(base):
            def do_POST(self):
                server.times.append(time.monotonic())
                super().do_POST()

            def send_response(self, code, message=None):
                super().send_response(code, message)
                if code == 429:
                    self.send_header("Retry-After", server.retry_after)

        return Handler


def _ask(server, tmp_path, **fields):
    image = tmp_path / "scene.png"
    render(parse(PROMPT), seed=1).save(image)
    questions, probes = shapes_questions(parse(PROMPT))
    config = AgentConfig(**{"backend": "openai", "base_url": server.url, "model": "scripted-vlm", "timeout_s": 5.0,
                            "max_retries": 2, "retry_backoff_s": 0.01} | fields)
    return OpenAIBackend(config, "judge").ask(QuestionsJudgeRequest(image=image, prompt=PROMPT, questions=questions,
                                                                     probes=probes))


def test_a_429_with_retry_after_1_is_retried_after_at_least_a_second(tmp_path):
    with RetryAfterServer(sequence(http429, then=correct), "1") as server:
        result = _ask(server, tmp_path)
    assert result.ok and result.retries == 1 and len(server.times) == 2
    assert server.times[1] - server.times[0] >= 1.0  # the back-off alone would be ~0.01 s


def test_retry_after_as_an_http_date_is_honoured(tmp_path):
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1 to 2 s from now
    with RetryAfterServer(sequence(http429, then=correct), when) as server:
        result = _ask(server, tmp_path)
    assert result.ok and result.retries == 1
    assert server.times[1] - server.times[0] >= 0.9


def test_a_server_that_keeps_refusing_is_a_failed_result_after_max_retries(tmp_path):
    with RetryAfterServer(http429, "1") as server:
        result = _ask(server, tmp_path, max_retries=1)
    assert not result.ok and result.retries == 1 and len(server.times) == 2
    assert "gave up after 2 tries" in result.error and "429" in result.error
    assert server.times[1] - server.times[0] >= 1.0


def _status_error(headers: dict) -> StatusError:
    return StatusError(429, "Too Many Requests", "slow down", headers)


@pytest.mark.parametrize("headers, wait", [({"retry-after": "3"}, 3.0), ({"retry-after-ms": "250"}, 0.25),
                                           ({"retry-after": "soon"}, 0.0), ({}, 0.0),
                                           ({"retry-after": "86400"}, MAX_RETRY_AFTER_S), ({"retry-after": "-5"}, 0.0)])
def test_retry_after_header_values(headers, wait):
    assert retry_after_s(_status_error(headers)) == pytest.approx(wait)


def test_errors_without_a_response_ask_for_no_wait():
    assert retry_after_s(ValueError("no response")) == 0.0 and retry_after_s(None) == 0.0
