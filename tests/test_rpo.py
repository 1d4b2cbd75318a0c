"""RPO through the CLI on the shapes world (shipped model, exact detector, real LoRA training):
critique -> write_edits -> edit -> pair -> Diffusion-DPO; its records, the parquet export read back
with pyarrow, every role on the OpenAI-protocol test server (garbage critiques and unreadable
instructions recorded, not fatal), and a killed round resumed to the same pairs and adapter."""

import io
import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from atelier.config import Config
from atelier.strategies.rpo import pair_decision
from atelier.tools.lora import adapter_hash
from loop_helpers import TINY, atelier, write_config
from openai_server import OpenAIServer, Reply, correct, invalid_json, schema_name, user_text
from atelier.worlds.shapes.scene import parse

RPO = {"strategy": "rpo", "rpo": {"learning_rate": 1e-3}}


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def builtin_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rpo")
    done = atelier("run", str(write_config(tmp, **RPO)), "--run-id", "rpo")
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "runs" / "rpo"


def test_every_wrong_image_is_critiqued_edited_and_judged_again(builtin_run):
    for r in ("round_001", "round_002"):
        rnd = builtin_run / r
        judged = [j for f in sorted((rnd / "judge").glob("batch_*.jsonl")) for j in read_jsonl(f)]
        wrong = [j for j in judged if not j["ipr_correct"]]
        critiques = [c for f in sorted((rnd / "rpo" / "critique").glob("batch_*.jsonl")) for c in read_jsonl(f)]
        assert [c["file"] for c in critiques] == [j["file"] for j in wrong]
        assert all(c["critique"]["ok"] and c["critique"]["role"] == "critic" for c in critiques)
        pairs = [p for f in sorted((rnd / "rpo" / "pair").glob("batch_*.jsonl")) for p in read_jsonl(f)]
        for p in pairs:
            assert 1 <= len(p["instructions"]) <= 3 and all(len(i.split()) <= 8 for i in p["instructions"])
            assert p["editor"] == "layout" and p["edit"]["method"] == "layout" and p["edit"]["outcomes"]
            assert {o["kind"] for o in p["edit"]["outcomes"]} <= {"add", "count", "remove", "relation", "side",
                                                                    "recolour", "redraw"}  # builtin writer: all parsed
            assert p["verdict_original"]["question_score"] is not None
            if p["edited_file"]:
                assert Image.open(p["edited_file"]).size == Image.open(p["file"]).size
                assert p["kept"] == (p["verdict_edited"]["question_score"] - p["verdict_original"]["question_score"] >= 1)
        # The story of every sample of the round, for the report.
        stories = read_jsonl(rnd / "stories.jsonl")
        assert [s["image"] for s in stories] == [j["file"] for j in judged]
        for s in stories:
            assert {"prompt", "image", "judgment", "critique", "instructions", "edited_image", "verdict_edited", "kept"} <= set(s)
            if s["judgment"]["ipr_correct"]:
                assert s["critique"] is None and not s["kept"] and s["why"] == "right already"


def test_the_kept_pairs_read_back_with_pyarrow(builtin_run):
    n_kept = 0
    for r in ("round_001", "round_002"):
        rnd = builtin_run / r
        kept = [p for f in sorted((rnd / "rpo" / "pair").glob("batch_*.jsonl")) for p in read_jsonl(f) if p["kept"]]
        table = pq.read_table(rnd / "rpo" / "pairs.parquet")
        assert table.column_names == ["jpg_0", "jpg_1", "label_0", "caption"]
        assert table.num_rows == len(kept)
        assert table.column("label_0").to_pylist() == [1.0] * len(kept)
        assert table.column("caption").to_pylist() == [p["prompt"] for p in kept]
        for winner, loser, p in zip(table.column("jpg_0").to_pylist(), table.column("jpg_1").to_pylist(), kept):
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(winner))), np.asarray(Image.open(p["edited_file"]).convert("RGB")))
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(loser))), np.asarray(Image.open(p["file"]).convert("RGB")))
        dataset = read_jsonl(rnd / "dataset" / "metadata.jsonl")
        assert [d["loser"] for d in dataset] == [p["file"] for p in kept] and all(d["kind"] == "rpo_edited" for d in dataset)
        n_kept += len(kept)
    assert n_kept > 0


