"""The shapes world's yes/no questions for a prompt, and what their answers say about the image.

For "a red circle to the left of two blue squares":
  1. Is there a red circle?                                   positive
  2. Is there exactly one red circle?                         positive, on 1
  3. Is there a blue square?                                  positive
  4. Are there exactly two blue squares?                      positive, on 3
  5. Is the red circle to the left of the blue squares?       positive, on 1 and 3
  6. Is there a shape other than the red circle and the blue squares?   negative
Each question comes with a Probe: the same question in a form the builtin judge checks against
detections. `judgment_fields` turns the outcomes into the loop's judgment fields (object_ok,
count_ok, relation_ok, ipr_correct ...), so a VLM judge and the detector fill the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from atelier.agents.questions import Outcome, YesNoQuestion
from atelier.worlds.judgment import Probe, judgment_from_outcomes
from atelier.worlds.shapes.metrics import asked_of
from atelier.worlds.shapes.scene import Group, Scene, caption

_PHRASES = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}


def _noun(group: Group, plural: bool) -> str:
    return f"{group.colour} {group.shape}s" if plural else group.name


def shapes_questions(scene: Scene) -> tuple[list[YesNoQuestion], list[Probe]]:
    questions: list[YesNoQuestion] = []
    probes: list[Probe] = []

    def add(text: str, probe: Probe, positive: bool = True, depends_on: list[int] | None = None) -> int:
        qid = len(questions) + 1
        questions.append(YesNoQuestion(id=qid, text=text, positive=positive, depends_on=depends_on or []))
        probes.append(probe)
        return qid

    exists: list[int] = []
    for g in scene.groups:
        q = add(f"Is there a {g.name}?", Probe(kind="exists", objects=(g.name,)))
        exists.append(q)
        count_text = (f"Is there exactly one {g.name}?" if g.count == 1
                      else f"Are there exactly {_NUMBER_WORDS[g.count]} {_noun(g, True)}?")
        add(count_text, Probe(kind="count", objects=(g.name,), count=g.count), depends_on=[q])
    if scene.relation is not None:
        a, b = scene.groups
        verb = "Is" if a.count == 1 else "Are"
        add(f"{verb} the {_noun(a, a.count > 1)} {_PHRASES[scene.relation]} the {_noun(b, b.count > 1)}?",
            Probe(kind="relation", objects=(a.name, b.name), relation=scene.relation), depends_on=exists)
    named = " and ".join(f"the {_noun(g, g.count > 1)}" for g in scene.groups)
    add(f"Is there any shape in the image other than {named}?",
        Probe(kind="only_named", objects=tuple(g.name for g in scene.groups)), positive=False)
    return questions, probes


def judgment_fields(scene: Scene, probes: Sequence[Probe], questions: Sequence[YesNoQuestion],
                    outcome: Mapping[int, Outcome] | None, prompt_index: int) -> dict:
    """Judgment fields from a yes/no judge's outcomes (atelier.worlds.judgment.judgment_from_outcomes:
    a group present in another number has found = -1), with the questions, their outcomes and the
    CCSR score, and this world's colour and shape verdicts (right when the object is there).
    `outcome` None (no valid answer): every question skipped, nothing right; the caller marks the
    row failed, which leaves it out of every metric."""
    judgment = judgment_from_outcomes(asked_of(scene), probes, questions, outcome or {}, caption(scene), prompt_index)
    for group in judgment.groups:
        group.colour_ok = group.shape_ok = group.found != 0
    judgment.colour_ok = judgment.shape_ok = judgment.object_ok
    if outcome is None:
        judgment.question_score = None
    return judgment.model_dump()
