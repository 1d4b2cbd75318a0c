"""`atelier rewriter train`: trl's DPOTrainer with a peft LoRA on a tiny causal LM built from a
config (offline). The adapter loads with peft and moves the model's log-probability of the chosen
rewrite over the rejected one in the right direction."""

import json

import pytest
import torch

from atelier.rewriter.export import trl_rows, write_pairs
from atelier.worlds.shapes.rewrites import ShapesRewriteOneRequest
from loop_helpers import atelier
from tiny_causal_lm import build_tiny_causal_lm

PAIRS = [
    {"prompt": "a red circle to the left of a blue square", "chosen": "a blue square to the right of a red circle",
     "rejected": "one red circle to the left of one blue square"},
    {"prompt": "a green triangle above a yellow circle", "chosen": "a yellow circle below a green triangle",
     "rejected": "one green triangle above one yellow circle"},
]


def margin(model, tokenizer, rows) -> float:
    """Mean over rows of log p(chosen | prompt) - log p(rejected | prompt), summed over answer tokens."""
    total = 0.0
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        logps = []
        for answer in (row["chosen"][0]["content"], row["rejected"][0]["content"]):
            p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            a_ids = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p_ids + a_ids])
            with torch.no_grad():
                logits = model(ids).logits[0, :-1].float()
            lp = torch.log_softmax(logits, -1)[torch.arange(ids.shape[1] - 1), ids[0, 1:]]
            logps.append(lp[len(p_ids) - 1:].sum().item())
        total += logps[0] - logps[1]
    return total / len(rows)


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("lm"))


def test_rewriter_train_writes_a_lora_that_prefers_the_chosen_rewrite(tmp_path, lm):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = trl_rows(PAIRS * 4, lambda p: ShapesRewriteOneRequest(prompt=p).messages())
    write_pairs(rows, tmp_path / "pairs")
    out = tmp_path / "lora"
    done = atelier("rewriter", "train", str(tmp_path / "pairs" / "pairs.parquet"), "--model", str(lm), "--out", str(out),
                   "--lr", "5e-3", "--max-steps", "8", "--batch-size", "4", "--rank", "4", "--alpha", "8",
                   env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained on 8 pairs in 8 steps" in done.stdout and "--enable-lora" in done.stdout
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert json.loads((out / "atelier_rewriter.json").read_text())["base_model"] == str(lm)

    tokenizer = AutoTokenizer.from_pretrained(lm)
    base = AutoModelForCausalLM.from_pretrained(lm).eval()
    before = margin(base, tokenizer, rows[:2])
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lm), str(out)).eval()
    assert tuned.peft_config["default"].r == 4
    after = margin(tuned, tokenizer, rows[:2])
    assert after > before + 0.5, (before, after)
    with tuned.disable_adapter():  # the base is untouched under the adapter
        assert margin(tuned, tokenizer, rows[:2]) == pytest.approx(before, abs=1e-4)


def test_rewriter_train_bad_input_is_one_line(tmp_path, lm):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    for args in (["rewriter", "train", str(tmp_path / "none.jsonl"), "--model", str(lm), "--out", str(tmp_path / "o")],
                 ["rewriter", "train", str(tmp_path / "bad.jsonl"), "--model", str(lm), "--out", str(tmp_path / "o")],
                 ["rewriter", "train", str(tmp_path / "bad.jsonl"), "--model", str(lm), "--out", str(tmp_path / "o"),
                  "--beta", "0"]):
        done = atelier(*args)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
    rows = trl_rows(PAIRS, lambda p: ShapesRewriteOneRequest(prompt=p).messages())
    write_pairs(rows, tmp_path / "pairs")
    done = atelier("rewriter", "train", str(tmp_path / "pairs"), "--model", str(tmp_path / "no-model"), "--out",
                   str(tmp_path / "o"))
    assert done.returncode == 2 and "cannot load a causal language model" in done.stderr
