"""The shapes world behind the World seam: one pipeline per run, adapters swapped in and out, and
training from that shared pipeline gives the adapter a freshly loaded one gives (the demo's
adapters did not change when the loop moved behind the seam)."""

import numpy as np
import pytest

from atelier.config import Config
from atelier.tools.lora import adapter_hash
from atelier.tools.sft import SFTConfig, train_lora_sft, write_sft_dataset
from atelier.worlds import load_world
from atelier.worlds.shapes import model as shapes_model

PROMPTS = ["a red circle to the left of a blue square", "two green triangles", "a yellow square above a red circle",
           "a blue circle"]


def _config(tmp_path, dtype="bfloat16") -> Config:
    return Config(goal="left and right", run_dir=tmp_path, torch_threads=1,
                  train={"steps": 3, "batch_size": 4, "learning_rate": 1e-3, "lora_rank": 2},
                  generation={"steps": 3, "dtype": dtype, "adapter_min_timestep": 500})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A world that sampled (under bf16 autocast), trained an adapter and sampled with it."""
    tmp = tmp_path_factory.mktemp("world")
    world = load_world(_config(tmp))
    images = world.sample(PROMPTS, [1, 2, 3, 4], 3.0, None)
    write_sft_dataset(tmp / "data", [{"file_name": f"{i}.png", "text": p, "weight": 1.0} for i, p in enumerate(PROMPTS)],
                      images)
    summary = world.train_sft([tmp / "data"], tmp / "adapter", None, seed=11)
    return tmp, world, images, summary


def test_training_from_the_shared_pipeline_equals_training_from_a_fresh_one(trained):
    tmp, world, _, summary = trained
    world.sample(PROMPTS[:1], [5], 3.0, str(tmp / "adapter"))  # an adapter in, then training again from the base
    world.train_sft([tmp / "data"], tmp / "again", None, seed=11)
    fresh = train_lora_sft(shapes_model.load_generator("shapes"), [tmp / "data"], tmp / "fresh",
                           SFTConfig(steps=3, batch_size=4, lr=1e-3, rank=2, alpha=2, seed=11, bf16=False))
    assert adapter_hash(tmp / "adapter") == adapter_hash(tmp / "again") == adapter_hash(tmp / "fresh")
    assert summary["adapter_hash"] == fresh["adapter_hash"]
    # Training left the sampling dtype as it was.
    assert str(world.generator.pipe.compute_dtype) == "torch.bfloat16"


def test_one_pipeline_per_run_and_the_base_is_the_base_after_an_adapter(trained, monkeypatch):
    tmp, world, before, _ = trained
    calls = []
    monkeypatch.setattr(shapes_model, "load_pipeline", lambda *a, **k: calls.append(a) or pytest.fail("loaded again"))
    with_adapter = world.sample(PROMPTS, [1, 2, 3, 4], 3.0, str(tmp / "adapter"))
    after = world.sample(PROMPTS, [1, 2, 3, 4], 3.0, None)
    assert world.loads == 1 and calls == []
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(before, after))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(before, with_adapter))
    assert not getattr(world.generator.pipe.unet, "peft_config", None)  # unloaded: trainers start from the base


def test_a_model_judges_questions_are_kept_not_recomputed_from_empty_detections():
    """A VLM judge's answers carry their CCSR score; the world adds detector-answered questions
    only to rows that have none (a model judge keeps no detections)."""
    from atelier.agents.questions import ccsr_outcomes
    from atelier.worlds.shapes.questions import judgment_fields, shapes_questions
    from atelier.worlds.shapes.scene import parse
    from atelier.worlds.shapes.world import ShapesWorld

    prompt = "a red circle to the left of a blue square"
    questions, probes = shapes_questions(parse(prompt))
    right = ccsr_outcomes(questions, {1: "yes", 2: "yes", 3: "yes", 4: "yes", 5: "yes", 6: "no"})
    row = {"file": "x.png", "detections": [], **judgment_fields(parse(prompt), probes, questions, right, 0)}
    kept = ShapesWorld._with_questions(row)
    assert kept["question_score"] == 6 and [q["outcome"] for q in kept["questions"]][:2] == ["yes", "yes"]


def test_the_adapter_names_its_base_as_shapes_not_a_site_packages_path(trained):
    import json

    tmp, *_ = trained
    meta = json.loads((tmp / "adapter" / "atelier_adapter.json").read_text())
    assert meta["base_model"] == "shapes"
