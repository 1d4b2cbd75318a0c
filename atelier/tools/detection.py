"""The Detector interface of DESIGN.md: image + object names -> boxes with labels and scores.

The shapes world's exact detector and open-vocabulary models (OWLv2, Grounding DINO) both meet
it, so IPR relabelling and the VISOR metrics run unchanged on either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from PIL import Image


@dataclass(frozen=True)
class Detection:
    """One found object. `label` is one of the names asked for, e.g. 'red circle'."""

    label: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels; y grows downwards
    score: float  # in [0, 1]

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Detection:
        return cls(label=d["label"], box=tuple(d["box"]), score=float(d["score"]))


class Detector(Protocol):
    def detect(self, images: list[Image.Image], names: list[list[str]]) -> list[list[Detection]]:
        """For each image, the objects found among its names (one list of names per image)."""
        ...


# --- VISOR's relation rule on boxes ----------------------------------------------------------------

OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
OTHER_AXIS = {"left of": ("above", "below"), "right of": ("above", "below"),
              "above": ("left of", "right of"), "below": ("left of", "right of")}


def seen_relations(relation: str) -> tuple[str, ...]:
    """The relations a relabel tries when `relation` does not hold: the opposite first (the
    prompt's axis), then the other axis."""
    return (OPPOSITE[relation], *OTHER_AXIS[relation])


def relation_holds(relation: str, first: Sequence[Detection], second: Sequence[Detection]) -> bool:
    """True when any (first, second) pair has `first` strictly on the named side of `second`
    (VISOR: box centres; y grows downwards; ties do not satisfy)."""
    for a in first:
        (ax, ay) = a.centre
        for b in second:
            (bx, by) = b.centre
            match relation:
                case "left of":
                    ok = ax < bx
                case "right of":
                    ok = ax > bx
                case "above":
                    ok = ay < by
                case "below":
                    ok = ay > by
                case _:
                    raise ValueError(f"unknown relation {relation!r}")
            if ok:
                return True
    return False