def test_the_adapter_is_trained_by_diffusion_dpo_on_all_rounds_pairs(builtin_run):
    for r in ("round_001", "round_002"):
        adapter = builtin_run / r / "adapter"
        log = read_jsonl(adapter / "train_log.jsonl")
        assert len(log) == TINY["train"]["steps"] and {"implicit_accuracy", "reward_margin", "ref_loss"} <= set(log[0])
        meta = json.loads((adapter / "atelier_adapter.json").read_text())
        assert meta["reference"] == "base model (adapters disabled)" and meta["config"]["lr"] == 1e-3
    pairs_1 = pq.read_table(builtin_run / "round_001" / "rpo" / "pairs.parquet").num_rows
    pairs_2 = pq.read_table(builtin_run / "round_002" / "rpo" / "pairs.parquet").num_rows
    meta_2 = json.loads((builtin_run / "round_002" / "adapter" / "atelier_adapter.json").read_text())
    assert meta_2["n_samples"] == pairs_1 + pairs_2  # train.accumulate: the pairs of every round so far


@pytest.mark.parametrize("point", ["edit", "pair", "train_step:2"])
def test_a_killed_rpo_round_resumes_to_the_same_pairs_and_adapter(tmp_path, builtin_run, point):
    cfg = write_config(tmp_path, **RPO, budget={**TINY["budget"], "rounds": 1})
    killed = atelier("run", str(cfg), "--run-id", "k", env={"ATELIER_DIE_AT": point})
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    resumed = atelier("resume", "k", "--run-dir", str(tmp_path / "runs"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = tmp_path / "runs" / "k" / "round_001"
    reference = builtin_run / "round_001"
    assert pq.read_table(run / "rpo" / "pairs.parquet").equals(pq.read_table(reference / "rpo" / "pairs.parquet"))
    assert adapter_hash(run / "adapter") == adapter_hash(reference / "adapter")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("file", "edited_file")} for r in rows]  # noqa: E731
    assert strip(read_jsonl(run / "rpo" / "pair" / "batch_000.jsonl")) == strip(read_jsonl(reference / "rpo" / "pair" / "batch_000.jsonl"))


# --- every role on the OpenAI-protocol server --------------------------------------------------


def _rpo_script(body: dict, n: int) -> Reply:
    """Garbage for the critiques of 'left of' prompts (invalid JSON on every ask); instructions the
    layout editor reads for relation prompts, free text it cannot read for the others."""
    name = schema_name(body)
    if name == "Critique" and "left of" in user_text(body):
        return invalid_json(body, n)
    if name == "EditInstructions":
        prompt = re.search(r'Prompt of the image: "(.+)"', user_text(body)).group(1)
        scene = parse(prompt)
        if scene.relation is not None:
            a, b = scene.groups[0].name, scene.groups[1].name
            return Reply(content=json.dumps({"instructions": [f"Put {a} {scene.relation} {b}"], "rationale": "relation"}))
        return Reply(content=json.dumps({"instructions": ["Make it look nicer overall"], "rationale": "free text"}))
    return correct(body, n)


@pytest.fixture(scope="module")
def openai_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rpo_openai")
    with OpenAIServer(_rpo_script) as server:
        agents = {role: {"backend": "openai", "base_url": server.url, "model": "scripted-vlm", "max_concurrency": 4,
                         "max_reasks": 1, "retry_backoff_s": 0.01}
                  for role in ("planner", "prompt_writer", "judge", "critic", "edit_writer")}
        cfg = write_config(tmp, **RPO, agents=agents, budget={**TINY["budget"], "rounds": 1, "prompts_per_round": 6})
        done = atelier("run", str(cfg), "--run-id", "vlm")
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "runs" / "vlm", server


def test_rpo_with_every_role_on_an_openai_server(openai_run):
    run_dir, server = openai_run
    assert {"Critique", "EditInstructions", "YesNoAnswers"} <= set(server.schemas())
    rnd = run_dir / "round_001"
    critiques = [c for f in sorted((rnd / "rpo" / "critique").glob("batch_*.jsonl")) for c in read_jsonl(f)]
    garbage = [c for c in critiques if not c["critique"]["ok"]]
    assert garbage and all(c["critique"]["error"] and c["critique"]["answer"] is None for c in garbage)
    edits = [e for f in sorted((rnd / "rpo" / "edits").glob("batch_*.jsonl")) for e in read_jsonl(f)]
    assert [e["file"] for e in edits] == [c["file"] for c in critiques]
    assert all(e["edits"] is None for e in edits if e["file"] in {c["file"] for c in garbage})  # no critique, no edit
    pairs = [p for f in sorted((rnd / "rpo" / "pair").glob("batch_*.jsonl")) for p in read_jsonl(f)]
    unread = [p for p in pairs if p["instructions"] == ["Make it look nicer overall"]]
    for p in unread:  # free text the layout editor cannot read: a failed edit, nothing guessed
        assert p["edited_file"] is None and not p["kept"] and p["why"] == "no edited image"
        assert p["edit"]["outcomes"][0]["kind"] == "unparsed" and not p["edit"]["outcomes"][0]["applied"]
    relation = [p for p in pairs if p["instructions"][0].startswith("Put ")]
    assert relation and all(p["edit"]["outcomes"][0]["kind"] == "relation" for p in relation)
    judged_edits = [b for b in server.requests if schema_name(b) == "YesNoAnswers"]
    assert len(judged_edits) >= 6 * 2 + len([p for p in relation if p["edited_file"]])  # the edits were judged too
    stories = read_jsonl(rnd / "stories.jsonl")
    assert any(s["critic_error"] for s in stories)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


