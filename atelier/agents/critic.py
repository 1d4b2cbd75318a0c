"""Critic: image + prompt -> a structured critique, in the spirit of LLaVA-Critic.

What the image gets wrong against the prompt (missing objects, wrong counts or attributes, wrong
relation, things nobody asked for), which phrases of the prompt are drawn poorly, and artifacts.
The builtin critic reads it off the exact detector's output; it is what the edit-instruction
writer works from.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from atelier.agents.backend import ImagePromptRequest
from atelier.worlds.shapes.detect import detect_all
from atelier.worlds.shapes.metrics import judge_image
from atelier.worlds.shapes.scene import parse

# Below this detector confidence a shape is drawn badly enough to call it an artifact.
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


def critique_builtin(image: Path, prompt: str) -> Critique:
    scene = parse(prompt)
    detections = detect_all(Image.open(image).convert("RGB"))
    judgment = judge_image(scene, detections)
    deviations: list[Deviation] = []
    for group, judged in zip(scene.groups, judgment.groups):
        if judged.found == 0:
            deviations.append(Deviation(kind="missing", phrase=group.phrase(), objects=[group.name],
                                        detail=f"no {group.name} is drawn"))
        elif judged.found != judged.expected:
            deviations.append(Deviation(kind="count", phrase=group.phrase(), objects=[group.name],
                                        detail=f"{judged.found} drawn where {judged.expected} were asked for"))
    if judgment.relation_ok is False and judgment.object_ok:
        a, b = scene.groups
        deviations.append(Deviation(
            kind="relation", phrase=f"{a.phrase()} {_RELATION_WORDS[scene.relation]} {b.phrase()}", objects=[a.name, b.name],
            detail=f"the {a.name} is not {_RELATION_WORDS[scene.relation]} the {b.name}"))
    asked = {g.name for g in scene.groups}
    for label, n in sorted(Counter(d.label for d in detections if d.label not in asked).items()):
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
    def answer_builtin(self) -> Critique:
        return critique_builtin(self.image, self.prompt)

    def check(self, answer: BaseModel) -> None:
        if answer.matches_prompt and answer.deviations:
            raise ValueError("matches_prompt is true but deviations are listed; make them agree")
        if not answer.matches_prompt and not answer.deviations:
            raise ValueError("matches_prompt is false but no deviation is listed; name at least one")
