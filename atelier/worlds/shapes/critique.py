"""The shapes world's critic requests: the caption's objects, its words for them and the exact
detector's output, which the generic builtin critic (atelier.agents.critic) works from."""

from __future__ import annotations

from pathlib import Path

from atelier.agents.critic import Critique, CritiqueRequest, critique_builtin
from atelier.worlds.shapes.judge import detect, detections
from atelier.worlds.shapes.metrics import asked_of
from atelier.worlds.shapes.scene import parse


def critique_request(image: Path, prompt: str) -> CritiqueRequest:
    scene = parse(prompt)
    return CritiqueRequest(image=image, prompt=prompt, asked=asked_of(scene), phrases=tuple(g.phrase() for g in scene.groups),
                           detections=detections(image))


def critique(image: Path, prompt: str) -> Critique:
    """The builtin critique of an image against its caption."""
    scene = parse(prompt)
    return critique_builtin(asked_of(scene), detect(image), [g.phrase() for g in scene.groups])
