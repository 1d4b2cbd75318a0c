"""Settings of the `rewrite` strategy: self-rewarding prompt rewriting (issue 21). Imported by atelier.config; keep it light (pydantic only)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RewriteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check(config) -> None:
    """Cross-field checks of a whole Config using this strategy; raise ValueError(one line)."""
