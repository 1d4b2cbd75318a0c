"""The `grpo` strategy through the CLI on tiny SD 1.5 (epsilon prediction, VAE latents) with the
open-vocabulary judge: every agent role, the judge included, on a real HTTP server speaking the
OpenAI protocol; the reward comes from the judgments that server's answers make."""

from __future__ import annotations

import json

import pytest
import yaml

from loop_helpers import atelier
from openai_server import OpenAIServer, open_vocab

ROLES = ("planner", "prompt_writer", "judge", "critic", "edit_writer")


@pytest.fixture(scope="module")
def models(tiny_sd15, tmp_path_factory) -> dict[str, str]:
    from tiny_vision_models import build_tiny_clip, build_tiny_owlv2

    root = tmp_path_factory.mktemp("grpo_open_vocab_models")
    return {"model": str(tiny_sd15), "owlv2": str(build_tiny_owlv2(root / "owlv2")),
            "clip": str(build_tiny_clip(root / "clip"))}


def test_grpo_on_tiny_sd15_with_a_model_judge(models, tmp_path):
    with OpenAIServer(open_vocab) as server:
        cfg = {
            "goal": "get left and right right for a dog and a cat", "world": "open_vocab", "model": models["model"],
            "strategy": "grpo", "seed": 4, "torch_threads": 1, "run_dir": str(tmp_path / "runs"),
            "vocabulary": {"classes": ["dog", "cat"]},
            "detector": {"model": models["owlv2"], "score_threshold": 0.05}, "clip": {"model": models["clip"]},
            "budget": {"rounds": 1, "patience": 1, "prompts_per_round": 2, "images_per_prompt": 1, "heldout_prompts": 2,
                       "images_per_heldout_prompt": 2, "batch_prompts": 2},
            "train": {"learning_rate": 1e-3, "lora_rank": 4},
            "generation": {"steps": 3, "guidance_scale": 5.0, "batch_size": 8, "dtype": "float32"},
            "grpo": {"iterations": 2, "prompts_per_iteration": 2, "group_size": 2, "sampler_steps": 3, "train_steps": 2},
            "decide": {"noise_sigmas": 0.0, "max_drop": {}},
            "agents": {role: {"backend": "openai", "base_url": server.url, "model": "scripted-vlm", "max_retries": 0,
                              "retry_backoff_s": 0.0} for role in ROLES},
        }
        path = tmp_path / "grpo.yaml"
        path.write_text(yaml.safe_dump(cfg))
        done = atelier("run", str(path), "--run-id", "r")
        schemas = server.schemas()
    assert done.returncode == 0, done.stderr[-3000:]
    rd = tmp_path / "runs" / "r" / "round_001"
    stats = [json.loads(line) for line in (rd / "grpo_iterations.jsonl").read_text().splitlines()]
    assert [s["iteration"] for s in stats] == [0, 1] and all(s["n_samples"] == 4 for s in stats)
    # The policy's images were judged by the model judge: its yes/no answers are in the judgments.
    judged = [json.loads(line) for line in (rd / "grpo" / "iter_0000" / "judgments.jsonl").read_text().splitlines()]
    assert len(judged) == 4 and all(j["question_score"] is not None for j in judged)
    assert "YesNoAnswers" in schemas
    stories = [json.loads(line) for line in (rd / "stories.jsonl").read_text().splitlines()]
    assert len(stories) == 8 and all(s["reward"] is not None for s in stories)
    assert (rd / "adapter" / "pytorch_lora_weights.safetensors").is_file()
    assert json.loads((rd / "eval" / "metrics.json").read_text())["n_images"] == 4
