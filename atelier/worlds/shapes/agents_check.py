"""The shapes world's sample for `atelier agents check`: an image that gets its relation wrong,
so that the critic and the edit writer have work to do, and one request per role about it."""

from __future__ import annotations

from pathlib import Path

from atelier.agents.check import CheckSample
from atelier.agents.edit_writer import EditRequest
from atelier.agents.planner import PlanError, TargetSpec
from atelier.worlds.shapes.critique import critique, critique_request
from atelier.worlds.shapes.judge import detections, questions_request
from atelier.worlds.shapes.metrics import asked_of
from atelier.worlds.shapes.plan import ShapesPlanRequest, plan_builtin
from atelier.worlds.shapes.prompts import ShapesWritePromptsRequest, classes_of
from atelier.worlds.shapes.render import render
from atelier.worlds.shapes.scene import parse

SAMPLE_PROMPT = "a red circle to the left of a green square"
SAMPLE_DRAWN = "a green square to the left of a red circle"


def check_sample(tmp_dir: Path, goal: str) -> CheckSample:
    image = Path(tmp_dir) / "sample.png"
    render(parse(SAMPLE_DRAWN), seed=0).save(image)
    try:
        spec = plan_builtin(goal)
    except PlanError:
        spec = TargetSpec(metric="object_accuracy")
    return CheckSample(
        image=image, prompt=SAMPLE_PROMPT, asked=asked_of(parse(SAMPLE_PROMPT)), detections=detections(image),
        requests={
            "planner": ShapesPlanRequest(goal=goal),
            "prompt_writer": ShapesWritePromptsRequest(spec=spec, n=4, target_class=classes_of(spec)[0]),
            "judge": questions_request(image, SAMPLE_PROMPT),
            "critic": critique_request(image, SAMPLE_PROMPT),
            "edit_writer": EditRequest(prompt=SAMPLE_PROMPT, critique=critique(image, SAMPLE_PROMPT), image=image),
        },
    )
