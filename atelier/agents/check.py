"""`atelier agents check CONFIG`: call every configured role once, on a world's sample, and say
how long it took and whether the answer validated.

The world provides the sample (an image, its prompt, what the prompt asks, the detections and
one request per role): see atelier.worlds.shapes.agents_check.check_sample.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from atelier.agents.backend import AgentRequest
from atelier.agents.backends import backend_for
from atelier.config import Config, ConfigError
from atelier.worlds.judgment import Asked


@dataclass
class CheckSample:
    """What `agents check` sends: one request per role, about this image and prompt."""

    image: Path
    prompt: str
    asked: Asked
    detections: tuple[dict, ...]
    requests: dict[str, AgentRequest] = field(default_factory=dict)  # role -> request


# A world's sample: (a folder to write the image into, the config's goal) -> CheckSample.
SampleMaker = Callable[[Path, str], CheckSample]


@dataclass
class CheckLine:
    role: str
    backend: str
    endpoint: str
    ok: bool
    latency_s: float | None
    detail: str


def check_agents(config: Config, sample: SampleMaker) -> list[CheckLine]:
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        requests = sample(Path(tmp), config.goal).requests
        for role, agent in config.agents.roles().items():
            endpoint = f"{agent.model} @ {agent.base_url}" if agent.backend == "openai" else "offline rules"
            if role not in requests:
                lines.append(CheckLine(role, agent.backend, endpoint, False, None, "the world has no sample request for this role"))
                continue
            try:
                result = backend_for(agent, role).ask(requests[role])
            except ConfigError as e:
                lines.append(CheckLine(role, agent.backend, endpoint, False, None, str(e)))
                continue
            if result.ok:
                detail = "valid" + (f" after {result.attempts} answers" if result.attempts > 1 else "")
            elif not result.errors and not result.raw:  # nothing came back to validate
                detail = f"NO ANSWER: {result.error}"
            else:
                detail = f"INVALID after {result.attempts} answer(s): {result.error}"
            lines.append(CheckLine(role, agent.backend, endpoint, result.ok, result.latency_s, detail))
    return lines


def format_line(line: CheckLine) -> str:
    latency = f"{line.latency_s * 1000:8.0f} ms" if line.latency_s is not None else "       - ms"
    return f"{line.role:13s} {line.backend:8s} {line.endpoint:48s} {latency}  {line.detail}"
