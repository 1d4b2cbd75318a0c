"""Which backend plays a role: a plain match on the role's config."""

from __future__ import annotations

from atelier.agents.backend import Backend
from atelier.agents.builtin_backend import BuiltinBackend
from atelier.agents.openai_backend import OpenAIBackend
from atelier.config import AgentConfig


def backend_for(config: AgentConfig, role: str) -> Backend:
    match config.backend:
        case "builtin":
            return BuiltinBackend()
        case "openai":
            return OpenAIBackend(config, role)
    raise ValueError(f"agents.{role}: unknown backend {config.backend!r}")
