"""The rewrite strategy through the CLI on the shapes world: with builtin agents, killed and
resumed, with every role on the test OpenAI-protocol server (garbage rewrites and unparsable
rubric answers recorded, not fatal), and `generate --rewrite-with` on the run it leaves."""

import json
import re
import zlib

import pytest

from atelier.config import load_config
from atelier.rewriter.rewriter import load_rewriter
from atelier.worlds.shapes.rewrites import phrasing_features, phrasings
from loop_helpers import TINY, atelier, finished_run, write_config
from openai_server import OpenAIServer, Reply, correct, image_urls, schema_name, user_text

REWRITE = {"rewrites_per_prompt": 4, "rubric_samples": 3, "rule_min_net": 1}


def rewrite_config(tmp_path, **overrides):
    return write_config(tmp_path, strategy="rewrite", rewrite=REWRITE, **overrides)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def outcome(run_dir):
    """What a run decided and learned, in a form two runs can be compared by."""
    decisions = [json.loads(p.read_text()) for p in sorted(run_dir.glob("round_*/decision.json"))]
    states = [p.read_text() for p in sorted(run_dir.glob("round_*/adapter/rewriter.json"))]
    stories = [p.read_text() for p in sorted(run_dir.glob("round_*/stories.jsonl"))]
    return ([(d["round"], d["promoted"], d["gain"], json.dumps(d["metrics"], sort_keys=True)) for d in decisions],
            states, [re.sub(r"/\S+?/runs/\w+/", "RUN/", s) for s in stories])


@pytest.fixture(scope="module")
def builtin_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rewrite")
    return finished_run(tmp, rewrite_config(tmp), "rw")


def test_builtin_run_samples_rewrites_scores_them_and_keeps_pairs(builtin_run):
    run = builtin_run
    prompts = json.loads((run / "round_001" / "prompts.json").read_text())
    manifest = [r for p in sorted((run / "round_001" / "generate").glob("batch_*/manifest.jsonl")) for r in read_jsonl(p)]
    # The generator is frozen: no adapter reaches it; each prompt's rewrites share the prompt's seed.
    assert all(r["adapter"] is None and r["rewriter"] is None for r in manifest)
    for i, p in enumerate(prompts):
        mine = [r for r in manifest if r["prompt_index"] == i]
        assert mine and all(r["prompt"] == p["text"] for r in mine) and len({r["seed"] for r in mine}) == 1
        assert len(mine) == min(REWRITE["rewrites_per_prompt"], len(phrasings(p["text"])))
        assert {r["rewrite"] for r in mine} <= set(phrasings(p["text"]))
    rubrics = read_jsonl(run / "round_001" / "rubrics.jsonl")
    assert len(rubrics) == len(manifest)
    for r in rubrics:
        assert len(r["rubric_samples"]) == 3 and r["rewrite_score"] == pytest.approx(sum(r["rubric_means"].values()))
    stories = read_jsonl(run / "round_001" / "stories.jsonl")
    assert [s["prompt"] for s in stories] == [p["text"] for p in prompts]  # one story per user prompt
    kept = [s for s in stories if s["pair"]]
    for s in stories:
        scores = [w["score"] for w in s["rewrites"]]
        assert all(w["reasons"]["alignment"] for w in s["rewrites"])
        if s["pair"]:
            assert s["pair"]["chosen_score"] == max(scores) > min(scores) == s["pair"]["rejected_score"]
            chosen = next(w for w in s["rewrites"] if w["text"] == s["pair"]["chosen"])
            assert s["chosen_image"] == chosen["file"]
        else:
            assert max(scores) == min(scores) or len(scores) < 2
    # The pairs became the round's dataset and the rewriter's training data (trl's format).
    pairs = read_jsonl(run / "round_001" / "adapter" / "pairs.jsonl")
    assert [json.loads(p["chosen"][0]["content"])["rewrite"] for p in pairs] == [s["pair"]["chosen"] for s in kept]
    assert (run / "round_001" / "adapter" / "pairs.parquet").exists()
    state = json.loads((run / "round_001" / "adapter" / "rewriter.json").read_text())
    rule = json.loads((run / "round_001" / "adapter" / "rule.json").read_text())
    assert state["kind"] == "builtin_rule" and state["pairs"] == len(pairs) == rule["pairs"]
    # The rule is the count over these pairs, nothing else.
    from atelier.rewriter.rule import learn_rule

    recount = learn_rule([(phrasing_features(s["prompt"], s["pair"]["chosen"]), phrasing_features(s["prompt"], s["pair"]["rejected"]))
                          for s in kept], min_net=REWRITE["rule_min_net"])
    assert recount.model_dump(mode="json") == rule


