"""The shapes world's judgments: VISOR's rules (atelier.worlds.judgment) on the exact detector's
output, plus the world's own attributes (colour and shape right, even when the pair is wrong)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from atelier.stats.intervals import difference_ci, share, wilson_interval
from atelier.tools.detection import Detection
from atelier.worlds.judgment import (
    SHARE_KEYS,
    VISOR_LEVELS,
    Asked,
    AskedObject,
    GroupJudgment,
    Judgment,
    image_counts,
    judge_detections,
    relation_holds,
    summarize,
)
from atelier.worlds.shapes.scene import Scene, caption

__all__ = ["SHARE_KEYS", "VISOR_LEVELS", "GroupJudgment", "Judgment", "aggregate", "asked_of", "difference_ci",
           "image_counts", "judge_image", "relation_holds", "share", "summarize", "wilson_interval"]


def asked_of(scene: Scene) -> Asked:
    """What a scene's caption asks for."""
    return Asked(objects=tuple(AskedObject(name=g.name, count=g.count) for g in scene.groups), relation=scene.relation)


def judge_image(scene: Scene, detections: Sequence[Detection], prompt_index: int = 0) -> Judgment:
    judgment = judge_detections(asked_of(scene), detections, caption(scene), prompt_index)
    colours = {d.label.split()[0] for d in detections}
    shapes = {d.label.split()[-1] for d in detections}
    for group, g in zip(judgment.groups, scene.groups):
        group.colour_ok, group.shape_ok = g.colour in colours, g.shape in shapes
    judgment.colour_ok = all(g.colour_ok for g in judgment.groups)
    judgment.shape_ok = all(g.shape_ok for g in judgment.groups)
    return judgment


def aggregate(items: Iterable[tuple[int, Scene, Sequence[Detection]]]) -> dict:
    """Judge every (prompt_index, scene, detections) and aggregate; see `summarize`."""
    return summarize([judge_image(scene, dets, prompt_index) for prompt_index, scene, dets in items])
