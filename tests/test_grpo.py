"""The `grpo` strategy: its reward per goal, its curate rows, a colour-preferring reward that
moves the shapes model, the strategy through the CLI on the shapes world (per-iteration log,
stories), a SIGKILL mid-training resumed to the same adapter, and bad settings as one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atelier.strategies.grpo import prompt_rows
from atelier.strategies.grpo_config import GRPOConfig
from atelier.strategies.grpo_reward import reward
from atelier.tools.lora import adapter_hash
from atelier.worlds.base import WorldPrompt
from loop_helpers import atelier, finished_run, write_config

# --- reward ----------------------------------------------------------------------------------


def _judgment(relation_ok, found, count_ok=True, relation="left of", failed=False):
    groups = [{"name": "red circle", "expected": 1, "found": found[0]}, {"name": "blue square", "expected": 1, "found": found[1]}]
    return {"relation": relation, "relation_ok": relation_ok, "groups": groups, "object_ok": all(f != 0 for f in found),
            "count_ok": count_ok, "ipr_correct": count_ok and relation_ok is not False, "failed": failed}


def test_spatial_reward_never_pays_for_dropping_objects():
    cfg = GRPOConfig(partial_credit=0.5)
    metric = "relation_accuracy_cond"
    assert reward(_judgment(True, (1, 1)), metric, cfg) == 1.0
    assert reward(_judgment(False, (1, 1)), metric, cfg) == 0.5  # both objects, wrong relation
    assert reward(_judgment(False, (1, 0)), metric, cfg) == 0.25  # one object missing
    assert reward(_judgment(False, (0, 0)), metric, cfg) == 0.0
    assert reward(_judgment(True, (1, 1), failed=True), metric, cfg) is None
    assert reward(_judgment(False, (1, 1)), metric, GRPOConfig(partial_credit=0.0)) == 0.0
    assert reward(_judgment(True, (2, 1), count_ok=False), metric, GRPOConfig(count_credit=0.25)) == 1.0
    assert reward(_judgment(True, (1, 1)), metric, GRPOConfig(count_credit=0.25)) == 1.25
    # Another goal, another reward: counts.
    assert reward(_judgment(True, (2, 1), count_ok=False), "count_accuracy", cfg) == 0.5
    with pytest.raises(ValueError, match="no grpo reward"):
        reward(_judgment(True, (1, 1)), "visor_2", cfg)


def test_curate_keeps_each_prompt_once_and_no_heldout():
    judgments = [{"prompt": "a", "file": "a0.png", "asked": {"objects": []}}, {"prompt": "a", "file": "a1.png"},
                 {"prompt": "b", "file": "b0.png", "failed": True}, {"prompt": "held", "file": "h.png"}]
    rows = prompt_rows(judgments, [WorldPrompt(text="held")])
    assert [(r["text"], r["file"]) for r in rows] == [("a", "a0.png"), ("b", "b0.png")]
    assert rows[0]["asked"] == {"objects": []} and "asked" not in rows[1]


# --- a reward that prefers red moves the shapes model ------------------------------------------


def _red_share(image: Image.Image) -> float:
    """The red channel's share of the image's total intensity."""
    a = np.asarray(image.convert("RGB"), dtype=np.float64)
    return float(a[..., 0].sum() / (a.sum() + 1e-9))


def test_a_red_preferring_reward_raises_red(tmp_path):
    """Colourless prompts leave the colour to the model; a few GRPO updates with red's share as
    the reward raise red's share in images of the world's own sampler (DPM-Solver++, not the
    training policy), paired on the same seeds, by more than twice the paired standard error."""
    from atelier.strategies.grpo_trainer import train_grpo
    from atelier.tools.diffusers_generator import load_adapter
    from atelier.tools.lora_training import LoraTrainingConfig
    from atelier.worlds.shapes.model import load_generator

    pipe = load_generator("shapes")
    prompts = ["a circle", "a square", "a triangle"]
    probe = [prompts[i % 3] for i in range(48)]
    seeds = list(range(1000, 1048))

    def shares():
        return np.array([_red_share(im) for im in pipe(probe, seeds=seeds, guidance_scale=3.0).images])

    before = shares()

    def judge(rows):
        return [{**r, "red": _red_share(Image.open(r["file"]))} for r in rows]

    cfg = GRPOConfig(iterations=4, prompts_per_iteration=3, group_size=4, sampler_steps=4, train_steps=3,
                     updates_per_iteration=4, kl_coef=0.0)
    summary = train_grpo(pipe, [{"text": p} for p in prompts], judge, lambda j: j["red"], tmp_path / "adapter",
                         tmp_path / "work", tmp_path / "log.jsonl", tmp_path / "stories.jsonl", cfg,
                         LoraTrainingConfig(rank=4, lr=3e-3, seed=0), guidance=3.0, batch_size=16)
    assert summary["steps"] == 4 and summary["n_samples"] == 48
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [s["iteration"] for s in log] == [0, 1, 2, 3]
    load_adapter(pipe, tmp_path / "adapter")
    try:
        diff = shares() - before
    finally:
        pipe.unload_lora_weights()
    assert diff.mean() > 2 * diff.std(ddof=1) / np.sqrt(len(diff)), (diff.mean(), diff.std(ddof=1))


# --- through the CLI on the shapes world ------------------------------------------------------

GRPO_TINY = {"iterations": 2, "prompts_per_iteration": 2, "group_size": 3, "sampler_steps": 3, "train_steps": 2,
             "updates_per_iteration": 2, "kl_coef": 0.05}


def _config(tmp_path: Path) -> Path:
    return write_config(tmp_path, strategy="grpo", grpo=GRPO_TINY,
                        budget={"rounds": 2, "patience": 2, "prompts_per_round": 3, "images_per_prompt": 1,
                                "heldout_prompts": 4, "images_per_heldout_prompt": 2, "batch_prompts": 3})


TIMINGS = ("seconds", "sample_s", "judge_s", "update_s")


def _outcome(run_dir: Path):
    adapters = [adapter_hash(run_dir / r / "adapter") for r in ("round_001", "round_002") if (run_dir / r / "adapter").exists()]
    logs = [[{k: v for k, v in s.items() if k not in TIMINGS} for s in map(json.loads, (run_dir / r / "grpo_iterations.jsonl").read_text().splitlines())]
            for r in ("round_001", "round_002")]
    decisions = [json.loads((run_dir / r / "decision.json").read_text())["promoted"] for r in ("round_001", "round_002")]
    return adapters, logs, decisions


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grpo_loop")
    return finished_run(tmp, _config(tmp), "g")


def test_grpo_round_through_the_cli(uninterrupted):
    run_dir = uninterrupted
    for r in ("round_001", "round_002"):
        rd = run_dir / r
        stats = [json.loads(line) for line in (rd / "grpo_iterations.jsonl").read_text().splitlines()]
        assert [s["iteration"] for s in stats] == [0, 1]
        for s in stats:
            assert {"reward_mean", "reward_std", "zero_variance_groups", "kl", "clip_fraction", "loss"} <= set(s)
            assert s["n_samples"] == 6 and 0 <= s["zero_variance_groups"] <= 1
        stories = [json.loads(line) for line in (rd / "stories.jsonl").read_text().splitlines()]
        assert len(stories) == 12 and all(Path(s["image"]).is_file() for s in stories)
        assert all({"prompt", "reward", "advantage", "judgment"} <= set(s) for s in stories)
        assert (rd / "adapter" / "pytorch_lora_weights.safetensors").is_file()
        assert json.loads((rd / "adapter" / "atelier_adapter.json").read_text())["base_model"] == "shapes"  # no site-packages path
        # Held-out evaluation of the adapter with the world's own sampler, and a decision.
        assert json.loads((run_dir / r / "eval" / "metrics.json").read_text())["n_images"] == 8
        assert (rd / "decision.json").is_file()
        # The dataset is the round's prompts, one row each, never a held-out one.
        meta = [json.loads(line) for line in (rd / "dataset" / "metadata.jsonl").read_text().splitlines()]
        held = {p["text"] for p in json.loads((run_dir / "heldout" / "prompts.json").read_text())}
        assert len({m["text"] for m in meta}) == len(meta) == 3 and not held & {m["text"] for m in meta}
    # Only the newest checkpoint is kept.
    assert [p.name for p in (run_dir / "round_001" / "grpo").glob("checkpoint_*")] == ["checkpoint_0002"]


@pytest.mark.parametrize("point", ["grpo:judged:1", "train_step:1"])
def test_killed_grpo_training_resumes_to_the_same_adapter(tmp_path, uninterrupted, point):
    killed = atelier("run", str(_config(tmp_path)), "--run-id", "g", env={"ATELIER_DIE_AT": point})
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    resumed = atelier("resume", "g", "--run-dir", str(tmp_path / "runs"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _outcome(tmp_path / "runs" / "g") == _outcome(uninterrupted)


def test_bad_grpo_settings_are_one_line(tmp_path):
    cfg = write_config(tmp_path, strategy="grpo", grpo={"sampler_steps": 3, "train_steps": 3})
    done = atelier("config", "check", str(cfg))
    assert done.returncode == 2 and "grpo.train_steps 3 must be below grpo.sampler_steps 3" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_shipped_grpo_example_is_valid():
    example = Path(__file__).parent.parent / "examples" / "shapes-grpo.yaml"
    done = atelier("config", "check", str(example))
    assert done.returncode == 0, done.stderr[-2000:]
