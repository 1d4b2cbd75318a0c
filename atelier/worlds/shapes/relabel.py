"""IPR's relabel in the shapes world: the caption that describes what a wrong image shows.

Counts wrong -> the actual objects and counts ("two red circles and a blue square"); counts
right, relation wrong -> the actual relation of the two objects by box centres. A relabel the
world cannot say (nothing found, more than three of a kind or three kinds), or that would
describe a held-out scene, is None: the loop never trains on held-out pairs.
"""

from __future__ import annotations

from collections import Counter

from atelier.tools.detection import Detection, relation_holds, seen_relations
from atelier.worlds.shapes.heldout import is_heldout
from atelier.worlds.shapes.scene import MAX_COUNT, MAX_GROUPS, Group, Scene, caption, parse



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
    for rel in seen_relations(prompt_scene.relation):
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


def relabel_judgment(judgment: dict) -> str | None:
    """`relabel` of a stored judgment row (prompt, detections, count_ok, relation_ok)."""
    detections = [Detection.from_dict(d) for d in judgment["detections"]]
    return relabel(judgment["prompt"], detections, judgment["count_ok"], judgment["relation_ok"])