def test_builtin_run_evaluates_the_best_guess_against_raw_prompts(builtin_run):
    run = builtin_run
    heldout = json.loads((run / "heldout" / "prompts.json").read_text())
    base = read_jsonl(run / "base" / "judgments.jsonl") if (run / "base").exists() else None
    evaluated = json.loads((run / "round_001" / "eval" / "rewrites.json").read_text())
    config = load_config(run / "config.yaml")
    best, _ = load_rewriter(config, run / "round_001" / "adapter").best([p["text"] for p in heldout])
    assert [p["rewrite"] for p in evaluated["prompts"]] == best
    judged = read_jsonl(run / "round_001" / "eval" / "judgments.jsonl")
    assert [j["prompt"] for j in judged] == [p["text"] for p in heldout for _ in range(TINY["budget"]["images_per_heldout_prompt"])]
    assert [j["rewrite"] for j in judged] == [b for b in best for _ in range(TINY["budget"]["images_per_heldout_prompt"])]
    if base is not None:  # paired: the raw prompts' images have the same prompts and seeds
        assert [(j["prompt_index"], j["seed"]) for j in base] == [(j["prompt_index"], j["seed"]) for j in judged]
        assert all("rewrite" not in j for j in base)
    decision = json.loads((run / "round_001" / "decision.json").read_text())
    assert decision["adapter"].endswith("round_001/adapter") and decision["reason"]


def test_generate_rewrite_with_a_run_and_a_rewriter_folder(builtin_run, tmp_path):
    prompt = "a red circle to the left of a blue square"
    config = load_config(builtin_run / "config.yaml")
    for source in (builtin_run / "round_001" / "adapter", builtin_run):
        out = tmp_path / source.name
        done = atelier("generate", "--prompt", prompt, "--n", "2", "--steps", "2", "--out", str(out),
                       "--rewrite-with", str(source))
        assert done.returncode == 0, done.stderr[-2000:]
        rows = read_jsonl(out / "metadata.jsonl")
        folder = source if source.name == "adapter" else _best(builtin_run)
        expected = load_rewriter(config, folder).best([prompt])[0][0]
        assert [(r["prompt"], r["rewrite"]) for r in rows] == [(prompt, expected)] * 2
        assert f"{prompt!r} -> {expected!r}" in done.stdout
    bad = atelier("generate", "--prompt", prompt, "--out", str(tmp_path / "x"), "--rewrite-with", str(tmp_path))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--rewrite-with" in bad.stderr


def _best(run):
    best = None
    for p in sorted(run.glob("round_*/decision.json")):
        d = json.loads(p.read_text())
        best = d["adapter"] if d["promoted"] else best
    return best


