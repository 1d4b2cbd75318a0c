"""The shapes world's editors on the shipped model: SDEdit by the shapes model itself (RPO's recipe in
this world), and the layout editor with a light SDEdit blend; each instruction checked by the exact
detector on the edited image."""

import numpy as np
import pytest

from atelier.worlds.shapes.editors import LayoutEditor, SDEditEditor, sdedit
from atelier.worlds.shapes.model import load_generator
from atelier.worlds.shapes.render import render
from atelier.worlds.shapes.scene import parse

PROMPT = "a red circle to the left of a blue square"


@pytest.fixture(scope="module")
def pipe():
    return load_generator("shapes")


@pytest.fixture
def wrong():
    return render(parse("a red circle to the right of a blue square"), 4)


def test_sdedit_is_deterministic_per_seed_and_records_its_settings(pipe, wrong):
    editor = SDEditEditor(lambda: pipe, strength=0.6, steps=8, guidance=3.0)
    a = editor.edit(wrong, PROMPT, ["Put red circle left of blue square"], seed=5)
    b = editor.edit(wrong, PROMPT, ["Put red circle left of blue square"], seed=5)
    c = editor.edit(wrong, PROMPT, ["Put red circle left of blue square"], seed=6)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and not np.array_equal(np.asarray(a.image), np.asarray(c.image))
    assert a.image.size == wrong.size and not np.array_equal(np.asarray(a.image), np.asarray(wrong))
    record = a.record()
    assert record["method"] == "sdedit" and record["strength"] == 0.6 and record["seed"] == 5
    assert record["prompt"] == f"{PROMPT}. Put red circle left of blue square."
    (outcome,) = record["outcomes"]
    assert outcome["kind"] == "relation" and outcome["applied"] and isinstance(outcome["done"], bool)


def test_sdedit_strength_moves_the_image_more(pipe, wrong):
    base = np.asarray(wrong, np.float32)
    light = np.asarray(sdedit(pipe, wrong, PROMPT, 1, 0.25, 8, 3.0), np.float32)
    heavy = np.asarray(sdedit(pipe, wrong, PROMPT, 1, 1.0, 8, 3.0), np.float32)
    assert np.abs(light - base).mean() < np.abs(heavy - base).mean()


def test_sdedit_that_would_not_denoise_is_refused(pipe, wrong):
    with pytest.raises(ValueError, match="denoising steps"):
        sdedit(pipe, wrong, PROMPT, 1, 0.1, 8, 3.0)


def test_sdedit_text_outside_the_grammar_counts_as_not_done(pipe, wrong):
    edit = SDEditEditor(lambda: pipe, 0.5, 8, 3.0).edit(wrong, PROMPT, ["make it prettier"], seed=0)
    assert edit.record()["outcomes"][0]["kind"] == "unparsed" and not edit.ok


def test_layout_then_a_light_blend(pipe, wrong):
    plain = LayoutEditor().edit(wrong, PROMPT, ["Put red circle left of blue square"], seed=2)
    blended = LayoutEditor(lambda: pipe, blend_strength=0.25, steps=8, guidance=3.0).edit(
        wrong, PROMPT, ["Put red circle left of blue square"], seed=2)
    assert plain.ok and plain.record()["method"] == "layout"
    record = blended.record()
    assert record["method"] == "layout+sdedit" and record["strength"] == 0.25
    assert not np.array_equal(np.asarray(blended.image), np.asarray(plain.image))
    assert record["outcomes"][0]["kind"] == "relation" and record["outcomes"][0]["applied"]
