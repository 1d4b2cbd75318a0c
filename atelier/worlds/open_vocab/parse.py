"""What an English prompt asks for, read against a list of class names.

    asked_of_text("two dogs to the left of a cat", ["cat", "dog"])
    -> Asked(objects=(dog x2, cat x1), relation="left of")

Classes are found by their name or plural as whole words (the longest name first, so 'traffic
light' wins over 'light'), in text order, each once; a number word or digit just before a name
is its count ('a', 'an', 'one' or nothing: 1). A relation phrase counts only between exactly two
objects, one before it and one after. The text is the truth: a model's own account of its
prompt is never trusted over this.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from atelier.tools.phrases import NUMBER_WORDS, plural
from atelier.worlds.judgment import Asked, AskedObject

# Longer phrases first: 'to the left of' before 'left of'.
RELATION_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"to the left of|on the left of|left of", "left of"),
    (r"to the right of|on the right of|right of", "right of"),
    (r"on top of|above|over", "above"),
    (r"underneath|beneath|below|under", "below"),
)
_COUNTS = {w: i for i, w in enumerate(NUMBER_WORDS)} | {"a": 1, "an": 1, "single": 1}


def normalise(text: str) -> str:
    """The form prompts are compared in: lower case, single spaces, no final full stop."""
    return " ".join(text.lower().split()).rstrip(".").strip()


def _class_pattern(classes: Sequence[str]) -> re.Pattern:
    forms = {}
    for name in classes:
        for form in (name, plural(name)):
            forms.setdefault(form.lower(), name)
    alternatives = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.compile(rf"(?<![\w-])({alternatives})(?![\w-])", re.IGNORECASE), forms


def find_objects(text: str, classes: Sequence[str]) -> list[tuple[str, int, int, int]]:
    """(class, count, start, end) of each class named in `text`, in text order, each class once."""
    if not classes:
        return []
    pattern, forms = _class_pattern(classes)
    found: list[tuple[str, int, int, int]] = []
    for match in pattern.finditer(text):
        name = forms[match.group(1).lower()]
        if any(f[0] == name for f in found):
            continue
        before = text[: match.start()].lower().split()
        if before[-2:] in (["pair", "of"], ["pairs", "of"]):
            before = before[:-2]  # "a pair of scissors" is one pair, "two pairs of skis" two
        count = 1
        if before:
            word = before[-1]
            if word.isdigit() and int(word) >= 1:
                count = int(word)
            elif word in _COUNTS and _COUNTS[word] >= 1:
                count = _COUNTS[word]
            elif len(before) >= 2 and f"{before[-2]} {word}" in _COUNTS:
                count = _COUNTS[f"{before[-2]} {word}"]
        found.append((name, count, match.start(), match.end()))
    return found


def find_relation(text: str) -> tuple[str, int, int] | None:
    """(relation, start, end) of the first relation phrase in `text`, or None."""
    best = None
    for pattern, relation in RELATION_PATTERNS:
        if m := re.search(rf"(?<!\w)(?:{pattern})(?!\w)", text, re.IGNORECASE):
            if best is None or m.start() < best[1]:
                best = (relation, m.start(), m.end())
    return best


def asked_of_text(text: str, classes: Sequence[str]) -> Asked:
    """The objects (with counts) and relation `text` asks for, among `classes`."""
    objects = find_objects(text, classes)
    relation = None
    rel = find_relation(text)
    if rel is not None and len(objects) == 2 and objects[0][3] <= rel[1] and rel[2] <= objects[1][2]:
        relation = rel[0]
    return Asked(objects=tuple(AskedObject(name=name, count=count) for name, count, _, _ in objects), relation=relation)
