"""The chance level and ceiling shown next to a shapes run's held-out metrics."""

from atelier.worlds.shapes.heldout import heldout_scenes
from atelier.worlds.shapes.references import REFERENCE_KINDS, reference_metrics
from atelier.worlds.shapes.scene import caption


def test_blind_renders_lose_the_relation_but_keep_the_objects():
    captions = [caption(s) for s in heldout_scenes()[:24]]
    refs = reference_metrics(captions, 4, lambda i, k: 100 * i + k)
    assert set(refs) == set(REFERENCE_KINDS)
    perfect, blind = refs["renders"], refs["relation_blind_renders"]
    assert perfect["relation_accuracy_cond"]["value"] >= 0.9
    assert blind["relation_accuracy_cond"]["value"] <= perfect["relation_accuracy_cond"]["value"] - 0.2
    # The same objects are drawn either way, so object accuracy does not tell the two apart.
    assert abs(blind["object_accuracy"]["value"] - perfect["object_accuracy"]["value"]) <= 0.1


def test_scenes_without_a_relation_have_no_relation_figure():
    refs = reference_metrics(["two red circles and a blue square"], 2, lambda i, k: k)
    assert refs["relation_blind_renders"]["relation_accuracy_cond"]["value"] is None
    assert refs["renders"]["object_accuracy"]["value"] == refs["relation_blind_renders"]["object_accuracy"]["value"]


def test_kinds_pick_which_references_are_drawn():
    refs = reference_metrics(["a red square to the left of a blue circle"], 2, lambda i, k: k, kinds=["relation_blind_renders"])
    assert list(refs) == ["relation_blind_renders"]
