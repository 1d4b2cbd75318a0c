"""Renders spoiled the way generated images are: off colours, a tinted background, soft edges, noise.

Used by the detector's tests and benchmark to show that it reads images a diffusion model makes,
not only the renderer's exact pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from atelier.worlds.shapes.render import BACKGROUND, PALETTE, draw, layout
from atelier.worlds.shapes.scene import Scene


@dataclass(frozen=True)
class Perturbation:
    """How much to spoil a render; amounts are on the 0..1 pixel scale unless said otherwise."""

    noise: float = 0.1  # std of Gaussian pixel noise, per channel
    blur: float = 0.6  # Gaussian blur std in pixels at 32x32 (scaled with image size)
    tint: float = 0.15  # background channels shift by up to this much (mostly darker)
    jitter: float = 0.15  # each object's channels scale by a factor in 1 +- jitter


def _coverage(placed, size: int) -> np.ndarray:
    """(n_objects, size, size) anti-aliased coverage of each object, read back from the renderer."""
    bg = np.array(BACKGROUND, np.float32)
    out = []
    for p in placed:
        img = np.asarray(draw([p], size), np.float32)
        direction = np.array(PALETTE[p.colour], np.float32) - bg
        out.append(((img - bg) @ direction) / (direction @ direction))
    return np.clip(np.stack(out), 0.0, 1.0)


def perturbed_render(scene: Scene, seed: int, size: int = 32, amount: Perturbation = Perturbation()) -> Image.Image:
    """The render of (scene, seed, size) with the same layout, spoiled by `amount` (seeded by `seed`)."""
    rng = np.random.default_rng([seed, 7919])
    placed = layout(scene, seed, size)
    alpha = _coverage(placed, size)
    # Tints lean darker: a generated background is rarely brighter than the renderer's near-white.
    background = np.array(BACKGROUND, np.float32) + 255 * rng.uniform(-amount.tint, amount.tint / 3, 3)
    colours = np.stack(
        [np.array(PALETTE[p.colour], np.float32) * rng.uniform(1 - amount.jitter, 1 + amount.jitter, 3) for p in placed]
    )
    img = background * (1 - alpha.sum(0))[..., None] + np.einsum("nhw,nc->hwc", alpha, colours)
    img = np.clip(img, 0, 255)
    if amount.blur > 0:
        img = ndimage.gaussian_filter(img, sigma=(amount.blur * size / 32, amount.blur * size / 32, 0))
    img = img + rng.normal(0, 255 * amount.noise, img.shape)
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))
