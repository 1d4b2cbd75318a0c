"""`atelier agents check` against a scripted OpenAI-protocol server, and `atelier serve vlm` with
and without a `vllm` executable (a stand-in that serves /v1/models and records how it was
started and stopped)."""

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid


from loop_helpers import atelier, write_config
from openai_server import OpenAIServer, correct, schema_name, schema_violation

ROLES = ("planner", "prompt_writer", "judge", "critic", "edit_writer")


def openai_agents(url: str, **fields) -> dict:
    return {role: {"backend": "openai", "base_url": url, "model": "scripted-vlm", "retry_backoff_s": 0.01, "max_retries": 1,
                   "max_reasks": 1, **fields} for role in ROLES}


def test_agents_check_calls_every_role_once(tmp_path):
    key = f"sk-test-{uuid.uuid4().hex}"
    with OpenAIServer() as server:
        cfg = write_config(tmp_path, agents=openai_agents(server.url, api_key_env="ATELIER_TEST_KEY"))
        done = atelier("agents", "check", str(cfg), env={"ATELIER_TEST_KEY": key})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(ROLES)
    assert all(line.rstrip().endswith("valid") and " ms " in line for line in lines)
    assert sorted(server.schemas()) == sorted(["TargetSpec", "WrittenPrompts", "YesNoAnswers", "Critique", "EditInstructions"])
    assert key not in done.stdout + done.stderr


def test_agents_check_reports_an_invalid_role_and_exits_1(tmp_path):
    def critic_fails(body, n):
        return schema_violation(body, n) if schema_name(body) == "Critique" else correct(body, n)

    with OpenAIServer(critic_fails) as server:
        agents = openai_agents(server.url)
        agents["planner"] = {"backend": "builtin"}
        done = atelier("agents", "check", str(write_config(tmp_path, agents=agents)))
    assert done.returncode == 1
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert "offline rules" in lines["planner"] and lines["planner"].rstrip().endswith("valid")
    assert "INVALID after 2 answer(s)" in lines["critic"] and lines["judge"].rstrip().endswith("valid")


def test_agents_check_says_when_an_endpoint_gave_no_answer_at_all(tmp_path):
    with OpenAIServer() as server:
        url = server.url  # closed on leaving: nothing listens there any more
    agents = {role: {"backend": "builtin"} for role in ROLES}
    agents["judge"] = {"backend": "openai", "base_url": url, "model": "m", "max_retries": 1, "retry_backoff_s": 0.01}
    done = atelier("agents", "check", str(write_config(tmp_path, agents=agents)))
    assert done.returncode == 1
    judge = next(line for line in done.stdout.splitlines() if line.startswith("judge"))
    assert "NO ANSWER: gave up after 2 tries" in judge and "INVALID" not in judge


def test_serve_vlm_without_vllm_says_so_in_one_line():
    done = atelier("serve", "vlm", "Qwen/Qwen2.5-VL-3B-Instruct", env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert "vLLM is not installed" in done.stderr and done.stderr.strip().count("\n") == 0


FAKE_VLLM = """\
    #!{python}
    import http.server, json, os, signal, sys
    args = sys.argv[1:]
    log = os.environ["FAKE_VLLM_LOG"]
    with open(log, "w") as f:
        json.dump({{"argv": args, "pid": os.getpid()}}, f)
    if os.environ.get("FAKE_VLLM_FAIL"):
        sys.exit(3)

    class Models(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({{"object": "list", "data": [{{"id": args[1]}}]}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    def stop(signum, frame):
        with open(log + ".stopped", "w") as f:
            f.write(str(signum))
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    http.server.HTTPServer(("127.0.0.1", int(args[args.index("--port") + 1])), Models).serve_forever()
"""


def fake_vllm(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "vllm"
    exe.write_text(textwrap.dedent(FAKE_VLLM.format(python=sys.executable)))
    exe.chmod(0o755)
    return bin_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_vlm_starts_waits_for_models_and_stops_cleanly(tmp_path):
    log = tmp_path / "vllm.json"
    env = {**os.environ, "PATH": f"{fake_vllm(tmp_path)}:{os.environ['PATH']}", "FAKE_VLLM_LOG": str(log)}
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "atelier.cli", "serve", "vlm", "org/tiny-vlm", "--port", str(port),
                             "--vllm-args=--trust-remote-code"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
        deadline, seen = time.time() + 60, []
        while not any("serving" in line for line in seen) and time.time() < deadline and proc.poll() is None:
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                pass
        assert any(f"serving org/tiny-vlm at http://127.0.0.1:{port}/v1" in line for line in seen), seen
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:  # a failed assertion must not leave the server running
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    started = json.loads(log.read_text())
    argv = started["argv"]
    assert argv[:2] == ["serve", "org/tiny-vlm"] and argv[argv.index("--port") + 1] == str(port)
    assert json.loads(argv[argv.index("--limit-mm-per-prompt") + 1]) == {"image": 2, "video": 0}
    assert argv[argv.index("--max-model-len") + 1] == "8192" and argv[-1] == "--trust-remote-code"
    # vLLM's own default takes 90% of the card; atelier leaves room for its generator and trainer.
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.4"
    assert (tmp_path / "vllm.json.stopped").read_text() == str(int(signal.SIGINT))
    try:
        os.kill(started["pid"], 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive


def test_serve_vlm_reports_a_vllm_that_dies_before_serving(tmp_path):
    env = {"PATH": f"{fake_vllm(tmp_path)}:{os.environ['PATH']}", "FAKE_VLLM_LOG": str(tmp_path / "log.json"), "FAKE_VLLM_FAIL": "1"}
    done = atelier("serve", "vlm", "org/tiny-vlm", "--port", str(free_port()), env=env)
    assert done.returncode == 1 and "exited with code 3 before serving" in done.stderr


def test_agents_check_on_an_open_vocabulary_config_asks_about_its_classes(tmp_path):
    """The open_vocab world's own sample: its planner mode, class-conditioned prompts about the
    configured classes, yes/no questions about them; no model is loaded for the check."""
    from openai_server import open_vocab, user_text

    with OpenAIServer(open_vocab) as server:
        cfg = write_config(tmp_path, goal="get left and right right for a dog and a cat", model="org/tiny-sd15",
                           world="open_vocab", vocabulary={"classes": ["dog", "cat"], "relations": ["left of", "right of"]},
                           agents=openai_agents(server.url))
        done = atelier("agents", "check", str(cfg))
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(line.rstrip().endswith("valid") for line in done.stdout.strip().splitlines())
    texts = [user_text(body) for body in server.requests]
    assert any("dog" in t and "cat" in t for t in texts)
    assert not any("red circle" in t or "green square" in t for t in texts)  # nothing of the shapes world
    # The same with builtin agents: the world's rules answer, offline.
    (tmp_path / "b").mkdir()
    builtin = write_config(tmp_path / "b", goal="get left and right right for a dog and a cat", model="org/tiny-sd15",
                           world="open_vocab", vocabulary={"classes": ["dog", "cat"], "relations": ["left of", "right of"]})
    done = atelier("agents", "check", str(builtin))
    assert done.returncode == 0 and len(done.stdout.strip().splitlines()) == 5, done.stdout + done.stderr
