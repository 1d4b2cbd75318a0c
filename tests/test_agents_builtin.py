import pytest

from atelier.agents.planner import PlanError
from atelier.worlds.shapes.plan import plan_builtin
from atelier.worlds.shapes.prompts import heldout_prompts, write_prompts_builtin
from atelier.worlds.shapes.heldout import heldout_captions, is_heldout
from atelier.worlds.shapes.scene import parse


def test_planner_maps_relation_goals():
    spec = plan_builtin("get left/right right for two objects")
    assert spec.relations == ["left of", "right of"] and spec.metric == "relation_accuracy_cond"
    spec = plan_builtin("Objects above or below each other")
    assert set(spec.relations) == {"above", "below"}
    spec = plan_builtin("spatial relations between two shapes")
    assert len(spec.relations) == 4


def test_planner_maps_counts_and_objects():
    spec = plan_builtin("correct counts")
    assert spec.counts == [2, 3] and spec.metric == "count_accuracy_multi"
    spec = plan_builtin("better red triangles")
    assert spec.colours == ["red"] and spec.shapes == ["triangle"] and spec.metric == "object_accuracy"


def test_planner_rejects_what_it_cannot_map():
    with pytest.raises(PlanError, match="cannot map"):
        plan_builtin("realistic elephants and giraffes")
    with pytest.raises(PlanError, match="two different objects"):  # a relation between yellow squares only
        plan_builtin("placement of yellow squares")


def test_prompt_writer_is_seeded_distinct_and_never_heldout():
    spec = plan_builtin("left and right")
    a = write_prompts_builtin(spec, 200, seed=3).prompts
    assert a == write_prompts_builtin(spec, 200, seed=3).prompts
    assert a != write_prompts_builtin(spec, 200, seed=4).prompts
    assert len(set(a)) == len(a) == 200
    held = set(heldout_captions())
    for p in a:
        scene = parse(p)
        assert scene.relation in ("left of", "right of")
        assert not is_heldout(scene) and p not in held


def test_heldout_prompts_follow_the_spec():
    spec = plan_builtin("above and below")
    prompts = heldout_prompts(spec, 20, seed=0)
    assert len(prompts) == 20 and all(parse(p).relation in ("above", "below") for p in prompts)
    assert set(prompts) <= set(heldout_captions())


def test_right_alone_is_not_a_spatial_word():
    """'get counts right' asks for counts; 'left', 'to the right of' and the demo's goal stay spatial."""
    from atelier.worlds.shapes.plan import plan_builtin

    assert plan_builtin("get counts right").metric == "count_accuracy_multi"
    assert plan_builtin("draw the circle to the right of the square").relations == ["left of", "right of"]
    demo = plan_builtin("get spatial relations (left, right, above, below) right for two objects")
    assert demo.relations == ["left of", "right of", "above", "below"] and demo.counts == [2, 3]
