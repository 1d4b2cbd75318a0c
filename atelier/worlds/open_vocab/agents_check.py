"""The open-vocabulary world's sample for `atelier agents check`: one request per role about a
drawn picture (a red disc left of a blue box, labelled as the first two classes), so the check
needs no generator or detector loaded, only the agents' endpoints."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from atelier.agents.check import CheckSample
from atelier.agents.critic import CritiqueRequest, critique_builtin
from atelier.agents.edit_writer import EditRequest
from atelier.agents.judge import QuestionsJudgeRequest
from atelier.agents.planner import PlanError, TargetSpec
from atelier.config import Config
from atelier.tools.detection import Detection
from atelier.tools.phrases import count_phrase, describe_relation
from atelier.worlds.judgment import Asked, AskedObject
from atelier.worlds.open_vocab.plan import OpenVocabPlanRequest, plan_builtin
from atelier.worlds.open_vocab.prompt_agent import OpenVocabPromptsRequest
from atelier.worlds.open_vocab.questions import asked_questions
from atelier.worlds.open_vocab.split import make_split

SIZE = 256


def check_sample(cfg: Config, tmp_dir: Path, goal: str) -> CheckSample:
    classes = list(cfg.vocabulary.classes) or ["dog", "cat"]
    first = classes[0]
    second = classes[1] if len(classes) > 1 else ("cat" if first != "cat" else "dog")
    image = Path(tmp_dir) / "sample.png"
    picture = Image.new("RGB", (SIZE, SIZE), "white")
    draw = ImageDraw.Draw(picture)
    # Drawn the wrong way round for the prompt, so the critic and the edit writer have work to do.
    draw.ellipse((150, 90, 230, 170), fill="red")
    draw.rectangle((30, 90, 110, 170), fill="blue")
    picture.save(image)
    asked = Asked(objects=(AskedObject(name=first), AskedObject(name=second)), relation="left of")
    prompt = describe_relation((first, 1), "left of", (second, 1))
    found = (Detection(first, (150.0, 90.0, 230.0, 170.0), 0.9), Detection(second, (30.0, 90.0, 110.0, 170.0), 0.9))
    detections = tuple(d.to_dict() for d in found)
    try:
        spec = plan_builtin(goal, cfg.vocabulary)
    except PlanError:
        spec = TargetSpec(objects=classes, metric="object_accuracy")
    questions, probes = asked_questions(asked)
    phrases = (count_phrase(first, 1), count_phrase(second, 1))
    critique = critique_builtin(asked, found, phrases)
    return CheckSample(
        image=image, prompt=prompt, asked=asked, detections=detections,
        requests={
            "planner": OpenVocabPlanRequest(goal=goal, classes=tuple(cfg.vocabulary.classes),
                                            relations=tuple(cfg.vocabulary.relations)),
            "prompt_writer": OpenVocabPromptsRequest(spec=spec, n=4, target_class=classes[0],
                                                     split=make_split(spec.objects or classes, cfg.vocabulary.settings)),
            "judge": QuestionsJudgeRequest(image=image, prompt=prompt, questions=tuple(questions), probes=tuple(probes),
                                           detections=detections),
            "critic": CritiqueRequest(image=image, prompt=prompt, asked=asked, phrases=phrases, detections=detections),
            "edit_writer": EditRequest(prompt=prompt, critique=critique, image=image),
        },
    )
