"""A tiny loop config and a way to run the CLI in a subprocess, shared by the loop tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

TINY = {
    "goal": "get left and right right for two objects",
    "model": "shapes",
    "strategy": "ipr",
    "seed": 7,
    "torch_threads": 1,
    "budget": {"rounds": 2, "patience": 2, "prompts_per_round": 4, "images_per_prompt": 2, "heldout_prompts": 4,
               "images_per_heldout_prompt": 2, "batch_prompts": 2},
    "train": {"steps": 4, "batch_size": 4, "learning_rate": 1e-3, "lora_rank": 2},
    # The demo's gate: with 3 sampler steps (999, 666, 332) the adapter acts on the first two.
    # Candidates at a stronger guidance than the held-out images, as the demo does.
    # float32 pinned: "auto" would sample under bf16 on CPUs that have it, and the tests redraw in float32.
    "generation": {"steps": 3, "guidance_scale": 3.0, "candidate_guidance_scale": 5.0, "batch_size": 16, "dtype": "float32",
                   "adapter_min_timestep": 500},
    # Promote on any gain, so that the tiny run exercises promotion as well as rollback.
    "decide": {"noise_sigmas": 0.0, "max_object_drop": 1.0},
}


def write_config(tmp_path: Path, **overrides) -> Path:
    cfg = json.loads(json.dumps(TINY))
    cfg["run_dir"] = str(tmp_path / "runs")
    cfg.update(overrides)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def atelier(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "atelier.cli", *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=600)


def finished_run(tmp_path: Path, config: Path, run_id: str) -> Path:
    """`atelier run CONFIG --run-id ID` to its end (asserted, with stderr's tail on failure): the run folder."""
    done = atelier("run", str(config), "--run-id", run_id)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "runs" / run_id
