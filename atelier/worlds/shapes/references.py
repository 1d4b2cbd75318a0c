"""Where a shapes-world score sits between chance and perfect.

The same held-out prompts, judged by the same detector, on two sets of ground-truth renders:
- `renders`: the scenes as the renderer draws them, what a perfect generator would score
  (below 1 only where the detector misreads a render);
- `relation_blind_renders`: the right objects at random places, relation ignored. Their
  relation accuracy is the metric's chance level, and it is above 0.5: with two or three
  objects in a group, VISOR's rule counts one of them on the named side as right.
A model whose relation accuracy is near the chance level has no relation ability, whatever the
figure looks like (BENCHMARKS.md: the shipped base).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from atelier.worlds.shapes.evaluate import judge_images
from atelier.worlds.shapes.render import render
from atelier.worlds.shapes.scene import Scene, parse

REFERENCE_KINDS = {
    "renders": "ground-truth renders (a perfect generator)",
    "relation_blind_renders": "relation-blind renders (chance)",
}


def _drawn(kind: str, scene: Scene) -> Scene:
    match kind:
        case "renders":
            return scene
        case "relation_blind_renders":
            return Scene(groups=scene.groups)
    raise ValueError(f"unknown reference kind {kind!r}; known: {list(REFERENCE_KINDS)}")


def reference_metrics(
    captions: Sequence[str], images_per_prompt: int, seed_of: Callable[[int, int], int],
    kinds: Iterable[str] = tuple(REFERENCE_KINDS),
) -> dict:
    """{kind: metrics} for each of `kinds`; image k of prompt i is drawn with seed_of(i, k)."""
    scenes = [parse(c) for c in captions]
    return {
        kind: judge_images(scenes, [[render(_drawn(kind, s), seed_of(i, k)) for k in range(images_per_prompt)]
                                    for i, s in enumerate(scenes)])[1]
        for kind in kinds
    }
