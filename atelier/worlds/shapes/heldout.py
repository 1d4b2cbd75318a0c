"""The held-out split: object pairs the base model never saw together and the loop never trains on.

A scene is held out when any two of its groups form one of HELDOUT_PAIRS, whatever their order,
relation or counts. Training data (the base model's and the loop's) excludes every such scene, so
held-out captions measure generalisation of relations and counts, not memory.
"""

from __future__ import annotations

from itertools import combinations

from atelier.worlds.shapes.scene import RELATIONS, Group, Scene, caption

HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red circle", "blue square"),
    ("green triangle", "yellow circle"),
    ("blue triangle", "red square"),
    ("yellow square", "green circle"),
    ("red triangle", "green square"),
    ("blue circle", "yellow triangle"),
    ("red circle", "green circle"),
    ("blue square", "yellow square"),
    ("green triangle", "blue triangle"),
    ("yellow circle", "red triangle"),
)
_PAIRS = {frozenset(p) for p in HELDOUT_PAIRS}
# Counts of the (second, first) ordering per relation, so that held-out prompts also test counting.
_COUNT_CYCLE = ((1, 1), (2, 1), (1, 2), (3, 1))


def is_heldout(scene: Scene) -> bool:
    names = [g.name for g in scene.groups]
    return any(frozenset(p) in _PAIRS for p in combinations(names, 2))


def _group(name: str, count: int) -> Group:
    colour, shape = name.split()
    return Group(colour=colour, shape=shape, count=count)


def heldout_scenes() -> list[Scene]:
    """80 fixed scenes: each pair in both orders under all four relations."""
    scenes = []
    for a, b in HELDOUT_PAIRS:
        for k, rel in enumerate(RELATIONS):
            scenes.append(Scene(groups=(_group(a, 1), _group(b, 1)), relation=rel))
            ca, cb = _COUNT_CYCLE[k]
            scenes.append(Scene(groups=(_group(b, ca), _group(a, cb)), relation=rel))
    return scenes


def heldout_captions() -> list[str]:
    return [caption(s) for s in heldout_scenes()]
