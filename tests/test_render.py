"""The renderer is deterministic, keeps relations, never overlaps objects, and works at any size."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from atelier.worlds.shapes.render import BACKGROUND, layout, render
from atelier.worlds.shapes.sampling import SceneMix, draw_scene
from atelier.worlds.shapes.scene import Scene, parse

ALL_KINDS = SceneMix(single=1, counted=1, pair=1, triple=1, related=2)


def random_scenes(n: int, seed: int = 0, mix: SceneMix = ALL_KINDS) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [draw_scene(rng, mix, allow_heldout=True) for _ in range(n)]


def first_is_on_side(relation: str, a: tuple[float, float], b: tuple[float, float]) -> bool:
    match relation:
        case "left of":
            return a[0] < b[0]
        case "right of":
            return a[0] > b[0]
        case "above":
            return a[1] < b[1]
        case "below":
            return a[1] > b[1]
    raise ValueError(relation)


def test_same_scene_and_seed_give_same_bytes():
    scene = parse("two red circles above a blue triangle")
    assert render(scene, 7).tobytes() == render(scene, 7).tobytes()
    assert render(scene, 7).tobytes() != render(scene, 8).tobytes()


def test_layout_satisfies_relation_for_every_pair():
    related = random_scenes(300, seed=1, mix=SceneMix(single=0, counted=0, pair=0, triple=0, related=1))
    for i, scene in enumerate(related):
        placed = layout(scene, i)
        firsts = [p.centre for p in placed if p.group == 0]
        seconds = [p.centre for p in placed if p.group == 1]
        assert len(firsts) == scene.groups[0].count and len(seconds) == scene.groups[1].count
        assert all(first_is_on_side(scene.relation, a, b) for a in firsts for b in seconds), (scene, i)


@pytest.mark.parametrize("size", [32, 64])
def test_objects_never_overlap_and_stay_inside(size: int):
    for i, scene in enumerate(random_scenes(200, seed=size)):
        placed = layout(scene, i, size)
        assert len(placed) == scene.n_objects
        for p in placed:
            x0, y0, x1, y1 = p.box
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        for a, b in combinations(placed, 2):
            ax0, ay0, ax1, ay1 = a.box
            bx0, by0, bx1, by1 = b.box
            apart = ax1 + 1 <= bx0 or bx1 + 1 <= ax0 or ay1 + 1 <= by0 or by1 + 1 <= ay0
            assert apart, (scene, i, a, b)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_other_sizes_render(size: int):
    scene = parse("a yellow square to the left of three green circles")
    image = render(scene, 3, size)
    assert image.size == (size, size) and image.mode == "RGB"
    pixels = np.asarray(image).reshape(-1, 3)
    # Mostly background, with the objects' pixels making up the rest.
    assert (pixels == BACKGROUND).all(axis=1).mean() > 0.4
    assert (pixels != BACKGROUND).any(axis=1).sum() > 0.05 * size * size
