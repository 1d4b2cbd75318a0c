"""`atelier serve vlm MODEL`: a local vLLM server set up for judging images, as a child process.

The flags suit agents that look at one or two images per request and answer in JSON: at most
two images and no video per prompt (the pair rubric shows two), and a model length that fits a
few images and a long answer without reserving memory for 128k tokens. The child runs in its own
process group: Ctrl-C (or SIGTERM) here is forwarded to it and to its workers, and it is stopped
on the way out whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def find_vllm() -> str | None:
    """The `vllm` executable: on PATH, or next to this Python (a venv that is not activated)."""
    found = shutil.which("vllm")
    if found:
        return found
    beside = Path(sys.executable).parent / "vllm"
    return str(beside) if beside.exists() else None


# vLLM takes 90% of the GPU by default; atelier's generator, detector, CLIP scorer and LoRA
# trainer share the card with it (README, "Run it on your model": what fits on 24 and 80 GB).
DEFAULT_GPU_MEMORY_UTILIZATION = 0.4


def vllm_command(executable: str, model: str, host: str, port: int, max_model_len: int, max_images: int,
                 extra: list[str], gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION) -> list[str]:
    return [
        executable, "serve", model, "--host", host, "--port", str(port),
        "--max-model-len", str(max_model_len),
        "--gpu-memory-utilization", str(gpu_memory_utilization),
        "--limit-mm-per-prompt", json.dumps({"image": max_images, "video": 0}),
        *extra,
    ]


def models_ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
            return response.status == 200 and bool(json.load(response).get("data"))
    except (urllib.error.URLError, OSError, ValueError):
        return False


def stop(child: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGINT to the child's group (vLLM shuts down cleanly on it), then SIGTERM, then SIGKILL."""
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if child.poll() is not None:
            return
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue


def serve(executable: str, model: str, host: str = "127.0.0.1", port: int = 8000, max_model_len: int = 8192,
          max_images: int = 2, extra: list[str] | None = None, ready_timeout_s: float = 1800.0,
          gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION) -> int:
    command = vllm_command(executable, model, host, port, max_model_len, max_images, extra or [], gpu_memory_utilization)
    base_url = f"http://{host}:{port}/v1"
    print("starting: " + " ".join(command), flush=True)
    child = subprocess.Popen(command, start_new_session=True)
    # `kill` or a supervisor's SIGTERM must stop the child too, exactly as Ctrl-C does. SIGINT is
    # set explicitly: a process started in the background by a non-interactive shell inherits it
    # ignored, and Ctrl-C (or a test's SIGINT) would then leave vLLM running.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not models_ready(base_url):
            if child.poll() is not None:
                print(f"atelier: error: vllm exited with code {child.returncode} before serving", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print(f"atelier: error: {base_url}/models not ready after {ready_timeout_s:.0f} s; stopping vllm", file=sys.stderr)
                return 1
            time.sleep(1.0)
        print(f"serving {model} at {base_url} (base_url for the agents config); Ctrl-C stops it", flush=True)
        return child.wait()
    except KeyboardInterrupt:
        print("stopping vllm ...", flush=True)
        stop(child)
        print("vllm stopped", flush=True)
        return 0
    finally:
        stop(child)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
