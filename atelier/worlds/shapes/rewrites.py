"""The shapes world's rewrites: meaning-preserving phrasings its text encoder reads, what each
says differently from the user's prompt, and the request a model rewriter answers in this world.

Phrasings (atelier.worlds.shapes.prompts.equivalent_captions): the two groups of a relation
swapped with the inverse relation ('a red circle to the left of a blue square' = 'a blue square
to the right of a red circle'), the groups of a list in another order, 'one' for 'a'. The
prompt as written is the first phrasing (a rewriter may keep it). Features name the patterns a
builtin rewriter learns a preference for (atelier.rewriter.rule).
"""

from __future__ import annotations

from pydantic import BaseModel

from atelier.rewriter.request import RewriteOneRequest
from atelier.tools.detection import OPPOSITE
from atelier.worlds.shapes.prompts import equivalent_captions
from atelier.worlds.shapes.scene import COLOURS, SHAPES, CaptionError, Scene, caption, parse

_AXIS = {"left of": "relation left/right", "right of": "relation left/right", "above": "relation above/below",
         "below": "relation above/below"}


def phrasings(prompt: str) -> list[str]:
    """The prompt as written (its caption) and every other way the world says the same scene."""
    scene = parse(prompt)
    return [caption(scene), *equivalent_captions(scene)]


def same_scene(a: Scene, b: Scene) -> bool:
    """Whether two scenes mean the same: a relation said from either side, a list in any order."""
    if a.relation is None or b.relation is None:
        return a.relation == b.relation and set(a.groups) == set(b.groups)
    return (a.groups, a.relation) == (b.groups, b.relation) or (a.groups[::-1], OPPOSITE[a.relation]) == (b.groups, b.relation)


def phrasing_features(prompt: str, text: str) -> dict[str, str]:
    """{pattern: value} of how `text` says the scene of `prompt`: the relation word used (per
    axis), the word for a single object ('a', 'one' or 'mixed'), a list's order ('as asked' or
    'reordered'). ValueError when `text` is no caption of the same scene."""
    asked, said = parse(prompt), parse(text)
    if not same_scene(asked, said):
        raise ValueError(f"{text!r} does not say the scene of {prompt!r}")
    features: dict[str, str] = {}
    if said.relation is not None:
        features[_AXIS[said.relation]] = said.relation
    words = text.lower().replace(",", " ").split()
    singles = [w for w in words if w in ("a", "an", "one")]
    if singles:
        features["article"] = "one" if set(singles) == {"one"} else ("a" if "one" not in singles else "mixed")
    if said.relation is None and len(said.groups) > 1:
        features["list order"] = "as asked" if said.groups == asked.groups else "reordered"
    return features


class ShapesRewriteOneRequest(RewriteOneRequest):
    """user caption -> one caption of the same scene, in the shapes model's grammar"""

    @property
    def template(self) -> str:
        return "prompt_writer_rewrite_one_shapes"

    def template_values(self) -> dict[str, str]:
        return {"prompt": self.prompt, "colours": ", ".join(COLOURS), "shapes": ", ".join(SHAPES)}

    def check(self, answer: BaseModel) -> None:
        try:
            scene = parse(answer.rewrite)
        except CaptionError as e:
            raise ValueError(str(e)) from None
        if not same_scene(scene, parse(self.prompt)):
            raise ValueError(f"{answer.rewrite!r} changes the meaning of {self.prompt!r}: keep its objects, counts and "
                             "placement")
