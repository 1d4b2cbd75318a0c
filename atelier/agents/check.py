"""`atelier agents check CONFIG`: call every configured role once, on shapes-world samples, and
say how long it took and whether the answer validated."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from atelier.agents.backend import AgentRequest
from atelier.agents.backends import backend_for
from atelier.agents.critic import CritiqueRequest, critique_builtin
from atelier.agents.edit_writer import EditRequest
from atelier.agents.judge import QuestionsJudgeRequest
from atelier.agents.planner import PlanError, PlanRequest, TargetSpec, plan_builtin
from atelier.agents.prompt_writer import WritePromptsRequest, classes_of
from atelier.worlds.shapes.questions import shapes_questions
from atelier.config import Config, ConfigError
from atelier.worlds.shapes.render import render
from atelier.worlds.shapes.scene import parse

# A prompt and an image that gets its relation wrong: the critic and edit writer have work to do.
SAMPLE_PROMPT = "a red circle to the left of a green square"
SAMPLE_DRAWN = "a green square to the left of a red circle"


@dataclass
class CheckLine:
    role: str
    backend: str
    endpoint: str
    ok: bool
    latency_s: float | None
    detail: str


def sample_requests(goal: str, workdir: Path) -> dict[str, AgentRequest]:
    image = Path(workdir) / "sample.png"
    render(parse(SAMPLE_DRAWN), seed=0).save(image)
    try:
        spec = plan_builtin(goal)
    except PlanError:
        spec = TargetSpec(metric="object_accuracy")
    questions, probes = shapes_questions(parse(SAMPLE_PROMPT))
    return {
        "planner": PlanRequest(goal=goal),
        "prompt_writer": WritePromptsRequest(spec=spec, n=4, target_class=classes_of(spec)[0]),
        "judge": QuestionsJudgeRequest(image=image, prompt=SAMPLE_PROMPT, questions=questions, probes=probes),
        "critic": CritiqueRequest(image=image, prompt=SAMPLE_PROMPT),
        "edit_writer": EditRequest(prompt=SAMPLE_PROMPT, critique=critique_builtin(image, SAMPLE_PROMPT), image=image),
    }


def check_agents(config: Config) -> list[CheckLine]:
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        requests = sample_requests(config.goal, Path(tmp))
        for role, agent in config.agents.roles().items():
            endpoint = f"{agent.model} @ {agent.base_url}" if agent.backend == "openai" else "offline rules"
            try:
                result = backend_for(agent, role).ask(requests[role])
            except ConfigError as e:
                lines.append(CheckLine(role, agent.backend, endpoint, False, None, str(e)))
                continue
            if result.ok:
                detail = "valid" + (f" after {result.attempts} answers" if result.attempts > 1 else "")
            else:
                detail = f"INVALID after {result.attempts} answer(s): {result.error}"
            lines.append(CheckLine(role, agent.backend, endpoint, result.ok, result.latency_s, detail))
    return lines


def format_line(line: CheckLine) -> str:
    latency = f"{line.latency_s * 1000:8.0f} ms" if line.latency_s is not None else "       - ms"
    return f"{line.role:13s} {line.backend:8s} {line.endpoint:48s} {latency}  {line.detail}"
