"""One process drives a run at a time, and a signal stops it cleanly.

A real run of the tiny config is held in a node (a wrapper around the CLI makes that node
wait), so that a second process meets it alive: `atelier resume` and `atelier run --run-id
SAME` are refused in one line naming the first process (exit 2). Then the first is stopped:
SIGKILL (the kernel drops its flock: no stale lock), SIGTERM (exit 143) or SIGINT (exit 130),
the last two with status.json saying 'stopped', why, and how to resume. A resume then finishes
the run.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from atelier.runs import get_status
from loop_helpers import TINY, atelier, write_config

# The CLI, with one node held: it records that it runs (status.json) and then waits.
HELD = """
import sys, time
import atelier.graphs.nodes as nodes
from atelier.cli import main

hold, seconds = sys.argv[1], float(sys.argv[2])
record = nodes.set_status

def set_status(run_dir, **fields):
    record(run_dir, **fields)
    if fields.get("node") == hold:
        time.sleep(seconds)

nodes.set_status = set_status
sys.exit(main(sys.argv[3:]))
"""


def _start_held(tmp_path, cfg, hold, seconds):
    script = tmp_path / "held_cli.py"
    script.write_text(HELD)
    # A test runner started in the background may have SIGINT ignored; a user's shell has not.
    proc = subprocess.Popen([sys.executable, str(script), hold, str(seconds), "run", str(cfg), "--run-id", "r"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    status = tmp_path / "runs" / "r" / "status.json"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            s = json.loads(status.read_text())
        except (OSError, ValueError):
            s = {}
        if s.get("state") == "running" and s.get("node") == hold:
            return proc
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the run never reached {hold}")


def _one_line(stderr: str) -> str:
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    return stderr.strip()


@pytest.fixture
def cfg(tmp_path):
    return write_config(tmp_path, budget={**TINY["budget"], "rounds": 1, "patience": 1})


def test_second_process_is_refused_and_a_killed_run_leaves_no_lock(tmp_path, cfg):
    first = _start_held(tmp_path, cfg, "write_prompts", 120)
    runs = str(tmp_path / "runs")
    try:
        for argv in (["resume", "r", "--run-dir", runs], ["run", str(cfg), "--run-id", "r"]):
            second = atelier(*argv)
            assert second.returncode == 2, second.stderr[-2000:]
            line = _one_line(second.stderr)
            assert line.startswith("atelier: error: run r is in use by process ") and f"process {first.pid} " in line, line
        status = get_status(tmp_path / "runs" / "r")
        assert status["state"] == "running" and status["node"] == "write_prompts"  # the refusals changed nothing
    finally:
        first.kill()
        first.communicate()
    assert first.returncode == -signal.SIGKILL
    assert get_status(tmp_path / "runs" / "r")["state"] == "failed"  # its lock went with it
    resumed = atelier("resume", "r", "--run-dir", runs)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert get_status(tmp_path / "runs" / "r")["state"] == "finished"


# SIGTERM arrives while the held node runs on the main thread; SIGINT while it runs on a
# LangGraph worker thread (a fanned-out generate batch), which finishes its node first.
@pytest.mark.parametrize("sig, hold, seconds, code", [(signal.SIGTERM, "write_prompts", 120, 143),
                                                       (signal.SIGINT, "generate batch 1", 3, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_run_cleanly_and_resume_finishes_it(tmp_path, cfg, sig, hold, seconds, code):
    first = _start_held(tmp_path, cfg, hold, seconds)
    first.send_signal(sig)
    try:
        _, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr, stderr
    name = signal.Signals(sig).name
    assert stderr.splitlines()[-1] == f"atelier: stopped by {name}; `atelier resume r` continues run r"
    run_dir = tmp_path / "runs" / "r"
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "stopped" and status["error"] is None, status
    assert status["reason"] == f"stopped by {name} in {hold}; `atelier resume r` continues it"
    shown = atelier("status", "r", "--run-dir", str(run_dir.parent))
    assert "run r: stopped" in shown.stdout and f"stopped: stopped by {name}" in shown.stdout
    resumed = atelier("resume", "r", "--run-dir", str(run_dir.parent))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert (run_dir / "report" / "report.json").exists()
