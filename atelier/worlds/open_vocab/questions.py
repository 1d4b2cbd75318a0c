"""The yes/no questions an open_vocab image is judged by: what its prompt asks, then the spec's.

For "two dogs to the left of a cat", with an appearance spec over dog, cat and horse:
  1. Is there a dog?                               +          exists
  2. Are there exactly two dogs?                   +  on 1    count
  3. Is there a cat?                               +          exists
  4. Are the dogs to the left of the cat?          +  on 1,3  relation
  5. Does the dog look like a real photograph?     +  on 1    (the spec's; "Is there a dog?" is 1)
  ...
The asked questions carry a Probe (the builtin judge answers them from detections). Of the
spec's questions, those about a class the prompt does not ask for are left out (and so are the
questions that depend on them); one that repeats an asked question is that question; "Is there
a/an <class>?" gets an exists probe; the rest only a model can answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from atelier.agents.questions import YesNoQuestion
from atelier.tools.phrases import RELATION_PHRASES, count_phrase, plural
from atelier.worlds.judgment import Asked, Probe
from atelier.worlds.open_vocab.parse import find_objects, normalise


def _the(name: str, count: int) -> str:
    return f"the {plural(name) if count > 1 else name}"


def asked_questions(asked: Asked) -> tuple[list[YesNoQuestion], list[Probe]]:
    questions: list[YesNoQuestion] = []
    probes: list[Probe] = []

    def add(text: str, probe: Probe, depends_on: list[int] | None = None) -> int:
        questions.append(YesNoQuestion(id=len(questions) + 1, text=text, positive=True, depends_on=depends_on or []))
        probes.append(probe)
        return len(questions)

    exists: list[int] = []
    for o in asked.objects:
        q = add(f"Is there {count_phrase(o.name, 1)}?", Probe(kind="exists", objects=(o.name,)))
        exists.append(q)
        if o.count > 1:
            add(f"Are there exactly {count_phrase(o.name, o.count)}?",
                Probe(kind="count", objects=(o.name,), count=o.count), depends_on=[q])
    if asked.relation is not None and len(asked.objects) == 2:
        a, b = asked.objects
        verb = "Are" if a.count > 1 else "Is"
        add(f"{verb} {_the(a.name, a.count)} {RELATION_PHRASES[asked.relation]} {_the(b.name, b.count)}?",
            Probe(kind="relation", objects=(a.name, b.name), relation=asked.relation), depends_on=exists[:2])
    return questions, probes


_EXISTS = re.compile(r"^is there (?:an?|one) (.+?)\??$", re.IGNORECASE)


def row_questions(asked: Asked, spec_questions: Sequence[YesNoQuestion],
                  classes: Sequence[str]) -> tuple[list[YesNoQuestion], list[Probe | None]]:
    """The asked questions followed by the spec's questions that concern this prompt, renumbered."""
    questions, probes = asked_questions(asked)
    probes: list[Probe | None] = list(probes)
    names = {o.name for o in asked.objects}
    by_text = {normalise(q.text): q.id for q in questions}
    new_id: dict[int, int] = {}  # the spec's id -> the id here; absent = left out
    for q in spec_questions:
        about = {name for name, *_ in find_objects(q.text, classes)}
        if about and not about & names:
            continue  # about classes this prompt does not ask for
        if any(d not in new_id for d in q.depends_on):
            continue  # depends on a question left out
        if normalise(q.text) in by_text:
            new_id[q.id] = by_text[normalise(q.text)]
            continue
        qid = len(questions) + 1
        new_id[q.id] = qid
        questions.append(YesNoQuestion(id=qid, text=q.text, positive=q.positive,
                                       depends_on=sorted({new_id[d] for d in q.depends_on})))
        m = _EXISTS.match(q.text.strip())
        probes.append(Probe(kind="exists", objects=(m.group(1).strip(),))
                      if m and m.group(1).strip() in names and q.positive else None)
    return questions, probes
