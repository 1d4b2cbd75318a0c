"""Speed and accuracy of the shapes detector on 32x32 renders, clean and spoiled like generated images.

    .venv/bin/python benchmarks/detector.py [--n 256] [--size 32]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from atelier.worlds.shapes.detect import ShapesDetector
from atelier.worlds.shapes.metrics import judge_image
from atelier.worlds.shapes.perturb import Perturbation, perturbed_render
from atelier.worlds.shapes.render import render
from atelier.worlds.shapes.sampling import SceneMix, draw_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    mix = SceneMix(single=1, counted=1, pair=1, triple=1, related=2)
    scenes = [draw_scene(rng, mix, allow_heldout=True) for _ in range(args.n)]
    detector = ShapesDetector()
    amount = Perturbation()
    print(f"{args.n} scenes at {args.size}x{args.size}; perturbed = {amount}")
    for kind in ("clean", "perturbed"):
        if kind == "clean":
            images = [render(s, i, args.size) for i, s in enumerate(scenes)]
        else:
            images = [perturbed_render(s, i, args.size, amount) for i, s in enumerate(scenes)]
        start = time.perf_counter()
        found = [detector.detect_all(image) for image in images]
        seconds = time.perf_counter() - start
        exact = np.mean(
            [Counter(d.label for d in f) == Counter({g.name: g.count for g in s.groups}) for s, f in zip(scenes, found)]
        )
        judged = [judge_image(s, f) for s, f in zip(scenes, found)]
        present = np.mean([j.object_ok for j in judged])
        relation = np.mean([j.relation_ok for j in judged if j.relation_ok is not None])
        print(
            f"{kind:>9}: {args.n / seconds:7.1f} images/s | exact objects {exact:.3f} | "
            f"all objects present {present:.3f} | relation {relation:.3f}"
        )


if __name__ == "__main__":
    main()
