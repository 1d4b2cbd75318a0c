"""Critic: image + prompt -> a structured critique, in the spirit of LLaVA-Critic.

What the image gets wrong against the prompt (missing objects, wrong counts or attributes, wrong
relation, things nobody asked for), which phrases of the prompt are drawn poorly, and artifacts.
The builtin critic reads it off what the request carries: what the prompt asks
(`atelier.worlds.judgment.Asked`), the words naming each asked object, and the world's detector
output (filled by the world: atelier.worlds.shapes.critique). It is what the edit-instruction
writer works from.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from atelier.agents.backend import ImagePromptRequest
from atelier.tools.detection import Detection
from atelier.worlds.judgment import Asked, AskedObject, judge_detections

# Below this detector confidence an object is drawn badly enough to call it an artifact.
ARTIFACT_SCORE = 0.5
_RELATION_WORDS = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}


class Deviation(BaseModel):
    """One way the image departs from the prompt."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["missing", "count", "attribute", "relation", "extra", "other"] = Field(description="what is wrong")
    phrase: str = Field(description="the words of the prompt concerned; '' for something the prompt does not mention")
    objects: list[str] = Field(description="object classes concerned, e.g. ['red circle', 'blue square']")
    detail: str = Field(max_length=300, description="one short sentence on what the image shows instead")


class Critique(BaseModel):
    """The critic's answer."""

    model_config = ConfigDict(extra="forbid")
    matches_prompt: bool = Field(description="true only if there is no deviation")
    deviations: list[Deviation] = Field(description="every departure from the prompt; [] if none")
    poorly_rendered: list[str] = Field(description="phrases of the prompt that are drawn badly or not at all")
    artifacts: list[str] = Field(description="visual flaws whatever the prompt: smears, broken or half-drawn shapes")
    summary: str = Field(max_length=600, description="two sentences at most")


def _default_phrase(o: AskedObject) -> str:
    return f"a {o.name}" if o.count == 1 else f"{o.count} {o.name}"


def critique_builtin(asked: Asked, detections: Sequence[Detection], phrases: Sequence[str] = ()) -> Critique:
    """The critique of an image from its detections. `phrases`: the prompt's words for each asked
    object, in order (e.g. 'two blue squares'); by default 'a <name>' / '<count> <name>'."""
    phrases = list(phrases) or [_default_phrase(o) for o in asked.objects]
    judgment = judge_detections(asked, detections, prompt="")
    deviations: list[Deviation] = []
    for o, phrase, judged in zip(asked.objects, phrases, judgment.groups):
        if judged.found == 0:
            deviations.append(Deviation(kind="missing", phrase=phrase, objects=[o.name], detail=f"no {o.name} is drawn"))
        elif judged.found != judged.expected:
            deviations.append(Deviation(kind="count", phrase=phrase, objects=[o.name],
                                        detail=f"{judged.found} drawn where {judged.expected} were asked for"))
    if judgment.relation_ok is False and judgment.object_ok:
        (a, b), words = asked.objects[:2], _RELATION_WORDS[asked.relation]
        deviations.append(Deviation(
            kind="relation", phrase=f"{phrases[0]} {words} {phrases[1]}", objects=[a.name, b.name],
            detail=f"the {a.name} is not {words} the {b.name}"))
    names = {o.name for o in asked.objects}
    for label, n in sorted(Counter(d.label for d in detections if d.label not in names).items()):
        deviations.append(Deviation(kind="extra", phrase="", objects=[label], detail=f"{n} {label}{'s' if n > 1 else ''} not asked for"))
    artifacts = [f"the {d.label} is faint or misshapen" for d in detections if d.score < ARTIFACT_SCORE]
    summary = "The image shows what the prompt asks." if not deviations else "; ".join(d.detail for d in deviations[:3]) + "."
    return Critique(matches_prompt=not deviations, deviations=deviations,
                    poorly_rendered=[d.phrase for d in deviations if d.phrase], artifacts=artifacts, summary=summary[:600])


class CritiqueRequest(ImagePromptRequest):
    """image + prompt -> critique"""

    role = "critic"
    mode = "default"
    answer_schema = Critique
    asked: Asked | None = Field(None, description="what the prompt asks, for the builtin critic")
    phrases: tuple[str, ...] = Field(default=(), description="the prompt's words for each asked object, in order")
    detections: tuple[dict, ...] = Field(default=(), description="the world's detector output (Detection.to_dict())")

    def answer_builtin(self) -> Critique:
        if self.asked is None:
            raise ValueError("the builtin critic needs what the prompt asks (`asked`) and the detections, filled by the world")
        return critique_builtin(self.asked, [Detection.from_dict(d) for d in self.detections], self.phrases)

    def check(self, answer: BaseModel) -> None:
        if answer.matches_prompt and answer.deviations:
            raise ValueError("matches_prompt is true but deviations are listed; make them agree")
        if not answer.matches_prompt and not answer.deviations:
            raise ValueError("matches_prompt is false but no deviation is listed; name at least one")
