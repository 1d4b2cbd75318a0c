"""Seeded random scenes for training data, with a controllable mix of scene kinds.

The mix is how the base model is made imperfect honestly: it sees few counted and related
scenes, so it learns objects well and counts and relations poorly, as real models do.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atelier.worlds.shapes.heldout import is_heldout
from atelier.worlds.shapes.scene import COLOURS, RELATIONS, SHAPES, Group, Scene


class SceneMix(BaseModel):
    """Probabilities of each scene kind (normalised when drawn)."""

    model_config = ConfigDict(extra="forbid")
    single: float = Field(0.55, description="one object")
    counted: float = Field(0.10, description="one group of two or three objects")
    pair: float = Field(0.15, description="two groups joined by 'and'")
    triple: float = Field(0.05, description="three groups")
    related: float = Field(0.15, description="two groups with a relation")
    max_count: int = Field(3, ge=1, le=3, description="largest count drawn in counted/related scenes")


def _objects(rng: np.random.Generator, k: int, colours=COLOURS, shapes=SHAPES) -> list[tuple[str, str]]:
    combos = [(c, s) for c in colours for s in shapes]
    idx = rng.choice(len(combos), size=k, replace=False)
    return [combos[i] for i in idx]


def draw_scene(
    rng: np.random.Generator,
    mix: SceneMix,
    relations=RELATIONS,
    colours=COLOURS,
    shapes=SHAPES,
    allow_heldout: bool = False,
) -> Scene:
    """One random scene of the kinds in `mix`, never a held-out scene unless allowed."""
    kinds = ["single", "counted", "pair", "triple", "related"]
    p = np.array([getattr(mix, k) for k in kinds], dtype=float)
    kind = kinds[rng.choice(len(kinds), p=p / p.sum())]
    while True:
        match kind:
            case "single":
                (c, s), = _objects(rng, 1, colours, shapes)
                scene = Scene(groups=(Group(colour=c, shape=s),))
            case "counted":
                (c, s), = _objects(rng, 1, colours, shapes)
                n = int(rng.integers(2, mix.max_count + 1)) if mix.max_count > 1 else 1
                scene = Scene(groups=(Group(colour=c, shape=s, count=n),))
            case "pair" | "triple":
                k = 2 if kind == "pair" else 3
                scene = Scene(groups=tuple(Group(colour=c, shape=s) for c, s in _objects(rng, k, colours, shapes)))
            case "related":
                (c1, s1), (c2, s2) = _objects(rng, 2, colours, shapes)
                counts = [1, 1]
                if mix.max_count > 1 and rng.random() < 0.3:
                    counts[int(rng.integers(0, 2))] = int(rng.integers(2, mix.max_count + 1))
                rel = relations[int(rng.integers(0, len(relations)))]
                scene = Scene(
                    groups=(Group(colour=c1, shape=s1, count=counts[0]), Group(colour=c2, shape=s2, count=counts[1])),
                    relation=rel,
                )
        if allow_heldout or not is_heldout(scene):
            return scene
