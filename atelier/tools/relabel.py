"""IPR's relabel for open-vocabulary objects on real images: the prompt that describes what an
open-vocabulary detector found (any names, any counts, English plurals), when it differs from
what was asked (Iterative Prompt Relabeling, Chatterjee et al. 2024)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from atelier.tools.detection import Detection, relation_holds, seen_relations
from atelier.tools.phrases import describe_objects, describe_relation



def relabel_objects(
    expected: Sequence[tuple[str, int]], relation: str | None, detections: Sequence[Detection]
) -> str | None:
    """IPR's relabel of a real image whose prompt asked for `expected` (name, count) objects, in
    prompt order, with `relation` between the first and the second (or None).

    Counts wrong -> the objects and counts detected ("two dogs and a cat"), prompt objects first.
    Counts right, relation wrong -> the relation seen by box centres, the prompt's axis first
    ("a dog to the right of a cat"); when no side can be told (same centres) the objects alone.
    None when there is nothing to relabel: the image matches its prompt, or nothing was found.
    """
    if relation is not None and len(expected) != 2:
        raise ValueError(f"a relation needs exactly two objects, got {len(expected)}")
    found = Counter(d.label for d in detections)
    names = [name for name, _ in expected]
    seen = [(name, found[name]) for name in names if found[name]] + sorted((n, k) for n, k in found.items() if n not in names)
    if any(found[name] != count for name, count in expected):
        return describe_objects(seen) if seen else None
    if relation is None:
        return None
    first = [d for d in detections if d.label == names[0]]
    second = [d for d in detections if d.label == names[1]]
    if relation_holds(relation, first, second):
        return None
    for actual in seen_relations(relation):
        if relation_holds(actual, first, second):
            return describe_relation(expected[0], actual, expected[1])
    return describe_objects(seen)
