"""The paired standard error of a held-out gain, and its use by `decide`."""

import json
import random

import pytest

from atelier.config import Config
from atelier.graphs.nodes import _paired_gain
from atelier.stats.promotion import promotion
from atelier.graphs.state import LoopContext
from atelier.runs import best_round
from atelier.worlds.shapes.metrics import share
from atelier.worlds.judgment import paired_difference


def _row(prompt_index: int, k: int, relation_ok: bool, object_ok: bool = True) -> dict:
    """A stored judgments.jsonl row: where the image sits, and its Judgment fields."""
    return {"prompt_index": prompt_index, "seed": 1000 * prompt_index + k, "prompt": "a red circle to the left of a blue square",
            "relation": "left of", "found": {"red circle": int(object_ok)},
            "groups": [{"name": "red circle", "expected": 1, "found": int(object_ok), "colour_ok": object_ok, "shape_ok": object_ok}],
            "object_ok": object_ok, "count_ok": object_ok, "colour_ok": object_ok, "shape_ok": object_ok,
            "relation_ok": relation_ok and object_ok, "ipr_correct": relation_ok and object_ok}


def _evaluation(outcomes: list[list[bool]]) -> list[dict]:
    return [_row(i, k, ok) for i, images in enumerate(outcomes) for k, ok in enumerate(images)]


def test_identical_evaluations_differ_by_zero_with_zero_noise():
    rows = _evaluation([[True, False], [True, True], [False, False]])
    assert paired_difference(rows, rows, "relation_accuracy_cond") == (0.0, 0.0)


def test_hand_computed_example():
    # Old: prompt 0 one of two right, prompt 1 none. New: both prompts gain one image.
    old = _evaluation([[True, False], [False, False]])
    new = _evaluation([[True, True], [True, False]])
    gain, se = paired_difference(new, old, "relation_accuracy_cond")
    # R_old = 1/4, R_new = 3/4; influences (a - R n)/N: old (1-0.5)/4, (0-0.5)/4; new (2-1.5)/4, (1-1.5)/4.
    # new - old per prompt: 0, 0 -> the gain is the same on both prompts, so no spread at all.
    assert gain == pytest.approx(0.5) and se == pytest.approx(0.0)
    new = _evaluation([[True, True], [False, False]])  # now only prompt 0 gains
    gain, se = paired_difference(new, old, "relation_accuracy_cond")
    d0, d1 = (2 - 0.5 * 2) / 4 - (1 - 0.25 * 2) / 4, (0 - 0.5 * 2) / 4 - (0 - 0.25 * 2) / 4
    assert gain == pytest.approx(0.25) and se == pytest.approx((2 * (d0**2 + d1**2)) ** 0.5)


def test_objects_missing_leave_the_conditional_denominator():
    old = [_row(0, 0, True), _row(0, 1, False, object_ok=False), _row(1, 0, False), _row(1, 1, True)]
    new = [_row(0, 0, True), _row(0, 1, True), _row(1, 0, False), _row(1, 1, True)]
    gain, _ = paired_difference(new, old, "relation_accuracy_cond")
    assert gain == pytest.approx(3 / 4 - 2 / 3)
    gain, _ = paired_difference(new, old, "object_accuracy")
    assert gain == pytest.approx(1 / 4)


def _bootstrap_sd(new: list[dict], old: list[dict], rounds: int = 2000) -> float:
    by_prompt_new, by_prompt_old = {}, {}
    for r in new:
        by_prompt_new.setdefault(r["prompt_index"], []).append(r)
    for r in old:
        by_prompt_old.setdefault(r["prompt_index"], []).append(r)
    prompts, rng, diffs = sorted(by_prompt_new), random.Random(0), []

    def rate(rows):
        counted = [r for r in rows if r["object_ok"]]
        return sum(r["relation_ok"] for r in counted) / len(counted)

    for _ in range(rounds):
        pick = [rng.choice(prompts) for _ in prompts]
        diffs.append(rate([r for i in pick for r in by_prompt_new[i]]) - rate([r for i in pick for r in by_prompt_old[i]]))
    mean = sum(diffs) / rounds
    return (sum((d - mean) ** 2 for d in diffs) / rounds) ** 0.5


