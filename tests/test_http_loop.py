"""The agents' event loop (atelier.agents.http_loop): synchronous callers wait on it from any
thread, it refuses to wait on itself, and Ctrl-C while waiting abandons the requests not yet sent
instead of letting them run on behind the caller's back."""

import asyncio
import multiprocessing
import signal
import ssl
import threading
import time

import pytest

from atelier.agents import http_loop
from atelier.agents.judge import QuestionsJudgeRequest
from atelier.agents.openai_backend import OpenAIBackend
from atelier.config import AgentConfig
from atelier.worlds.shapes.questions import shapes_questions
from atelier.worlds.shapes.render import render
from atelier.worlds.shapes.scene import parse
from openai_server import OpenAIServer, slow

PROMPT = "a red circle to the left of a blue square"


def test_results_and_exceptions_come_back_to_the_calling_thread():
    async def double(x):
        await asyncio.sleep(0)
        return 2 * x

    async def fail():
        raise ValueError("from the loop")

    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(http_loop.run(double(i)))) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="from the loop"):
        http_loop.run(fail())


def test_waiting_on_the_loop_from_inside_it_is_refused():
    async def inner():
        return 1

    async def outer():
        return http_loop.run(inner())

    with pytest.raises(RuntimeError, match="inside the agents' event loop"):
        http_loop.run(outer())


def test_ctrl_c_while_waiting_abandons_the_requests_not_yet_sent(tmp_path):
    image = tmp_path / "scene.png"
    render(parse(PROMPT), seed=1).save(image)
    questions, probes = shapes_questions(parse(PROMPT))
    requests = [QuestionsJudgeRequest(image=image, prompt=PROMPT, questions=questions, probes=probes)] * 8

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with OpenAIServer(slow(0.6)) as server:
            backend = OpenAIBackend(AgentConfig(backend="openai", base_url=server.url, model="m", max_concurrency=2), "judge")
            signal.setitimer(signal.ITIMER_REAL, 0.3)  # while the first two requests are in flight
            with pytest.raises(KeyboardInterrupt):
                backend.ask_many(requests)
            time.sleep(1.5)  # long enough for two more rounds of requests, had they gone on
            sent = len(server.requests)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert sent == 2


def test_proxies_come_from_the_environment_and_no_proxy_is_honoured(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://secure-proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,.internal")
    for name in ("http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert http_loop.proxy_for("http://api.example/v1/chat/completions") == "http://proxy.example:3128"
    assert http_loop.proxy_for("https://api.example/v1/chat/completions") == "http://secure-proxy.example:3128"
    assert http_loop.proxy_for("http://127.0.0.1:8000/v1/chat/completions") is None
    assert http_loop.proxy_for("http://vlm.internal:8000/v1/chat/completions") is None
    backend = OpenAIBackend(AgentConfig(backend="openai", base_url="http://api.example/v1", model="m"), "judge")
    assert backend._proxy == "http://proxy.example:3128"


def test_a_forked_child_asks_on_a_loop_of_its_own_and_the_parent_keeps_its_connections(tmp_path):
    image = tmp_path / "scene.png"
    render(parse(PROMPT), seed=1).save(image)
    questions, probes = shapes_questions(parse(PROMPT))
    request = QuestionsJudgeRequest(image=image, prompt=PROMPT, questions=questions, probes=probes)
    with OpenAIServer() as server:
        backend = OpenAIBackend(AgentConfig(backend="openai", base_url=server.url, model="m", timeout_s=5, max_retries=0),
                                "judge")
        assert backend.ask(request).ok  # the parent's loop and a kept-alive connection
        child = multiprocessing.get_context("fork").Process(target=_ask_and_exit, args=(backend, request))
        child.start()
        child.join(timeout=30)
        assert child.exitcode == 0
        again = backend.ask(request)  # on the parent's connection, which the child must not have closed
    assert again.ok and again.retries == 0 and again.latency_s < 2 and len(server.requests) == 3


def _ask_and_exit(backend, request):
    import gc

    result = backend.ask(request)
    gc.collect()  # the parent's loop and session, inherited: collected, they would close its sockets
    raise SystemExit(0 if result.ok else 1)


def test_a_call_after_the_loop_was_stopped_starts_a_new_one():
    async def one():
        return 1

    assert http_loop.run(one()) == 1
    thread = http_loop._thread
    http_loop._close()  # what the interpreter does at exit
    thread.join(timeout=5)
    assert not thread.is_alive()
    results = []  # asked from a thread of its own, so that a call waiting on the stopped loop fails here, not hangs
    caller = threading.Thread(target=lambda: results.append(http_loop.run(one())), daemon=True)
    caller.start()
    caller.join(timeout=5)
    assert results == [1]


def test_https_endpoints_verify_against_certifi_where_the_system_store_is_empty(monkeypatch, tmp_path):
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))  # OpenSSL's default paths, pointed at nothing
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "none"))
    assert ssl.create_default_context().cert_store_stats()["x509_ca"] == 0
    context = http_loop.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 50
