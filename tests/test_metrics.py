"""VISOR-style metrics on hand-made detections, and the evaluation path end to end."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from atelier.worlds.shapes.evaluate import evaluate, image_seed, judge_images
from atelier.worlds.shapes.metrics import Judgment, aggregate, judge_image, relation_holds, wilson_interval
from atelier.worlds.shapes.render import render
from atelier.worlds.shapes.scene import parse
from atelier.tools.detection import Detection


def at(label: str, cx: float, cy: float, half: float = 2.0) -> Detection:
    """A detection centred on (cx, cy)."""
    return Detection(label, (cx - half, cy - half, cx + half, cy + half), 0.9)


LEFT = parse("a red circle to the left of a blue square")


def test_tie_does_not_satisfy():
    j = judge_image(LEFT, [at("red circle", 10, 5), at("blue square", 10, 20)])
    assert j.object_ok and j.count_ok
    assert j.relation_ok is False and j.ipr_correct is False
    # Equal centres from boxes of different sizes are still a tie.
    assert not relation_holds("left of", [at("a", 10, 5, half=1)], [at("b", 10, 5, half=4)])


@pytest.mark.parametrize(
    "relation, a, b, holds",
    [
        ("left of", (3, 9), (4, 0), True),
        ("right of", (3, 9), (4, 0), False),
        ("above", (3, 1), (0, 2), True),  # smaller y is higher up
        ("below", (3, 1), (0, 2), False),
        ("below", (0, 7), (9, 6.5), True),
    ],
)
def test_relations_compare_box_centres_strictly(relation, a, b, holds):
    assert relation_holds(relation, [at("x", *a)], [at("y", *b)]) is holds


def test_missing_object_counts_in_uncond_only():
    found = judge_image(LEFT, [at("red circle", 5, 5), at("blue square", 20, 5)], prompt_index=0)
    missing = judge_image(LEFT, [at("red circle", 5, 5)], prompt_index=1)
    assert missing.object_ok is False and missing.relation_ok is False and missing.count_ok is False
    m = aggregate([(0, LEFT, [at("red circle", 5, 5), at("blue square", 20, 5)]), (1, LEFT, [at("red circle", 5, 5)])])
    assert found.relation_ok is True
    assert m["relation_accuracy_cond"]["value"] == 1.0 and m["relation_accuracy_cond"]["n"] == 1
    assert m["relation_accuracy_uncond"]["value"] == 0.5 and m["relation_accuracy_uncond"]["n"] == 2
    assert m["object_accuracy"]["value"] == 0.5
    # uncond = object accuracy x cond over relation images
    assert m["relation_accuracy_uncond"]["value"] == m["object_accuracy"]["value"] * m["relation_accuracy_cond"]["value"]


def test_any_satisfying_pair_of_instances_counts():
    scene = parse("two red circles above three blue squares")
    dets = [at("red circle", 5, 25), at("red circle", 20, 4)] + [at("blue square", x, 10) for x in (5, 15, 25)]
    j = judge_image(scene, dets)
    assert j.relation_ok is True and j.count_ok and j.ipr_correct
    lower = [at("red circle", 5, 25), at("red circle", 20, 12)] + [at("blue square", x, 10) for x in (5, 15, 25)]
    assert judge_image(scene, lower).relation_ok is False


def test_counts_and_multi_count_accuracy():
    scene = parse("three green triangles and a yellow circle")
    right = [at("green triangle", x, 5) for x in (2, 10, 20)] + [at("yellow circle", 5, 20)]
    two = right[1:]
    extra = right + [at("yellow circle", 25, 25)]
    judged = [judge_image(scene, d) for d in (right, two, extra)]
    assert [j.count_ok for j in judged] == [True, False, False]
    assert all(j.object_ok for j in judged) and all(j.ipr_correct == j.count_ok for j in judged)
    assert judged[1].found == {"green triangle": 2, "yellow circle": 1}
    m = aggregate([(0, scene, d) for d in (right, two, extra)])
    assert m["count_accuracy"]["value"] == pytest.approx(1 / 3)
    # Only the three-triangle group has a count of 2-3: right in the first and third images.
    assert m["count_accuracy_multi"]["value"] == pytest.approx(2 / 3) and m["count_accuracy_multi"]["n"] == 3


def test_colour_and_shape_are_judged_apart():
    scene = parse("a red circle")
    j = judge_image(scene, [at("red square", 5, 5), at("blue circle", 20, 20)])
    assert (j.object_ok, j.colour_ok, j.shape_ok) == (False, True, True)
    j = judge_image(scene, [at("red square", 5, 5)])
    assert (j.object_ok, j.colour_ok, j.shape_ok) == (False, True, False)
    assert j.relation_ok is None and j.ipr_correct is False


def test_wilson_interval_sanity():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    for n in (1, 4, 37, 320):
        for k in range(0, n + 1, max(1, n // 7)):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert wilson_interval(50, 100)[1] - wilson_interval(50, 100)[0] > wilson_interval(500, 1000)[1] - wilson_interval(500, 1000)[0]


def test_visor_n_on_a_hand_built_set():
    good = [at("red circle", 5, 5), at("blue square", 20, 5)]
    bad = [at("red circle", 20, 5), at("blue square", 5, 5)]
    items = (
        [(0, LEFT, good)] * 4
        + [(1, LEFT, good)] * 2 + [(1, LEFT, bad)] * 2
        + [(2, LEFT, bad)] * 3 + [(2, LEFT, good)]
        + [(3, LEFT, [])] * 4
        + [(4, parse("a red circle"), [at("red circle", 5, 5)])] * 4  # no relation: not a VISOR prompt
    )
    m = aggregate(items)
    assert m["n_images"] == 20
    assert [m[f"visor_{n}"]["value"] for n in (1, 2, 3, 4)] == [3 / 4, 2 / 4, 1 / 4, 1 / 4]
    assert m["visor_1"]["n"] == 4
    assert m["relation_accuracy_uncond"]["value"] == pytest.approx(7 / 16)
    assert m["relation_accuracy_cond"]["value"] == pytest.approx(7 / 12)
    for value in m.values():
        if isinstance(value, dict) and value["value"] is not None:
            lo, hi = value["ci95"]
            assert 0.0 <= lo <= value["value"] <= hi <= 1.0


def test_empty_denominators_are_null():
    m = aggregate([(0, parse("a red circle"), [at("red circle", 5, 5)])])
    for key in ("relation_accuracy_cond", "relation_accuracy_uncond", "count_accuracy_multi", "visor_1", "visor_4"):
        assert m[key]["value"] is None and m[key]["ci95"] is None
    assert m["object_accuracy"]["value"] == 1.0
    assert aggregate([])["object_accuracy"]["value"] is None


def test_judgment_is_json_serialisable():
    j = judge_image(parse("two red circles below a blue square"), [at("red circle", 5, 25), at("blue square", 5, 5)], 3)
    text = json.dumps(j.model_dump())
    assert Judgment.model_validate(json.loads(text)) == j
    assert j.prompt == "two red circles below a blue square" and j.prompt_index == 3


@dataclass
class RenderingPipe:
    """A perfect text-to-image 'model': parses the prompt and renders it with the given seed."""

    calls: list
    samples_by_seed = True  # takes seeds= as the shapes pipeline does (atelier.tools.generate)

    def __call__(self, prompts, seeds, num_inference_steps, guidance_scale, output_type):
        assert output_type == "pil" and len(prompts) == len(seeds)
        self.calls.append(list(seeds))

        @dataclass
        class Output:
            images: list

        return Output([render(parse(p), s) for p, s in zip(prompts, seeds)])


def test_evaluate_a_perfect_generator():
    scenes = [parse("a red circle to the left of a blue square"), parse("three yellow triangles"), parse("a green square above two red circles")]
    pipe = RenderingPipe(calls=[])
    m = evaluate(pipe, scenes, images_per_prompt=4, seed=2, batch_size=5)
    assert [len(c) for c in pipe.calls] == [5, 5, 2]
    assert sum(pipe.calls, []) == [image_seed(2, i, k) for i in range(3) for k in range(4)]
    assert m["seed"] == 2 and m["n_images"] == 12
    for key in ("object_accuracy", "count_accuracy", "count_accuracy_multi", "relation_accuracy_cond", "relation_accuracy_uncond", "visor_4"):
        assert m[key]["value"] == 1.0, key


def test_judge_images_keeps_every_judgment():
    scenes = [parse("a red circle to the left of a blue square")]
    swapped = render(parse("a red circle to the right of a blue square"), 0)
    judgments, m = judge_images(scenes, [[render(scenes[0], 0), swapped]])
    assert [j.relation_ok for j in judgments] == [True, False]
    assert m["visor_1"]["value"] == 1.0 and m["visor_2"]["value"] == 0.0


def test_difference_ci_newcombe():
    from atelier.worlds.shapes.metrics import difference_ci, share

    # Newcombe (1998), example: 56/70 vs 48/80 -> difference 0.2, 95% CI (0.0524, 0.3339).
    d = difference_ci(share(56, 70), share(48, 80))
    assert abs(d["value"] - 0.2) < 1e-12
    assert abs(d["ci95"][0] - 0.0524) < 5e-4 and abs(d["ci95"][1] - 0.3339) < 5e-4
    assert difference_ci(share(0, 0), share(1, 2)) is None
