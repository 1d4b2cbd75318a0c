"""What every agent backend meets: a typed request in, an AgentResult out.

A request names its role, its mode, the pydantic schema of the answer, the values its prompt
template needs and the images it shows. `Backend` is the one base class (as smolagents' Model):
`BuiltinBackend` answers from rules over detector output, `OpenAIBackend` asks a model over the
OpenAI chat protocol. A backend never raises for a bad answer: it returns a failed result that
keeps the raw text, so that the run goes on and the failure stays on record. Every result is
cleaned (`AgentResult.clean`) before it leaves its backend: API keys masked, texts bounded
(atelier.agents.records).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from atelier.agents import records


class RunPaused(RuntimeError):
    """A run cannot go on until an agent's endpoint answers again: one line naming the role, its
    endpoint and what it answered. The run's status says 'paused', the CLI exits 75
    (EX_TEMPFAIL) and `atelier resume RUN` continues from the node that paused."""


def endpoint_of(config, role: str) -> str:
    """'the judge at URL (model)' for a role's AgentConfig, for one-line reasons."""
    if config is None or config.backend == "builtin":
        return f"the builtin {role}"
    return f"the {role} at {config.base_url} ({config.model})"


class AgentRequest(BaseModel):
    """Base of every request. Subclasses set the class variables and may add `check`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    role: ClassVar[str]
    mode: ClassVar[str]
    answer_schema: ClassVar[type[BaseModel]]

    @property
    def template(self) -> str:
        """The prompt file in atelier/prompts/ (without .txt): one per role and mode."""
        return self.role if self.mode == "default" else f"{self.role}_{self.mode}"

    def template_values(self) -> dict[str, str]:
        """Text substituted into the template's $placeholders."""
        return {}

    def images(self) -> list[Path]:
        """Images shown to the model, in the order the template refers to them."""
        return []

    def answer_builtin(self) -> BaseModel:
        """The builtin backend's answer: rules over the request (and detector output)."""
        raise NotImplementedError(f"no builtin rule for {self.role}/{self.mode}")

    def check(self, answer: BaseModel) -> None:
        """Rules the schema cannot say (answer lengths that depend on the request, the world's
        vocabulary). Raise ValueError with a message the model can act on."""



class ImagePromptRequest(AgentRequest):
    """Base of the requests about one image and the prompt it was made from."""

    image: Path = Field(description="the image")
    prompt: str = Field(description="the prompt the image was made from")

    def template_values(self) -> dict[str, str]:
        return {"prompt": self.prompt}

    def images(self) -> list[Path]:
        return [self.image]

@dataclass
class AgentResult:
    """One request's outcome. `answer` is None exactly when `ok` is False."""

    role: str
    mode: str
    ok: bool
    answer: BaseModel | None
    raw: str = ""  # the model's last text (the builtin backend: the answer as JSON)
    error: str | None = None
    attempts: int = 1  # answers received (1 + re-asks)
    retries: int = 0  # transport retries
    latency_s: float = 0.0
    errors: list[str] = field(default_factory=list)  # every validation error, in order

    def clean(self, *keys: str) -> AgentResult:
        """This result with the configured keys (and `keys`) masked in its raw text, errors and
        answer, and each of them bounded (atelier.agents.records); in place, returned. An answer
        that cleaning leaves invalid or still too large makes the result a failed one."""
        keys = records.current_keys(*keys)
        if self.answer is not None:
            try:
                self.answer = records.clean_answer(self.answer, keys)
            except ValueError as e:
                self.ok, self.answer, self.error = False, None, str(e)
                self.errors.append(self.error)
        self.raw = records.clean_text(self.raw, records.RAW_LIMIT, keys)
        if self.error is not None:
            self.error = records.clean_text(self.error, records.ERROR_LIMIT, keys)
        self.errors = [records.clean_text(e, records.ERROR_LIMIT, keys) for e in self.errors]
        return self

    def record(self) -> dict:
        """A JSON-ready record for the run folder, clean even if no backend cleaned the result."""
        return records.clean_record({
            "role": self.role, "mode": self.mode, "ok": self.ok,
            "answer": self.answer.model_dump(mode="json") if self.answer is not None else None,
            "raw": self.raw, "error": self.error, "errors": self.errors, "attempts": self.attempts,
            "retries": self.retries, "latency_s": round(self.latency_s, 4),
        }, records.current_keys())


class Backend:
    """Answers agent requests. Subclasses implement `ask`; `ask_many` may run requests at once."""

    name: ClassVar[str] = "base"

    def ask(self, request: AgentRequest) -> AgentResult:
        raise NotImplementedError

    def ask_many(self, requests: list[AgentRequest]) -> list[AgentResult]:
        return [self.ask(r) for r in requests]
