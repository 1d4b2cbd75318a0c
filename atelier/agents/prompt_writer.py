"""Prompt writer: TargetSpec -> training prompts, a held-out set, or rewrites of one prompt.

A model writer works class by class, as in CCSR: each request asks for a few prompts that all
show one target class, with structured metadata. Three modes, one template each: training
prompts, a held-out set and rewrites of one user prompt. A world subclasses the requests below
with its vocabulary (`template_values`), its rules (`check`: the caption grammar, held-out
pairs...) and its builtin writer (`answer_builtin`); see atelier.worlds.shapes.prompts.

`write_prompts_by_class` is the driver: it sends the class requests at once, keeps the prompts
the world accepts (also from answers that failed as a whole), and tops up from the world's
builtin writer when a model falls short, saying so in the record and the batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atelier.agents import records
from atelier.agents.backend import AgentRequest, AgentResult, RunPaused, endpoint_of
from atelier.agents.backends import backend_for
from atelier.agents.planner import MAX_COUNT, TargetSpec
from atelier.atomic import write_json_atomic
from atelier.config import AgentConfig

log = logging.getLogger("atelier.agents")

# Prompts asked of a model per request: short answers validate more often and run in parallel.
PROMPTS_PER_REQUEST = 16


class PromptObject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="the object class, e.g. 'red circle'")
    count: int = Field(ge=1, le=MAX_COUNT, description="how many of it the prompt asks for")


class WrittenPrompt(BaseModel):
    """One prompt and what it asks for."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="the prompt, in the world's language")
    target_class: str = Field(description="the class this prompt was written for (CCSR class conditioning)")
    objects: list[PromptObject] = Field(description="every object class in the prompt with its count, in prompt order")
    relation: str | None = Field(description="where the first object is relative to the second, or null")
    attributes: list[str] = Field(description="attributes the prompt names, e.g. 'red', 'triangle'")


class WrittenPrompts(BaseModel):
    """The prompt writer's answer in the training and held-out modes."""

    model_config = ConfigDict(extra="forbid")
    prompts: list[WrittenPrompt] = Field(description="the prompts, all different")


class Rewrites(BaseModel):
    """The prompt writer's answer in rewrite mode."""

    model_config = ConfigDict(extra="forbid")
    rewrites: list[str] = Field(description="rewrites of the user prompt that keep its meaning, all different")


class PromptBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompts: list[str] = Field(description="one caption per prompt, in the world's language")
    metadata: list[WrittenPrompt] = Field(default_factory=list, description="what each prompt asks for, in order")
    filled_by_builtin: int = Field(0, description="prompts the builtin writer added when a model writer fell short")


def check_count(got: int, n: int) -> None:
    if got != n:
        raise ValueError(f"wrote {got} prompts; exactly {n} were asked for")


# --- requests: a world subclasses them ----------------------------------------------------------


class WritePromptsRequest(AgentRequest):
    """spec + target class -> n training prompts that all show the class"""

    role = "prompt_writer"
    mode = "train"
    answer_schema = WrittenPrompts
    spec: TargetSpec = Field(description="what the loop should improve")
    n: int = Field(ge=1, le=64, description="prompts to write")
    target_class: str = Field(description="the object class every prompt must show")
    seed: int = Field(0, description="seeds the builtin writer")

    def check(self, answer: BaseModel) -> None:
        check_count(len(answer.prompts), self.n)


class HeldoutPromptsRequest(AgentRequest):
    """spec -> n held-out prompts"""

    role = "prompt_writer"
    mode = "heldout"
    answer_schema = WrittenPrompts
    spec: TargetSpec = Field(description="what the loop should improve")
    n: int = Field(ge=1, le=80, description="prompts to write")
    seed: int = Field(0, description="seeds the builtin choice")

    def check(self, answer: BaseModel) -> None:
        check_count(len(answer.prompts), self.n)


