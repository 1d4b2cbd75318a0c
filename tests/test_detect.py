"""The shapes detector reads clean renders exactly and spoiled ones (like generated images) nearly so."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from atelier.worlds.shapes.detect import NAMES, ShapesDetector, detect_all
from atelier.worlds.shapes.metrics import judge_image
from atelier.worlds.shapes.perturb import Perturbation, perturbed_render
from atelier.worlds.shapes.render import layout, render
from atelier.worlds.shapes.sampling import SceneMix, draw_scene
from atelier.worlds.shapes.scene import Scene, object_names, parse

ALL_KINDS = SceneMix(single=1, counted=1, pair=1, triple=1, related=2)


def random_scenes(n: int, seed: int) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [draw_scene(rng, ALL_KINDS, allow_heldout=True) for _ in range(n)]


def accuracies(scenes: list[Scene], images) -> tuple[float, float]:
    """(share of images whose detections are exactly the scene's objects, share of relation images
    whose relation holds by the detected boxes)."""
    exact, relation = [], []
    for scene, image in zip(scenes, images):
        found = detect_all(image)
        exact.append(Counter(d.label for d in found) == Counter({g.name: g.count for g in scene.groups}))
        if scene.relation is not None:
            relation.append(judge_image(scene, found).relation_ok)
    return float(np.mean(exact)), float(np.mean(relation))


@pytest.mark.parametrize("size, n", [(32, 400), (64, 100), (128, 30)])
def test_clean_renders_are_read_exactly(size: int, n: int):
    scenes = random_scenes(n, seed=size)
    objects, relations = accuracies(scenes, [render(s, i, size) for i, s in enumerate(scenes)])
    print(f"\nclean {size}x{size}, {n} scenes: object accuracy {objects:.3f}, relation accuracy {relations:.3f}")
    assert objects == 1.0 and relations == 1.0


@pytest.mark.parametrize("size, n", [(32, 400), (64, 100)])
def test_perturbed_renders_are_read_nearly_exactly(size: int, n: int):
    scenes = random_scenes(n, seed=1000 + size)
    images = [perturbed_render(s, i, size, Perturbation()) for i, s in enumerate(scenes)]
    objects, relations = accuracies(scenes, images)
    print(
        f"\nperturbed {size}x{size} ({Perturbation()}), {n} scenes: "
        f"object accuracy {objects:.3f}, relation accuracy {relations:.3f}"
    )
    assert objects >= 0.95 and relations >= 0.95


def test_boxes_match_the_layout():
    scene = parse("a red triangle to the left of three blue circles")
    for seed in range(20):
        found = sorted(detect_all(render(scene, seed)), key=lambda d: d.box)
        placed = sorted(layout(scene, seed), key=lambda p: p.box)
        assert [d.label for d in found] == [f"{p.colour} {p.shape}" for p in placed]
        for d, p in zip(found, placed):
            assert np.allclose(d.centre, p.centre, atol=0.35), (d, p)
            assert 0.0 <= d.score <= 1.0


def test_detect_keeps_only_asked_names():
    scenes = [parse("a red circle and a blue square"), parse("two green triangles above a yellow square")]
    images = [render(s, 0) for s in scenes]
    asked = [["red circle"], object_names(scenes[1])]
    found = ShapesDetector().detect(images, asked)
    assert [d.label for d in found[0]] == ["red circle"]
    assert Counter(d.label for d in found[1]) == {"green triangle": 2, "yellow square": 1}
    with pytest.raises(ValueError):
        ShapesDetector().detect(images, asked[:1])


def test_blank_and_noise_images_have_no_objects():
    from PIL import Image

    assert detect_all(Image.new("RGB", (32, 32), (242, 242, 242))) == []
    noise = np.clip(200 + np.random.default_rng(0).normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
    assert detect_all(Image.fromarray(noise)) == []
    assert len(NAMES) == 12


def _blurred(image, sigma: float):
    from PIL import Image
    from scipy import ndimage

    soft = ndimage.gaussian_filter(np.asarray(image, np.float32), (sigma, sigma, 0))
    return Image.fromarray(np.clip(soft + 0.5, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("sigma", [0.6, 1.0])
def test_blur_bridging_two_squares_is_split(sigma: float):
    from atelier.worlds.shapes.render import Placed, draw

    two = draw([Placed(0, "square", "blue", (4, 8, 14, 18)), Placed(0, "square", "blue", (15.5, 8, 25.5, 18))])
    found = detect_all(_blurred(two, sigma))
    assert [d.label for d in found] == ["blue square", "blue square"]
    assert np.allclose([d.centre for d in found], [(9, 13), (20.5, 13)], atol=0.3)


def test_off_colour_rim_stays_part_of_its_object():
    from PIL import Image

    from atelier.worlds.shapes.render import Placed, draw

    pixels = np.asarray(draw([Placed(0, "square", "red", (8, 8, 20, 20))])).copy()
    pixels[8:20, 17:20] = (240, 175, 30)  # an orange-yellow band, as a generated red square may have
    image = Image.fromarray(pixels)
    assert [d.label for d in detect_all(image)] == ["red square"]
    # Read pixel by pixel, without absorbing fragments, the band would be a second object.
    assert len(ShapesDetector(hue_tolerance=0.0).detect_all(image)) == 2
