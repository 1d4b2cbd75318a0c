"""The rewrite strategy's rules without a model: the pair rule on a table of scores, the trl
export read back with `datasets`, the builtin rewriter's phrasings and its learned rule."""

import json

import pytest

from atelier.config import parse_config
from atelier.rewriter.export import read_pairs, trl_rows, write_pairs
from atelier.rewriter.pairs import overall_score, preference_pair, rubric_means
from atelier.rewriter.rewriter import BuiltinRewriter, _weights
from atelier.rewriter.rule import learn_rule
from atelier.worlds.shapes.rewrites import ShapesRewriteOneRequest, phrasing_features, phrasings


def sample(a, b, c):
    return {"aesthetics": {"score": a, "reason": "."}, "alignment": {"score": b, "reason": "."},
            "preference": {"score": c, "reason": "."}}


def test_rubric_means_of_three_samples_and_failed_samples_left_out():
    means = rubric_means([sample(1, 4, 3), sample(2, 5, 3), sample(3, 3, 3)])
    assert means == {"aesthetics": 2.0, "alignment": 4.0, "preference": 3.0}
    assert overall_score(means) == 9.0
    # a failed answer (None) is no zero: the mean is over the two valid samples
    assert rubric_means([sample(0, 1, 2), None, sample(2, 3, 4)]) == {"aesthetics": 1.0, "alignment": 2.0, "preference": 3.0}
    assert rubric_means([None, None, None]) is None and overall_score(None) is None


@pytest.mark.parametrize("scores, pair, why", [
    ([9.0, 12.5, 4.0, 12.5], ("r1", "r2"), "12.5 over 4"),  # the first drawn of the tied best wins
    ([5.0, 5.0, 5.0], None, "tie"),  # best and worst tie: dropped
    ([7.0, None, 3.0], ("r0", "r2"), "7 over 3"),  # a rewrite with no valid sample never competes
    ([7.0, None, None], None, "1 scored rewrite"),  # one scored rewrite makes no pair
    ([2.0, 2.0 + 1e-12, 2.0], None, "tie"),  # means that differ by rounding alone are a tie
])
def test_pair_rule_table(scores, pair, why):
    got, reason = preference_pair([{"text": f"r{i}", "score": s} for i, s in enumerate(scores)])
    assert (None if got is None else (got["chosen"]["text"], got["rejected"]["text"])) == pair
    assert why in reason


def test_trl_export_reads_back_with_datasets(tmp_path):
    pairs = [{"prompt": "a red circle to the left of a blue square", "chosen": "a blue square to the right of a red circle",
              "rejected": "one red circle to the left of one blue square", "chosen_score": 12.0, "rejected_score": 7.0}]
    rows = trl_rows(pairs, lambda p: ShapesRewriteOneRequest(prompt=p).messages())
    jsonl, parquet = write_pairs(rows, tmp_path)
    for path in (jsonl, parquet, tmp_path):
        data = read_pairs(path)
        assert len(data) == 1
        row = data[0]
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert '"a red circle to the left of a blue square"' in row["prompt"][1]["content"]
        assert row["chosen"] == [{"role": "assistant", "content": json.dumps({"rewrite": pairs[0]["chosen"]})}]
        assert json.loads(row["rejected"][0]["content"])["rewrite"] == pairs[0]["rejected"]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    with pytest.raises(ValueError, match="rows lack chosen, rejected"):
        read_pairs(tmp_path / "bad.jsonl")


def test_shapes_phrasings_keep_the_meaning_and_name_their_patterns():
    prompt = "a red circle to the left of two blue squares"
    texts = phrasings(prompt)
    assert texts[0] == prompt and len(set(texts)) == len(texts) == 4
    assert "two blue squares to the right of one red circle" in texts
    assert phrasing_features(prompt, "two blue squares to the right of a red circle") == {
        "relation left/right": "right of", "article": "a"}
    with pytest.raises(ValueError, match="does not say the scene"):
        phrasing_features(prompt, "a red circle to the right of two blue squares")
    request = ShapesRewriteOneRequest(prompt=prompt)
    request.check(request.answer_schema(rewrite="one red circle to the left of two blue squares"))
    for garbage in ("a purple circle left", "two blue squares to the left of a red circle"):
        with pytest.raises(ValueError):
            request.check(request.answer_schema(rewrite=garbage))


def test_the_rule_is_counted_over_pairs_and_steers_the_builtin_rewriter():
    win = ({"relation left/right": "right of", "article": "a"}, {"relation left/right": "left of", "article": "one"})
    lose = ({"relation left/right": "left of", "article": "a"}, {"relation left/right": "right of", "article": "a"})
    rule = learn_rule([win, win, win, lose], min_net=2)
    # right of: 3 wins 1 loss (net 2: preferred); 'a' over 'one': 3 wins, net 3
    assert rule.preferred == {"relation left/right": "right of", "article": "a"}
    assert rule.counts["relation left/right"]["left of"] == {"wins": 1, "losses": 3}
    assert learn_rule([win, lose], min_net=2).preferred == {}  # 'a' net 1 only; right/left 1-1
    assert learn_rule([win, lose], min_net=1).preferred == {"article": "a"}  # right/left net 0: still no preference
    assert any("say 'right of'" in line for line in rule.describe())

    config = parse_config({"goal": "get left and right right", "strategy": "rewrite"})
    prompt = "a red circle to the left of a blue square"
    untrained = BuiltinRewriter(config, None)
    assert untrained.best([prompt])[0] == [prompt]  # no rule: the prompt as written
    trained = BuiltinRewriter(config, rule)
    assert trained.best([prompt])[0] == ["a blue square to the right of a red circle"]
    drawn, _ = trained.sample([prompt], 8, seed=0)
    # the nucleus (top-p 0.9) keeps the phrasings the rule likes; all are meaning-preserving
    assert drawn[0][0] and set(drawn[0]) <= set(phrasings(prompt))
    assert "a blue square to the right of a red circle" in drawn[0]
    untrained_draws, _ = untrained.sample([prompt], 8, seed=0)
    assert sorted(untrained_draws[0]) == sorted(phrasings(prompt))  # uniform: all eight


def test_nucleus_keeps_the_most_likely_phrasings():
    w = _weights([2, 0, 0, 1], temperature=0.5, top_p=0.9)
    assert w[0] > w[3] > 0 and w[1] == w[2] == 0
    assert (_weights([0, 0, 0], 0.9, 0.9) > 0).all()  # equals are kept together
    assert list(_weights([1, 0, 1], 0.0, 0.9) > 0) == [True, False, True]


def test_config_checks_the_rewriter():
    with pytest.raises(ValueError, match="train_model"):
        parse_config({"goal": "get left and right right", "strategy": "rewrite", "rewrite": {"train_model": "x"}})


def test_a_server_without_runtime_lora_loading_is_one_clear_error(tmp_path):
    from atelier.config import AgentConfig
    from atelier.rewriter.rewriter import load_lora_into_server
    from openai_server import OpenAIServer

    with OpenAIServer() as server:  # answers 404 for /v1/load_lora_adapter, as vLLM without the runtime flag
        agent = AgentConfig(backend="openai", base_url=server.url, model="m")
        with pytest.raises(ValueError, match="refused to load the rewriter's LoRA .*--enable-lora"):
            load_lora_into_server(agent, tmp_path)
    agent = AgentConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m", timeout_s=2)
    with pytest.raises(ValueError, match="cannot reach"):
        load_lora_into_server(agent, tmp_path)
