"""Settings of the `grpo` strategy: online RL with the judge as reward (issue 20). Imported by atelier.config; keep it light (pydantic only)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class GRPOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check(config) -> None:
    """Cross-field checks of a whole Config using this strategy; raise ValueError(one line)."""
