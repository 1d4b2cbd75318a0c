"""The request a model rewriter answers: one user prompt -> one rewrite.

One rewrite per request, asked N times at the rewriting temperature, as the paper samples its
LVLM: the (system, user) messages of one request are also the `prompt` of the DPO pairs
(atelier.rewriter.export), so that what is trained is what is served. A world subclasses it with
its language and its check (atelier.worlds.shapes.rewrites).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from atelier.agents.backend import AgentRequest
from atelier.agents.templates import render


class OneRewrite(BaseModel):
    """The rewriter's answer."""

    model_config = ConfigDict(extra="forbid")
    rewrite: str = Field(min_length=1, max_length=1000, description="the rewritten prompt, keeping its meaning")


class RewriteOneRequest(AgentRequest):
    """user prompt -> one rewrite that keeps its meaning"""

    role = "prompt_writer"
    mode = "rewrite_one"
    answer_schema = OneRewrite
    prompt: str = Field(description="the user's prompt")

    def template_values(self) -> dict[str, str]:
        return {"prompt": self.prompt}

    def check(self, answer: BaseModel) -> None:
        if not answer.rewrite.strip():
            raise ValueError("the rewrite is empty")

    def messages(self) -> list[dict]:
        """The chat messages a served rewriter receives for this request (and the pairs' prompt)."""
        system, user = render(self.template, self.template_values())
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]
