"""The open_vocab world behind the World seam, offline: planning and prompt writing on configs
alone (nothing loads until used), then the tiny SD 1.5 + OWLv2 + CLIP models through the real
`from_pretrained` code: sampling with adapters swapped in one loaded pipeline, judging (builtin
and a scripted VLM over HTTP), relabelling, LoRA SFT and the SDEdit editor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from atelier.agents.backend import RunPaused
from atelier.agents.planner import PlanError
from atelier.config import AgentConfig, parse_config
from atelier.tools.datasets import write_sft_dataset
from atelier.worlds import load_world
from atelier.worlds.base import WorldPrompt
from atelier.worlds.judgment import Asked, AskedObject, Judgment, summarize
from atelier.worlds.open_vocab import models as models_module
from atelier.worlds.open_vocab import world as world_module
from atelier.worlds.open_vocab.parse import asked_of_text, normalise
from atelier.worlds.open_vocab.prompts import prompt_pool
from atelier.worlds.open_vocab.split import OverlapError
from atelier.worlds.open_vocab.world import OpenVocabWorld
from openai_server import OpenAIServer, Reply, correct, invalid_json

CLASSES = ["dog", "cat", "horse"]


def config(**sections):
    """A config whose models are hub ids: nothing is checked or loaded until a model is used."""
    data = {"goal": "get left and right right", "world": "open_vocab", "model": "org/sd15",
            "vocabulary": {"classes": CLASSES}}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_config(data)


def openai_agent(url: str, **settings) -> dict:
    return {"backend": "openai", "base_url": url, "model": "scripted-vlm", "max_retries": 0, "retry_backoff_s": 0.0,
            **settings}


# --- planning ----------------------------------------------------------------------------------


@pytest.mark.parametrize("goal, metric, relations, counts", [
    ("draw two objects in the right left/right order", "relation_accuracy_cond", ["left of", "right of"], []),
    ("put things above or below each other", "relation_accuracy_cond", ["above", "below"], []),
    ("get counts right", "count_accuracy", [], [2, 3]),
    ("realistic dogs, cats and horses", "question_score", [], []),
])
def test_builtin_plan(goal, metric, relations, counts, tmp_path):
    spec = OpenVocabWorld(config()).plan(goal, tmp_path)
    assert (spec.metric, spec.relations, spec.counts, spec.objects) == (metric, relations, counts, CLASSES)
    assert spec.colours == spec.shapes == []
    assert not list(tmp_path.iterdir())  # the builtin planner keeps no record


def test_appearance_plan_asks_ccsr_questions_per_class(tmp_path):
    spec = OpenVocabWorld(config(vocabulary={"classes": ["elephant", "giraffe"]})).plan(
        "realistic elephants and giraffes", tmp_path)
    q = {(x.id, x.text, x.positive, tuple(x.depends_on)) for x in spec.questions}
    assert (1, "Is there an elephant?", True, ()) in q
    assert (2, "Does the elephant look like a real photograph?", True, (1,)) in q
    assert (3, "Is the elephant deformed or missing parts?", False, (1,)) in q
    assert (4, "Is there a giraffe?", True, ()) in q and len(q) == 6


def test_configured_relations_make_a_goal_spatial(tmp_path):
    spec = OpenVocabWorld(config(vocabulary={"relations": ["above"]})).plan("make better pictures", tmp_path)
    assert spec.relations == ["above"] and spec.metric == "relation_accuracy_cond"


def test_spatial_goal_with_one_class_is_an_error(tmp_path):
    with pytest.raises(PlanError, match="two classes"):
        OpenVocabWorld(config(vocabulary={"classes": ["dog"]})).plan("left and right", tmp_path)


SPEC = {"objects": ["elephant", "giraffe"], "attributes": ["realism"], "relations": [], "counts": [], "colours": [],
        "shapes": [], "style": [], "metric": "question_score", "rationale": "'realistic'",
        "questions": [{"id": 1, "text": "Is there an elephant?", "positive": True, "depends_on": []},
                      {"id": 2, "text": "Does the elephant look real?", "positive": True, "depends_on": [1]}]}


def test_model_planner_is_recorded_and_reused(tmp_path):
    with OpenAIServer(lambda body, n: Reply(content=json.dumps(SPEC))) as server:
        cfg = config(agents={"planner": openai_agent(server.url)}, vocabulary={"classes": []})
        spec = OpenVocabWorld(cfg).plan("realistic elephants and giraffes", tmp_path)
        assert server.schemas() == ["TargetSpec"]
        assert "open-vocabulary object detector" in json.dumps(server.requests[0]["messages"])  # planner_open_vocab.txt
    assert spec.objects == ["elephant", "giraffe"] and spec.metric == "question_score"
    assert json.loads((tmp_path / "planner.json").read_text())["spec"]["objects"] == ["elephant", "giraffe"]
    assert OpenVocabWorld(cfg).plan("realistic elephants and giraffes", tmp_path) == spec  # the server is gone


def test_model_planner_without_a_valid_answer_pauses_the_run_in_one_line(tmp_path):
    shapes_spec = {**SPEC, "colours": ["red"], "objects": []}  # valid JSON, off the world's rules
    with OpenAIServer(lambda body, n: Reply(content=json.dumps(shapes_spec))) as server:
        cfg = config(agents={"planner": openai_agent(server.url, max_reasks=1)})
        with pytest.raises(RunPaused) as error:
            OpenVocabWorld(cfg).plan("realistic elephants", tmp_path)
        assert len(server.requests) == 2  # asked, re-asked once
    assert "no valid plan" in str(error.value) and server.url in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "planner.json").exists()


def test_model_planner_falls_back_to_the_rules_only_when_configured(tmp_path):
    with OpenAIServer(lambda body, n: Reply(content="no plan today")) as server:
        cfg = config(agents={"planner": openai_agent(server.url, max_reasks=0, fallback="builtin")})
        spec = OpenVocabWorld(cfg).plan("realistic elephants", tmp_path)
    record = json.loads((tmp_path / "planner.json").read_text())
    assert record["fallback"] == "builtin" and not record["ok"] and spec.metric == "question_score"


# --- prompts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("goal, classes", [
    ("left and right", CLASSES),  # held-out class pairs
    ("left and right", ["dog", "cat"]),  # one pair only: held-out settings
    ("get counts right", CLASSES),
    ("realistic elephants and giraffes", ["elephant", "giraffe"]),
])
def test_heldout_and_training_prompts_never_meet(goal, classes, tmp_path):
    world = OpenVocabWorld(config(vocabulary={"classes": classes}))
    spec = world.plan(goal, tmp_path)
    heldout = world.heldout_prompts(spec, 40, seed=0)
    assert heldout and heldout == world.heldout_prompts(spec, 40, seed=0)  # seeded
    held = {normalise(p.text) for p in heldout}
    for seed in range(4):
        training = world.training_prompts(spec, 64, seed, tmp_path, heldout)
        split = world.split(spec)
        admitted = min(64, prompt_pool(spec, split, heldout=False).size)  # dog/cat left/right: 52
        assert len(training) == admitted >= 52 and len({p.text for p in training}) == admitted
        assert not held & {normalise(p.text) for p in training}
        assert not any(split.text_is_heldout(p.text, p.asked) for p in training)
    for p in heldout + training:
        assert asked_of_text(p.text, classes) == p.asked  # what a prompt asks is what its text says
        assert p.target_class in {o.name for o in p.asked.objects}
        if spec.relations:
            assert p.asked.relation in spec.relations and len(p.asked.objects) == 2
        if spec.counts:
            assert any(o.count in spec.counts for o in p.asked.objects) or spec.relations


def test_training_prompts_that_repeat_heldout_ones_raise(tmp_path, monkeypatch):
    world = OpenVocabWorld(config())
    spec = world.plan("left and right", tmp_path)
    heldout = world.heldout_prompts(spec, 10, seed=0)
    monkeypatch.setattr(world_module, "write_training", lambda *args: [*heldout[:2]])
    with pytest.raises(OverlapError, match="2 training prompts are held-out prompts"):
        world.training_prompts(spec, 10, 0, tmp_path, heldout)


def test_heldout_file_lines_become_prompts_with_what_they_ask(tmp_path):
    path = tmp_path / "heldout.txt"
    path.write_text("a dog to the left of a cat\n\n# a comment\nTwo horses in a field.\n"
                    "three people above a bus\na photo of a traffic light next to a dog\na dog to the left of a cat\n")
    world = OpenVocabWorld(config(vocabulary={"classes": ["dog", "cat", "horse", "person", "bus", "traffic light"],
                                              "heldout_file": str(path)}))
    spec = world.plan("left and right", tmp_path)
    prompts = world.heldout_prompts(spec, 40, seed=3)
    assert [p.text for p in prompts] == ["a dog to the left of a cat", "Two horses in a field.",
                                         "three people above a bus", "a photo of a traffic light next to a dog"]
    o = AskedObject
    assert [p.asked for p in prompts] == [
        Asked(objects=(o(name="dog"), o(name="cat")), relation="left of"),
        Asked(objects=(o(name="horse", count=2),)),
        Asked(objects=(o(name="person", count=3), o(name="bus")), relation="above"),
        Asked(objects=(o(name="traffic light"), o(name="dog"))),
    ]
    training = world.training_prompts(spec, 64, 0, tmp_path, prompts)
    assert not {normalise(p.text) for p in prompts} & {normalise(p.text) for p in training}
    assert world.heldout_prompts(spec, 2, seed=0) == prompts[:2]


def test_heldout_file_line_without_a_class_is_an_error(tmp_path):
    path = tmp_path / "heldout.txt"
    path.write_text("a dog to the left of a cat\na photo of an elephant\n")
    world = OpenVocabWorld(config(vocabulary={"heldout_file": str(path)}))
    with pytest.raises(ValueError, match="line 2: 'a photo of an elephant' names none of the classes"):
        world.heldout_prompts(world.plan("left and right", tmp_path), 40, seed=0)


def _writer_script(body: dict, n: int) -> Reply:
    """Per class request: one held-out prompt, one without the class, one repeat, two good ones."""
    text = json.dumps(body["messages"])
    target = next(c for c in CLASSES if f"at least one {c} (" in text)
    other = "cat" if target != "cat" else "dog"  # dog + horse is the held-out pair
    good = [f"a {target} to the left of a {other} on a farm", f"a {other} above a {target}"]
    texts = [good[0], "a dog to the left of a horse", "a cow to the left of a pig", good[0], good[1]]
    return Reply(content=json.dumps({"prompts": [{"text": t, "target_class": target, "objects": [], "relation": None,
                                                  "attributes": []} for t in texts]}))


def test_model_prompt_writer_is_validated_topped_up_and_recorded(tmp_path):
    with OpenAIServer(_writer_script) as server:
        cfg = config(agents={"prompt_writer": openai_agent(server.url, max_reasks=0, fallback="builtin")},
                     vocabulary={"relations": ["left of", "above"]})
        world = OpenVocabWorld(cfg)
        spec = world.plan("left and right", tmp_path)
        heldout = world.heldout_prompts(spec, 20, seed=0)
        prompts = world.training_prompts(spec, 20, 0, tmp_path, heldout)
        assert server.schemas() == ["WrittenPrompts", "WrittenPrompts"]  # 16 + 4, one class each
        assert "prompts for a text-to-image model (Stable Diffusion)" in json.dumps(server.requests[0]["messages"])
    record = json.loads((tmp_path / "prompt_writer.json").read_text())
    from_model = [p for p in prompts if p.text.endswith("on a farm") or " above a " in p.text][: 20 - record["filled_by_builtin"]]
    assert len(prompts) == 20 and record["filled_by_builtin"] == 16  # two good prompts per answer
    assert all(not r["ok"] for r in record["requests"]) and "does not name" in record["requests"][0]["error"]
    assert len(from_model) == 4 and all(p.asked.relation in ("left of", "above") for p in prompts)
    assert not {normalise(p.text) for p in heldout} & {normalise(p.text) for p in prompts}
    assert world.training_prompts(spec, 20, 0, tmp_path, heldout) == prompts  # reused: the server is gone


def test_without_a_fallback_a_short_writer_gives_fewer_prompts_and_a_silent_one_pauses(tmp_path):
    with OpenAIServer(_writer_script) as server:
        cfg = config(agents={"prompt_writer": openai_agent(server.url, max_reasks=0)}, vocabulary={"relations": ["left of", "above"]})
        world = OpenVocabWorld(cfg)
        spec = world.plan("left and right", tmp_path)
        heldout = world.heldout_prompts(spec, 20, seed=0)
        prompts = world.training_prompts(spec, 20, 0, tmp_path / "short", heldout)
    assert len(prompts) == 4 and json.loads((tmp_path / "short" / "prompt_writer.json").read_text())["filled_by_builtin"] == 0
    with OpenAIServer(lambda body, n: Reply(content="<html>502 Bad Gateway</html>")) as server:
        cfg = config(agents={"prompt_writer": openai_agent(server.url, max_reasks=0)}, vocabulary={"relations": ["left of", "above"]})
        with pytest.raises(RunPaused) as paused:
            OpenVocabWorld(cfg).training_prompts(spec, 20, 0, tmp_path / "silent", heldout)
    assert server.url in str(paused.value) and "no valid prompt" in str(paused.value)
    assert not (tmp_path / "silent" / "prompt_writer.json").exists()


# --- the tiny models ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vision_models(tmp_path_factory):
    from tiny_vision_models import build_tiny_clip, build_tiny_owlv2

    root = tmp_path_factory.mktemp("open_vocab_world")
    return str(build_tiny_owlv2(root / "owlv2")), str(build_tiny_clip(root / "clip"))


@pytest.fixture(scope="module")
def loader_calls():
    calls = []
    real = models_module.load_diffusers_pipeline
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models_module, "load_diffusers_pipeline", lambda *a, **k: calls.append(a) or real(*a, **k))
        yield calls


def tiny_config(tiny_sd15, vision_models, **sections):
    owlv2, clip = vision_models
    return config(model=str(tiny_sd15), detector={"model": owlv2, "score_threshold": 0.05}, clip={"model": clip},
                  generation={"steps": 2, "batch_size": 4, "guidance_scale": 5.0},
                  train={"steps": 2, "batch_size": 2, "lora_rank": 4, "learning_rate": 1e-3}, **sections)


@pytest.fixture(scope="module")
def world(tiny_sd15, vision_models, loader_calls):
    world = OpenVocabWorld(tiny_config(tiny_sd15, vision_models))
    yield world
    world.close()


@pytest.fixture(scope="module")
def judged_rows(world, tmp_path_factory):
    """Rows of four sampled images (two prompts, two seeds), as the loop writes them."""
    folder = tmp_path_factory.mktemp("samples")
    spec = world.plan("left and right", folder)
    prompts = world.heldout_prompts(spec, 2, seed=0)
    rows = []
    for i, p in enumerate(prompts):
        for seed in (0, 1):
            file = folder / f"{i}_{seed}.png"
            world.sample([p.text], [seed], 5.0, None)[0].save(file)
            rows.append({"file": str(file), "prompt": p.text, "prompt_index": i, "seed": seed,
                         "asked": p.asked.model_dump(), "target_class": p.target_class})
    return spec, rows


PROMPTS, SEEDS = ["a dog to the left of a cat", "two horses"], [0, 1]


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(i) for i in images])


def test_sample_swaps_adapters_in_one_loaded_pipeline(world, loader_calls, tiny_sd15, tiny_sd15_lora, tmp_path):
    from tiny_models import build_tiny_lora

    other = build_tiny_lora(tiny_sd15, tmp_path / "other", rank=2)
    base = pixels(world.sample(PROMPTS, SEEDS, 5.0, None))
    with_a = pixels(world.sample(PROMPTS, SEEDS, 5.0, str(tiny_sd15_lora)))
    with_b = pixels(world.sample(PROMPTS, SEEDS, 5.0, str(other)))
    again = pixels(world.sample(PROMPTS, SEEDS, 5.0, None))
    assert base.shape == (2, 64, 64, 3)
    assert np.array_equal(base, again)  # the base after two adapters is the base before them
    assert not np.array_equal(base, with_a) and not np.array_equal(with_a, with_b)
    assert np.array_equal(with_a, pixels(world.sample(PROMPTS, SEEDS, 5.0, str(tiny_sd15_lora))))
    assert len(loader_calls) == 1 and world.loads["generator"] == 1
    assert loader_calls[0][1:4] == (None, 1.0, "cpu")


def test_builtin_judge_rows(world, judged_rows):
    spec, rows = judged_rows
    judged = world.judge(rows, spec)
    assert world.judge(rows, spec) == judged  # deterministic, and the models stay loaded
    assert (world.loads["detector"], world.loads["clip"]) == (1, 1)
    for row, out in zip(rows, judged):
        assert {k: out[k] for k in row} == row  # the input fields stay
        Judgment.model_validate(out)
        assert isinstance(out["clip_score"], float) and out["clip_score"] >= 0
        asked = Asked.model_validate(row["asked"])
        labels = [d["label"] for d in out["detections"]]
        assert set(labels) <= {o.name for o in asked.objects}
        assert out["object_ok"] == all(o.name in labels for o in asked.objects)
        assert out["relation"] == asked.relation and not out["failed"]
        # The builtin judge answers the probes from the detections and nothing else.
        outcomes = {q["text"]: q["outcome"] for q in out["questions"]}
        first = asked.objects[0].name
        assert outcomes[f"Is there a {first}?"] == ("yes" if first in labels else "no")
        assert isinstance(out["question_score"], int)
    metrics = summarize(judged)
    assert metrics["n_images"] == 4 and metrics["clip_score"]["n"] == 4


def test_builtin_judge_skips_questions_only_a_model_can_answer(world, judged_rows, tmp_path):
    _, rows = judged_rows
    spec = world.plan("realistic dogs, cats and horses", tmp_path)
    judged = world.judge(rows[:1], spec)[0]
    asked = [o.name for o in Asked.model_validate(rows[0]["asked"]).objects]
    texts = {q["text"]: q for q in judged["questions"]}
    assert [t for t in texts if "real photograph" in t] == [f"Does the {n} look like a real photograph?" for n in asked]
    assert all(q["outcome"] == "skipped" for t, q in texts.items() if "real photograph" in t or "deformed" in t)
    assert sum(t.startswith("Is there") for t in texts) == len(asked)  # the spec's repeat the prompt's; no others
    world.plan("left and right", tmp_path)  # the module's other tests judge a spatial spec


def with_judge(world: OpenVocabWorld, judge: dict) -> OpenVocabWorld:
    """The world with another judge agent, sharing its loaded models."""
    other = OpenVocabWorld(world.cfg.model_copy(update={"agents": world.cfg.agents.model_copy(
        update={"judge": AgentConfig(**judge)})}))
    other.models = world.models
    return other


def test_vlm_judge_answers_every_question(world, judged_rows):
    spec, rows = judged_rows
    spec = spec.model_copy(update={"questions": OpenVocabWorld(config()).plan("realistic", ".").questions})
    with OpenAIServer(correct) as server:
        judged = with_judge(world, openai_agent(server.url)).judge(rows, spec)
        assert server.schemas() == ["YesNoAnswers"] * 4
    for out in judged:
        assert not out["failed"] and out["questions"] and out["detections"] is not None
        assert all(q["outcome"] in ("yes", "no") for q in out["questions"] if not q["depends_on"])
        assert any("real photograph" in q["text"] and q["outcome"] != "skipped" for q in out["questions"])


@pytest.mark.parametrize("script", [invalid_json, lambda body, n: Reply(status=500)])
def test_failing_vlm_judge_gives_failed_rows_not_exceptions(world, judged_rows, script):
    spec, rows = judged_rows
    with OpenAIServer(script) as server:
        judged = with_judge(world, openai_agent(server.url, max_reasks=0)).judge(rows, spec)
    builtin = world.judge(rows, spec)
    for out, plain in zip(judged, builtin):
        assert out["failure"]["role"] == "judge" and out["failure"]["error"] and out["question_score"] is None
        for key in ("object_ok", "count_ok", "relation_ok", "found", "detections", "clip_score"):
            assert out[key] == plain[key]  # the detector's verdicts stay, and count
    metrics = summarize(judged)
    assert metrics["n_judge_failures"] == 4 and metrics["n_failed"] == 0 and metrics["n_images"] == 4
    assert metrics["question_score"]["n"] == 0 and metrics["object_accuracy"] == summarize(builtin)["object_accuracy"]


def test_relabel_uses_the_detections_and_never_says_a_heldout_prompt(world):
    world.plan("left and right", ".")
    row = {"prompt": "a dog to the left of a cat", "asked": {"objects": [{"name": "dog", "count": 1},
                                                                          {"name": "cat", "count": 1}],
                                                              "relation": "left of"},
           "detections": [{"label": "dog", "box": [40, 0, 60, 20], "score": 0.9},
                          {"label": "cat", "box": [0, 0, 20, 20], "score": 0.8}]}
    assert world.relabel(row, []) == "a dog to the right of a cat"
    two = {**row, "detections": [*row["detections"], {"label": "cat", "box": [20, 30, 30, 40], "score": 0.5}]}
    assert world.relabel(two, []) == "a dog and two cats"
    # A held-out prompt is never said again (by what it asks, too, when the held-out set is a user's file).
    held = [WorldPrompt(text="A dog to the right of a cat.",
                        asked=Asked(objects=(AskedObject(name="dog"), AskedObject(name="cat")), relation="right of"))]
    assert world.relabel(row, held) is None
    assert world.relabel({**row, "detections": []}, []) is None


def test_a_heldout_file_keeps_its_compositions_out_of_training_and_relabels(tmp_path):
    path = tmp_path / "heldout.txt"
    path.write_text("A dog to the right of a cat.\n")
    world = OpenVocabWorld(config(vocabulary={"heldout_file": str(path)}))  # a resumed run: nothing asked yet
    spec = world.plan("left and right", tmp_path)
    heldout = world.heldout_prompts(spec, 40, seed=0)
    training = world.training_prompts(spec, 40, 1, tmp_path, heldout)
    said = {(tuple(o.name for o in p.asked.objects), p.asked.relation) for p in training}
    assert training and (("dog", "cat"), "right of") not in said  # not even "... in a park"
    row = {"asked": {"objects": [{"name": "dog"}, {"name": "cat"}], "relation": "left of"},
           "detections": [{"label": "dog", "box": [40, 0, 60, 20], "score": 0.9},
                          {"label": "cat", "box": [0, 0, 20, 20], "score": 0.8}]}
    assert world.relabel(row, heldout) is None and world.relabel(row, []) == "a dog to the right of a cat"


def test_train_sft_writes_an_adapter_that_diffusers_loads(world, loader_calls, tiny_sd15, tmp_path):
    from diffusers import StableDiffusionPipeline

    images = world.sample(PROMPTS * 2, [0, 1, 2, 3], 5.0, None)
    data = write_sft_dataset(tmp_path / "data", [{"text": t, "weight": w} for t, w in zip(PROMPTS * 2, [1, 1, 0.5, 0.5])],
                             images)
    steps = []
    summary = world.train_sft([data], tmp_path / "adapter", None, seed=0, progress=lambda *a: steps.append(a))
    assert summary["steps"] == 2 and len(steps) == 2
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd15)
    pipe.load_lora_weights(str(tmp_path / "adapter"))
    assert world.sample(PROMPTS, SEEDS, 5.0, str(tmp_path / "adapter"))
    assert pixels(world.sample(PROMPTS, SEEDS, 5.0, None)).shape == (2, 64, 64, 3)
    assert len(loader_calls) == 1


def test_edit_uses_the_loaded_pipeline(world, loader_calls):
    image = world.sample(PROMPTS[:1], [0], 5.0, None)[0].resize((60, 52))
    result = world.edit(image, PROMPTS[0], ["make it more colorful"], seed=3, strength=1.0)
    again = world.edit(image, PROMPTS[0], ["make it more colorful"], seed=3, strength=1.0)
    assert result.image.size == (60, 52) and result.method == "sdedit"
    assert np.array_equal(np.asarray(result.image), np.asarray(again.image))
    assert len(loader_calls) == 1


def test_references_are_empty_and_close_frees_the_models(tiny_sd15, vision_models, tmp_path):
    world = load_world(tiny_config(tiny_sd15, vision_models))
    assert isinstance(world, OpenVocabWorld) and world.name == "open_vocab"
    assert world.references([WorldPrompt(text="a dog")], 2, lambda i, k: i) == {}
    assert sum(world.loads.values()) == 0  # nothing loaded before it is used
    world.close()


def test_pairs_are_counted_as_pairs_in_prompts_and_questions():
    from atelier.worlds.judgment import Asked, AskedObject
    from atelier.worlds.open_vocab.parse import asked_of_text
    from atelier.worlds.open_vocab.questions import asked_questions

    asked = asked_of_text("two pairs of skis to the left of a pair of scissors", ["skis", "scissors"])
    assert [(o.name, o.count) for o in asked.objects] == [("skis", 2), ("scissors", 1)]
    texts = [q.text for q in asked_questions(Asked(objects=(AskedObject(name="skis", count=2),)))[0]]
    assert "Are there exactly two pairs of skis?" in texts and "Is there a pair of skis?" in texts


def test_a_model_that_cannot_be_loaded_is_one_line(tmp_path):
    from atelier.runs import RunError

    world = OpenVocabWorld(config(model="nobody/no-such-model"))  # offline: not in any cache
    with pytest.raises(RunError, match="cannot load the generator 'nobody/no-such-model'") as e:
        world.sample(["a dog"], [0], 7.5, None)
    assert "\n" not in str(e.value)
