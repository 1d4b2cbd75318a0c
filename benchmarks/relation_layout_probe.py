"""Does a shapes model know where a relation puts each object, before any sampling luck?

At the first sampling step the input is pure noise, so the model's x0 prediction (with guidance,
averaged over seeds) is its expectation of the image given the caption: for "a red circle to the
left of a blue square" it should hold red mass left of blue mass. The probe measures, for
scenes with one object per group, the share whose first colour leans to the named side of the
second's, and the mean margin (see `margin`; pixels, positive = the named side).

The same measure on the mean of ground-truth renders is the reference (it must be all of them),
and 50% is what a model blind to relations scores. Held-out pairs and pairs the base saw are
probed separately, so a model that memorised its pairs shows as a gap between the two.

It also prints the relation metric's chance floor: `relation_accuracy_cond` of ground-truth
renders with the relation dropped (random layout, perfect objects) on the whole held-out split.
A model scoring near it has no relation ability, whatever the figure looks like.

    .venv/bin/python benchmarks/relation_layout_probe.py [--model PATH] [--adapter DIR] [--seeds 16]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from atelier.report import format_share
from atelier.worlds.shapes.heldout import heldout_scenes
from atelier.worlds.shapes.model import DEFAULT_STEPS
from atelier.worlds.shapes.references import reference_metrics
from atelier.worlds.shapes.render import PALETTE, render
from atelier.worlds.shapes.sampling import SceneMix, draw_scene
from atelier.worlds.shapes.scene import Scene, caption
from atelier.worlds.shapes.model import load_generator
from atelier.tools.model_inputs import images_to_model_inputs

_PALETTE = {name: np.array(rgb) / 127.5 - 1.0 for name, rgb in PALETTE.items()}


def margin(image: np.ndarray, scene: Scene) -> float:
    """How far towards the named side the first group's colour leans against the second's.

    Per pixel, "first-ness" is how much closer it is to the first colour than to the second;
    the margin is the first-ness-weighted mean offset along the relation's axis (pixels, positive
    = the named side). It compares colours only, so it also reads the pale, blurred expectation of
    the first sampling step, where no pixel is near any palette colour.
    """
    first, second = scene.groups
    size = image.shape[0]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    firstness = ((image - _PALETTE[second.colour]) ** 2).sum(-1) - ((image - _PALETTE[first.colour]) ** 2).sum(-1)
    firstness = firstness - firstness.mean()
    axis = "x" if scene.relation in ("left of", "right of") else "y"
    offset = (xs if axis == "x" else ys) - (size - 1) / 2
    sign = -1.0 if scene.relation in ("left of", "above") else 1.0
    return float(sign * (firstness * offset).sum() / np.abs(firstness).sum())


@torch.no_grad()
def first_step_x0(pipe, text: str, seeds: int, guidance: float) -> np.ndarray:
    """The guided x0 prediction (H, W, 3) at the sampler's first timestep, averaged over `seeds`
    noises drawn as the pipeline draws them."""
    if pipe.scheduler.config.prediction_type != "v_prediction":
        raise ValueError(f"the probe reads v-prediction models, not {pipe.scheduler.config.prediction_type!r}")
    size = pipe.unet.config.sample_size
    pipe.scheduler.set_timesteps(DEFAULT_STEPS)
    t = pipe.scheduler.timesteps[0]
    alpha_bar = pipe.scheduler.alphas_cumprod[int(t)].double()
    noise = torch.stack([torch.randn(3, size, size, generator=torch.Generator().manual_seed(s)) for s in range(seeds)])
    cond = torch.cat([pipe.encode([""] * seeds), pipe.encode([text] * seeds)])
    uncond, text_pred = pipe.unet(torch.cat([noise, noise]), t, encoder_hidden_states=cond).sample.chunk(2)
    v = (uncond + guidance * (text_pred - uncond)).double()
    x0 = alpha_bar.sqrt() * noise.double() - (1 - alpha_bar).sqrt() * v
    return x0.mean(0).permute(1, 2, 0).numpy()


def seen_scenes(n: int) -> list[Scene]:
    """Related one-and-one scenes of two colours, pairs outside the held-out split (the base's kind of
    data). Two colours, because the probe tells the groups apart by colour alone."""
    rng, scenes = np.random.default_rng(0), []
    while len(scenes) < n:
        scene = draw_scene(rng, SceneMix(single=0, counted=0, pair=0, triple=0, related=1.0))
        if all(g.count == 1 for g in scene.groups) and scene.groups[0].colour != scene.groups[1].colour:
            scenes.append(scene)
    return scenes


def relation_floor(renders_per_scene: int = 16) -> dict:
    """relation_accuracy_cond of relation-blind renders of every held-out scene (a share with its CI)."""
    captions = [caption(s) for s in heldout_scenes()]
    blind = reference_metrics(captions, renders_per_scene, lambda i, k: 1000 * i + k, kinds=["relation_blind_renders"])
    return blind["relation_blind_renders"]["relation_accuracy_cond"]


def truth_mean(pipe, scene: Scene, renders: int) -> np.ndarray:
    """The mean of `renders` ground-truth renders of `scene` at the model's size, (H, W, 3) in [-1, 1]."""
    size = pipe.unet.config.sample_size
    images = images_to_model_inputs(pipe, [render(scene, k, size) for k in range(renders)])
    return images.double().mean(0).permute(1, 2, 0).cpu().numpy()


def summary(margins: list[float]) -> str:
    right = sum(m > 0 for m in margins)
    return f"{right:3d}/{len(margins)} ({right / len(margins):.2f}), mean margin {np.mean(margins):+5.2f} px"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes", help="shapes model folder ('shapes' = the shipped one)")
    parser.add_argument("--adapter", help="LoRA adapter folder to probe with the model")
    parser.add_argument("--seeds", type=int, default=16, help="noises averaged per caption")
    parser.add_argument("--guidance", type=float, default=3.0)
    args = parser.parse_args()

    # Every held-out pair has two colours.
    held_out = [s for s in heldout_scenes() if all(g.count == 1 for g in s.groups)]
    splits = {"held-out pairs": held_out, "seen pairs": seen_scenes(len(held_out))}
    pipe = load_generator(args.model, args.adapter)
    label = args.model + (f" + {args.adapter}" if args.adapter else "")
    print(f"first-group colour on the named side, x0 at the first sampling step, mean of {args.seeds} noises, "
          f"guidance {args.guidance}")
    for split, scenes in splits.items():
        truth = [margin(truth_mean(pipe, s, args.seeds), s) for s in scenes]
        model = [margin(first_step_x0(pipe, caption(s), args.seeds, args.guidance), s) for s in scenes]
        print(f"{split:15s} ground-truth renders  {summary(truth)}")
        print(f"{split:15s} {label[:20]:20s}  {summary(model)}")
    print(f"relation accuracy (cond.) of relation-blind renders, whole held-out split x 16: "
          f"{format_share(relation_floor(), 3)} (the metric's chance floor)")


if __name__ == "__main__":
    main()