def test_paired_noise_matches_a_bootstrap_and_is_below_the_independent_rule():
    rng = random.Random(3)
    # 60 prompts of 8 images, prompts differ in difficulty; the candidate fixes a few images only.
    old_outcomes = [[rng.random() < p for _ in range(8)] for p in (rng.uniform(0.2, 0.9) for _ in range(60))]
    new_outcomes = [[ok or rng.random() < 0.08 for ok in images] for images in old_outcomes]
    old, new = _evaluation(old_outcomes), _evaluation(new_outcomes)
    gain, se = paired_difference(new, old, "relation_accuracy_cond")
    assert se == pytest.approx(_bootstrap_sd(new, old), rel=0.15)
    wilson = [share(sum(r["relation_ok"] for r in rows), len(rows)) for rows in (new, old)]
    independent = sum(((hi - lo) / (2 * 1.96)) ** 2 for lo, hi in (w["ci95"] for w in wilson)) ** 0.5
    assert gain > 0 and se < 0.6 * independent


def test_unpaired_or_unknown_inputs_are_refused():
    rows = _evaluation([[True, False], [True, True]])
    shifted = [dict(r, seed=r["seed"] + 1) for r in rows]
    with pytest.raises(ValueError, match="same prompts and seeds"):
        paired_difference(rows, shifted, "relation_accuracy_cond")
    with pytest.raises(ValueError, match="no paired difference"):
        paired_difference(rows, rows, "visor_4")


def _metrics(relation: float, objects: float = 0.8, counts: float = 0.5, half_width: float = 0.06) -> dict:
    def m(v):
        return {"value": v, "ci95": [v - half_width, v + half_width], "n": 640}

    return {"relation_accuracy_cond": m(relation), "object_accuracy": m(objects), "count_accuracy": m(counts)}


def test_promotion_uses_the_paired_noise_when_given():
    base = best = _metrics(0.70)
    candidate = _metrics(0.72)
    objects = {"object_accuracy": 0.03}
    promoted, _, noise, reason = promotion(candidate, best, base, "relation_accuracy_cond", 1.0, objects)
    assert not promoted and noise == pytest.approx((2 * (0.06 / 1.96) ** 2) ** 0.5)
    promoted, gain, noise, reason = promotion(candidate, best, base, "relation_accuracy_cond", 1.0, objects, paired=(0.02, 0.008))
    assert promoted and (gain, noise) == (0.02, 0.008) and "paired noise" in reason
    # The object guard still applies first.
    promoted, *_, reason = promotion(_metrics(0.80, objects=0.70), best, base, "relation_accuracy_cond", 1.0, objects, paired=(0.1, 0.01))
    assert not promoted and reason == "object accuracy fell 0.100 below the base (limit 0.03)"


def test_guards_are_named_by_metric_and_refuse_only_when_asked():
    base = best = _metrics(0.70, counts=0.55)
    fewer_counts = _metrics(0.80, counts=0.45)
    rule = dict(metric="relation_accuracy_cond", sigmas=1.0, paired=(0.1, 0.01))
    assert promotion(fewer_counts, best, base, max_drop={"object_accuracy": 0.03}, **rule)[0]  # counts unguarded
    promoted, *_, reason = promotion(fewer_counts, best, base, max_drop={"object_accuracy": 0.03, "count_accuracy": 0.05}, **rule)
    assert not promoted and reason == "count accuracy fell 0.100 below the base (limit 0.05)"
    assert promotion(fewer_counts, best, base, max_drop={"count_accuracy": 0.15}, **rule)[0]
    # A guard on a metric the evaluations do not have (no CLIP scorer) is skipped, not an error.
    assert promotion(fewer_counts, best, base, max_drop={"clip_score": 1.0}, **rule)[0]
    # No value of the target metric (every judgment failed): an error decide turns into a rollback.
    with pytest.raises(ValueError, match="no held-out relation_accuracy_cond"):
        promotion({"relation_accuracy_cond": {"value": None, "ci95": None, "n": 0}}, best, base, max_drop={}, **rule)


