"""OWLv2 and Grounding DINO load through the real `from_pretrained` code (tiny random models built
from configs) and meet the Detector interface; NMS on hand-made boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.tools.relabel import relabel_objects
from atelier.worlds.shapes.metrics import relation_holds
from atelier.tools.boxes import box_iou, nms, nms_per_label
from atelier.tools.open_vocab_detector import OpenVocabDetector, OpenVocabDetectorConfig, grounding_text, owl_query
from tiny_vision_models import build_tiny_grounding_dino, build_tiny_owlv2

# Images of different shapes (OWLv2 pads to a square, Grounding DINO pads the batch) and lists of
# names of different lengths (OWLv2 pads the queries), one of them empty.
SIZES = [(48, 64), (64, 40), (32, 32), (50, 70)]
NAMES = [["dog", "cat"], ["person"], [], ["apple", "giraffe", "traffic light"]]


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("open_vocab")
    return {
        "owlv2": str(build_tiny_owlv2(root / "owlv2")),
        "grounding_dino": str(build_tiny_grounding_dino(root / "grounding_dino")),
    }


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in SIZES]


def detector(model_paths, architecture: str, **settings) -> OpenVocabDetector:
    return OpenVocabDetector(OpenVocabDetectorConfig(architecture=architecture, model=model_paths[architecture], **settings))


@pytest.mark.parametrize("architecture", ["owlv2", "grounding_dino"])
def test_detections_meet_the_detector_interface(model_paths, images, architecture):
    found = detector(model_paths, architecture, score_threshold=0.0, batch_size=3).detect(images, NAMES)
    assert len(found) == len(images)
    assert found[2] == []  # nothing asked, nothing found
    assert all(found[i] for i in (0, 1, 3))
    for image, names, detections in zip(images, NAMES, found):
        for d in detections:
            x0, y0, x1, y1 = d.box
            assert d.label in names
            assert 0 <= x0 <= x1 <= image.width and 0 <= y0 <= y1 <= image.height
            assert 0.0 <= d.score <= 1.0
        assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)


@pytest.mark.parametrize("architecture", ["owlv2", "grounding_dino"])
def test_a_higher_threshold_keeps_a_subset(model_paths, images, architecture):
    # Every box above 0.99 also passes 0 and outranks every box it adds, so greedy NMS keeps it at
    # both thresholds: the set at 0.99 is a subset of the set at 0. It may be equal: random tiny
    # weights can score every kept box above 0.99 (Grounding DINO's do, near 1.0).
    low = detector(model_paths, architecture, score_threshold=0.0).detect(images, NAMES)
    high = detector(model_paths, architecture, score_threshold=0.99).detect(images, NAMES)
    for lows, highs in zip(low, high):
        assert all(d.score > 0.99 for d in highs)
        assert {(d.label, d.box) for d in highs} <= {(d.label, d.box) for d in lows}
    assert sum(map(len, low)) >= sum(map(len, high))
    if architecture == "owlv2":  # its tiny model's scores spread over (0, 1)
        assert sum(map(len, low)) > sum(map(len, high))


def test_batching_does_not_change_detections(model_paths, images):
    # OWLv2 reads each image alone (resized to its square) and padding queries never win a box, so
    # a batch finds what single images find. (Grounding DINO pads images to the batch's largest:
    # its backbone sees the padding, so its boxes may move a little with the batch.)
    one_by_one = detector(model_paths, "owlv2", score_threshold=0.0, batch_size=1).detect(images, NAMES)
    together = detector(model_paths, "owlv2", score_threshold=0.0, batch_size=4).detect(images, NAMES)
    for a, b in zip(one_by_one, together):
        assert [d.label for d in a] == [d.label for d in b]
        assert np.allclose([d.box for d in a], [d.box for d in b], atol=1e-3)
        assert np.allclose([d.score for d in a], [d.score for d in b], atol=1e-5)


def test_explicit_dtype(model_paths, images):
    bf16 = detector(model_paths, "owlv2", dtype="bfloat16", score_threshold=0.0)
    assert bf16.model.dtype == torch.bfloat16
    found = bf16.detect(images[:2], NAMES[:2])
    assert all(0.0 <= d.score <= 1.0 and d.label in names for names, ds in zip(NAMES, found) for d in ds)


def test_detections_feed_relabelling_and_visor_checks(model_paths, images):
    found = detector(model_paths, "owlv2", score_threshold=0.0).detect(images[:1], [["dog", "cat"]])[0]
    dogs = [d for d in found if d.label == "dog"]
    cats = [d for d in found if d.label == "cat"]
    assert isinstance(relation_holds("left of", dogs, cats), bool)
    text = relabel_objects([("dog", 1), ("cat", 1)], "left of", found)
    assert text is None or "dog" in text or "cat" in text


def test_queries_and_texts():
    assert owl_query("dog") == "a photo of a dog"
    text, spans = grounding_text(["Dog", "traffic light"])
    assert text == "dog . traffic light ."
    assert [text[a:b] for a, b in spans] == ["dog", "traffic light"]


def test_unknown_model_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot load owlv2 detector") as error:
        OpenVocabDetector(OpenVocabDetectorConfig(architecture="owlv2", model=str(tmp_path / "missing")))
    assert "\n" not in str(error.value)


def test_mismatched_inputs(model_paths, images):
    with pytest.raises(ValueError, match="2 images but 1 lists"):
        detector(model_paths, "owlv2").detect(images[:2], [["dog"]])


def test_nms_removes_a_duplicated_box():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 0, 1])
    assert torch.allclose(box_iou(boxes[:1], boxes[1:2]), torch.tensor([[90 / 110]]))
    # Box 1 repeats box 0 (IoU 0.82): dropped; box 2 is elsewhere.
    assert nms(boxes[:3], scores[:3], iou_threshold=0.5).tolist() == [0, 2]
    assert nms(boxes[:3], scores[:3], iou_threshold=0.9).tolist() == [0, 1, 2]
    # Box 3 is box 0 again but another label: kept.
    assert nms_per_label(boxes, scores, labels, iou_threshold=0.5).tolist() == [0, 2, 3]
    # The better box survives whatever the input order.
    assert nms(boxes[[1, 0]], scores[[1, 0]], iou_threshold=0.5).tolist() == [1]
    assert nms_per_label(boxes[:0], scores[:0], labels[:0], 0.5).tolist() == []
