"""VISOR-style judgments of images from detections, and their aggregate with 95% intervals.

Per image: are all objects there, are the counts right, is the relation right (by box centres,
strictly, as VISOR: ties do not satisfy). Over a set: the shares of such images, the relation
accuracy both conditional on both objects being found and unconditional, and VISOR_n: the share
of relation prompts with at least n of their images right. Every share comes with its Wilson
score interval so that the loop can tell progress from noise.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from pydantic import BaseModel

from atelier.worlds.shapes.scene import Scene, caption
from atelier.tools.detection import Detection

VISOR_LEVELS = (1, 2, 3, 4)


class GroupJudgment(BaseModel):
    """How one group of the prompt was drawn."""

    name: str
    expected: int
    found: int
    colour_ok: bool  # some detection has this group's colour
    shape_ok: bool  # some detection has this group's shape


class ImageJudgment(BaseModel):
    """One image judged against its scene; `model_dump()` is what the loop stores on disk."""

    prompt: str
    prompt_index: int
    relation: str | None
    found: dict[str, int]  # every detected label -> how many
    groups: list[GroupJudgment]
    object_ok: bool  # every group found at least once
    count_ok: bool  # every group found exactly as many times as asked
    colour_ok: bool
    shape_ok: bool
    relation_ok: bool | None  # None without a relation; False when an object is missing
    ipr_correct: bool  # counts right and, if there is a relation, it holds


def relation_holds(relation: str, first: Sequence[Detection], second: Sequence[Detection]) -> bool:
    """True when any (first, second) pair has `first` strictly on the named side of `second`."""
    for a in first:
        (ax, ay) = a.centre
        for b in second:
            (bx, by) = b.centre
            match relation:
                case "left of":
                    ok = ax < bx
                case "right of":
                    ok = ax > bx
                case "above":  # y grows downwards
                    ok = ay < by
                case "below":
                    ok = ay > by
                case _:
                    raise ValueError(f"unknown relation {relation!r}")
            if ok:
                return True
    return False


def judge_image(scene: Scene, detections: Sequence[Detection], prompt_index: int = 0) -> ImageJudgment:
    found = Counter(d.label for d in detections)
    colours = {d.label.split()[0] for d in detections}
    shapes = {d.label.split()[-1] for d in detections}
    groups = [
        GroupJudgment(
            name=g.name, expected=g.count, found=found[g.name], colour_ok=g.colour in colours, shape_ok=g.shape in shapes
        )
        for g in scene.groups
    ]
    object_ok = all(g.found > 0 for g in groups)
    count_ok = all(g.found == g.expected for g in groups)
    relation_ok = None
    if scene.relation is not None:
        first, second = ([d for d in detections if d.label == g.name] for g in scene.groups)
        relation_ok = object_ok and relation_holds(scene.relation, first, second)
    return ImageJudgment(
        prompt=caption(scene),
        prompt_index=prompt_index,
        relation=scene.relation,
        found=dict(found),
        groups=groups,
        object_ok=object_ok,
        count_ok=count_ok,
        colour_ok=all(g.colour_ok for g in groups),
        shape_ok=all(g.shape_ok for g in groups),
        relation_ok=relation_ok,
        ipr_correct=count_ok and relation_ok is not False,
    )


def wilson_interval(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial share; sound at 0 and at 1, unlike the normal one."""
    if total <= 0:
        raise ValueError("no trials")
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def share(successes: int, total: int) -> dict:
    """{'value', 'ci95', 'n'}; value and ci95 are None when there is nothing to count."""
    if total == 0:
        return {"value": None, "ci95": None, "n": 0}
    return {"value": successes / total, "ci95": list(wilson_interval(successes, total)), "n": total}


SHARE_KEYS = ("object_accuracy", "count_accuracy", "count_accuracy_multi", "colour_accuracy", "shape_accuracy",
              "relation_accuracy_cond", "relation_accuracy_uncond", "ipr_accuracy")


def image_counts(j: ImageJudgment) -> dict[str, tuple[int, int]]:
    """What one image adds to each share metric, as (successes, trials): the one definition
    that `summarize` and the paired comparison (atelier.worlds.shapes.paired) both count with."""
    multi = [g for g in j.groups if 2 <= g.expected <= 3]
    related = j.relation is not None
    return {
        "object_accuracy": (int(j.object_ok), 1),
        "count_accuracy": (int(j.count_ok), 1),
        "count_accuracy_multi": (sum(g.found == g.expected for g in multi), len(multi)),
        "colour_accuracy": (int(j.colour_ok), 1),
        "shape_accuracy": (int(j.shape_ok), 1),
        "relation_accuracy_cond": (int(bool(j.relation_ok)), 1) if related and j.object_ok else (0, 0),
        "relation_accuracy_uncond": (int(bool(j.relation_ok)), 1) if related else (0, 0),
        "ipr_accuracy": (int(j.ipr_correct), 1),
    }


def summarize(judgments: Sequence[ImageJudgment]) -> dict:
    """Aggregate metrics over judged images (prompts are told apart by `prompt_index`)."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for j in judgments:
        for key, (successes, trials) in image_counts(j).items():
            totals[key][0] += successes
            totals[key][1] += trials
    right_per_prompt: dict[int, int] = defaultdict(int)
    for j in judgments:
        if j.relation is not None:
            right_per_prompt[j.prompt_index] += bool(j.relation_ok)
    metrics = {"n_images": len(judgments)}
    for key in SHARE_KEYS:
        metrics[key] = share(*totals[key])
    for level in VISOR_LEVELS:
        metrics[f"visor_{level}"] = share(sum(k >= level for k in right_per_prompt.values()), len(right_per_prompt))
    return metrics


def aggregate(items: Iterable[tuple[int, Scene, Sequence[Detection]]]) -> dict:
    """Judge every (prompt_index, scene, detections) and aggregate; see `summarize`."""
    return summarize([judge_image(scene, dets, prompt_index) for prompt_index, scene, dets in items])


def difference_ci(new: dict, old: dict) -> dict | None:
    """new - old for two shares from `share`, with Newcombe's 95% interval built from their Wilson
    intervals (method 10). It treats the two as independent; on paired evaluations (the same
    prompts and seeds) that is conservative: the true interval is narrower."""
    if new.get("value") is None or old.get("value") is None:
        return None
    p1, (l1, u1) = new["value"], new["ci95"]
    p2, (l2, u2) = old["value"], old["ci95"]
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return {"value": d, "ci95": [lo, hi]}
