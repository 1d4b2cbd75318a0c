"""Prompt writer: TargetSpec -> training prompts, and the held-out prompts that measure the goal.

The builtin writer draws shapes-world scenes for the spec from a seeded generator. It never emits
a held-out scene: no pair of objects from the held-out split appears together in its prompts.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atelier.agents.planner import TargetSpec
from atelier.shapes.heldout import heldout_scenes, is_heldout
from atelier.shapes.sampling import SceneMix, draw_scene
from atelier.shapes.scene import RELATIONS, caption


class PromptBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompts: list[str] = Field(description="one caption per prompt, in the world's language")


def _mix_for(spec: TargetSpec) -> SceneMix:
    if spec.relations:
        return SceneMix(single=0, counted=0, pair=0, triple=0, related=1, max_count=3 if spec.counts else 1)
    if spec.counts:
        return SceneMix(single=0, counted=0.7, pair=0, triple=0, related=0.3, max_count=3)
    return SceneMix(single=0.6, counted=0, pair=0.3, triple=0.1, related=0, max_count=1)


def write_prompts_builtin(spec: TargetSpec, n: int, seed: int) -> PromptBatch:
    """`n` distinct training prompts for the spec (fewer only if the spec admits fewer)."""
    rng = np.random.default_rng(seed)
    mix = _mix_for(spec)
    relations = spec.relations or list(RELATIONS)
    prompts: list[str] = []
    seen: set[str] = set()
    for _ in range(n * 50):
        scene = draw_scene(rng, mix, relations=relations, colours=spec.colours, shapes=spec.shapes)
        text = caption(scene)
        if text not in seen and not is_heldout(scene):
            seen.add(text)
            prompts.append(text)
            if len(prompts) == n:
                break
    return PromptBatch(prompts=prompts)


def heldout_prompts(spec: TargetSpec, n: int, seed: int) -> list[str]:
    """`n` held-out captions that test the spec (its relations, if any), in a seeded order."""
    scenes = heldout_scenes()
    if spec.relations:
        scenes = [s for s in scenes if s.relation in spec.relations]
    order = np.random.default_rng(seed).permutation(len(scenes))
    return [caption(scenes[i]) for i in order[:n]]