@pytest.mark.parametrize("point", ["score_rewrites", "train_step:1"])
def test_a_killed_round_resumes_as_an_uninterrupted_run(builtin_run, tmp_path, point):
    cfg = rewrite_config(tmp_path)
    killed = atelier("run", str(cfg), "--run-id", "rw", env={"ATELIER_DIE_AT": point})
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = atelier("resume", "rw", "--run-dir", str(tmp_path / "runs"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert outcome(tmp_path / "runs" / "rw") == outcome(builtin_run)


# --- every role on the test OpenAI-protocol server ---------------------------------------------


def _user_prompt(body):
    return re.search(r'User prompt: "([^"]+)"', user_text(body)).group(1)


def garbage_prompt(prompt: str) -> bool:
    return zlib.crc32(prompt.encode()) % 3 == 0


def unreadable_image(body) -> bool:
    return zlib.crc32(image_urls(body)[0].encode()) % 5 == 0


def script(body: dict, n: int) -> Reply:
    match schema_name(body):
        case "OneRewrite":
            prompt = _user_prompt(body)
            if garbage_prompt(prompt) and n % 2:  # off the world's language: re-asked, then recorded as failed
                return Reply(content=json.dumps({"rewrite": "a purple blob somewhere"}))
            options = phrasings(prompt)
            return Reply(content=json.dumps({"rewrite": options[n % len(options)]}))
        case "Rubric":
            if unreadable_image(body):
                return Reply(content="I would rate this image quite highly!")
            score = zlib.crc32(image_urls(body)[0].encode()) % 6
            s = {"score": score, "reason": "as seen"}
            return Reply(content=json.dumps({"aesthetics": s, "alignment": s, "preference": s}))
    return correct(body, n)


def test_every_role_on_the_openai_server(tmp_path):
    with OpenAIServer(script) as server:
        agents = {role: {"backend": "openai", "base_url": server.url, "model": "scripted-vlm", "max_concurrency": 4,
                         "max_reasks": 1, "retry_backoff_s": 0.01} for role in ("planner", "prompt_writer", "judge")}
        cfg = rewrite_config(tmp_path, agents=agents, budget={**TINY["budget"], "rounds": 1},
                             decide={**TINY["decide"], "max_failed_share": 1.0})
        done = atelier("run", str(cfg), "--run-id", "vlm")
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "vlm"
    assert {"OneRewrite", "Rubric"} <= set(server.schemas())
    records = [p for f in sorted((run / "round_001" / "rewrites").glob("*.json")) for p in json.loads(f.read_text())["prompts"]]
    failures = [f for p in records for f in p["failures"]]
    assert failures and all("purple" in f["raw"] or "purple" in (f["error"] or "") for f in failures)
    for p in records:  # every rewrite drawn is a valid one
        assert all(t in phrasings(p["prompt"]) for t in p["rewrites"])
    rubrics = read_jsonl(run / "round_001" / "rubrics.jsonl")
    unscored = [r for r in rubrics if r["rewrite_score"] is None]
    assert unscored and all(len(r["rubric_failures"]) == 3 for r in unscored)
    stories = read_jsonl(run / "round_001" / "stories.jsonl")
    assert any(s["failed_rewrites"] for s in stories)
    state = json.loads((run / "round_001" / "adapter" / "rewriter.json").read_text())
    assert state["kind"] == "unchanged"  # no train_model: the pairs are exported, the model is asked as it is
    evaluated = json.loads((run / "round_001" / "eval" / "rewrites.json").read_text())
    assert all(p["rewrite"] in phrasings(p["prompt"]) or p["failures"] for p in evaluated["prompts"])


# --- a model rewriter trained with DPO in the loop and served as a LoRA -------------------------


class LoraServer(OpenAIServer):
    """The test server that also takes vLLM's runtime LoRA loading (POST /v1/load_lora_adapter)."""

    def __init__(self, script):
        self.loaded: list[dict] = []
        super().__init__(script)

    def _handler(self):
        base, server = super()._handler(), self

        class Handler(base):
            def do_POST(self):
                if self.path.rstrip("/") == "/v1/load_lora_adapter":
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    known = any(b["lora_name"] == body["lora_name"] for b in server.loaded)
                    server.loaded.append(body)
                    if known:  # vLLM's answer for an adapter it has already
                        self._send(400, {"error": {"message": f"The lora adapter '{body['lora_name']}' has already been loaded."}})
                    else:
                        self._send(200, b"Success", "text/plain")
                    return
                super().do_POST()

        return Handler


def test_a_model_rewriter_is_trained_with_dpo_and_asked_through_its_lora(tmp_path):
    from atelier.rewriter.rewriter import served_name
    from tiny_causal_lm import build_tiny_causal_lm

    lm = build_tiny_causal_lm(tmp_path / "lm")
    with LoraServer(script) as server:
        agents = {role: {"backend": "openai", "base_url": server.url, "model": "scripted-vlm", "max_concurrency": 4,
                         "max_reasks": 1, "retry_backoff_s": 0.01} for role in ("planner", "prompt_writer", "judge")}
        cfg = write_config(tmp_path, strategy="rewrite", agents=agents, budget={**TINY["budget"], "rounds": 1},
                           rewrite={**REWRITE, "train_model": str(lm), "learning_rate": 1e-3, "batch_size": 2},
                           decide={**TINY["decide"], "max_failed_share": 1.0})
        done = atelier("run", str(cfg), "--run-id", "dpo", env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    adapter = tmp_path / "runs" / "dpo" / "round_001" / "adapter"
    state = json.loads((adapter / "rewriter.json").read_text())
    assert state["kind"] == "lora" and state["base_model"] == str(lm) and state["steps"] >= 1
    assert (adapter / "lora" / "adapter_config.json").exists()
    name = served_name(adapter / "lora")
    assert server.loaded and server.loaded[0] == {"lora_name": name, "lora_path": str((adapter / "lora").resolve())}
    # the held-out best guesses were asked of the LoRA, by its served name, at temperature 0
    asked = [b for b in server.requests if schema_name(b) == "OneRewrite" and b["model"] == name]
    heldout = json.loads((tmp_path / "runs" / "dpo" / "heldout" / "prompts.json").read_text())
    assert len(asked) >= len(heldout) and all(b.get("temperature") == 0.0 and "top_p" not in b for b in asked)
    # the round's rewrites were sampled with the paper's temperature 0.9 and top_p 0.9
    sampled = [b for b in server.requests if schema_name(b) == "OneRewrite" and b["model"] == "scripted-vlm"]
    assert sampled and all(b.get("temperature") == 0.9 and b.get("top_p") == 0.9 for b in sampled)


def test_the_report_section_shows_rewrites_next_to_prompts_and_the_paired_comparison(builtin_run):
    from atelier.rewriter.report import round_comparison, rewrite_section

    text = rewrite_section(builtin_run, builtin_judge=True)
    guesses = json.loads((builtin_run / "round_001" / "eval" / "rewrites.json").read_text())["prompts"]
    assert "| user's prompt | rewriter's best guess |" in text
    assert all(f"| {p['prompt']} | {p['rewrite']} |" in text for p in guesses[:8])
    comparison = round_comparison(builtin_run, 1, builtin_judge=True)
    m = comparison["metrics"]["object_accuracy"]
    n = TINY["budget"]["heldout_prompts"] * TINY["budget"]["images_per_heldout_prompt"]
    assert m["wins"] + m["ties"] + m["losses"] == n == comparison["images"]
    assert m["gain"] == pytest.approx(m["rewritten"] - m["raw"]) and m["ci95"][0] <= m["gain"] <= m["ci95"][1]
    assert comparison["rubric_sum"]["wins"] + comparison["rubric_sum"]["ties"] + comparison["rubric_sum"]["losses"] == n
    assert f"{m['wins']} / {m['ties']} / {m['losses']}" in text
    assert text.strip() in (builtin_run / "report" / "report.md").read_text()  # the run's report carries the section
