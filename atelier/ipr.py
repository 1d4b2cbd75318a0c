"""Iterative Prompt Relabeling: every generated sample becomes training data.

A sample whose counts and relation match its prompt keeps the prompt (weight 1.0). A wrong one
gets a new prompt that describes what was drawn (weight lambda, 0.5 by default):
  - counts wrong -> the actual objects and counts ("two red circles and a blue square");
  - counts right, relation wrong -> the actual relation of the two objects by box centres.
A relabel that the world cannot say (nothing found, more than three of a kind or three kinds),
or that would describe a held-out scene, is dropped: the loop never trains on held-out pairs.

`relabel_objects` is the same rule for open-vocabulary objects on real images (any names, any
counts, English plurals), on the detections of an open-vocabulary detector.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from atelier.worlds.shapes.heldout import is_heldout
from atelier.worlds.shapes.metrics import relation_holds
from atelier.worlds.shapes.scene import MAX_COUNT, MAX_GROUPS, Group, Scene, caption, parse
from atelier.tools.detection import Detection
from atelier.tools.phrases import describe_objects, describe_relation

_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_OTHER_AXIS = {"left of": ("above", "below"), "right of": ("above", "below"), "above": ("left of", "right of"), "below": ("left of", "right of")}


def _counts_scene(prompt_scene: Scene, detections: list[Detection]) -> Scene | None:
    """What was drawn, as a scene without relation; prompt objects first, in prompt order."""
    counts = Counter(d.label for d in detections)
    order = [g.name for g in prompt_scene.groups if counts[g.name]] + sorted(
        n for n in counts if n not in {g.name for g in prompt_scene.groups}
    )
    if not order or len(order) > MAX_GROUPS or any(counts[n] > MAX_COUNT for n in order):
        return None
    groups = tuple(Group(colour=n.split()[0], shape=n.split()[1], count=counts[n]) for n in order)
    return Scene(groups=groups)


def _relation_scene(prompt_scene: Scene, detections: list[Detection]) -> Scene | None:
    """The same objects under the relation that actually holds (prompt's axis first)."""
    a, b = (g.name for g in prompt_scene.groups)
    first = [d for d in detections if d.label == a]
    second = [d for d in detections if d.label == b]
    for rel in (_OPPOSITE[prompt_scene.relation], *_OTHER_AXIS[prompt_scene.relation]):
        if relation_holds(rel, first, second):
            return prompt_scene.model_copy(update={"relation": rel})
    return None


def relabel(prompt: str, detections: list[Detection], counts_ok: bool, relation_ok: bool | None) -> str | None:
    """The prompt that describes this image, or None when the world cannot say it."""
    scene = parse(prompt)
    if not counts_ok:
        new = _counts_scene(scene, detections)
    elif relation_ok is False:
        new = _relation_scene(scene, detections)
    else:
        return prompt
    if new is None or is_heldout(new):
        return None
    return caption(new)


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
    for actual in (_OPPOSITE[relation], *_OTHER_AXIS[relation]):
        if relation_holds(actual, first, second):
            return describe_relation(expected[0], actual, expected[1])
    return describe_objects(seen)


def ipr_rows(judgments: list[dict], relabel_weight: float, correct_weight: float, do_relabel: bool) -> list[dict]:
    """Training rows (file, text, weight, kind) from judged samples.

    `judgments` rows carry: file, prompt, detections (all objects found, as dicts), count_ok,
    relation_ok, ipr_correct. With do_relabel=False (the IPR ablation) wrong samples keep their
    prompt and get the relabel weight.
    """
    rows = []
    for j in judgments:
        if j["ipr_correct"]:
            rows.append({"file": j["file"], "text": j["prompt"], "weight": correct_weight, "kind": "correct", "prompt": j["prompt"]})
            continue
        if not do_relabel:
            rows.append({"file": j["file"], "text": j["prompt"], "weight": relabel_weight, "kind": "wrong_kept", "prompt": j["prompt"]})
            continue
        dets = [Detection.from_dict(d) for d in j["detections"]]
        text = relabel(j["prompt"], dets, j["count_ok"], j["relation_ok"])
        if text is not None:
            rows.append({"file": j["file"], "text": text, "weight": relabel_weight, "kind": "relabelled", "prompt": j["prompt"]})
    return rows