# --- the parts ------------------------------------------------------------------------------------


def test_pair_decision():
    original = {"question_score": 3}
    assert pair_decision(original, {"question_score": 5}, 1.0) == (True, "edit better by 2")
    assert pair_decision(original, {"question_score": 3}, 1.0) == (False, "tie")
    assert pair_decision(original, {"question_score": 2}, 1.0)[0] is False
    assert pair_decision(original, {"question_score": 4}, 2.0) == (False, "edit gains 1 < margin 2")
    assert pair_decision(original, None, 1.0) == (False, "no edited image")
    assert pair_decision(original, {"question_score": 5, "failed": True}, 1.0) == (False, "a judgment failed")
    assert pair_decision({"question_score": None}, {"question_score": 5}, 1.0) == (False, "no question score to compare")


def test_config_refuses_an_editor_the_world_lacks():
    with pytest.raises(ValueError, match="'controlnet' is for open_vocab"):
        Config.model_validate({"goal": "left of", "strategy": "rpo", "rpo": {"editor": "controlnet", "controlnet": "x"}})
    with pytest.raises(ValueError, match="needs the shapes world's exact detector"):
        Config.model_validate({"goal": "left of", "model": "some/sd15", "vocabulary": {"classes": ["dog", "cat"]}, "strategy": "rpo", "rpo": {"editor": "layout"}})
    with pytest.raises(ValueError, match="needs rpo.controlnet"):
        Config.model_validate({"goal": "left of", "model": "some/sd15", "vocabulary": {"classes": ["dog", "cat"]}, "strategy": "rpo", "rpo": {"editor": "controlnet"}})
    assert Config.model_validate({"goal": "left of", "strategy": "rpo"}).rpo.editor == "auto"


def test_sft_then_dpo(tmp_path):
    cfg = write_config(tmp_path, strategy="rpo", rpo={"objective": "both", "learning_rate": 1e-3},
                       budget={**TINY["budget"], "rounds": 1})
    done = atelier("run", str(cfg), "--run-id", "both")
    assert done.returncode == 0, done.stderr[-3000:]
    rnd = tmp_path / "runs" / "both" / "round_001"
    sft = json.loads((rnd / "adapter_sft" / "atelier_adapter.json").read_text())
    dpo = json.loads((rnd / "adapter" / "atelier_adapter.json").read_text())
    assert "reference" not in sft and dpo["reference"] == "base model (adapters disabled)"
    assert dpo["init_adapter"] == str(rnd / "adapter_sft")


def test_curate_gives_the_kept_winners_and_with_keep_correct_the_right_samples(tmp_path):
    from atelier.strategies.rpo import RPO as Strategy

    rnd = tmp_path / "round_001"
    (rnd / "rpo" / "pair").mkdir(parents=True)
    generated = rnd / "generate" / "batch_000"
    judgments = [{"file": str(generated / "p000_0.png"), "prompt": "a red circle", "ipr_correct": True},
                 {"file": str(generated / "p000_1.png"), "prompt": "a red circle", "ipr_correct": False},
                 {"file": str(generated / "p001_0.png"), "prompt": "a blue square", "ipr_correct": True, "failed": True}]
    story = {"file": judgments[1]["file"], "edited_file": str(rnd / "rpo" / "edit" / "batch_000" / "p000_1.png"),
             "prompt": "a red circle", "instructions": ["Add a red circle"], "editor": "layout", "why": "edit better by 2"}
    (rnd / "rpo" / "pair" / "batch_000.jsonl").write_text(
        json.dumps({**story, "kept": True}) + "\n" + json.dumps({**story, "file": "other.png", "kept": False}) + "\n")
    config = Config.model_validate({"goal": "left of", "strategy": "rpo"})
    rows = Strategy(config).curate(judgments, None, [])
    assert [(r["kind"], r["file"], r["loser"]) for r in rows] == [("rpo_edited", story["edited_file"], story["file"])]
    config.rpo.keep_correct = True
    rows = Strategy(config).curate(judgments, None, [])
    assert [(r["kind"], r["file"]) for r in rows] == [("correct", judgments[0]["file"]), ("rpo_edited", story["edited_file"])]
    assert Strategy(config).curate([], None, []) == []
