"""Procedural renderer: (scene, seed) -> image, deterministically.

Objects get random sizes and positions that satisfy the scene's relation (every object of the
first group strictly on the named side of every object of the second, by box centre) and never
overlap (boxes at least one pixel apart). Edges are anti-aliased by 4x supersampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from atelier.worlds.shapes.scene import Scene

PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 175, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 210, 30),
}
BACKGROUND = (242, 242, 242)
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Placed:
    """One drawn object: its group index, name and box (x0, y0, x1, y1) in pixels."""

    group: int
    shape: str
    colour: str
    box: tuple[float, float, float, float]

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


def _side_ok(relation: str | None, group: int, cx: float, cy: float, split: float, margin: float) -> bool:
    if relation is None:
        return True
    first = group == 0
    match relation:
        case "left of":
            return cx < split - margin if first else cx > split + margin
        case "right of":
            return cx > split + margin if first else cx < split - margin
        case "above":
            return cy < split - margin if first else cy > split + margin
        case "below":
            return cy > split + margin if first else cy < split - margin
    raise ValueError(relation)


def _apart(a: tuple[float, ...], b: tuple[float, ...], gap: float) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def layout(scene: Scene, seed: int, size: int = 32) -> list[Placed]:
    """Sizes and positions for every object, satisfying relation and non-overlap."""
    rng = np.random.default_rng(seed)
    n = scene.n_objects
    # Fewer, larger objects when alone; shrink when crowded so a layout always exists.
    hi = size * (0.36 if n <= 2 else 0.28 if n <= 4 else 0.22)
    lo = size * (0.22 if n <= 2 else 0.18 if n <= 4 else 0.16)
    for attempt in range(200):
        shrink = 1.0 - 0.3 * (attempt / 200)
        split = rng.uniform(0.4, 0.6) * size
        placed: list[Placed] = []
        for gi, group in enumerate(scene.groups):
            for _ in range(group.count):
                for _try in range(60):
                    s = rng.uniform(lo, hi) * shrink
                    x0 = rng.uniform(1, size - 1 - s)
                    y0 = rng.uniform(1, size - 1 - s)
                    box = (x0, y0, x0 + s, y0 + s)
                    cx, cy = x0 + s / 2, y0 + s / 2
                    if not _side_ok(scene.relation, gi, cx, cy, split, margin=1.0):
                        continue
                    if all(_apart(box, p.box, gap=1.5) for p in placed):
                        placed.append(Placed(gi, group.shape, group.colour, box))
                        break
                else:
                    break
            if len(placed) != sum(g.count for g in scene.groups[: gi + 1]):
                break
        if len(placed) == n:
            return placed
    raise RuntimeError(f"no layout found for {scene} at size {size}")


def _mask(shape: str, box: tuple[float, float, float, float], grid: int, scale: float) -> np.ndarray:
    ys, xs = np.mgrid[0:grid, 0:grid].astype(np.float32)
    xs = (xs + 0.5) / scale
    ys = (ys + 0.5) / scale
    x0, y0, x1, y1 = box
    match shape:
        case "square":
            return (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        case "circle":
            cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
            return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
        case "triangle":  # apex up, base on the bottom edge of the box
            cx = (x0 + x1) / 2
            half = (x1 - x0) / 2 * (ys - y0) / max(y1 - y0, 1e-6)
            return (ys >= y0) & (ys <= y1) & (np.abs(xs - cx) <= half)
    raise ValueError(shape)


def draw(placed: list[Placed], size: int = 32) -> Image.Image:
    """Paint placed objects on the background, anti-aliased."""
    grid = size * _SUPERSAMPLE
    canvas = np.empty((grid, grid, 3), np.float32)
    canvas[:] = BACKGROUND
    for p in placed:
        canvas[_mask(p.shape, p.box, grid, _SUPERSAMPLE)] = PALETTE[p.colour]
    small = canvas.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    return Image.fromarray(np.clip(small + 0.5, 0, 255).astype(np.uint8))


def render(scene: Scene, seed: int, size: int = 32) -> Image.Image:
    """The image of a scene; the same (scene, seed, size) always gives the same pixels."""
    return draw(layout(scene, seed, size), size)