class RewriteRequest(AgentRequest):
    """one user prompt -> n rewrites that keep its meaning"""

    role = "prompt_writer"
    mode = "rewrite"
    answer_schema = Rewrites
    prompt: str = Field(description="the user's prompt")
    n: int = Field(ge=1, le=32, description="rewrites to write")

    def check(self, answer: BaseModel) -> None:
        if len(set(answer.rewrites)) != len(answer.rewrites) or self.prompt in answer.rewrites:
            raise ValueError("rewrites must differ from each other and from the user prompt")
        if len(answer.rewrites) != self.n:
            raise ValueError(f"wrote {len(answer.rewrites)} rewrites; exactly {self.n} were asked for")


# --- the role in the loop -----------------------------------------------------------------------


def class_slots(classes: Sequence[str], n: int, seed: int) -> list[tuple[str, int, int]]:
    """(target class, prompts, request seed) of each request for `n` prompts: PROMPTS_PER_REQUEST
    per request, the classes taken in a seeded order."""
    order = np.random.default_rng(seed).permutation(len(classes))
    sizes = [min(PROMPTS_PER_REQUEST, n - start) for start in range(0, n, PROMPTS_PER_REQUEST)]
    return [(classes[order[k % len(classes)]], size, seed * 100 + k) for k, size in enumerate(sizes)]


def salvage_prompts(raw: str) -> list[str]:
    """Prompt texts from an answer that failed validation as a whole (parts may still be good)."""
    try:
        items = json.loads(raw).get("prompts", [])
        return [i["text"] if isinstance(i, dict) else i for i in items if isinstance(i, dict | str)]
    except (ValueError, AttributeError, KeyError, TypeError):
        return []


def no_valid_prompts(config: AgentConfig, results: Sequence[AgentResult]) -> str:
    """The one-line reason a round pauses when the model writer gave no usable prompt."""
    errors = [" ".join(str(r.error).split()) for r in results if not r.ok] or ["every prompt it wrote was refused by the world"]
    return (f"write_prompts: {endpoint_of(config, 'prompt_writer')} gave no valid prompt in {len(results)} requests: "
            f"{records.clean_text(errors[0], 200, records.current_keys())} (agents.prompt_writer.fallback: builtin "
            "would let the builtin writer fill in)")


def write_prompts_by_class(config: AgentConfig, requests: Sequence[WritePromptsRequest], n: int, record_dir: Path,
                           accept: Callable[[str, str], WrittenPrompt | None],
                           fallback: Callable[[], Iterable[WrittenPrompt]]) -> PromptBatch:
    """`n` training prompts from the configured writer, one class request each (all sent at
    once, as the endpoint's bound allows). `accept(text, target_class)` is the world's verdict
    on one written prompt: its canonical form with metadata, or None (not in the world's
    language, held out...). Prompts of failed requests that the world accepts are kept; with
    `config.fallback` 'builtin' what is missing is filled from `fallback()` (the world's builtin
    prompts) and counted in the record; otherwise fewer prompts are kept, and none at all pauses
    the run (RunPaused)."""
    results = backend_for(config, "prompt_writer").ask_many(list(requests))
    prompts: list[str] = []
    metadata: list[WrittenPrompt] = []
    for request, result in zip(requests, results):
        texts = [p.text for p in result.answer.prompts] if result.ok else salvage_prompts(result.raw)
        for text in texts:
            written = accept(text, request.target_class)
            if written is not None and written.text not in prompts and len(prompts) < n:
                prompts.append(written.text)
                metadata.append(written)
    filled = 0
    if not prompts and config.fallback != "builtin":
        raise RunPaused(no_valid_prompts(config, results))
    if len(prompts) < n and config.fallback == "builtin":
        log.warning("prompt writer gave %d valid prompts of %d; agents.prompt_writer.fallback: the builtin writer "
                    "fills the rest", len(prompts), n)
        for written in fallback():
            if written.text not in prompts and len(prompts) < n:
                prompts.append(written.text)
                metadata.append(written)
                filled += 1
    write_json_atomic(Path(record_dir) / "prompt_writer.json",
                      {"requests": [r.record() for r in results], "filled_by_builtin": filled,
                       "metadata": [m.model_dump(mode="json") for m in metadata]})
    return PromptBatch(prompts=prompts, metadata=metadata, filled_by_builtin=filled)