def test_legacy_guard_fields_map_to_named_guards():
    cfg = Config(goal="left and right", decide={"max_object_drop": 0.05, "max_count_drop": 0.1})
    assert cfg.decide.max_drop == {"object_accuracy": 0.05, "count_accuracy": 0.1}
    assert Config(goal="left and right", decide={"max_object_drop": None}).decide.max_drop == {}
    with pytest.raises(ValueError, match="unknown metric 'objects'"):
        Config(goal="left and right", decide={"max_drop": {"objects": 0.1}})


def _write(path, rows):
    path.mkdir(parents=True, exist_ok=True)
    (path / "judgments.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_decide_pairs_the_candidate_with_the_best_so_far(tmp_path):
    ctx = LoopContext(config=Config(goal="get left/right right for two objects"), run_dir=tmp_path)
    base = _evaluation([[False, False], [True, False], [False, True]])
    round1 = _evaluation([[True, False], [True, False], [False, True]])
    round2 = _evaluation([[True, True], [True, False], [False, True]])
    _write(tmp_path / "base", base)
    _write(tmp_path / "round_001" / "eval", round1)
    _write(tmp_path / "round_002" / "eval", round2)
    state = {"metric": "relation_accuracy_cond", "best_adapter": None}
    assert _paired_gain(ctx, state, 1) == paired_difference(round1, base, "relation_accuracy_cond")
    # A round without training data has no adapter: the base stays the best, not that round.
    state["rounds"] = [{"round": 1, "adapter": None}]
    assert best_round(state) is None
    assert _paired_gain(ctx, state, 1) == paired_difference(round1, base, "relation_accuracy_cond")
    state["best_adapter"] = str(tmp_path / "round_001" / "adapter")
    state["rounds"] = [{"round": 1, "adapter": state["best_adapter"]}]
    assert _paired_gain(ctx, state, 2) == paired_difference(round2, round1, "relation_accuracy_cond")
    # No judgments for the candidate (an evaluation by another judge, say): the Wilson rule decides.
    assert _paired_gain(ctx, state, 3) is None


def test_a_rollback_reason_reads_right_for_a_loss():
    best = base = _metrics(0.70)
    *_, reason = promotion(_metrics(0.60), best, base, "relation_accuracy_cond", 0.0, {}, paired=(-0.1, 0.02))
    assert reason == "relation_accuracy_cond 0.700 -> 0.600: gain -0.100 not above 0.0 x paired noise 0.020"


def test_guards_compare_the_images_judged_on_both_sides():
    # The base got 8 of 10 objects right and the candidate the same 8; but two of the candidate's
    # right images failed to be judged. Unpaired, its object accuracy reads 6/8 = 0.75 (a drop of
    # 0.05 > 0.03); paired over the 8 images judged on both sides there is no drop at all.
    from atelier.stats.promotion import promotion as rule
    from atelier.worlds.judgment import summarize

    outcomes = [True] * 8 + [False] * 2
    base = [_row(i // 2, i % 2, True, ok) for i, ok in enumerate(outcomes)]
    candidate = [dict(r, failed=True) if i in (0, 1) else r for i, r in enumerate(base)]
    base_m, cand_m = summarize(base), summarize(candidate)
    assert cand_m["object_accuracy"]["value"] == pytest.approx(6 / 8) and base_m["object_accuracy"]["value"] == 0.8
    guard = {"object_accuracy": 0.03}
    unpaired = rule(cand_m, base_m, base_m, "relation_accuracy_cond", 0.0, guard, paired=(0.01, 0.0))
    assert not unpaired[0] and "object accuracy fell 0.050" in unpaired[3]
    changes = {"object_accuracy": paired_difference(candidate, base, "object_accuracy")[0]}
    assert changes["object_accuracy"] == pytest.approx(0.0)
    assert rule(cand_m, base_m, base_m, "relation_accuracy_cond", 0.0, guard, paired=(0.01, 0.0), guard_changes=changes)[0]
