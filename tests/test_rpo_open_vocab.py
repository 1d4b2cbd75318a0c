"""RPO on the open_vocab world through the CLI with tiny models of the real architectures (SD 1.5 +
a ControlNet + OWLv2 + CLIP): the ControlNet img2img editor (the original as control image, the
text = prompt + instructions) and the SDEdit fallback edit the wrong images, the judge scores
both, and Diffusion-DPO trains on the kept pairs. The tiny models draw noise, so which pairs are
kept is chance; the plumbing is what is checked."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from loop_helpers import atelier
from test_open_vocab_loop import loop_config, models  # noqa: F401  (the fixture)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("editor", ["controlnet", "sdedit"])
def test_rpo_round_on_open_vocab(models, tiny_controlnet, tmp_path, editor):  # noqa: F811
    rpo = {"editor": editor, "strength": 0.5, "margin": 0.0, "learning_rate": 1e-3}
    if editor == "controlnet":
        rpo["controlnet"] = str(tiny_controlnet)
    cfg = loop_config(models, "ipr", tmp_path, rpo=rpo,
                      budget={"rounds": 1, "patience": 1, "prompts_per_round": 4, "images_per_prompt": 2,
                              "heldout_prompts": 4, "images_per_heldout_prompt": 2, "batch_prompts": 2},
                      generation={"steps": 4, "guidance_scale": 5.0, "batch_size": 8, "dtype": "float32"})
    cfg.write_text(cfg.read_text().replace("strategy: ipr", "strategy: rpo"))  # the ipr goal, the rpo strategy
    done = atelier("run", str(cfg), "--run-id", editor)
    assert done.returncode == 0, done.stderr[-3000:]
    rnd = tmp_path / "runs" / editor / "round_001"
    pairs = [p for f in sorted((rnd / "rpo" / "pair").glob("batch_*.jsonl")) for p in read_jsonl(f)]
    judged = [j for f in sorted((rnd / "judge").glob("batch_*.jsonl")) for j in read_jsonl(f)]
    assert len(pairs) == sum(1 for j in judged if not j["ipr_correct"] and not j.get("failed")) > 0
    for p in pairs:
        assert p["edit"]["method"] == editor and p["edit"]["strength"] == 0.5
        assert p["edit"]["prompt"].startswith(p["prompt"].rstrip(".")) and all(i in p["edit"]["prompt"] for i in p["instructions"])
        assert Image.open(p["edited_file"]).size == Image.open(p["file"]).size
        assert p["verdict_edited"] is not None and "clip_score" not in p["verdict_edited"]
    table = pq.read_table(rnd / "rpo" / "pairs.parquet")
    assert table.column_names == ["jpg_0", "jpg_1", "label_0", "caption"] and table.num_rows == sum(p["kept"] for p in pairs)
    if table.num_rows:  # margin 0: any edit not judged worse is kept
        meta = json.loads((rnd / "adapter" / "atelier_adapter.json").read_text())
        assert meta["reference"] == "base model (adapters disabled)" and meta["n_samples"] == table.num_rows
    stories = read_jsonl(rnd / "stories.jsonl")
    assert len(stories) == len(judged)
