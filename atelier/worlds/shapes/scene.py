"""Scenes of the shapes world and their English captions.

A scene is one to three groups of identical objects ("two green triangles"), and at most one
spatial relation, which then holds between the first and the second of exactly two groups
("a yellow square above two blue circles"). `caption(scene)` and `parse(text)` are inverses
over every caption the world can say.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
RELATIONS = ("left of", "right of", "above", "below")
MAX_COUNT = 3
MAX_GROUPS = 3

Shape = Literal["circle", "square", "triangle"]
Colour = Literal["red", "green", "blue", "yellow"]
Relation = Literal["left of", "right of", "above", "below"]

COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
_WORD_COUNTS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}
_RELATION_PHRASES = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}
_PHRASE_RELATIONS = {v: k for k, v in _RELATION_PHRASES.items()}
# Words a caption may contain; anything else is named in the parse error.
VOCABULARY = (
    set(_WORD_COUNTS)
    | set(COLOURS)
    | set(SHAPES)
    | {s + "s" for s in SHAPES}
    | {"to", "the", "left", "right", "of", "above", "below", "and"}
)


class CaptionError(ValueError):
    """A text that is not a caption of the shapes world."""


class Group(BaseModel):
    """`count` identical objects of one colour and shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    shape: Shape = Field(description="circle, square or triangle")
    colour: Colour = Field(description="red, green, blue or yellow")
    count: int = Field(default=1, ge=1, le=MAX_COUNT, description="how many of this object")

    @property
    def name(self) -> str:
        """The object name a detector is asked for, e.g. 'red circle'."""
        return f"{self.colour} {self.shape}"

    def phrase(self) -> str:
        noun = self.shape if self.count == 1 else self.shape + "s"
        return f"{COUNT_WORDS[self.count]} {self.colour} {noun}"


class Scene(BaseModel):
    """Groups of objects and at most one relation between the first two."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    groups: tuple[Group, ...] = Field(min_length=1, max_length=MAX_GROUPS)
    relation: Relation | None = Field(
        default=None, description="where groups[0] is relative to groups[1]; needs exactly two groups"
    )

    @model_validator(mode="after")
    def _check(self) -> Scene:
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"each colour+shape may appear once per scene, got {names}")
        if self.relation is not None and len(self.groups) != 2:
            raise ValueError("a relation needs exactly two groups")
        return self

    @property
    def n_objects(self) -> int:
        return sum(g.count for g in self.groups)


def caption(scene: Scene) -> str:
    """Natural English for a scene: 'a red circle to the left of two blue squares'."""
    phrases = [g.phrase() for g in scene.groups]
    if scene.relation is not None:
        return f"{phrases[0]} {_RELATION_PHRASES[scene.relation]} {phrases[1]}"
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


_GROUP_RE = re.compile(r"^(a|an|one|two|three) (\w+) (\w+)$")


def _parse_group(text: str, whole: str) -> Group:
    m = _GROUP_RE.match(text.strip())
    if not m:
        raise CaptionError(f"cannot read {text.strip()!r} as '<count> <colour> <shape>' in {whole!r}")
    count_word, colour, noun = m.groups()
    count = _WORD_COUNTS[count_word]
    if colour not in COLOURS:
        raise CaptionError(f"unknown colour {colour!r} in {whole!r}; colours are {', '.join(COLOURS)}")
    plural = noun.endswith("s")
    shape = noun[:-1] if plural else noun
    if shape not in SHAPES:
        raise CaptionError(f"unknown shape {noun!r} in {whole!r}; shapes are {', '.join(SHAPES)}")
    if plural != (count > 1):
        raise CaptionError(f"{count_word!r} does not agree with {noun!r} in {whole!r}")
    return Group(shape=shape, colour=colour, count=count)


def parse(text: str) -> Scene:
    """Read a caption back into a Scene; raise CaptionError naming what is not understood."""
    norm = " ".join(text.lower().strip().rstrip(".").split())
    unknown = [w for w in re.split(r"[ ,]+", norm) if w and w not in VOCABULARY]
    if unknown:
        raise CaptionError(f"unknown words {unknown} in {text!r}; the shapes world knows {sorted(VOCABULARY)}")
    for phrase, relation in _PHRASE_RELATIONS.items():
        parts = norm.split(f" {phrase} ")
        if len(parts) == 2:
            groups = (_parse_group(parts[0], text), _parse_group(parts[1], text))
            return _scene(groups, relation, text)
    pieces = [p for p in re.split(r", | and ", norm)]
    groups = tuple(_parse_group(p, text) for p in pieces)
    return _scene(groups, None, text)


def _scene(groups: tuple[Group, ...], relation: str | None, text: str) -> Scene:
    try:
        return Scene(groups=groups, relation=relation)
    except ValidationError as e:  # pydantic's message is long; keep the first reason
        raise CaptionError(f"{text!r} is not a valid scene: {e.errors()[0]['msg']}") from None


def object_names(scene: Scene) -> list[str]:
    """The names a detector must look for in an image of this scene."""
    return [g.name for g in scene.groups]
