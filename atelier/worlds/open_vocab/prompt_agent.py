"""A model prompt writer for the open_vocab world, class by class as in CCSR.

Each request asks for up to PROMPTS_PER_REQUEST training prompts that all show one target class
(the classes taken in a seeded order), answering `WrittenPrompts`. The text is the truth: what
a prompt asks for is read from it (atelier.worlds.open_vocab.parse), never from the model's
metadata. A prompt is sent back when it does not name its class, is a held-out prompt, pairs
held-out classes or uses a held-out setting, lacks a relation the spec practises, or repeats
one. Valid prompts of answers that failed as a whole are kept; the builtin writer tops up what
is missing, and the record says how many (record_dir/prompt_writer.json, reused on a re-run).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from atelier.agents.backend import RunPaused
from atelier.agents.backends import backend_for
from atelier.agents.planner import TargetSpec
from atelier.agents.prompt_writer import (PromptObject, WritePromptsRequest, WrittenPrompt, WrittenPrompts, no_valid_prompts,
                                          salvage_prompts)
from atelier.atomic import write_json_atomic
from atelier.config import AgentConfig
from atelier.worlds.base import WorldPrompt
from atelier.worlds.open_vocab.parse import asked_of_text, normalise
from atelier.worlds.open_vocab.prompts import write_training
from atelier.worlds.open_vocab.split import Split, heldout_keys, is_heldout_prompt

log = logging.getLogger("atelier.agents")

PROMPTS_PER_REQUEST = 16
RECORD = "prompt_writer.json"


def accept(text: str, target_class: str, spec: TargetSpec, split: Split, heldout: set[str]) -> WorldPrompt:
    """The written prompt as the world reads it; ValueError saying what is wrong with it."""
    text = " ".join(text.split())
    asked = asked_of_text(text, spec.objects)
    names = [o.name for o in asked.objects]
    if target_class not in names:
        raise ValueError(f"{text!r} does not name a {target_class}")
    if is_heldout_prompt(text, asked, heldout):
        raise ValueError(f"{text!r} says a held-out prompt again (the same objects, counts and relation)")
    if split.asked_is_heldout(asked):
        raise ValueError(f"{text!r} puts together classes kept for testing")
    if split.text_is_heldout(text, asked):
        raise ValueError(f"{text!r} uses a setting kept for testing")
    if spec.relations and asked.relation not in spec.relations:
        raise ValueError(f"{text!r} needs one of the relations {', '.join(spec.relations)} between exactly two "
                         f"of the classes")
    return WorldPrompt(text=text, asked=asked, target_class=target_class)


def describe(prompt: WorldPrompt) -> WrittenPrompt:
    return WrittenPrompt(text=prompt.text, target_class=prompt.target_class or "",
                         objects=[PromptObject(name=o.name, count=o.count) for o in prompt.asked.objects],
                         relation=prompt.asked.relation, attributes=[])


class OpenVocabPromptsRequest(WritePromptsRequest):
    """spec + target class -> n training prompts that all show the class, outside the held-out split"""

    mode = "open_vocab"
    split: Split = Field(description="the held-out split")
    heldout: frozenset[str] = Field(default=frozenset(), description="held-out prompts' texts and compositions "
                                    "(atelier.worlds.open_vocab.split.heldout_keys)")

    def template_values(self) -> dict[str, str]:
        s = self.split
        return {
            "n": str(self.n), "target_class": self.target_class, "classes": ", ".join(self.spec.objects),
            "relations": ", ".join(self.spec.relations) or "none in particular",
            "counts": ", ".join(map(str, self.spec.counts)) or "none in particular",
            "settings": ", ".join(s.training_settings) or "any",
            "heldout_settings": ", ".join(s.heldout_settings) or "none",
            "heldout_pairs": "; ".join(" + ".join(sorted(p)) for p in sorted(s.heldout_pairs, key=sorted)) or "none",
            "style": ", ".join(self.spec.style) or "none", "goal": self.spec.rationale or "see the relations and counts",
        }

    def answer_builtin(self) -> WrittenPrompts:
        written = [p for p in write_training(self.spec, self.split, 50 * self.n, self.seed, ())
                   if p.target_class == self.target_class or self.target_class in {o.name for o in p.asked.objects}]
        return WrittenPrompts(prompts=[describe(p.model_copy(update={"target_class": self.target_class}))
                                       for p in written[: self.n]])

    def check(self, answer: BaseModel) -> None:
        problems, seen = [], set()
        for p in answer.prompts:
            try:
                accept(p.text, self.target_class, self.spec, self.split, self.heldout)
            except ValueError as e:
                problems.append(str(e))
            if normalise(p.text) in seen:
                problems.append(f"{p.text!r} repeats an earlier prompt")
            seen.add(normalise(p.text))
        if problems:
            raise ValueError("; ".join(problems[:8]) + (f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""))
        if len(answer.prompts) != self.n:
            raise ValueError(f"wrote {len(answer.prompts)} prompts; exactly {self.n} were asked for")


def write_with_model(config: AgentConfig, spec: TargetSpec, split: Split, n: int, seed: int, record_dir: Path,
                     heldout: Sequence[WorldPrompt], compositions: bool = False) -> list[WorldPrompt]:
    """At most `n` training prompts from the model writer, topped up by the builtin writer when
    short and `config.fallback` is 'builtin'; none at all pauses the run (RunPaused)."""
    record_file = Path(record_dir) / RECORD
    if record_file.exists():
        record = json.loads(record_file.read_text())
        if record.get("n") == n and record.get("seed") == seed:
            return [WorldPrompt.model_validate(p) for p in record["prompts"]]
    held = frozenset(heldout_keys(heldout, compositions))
    classes = list(spec.objects)
    order = np.random.default_rng(seed).permutation(len(classes))
    sizes = [min(PROMPTS_PER_REQUEST, n - start) for start in range(0, n, PROMPTS_PER_REQUEST)]
    requests = [OpenVocabPromptsRequest(spec=spec, n=size, target_class=classes[order[k % len(classes)]], split=split,
                                        heldout=held, seed=seed * 100 + k) for k, size in enumerate(sizes)]
    results = backend_for(config, "prompt_writer").ask_many(requests)
    prompts: list[WorldPrompt] = []
    seen: set[str] = set()
    for request, result in zip(requests, results):
        texts = [p.text for p in result.answer.prompts] if result.ok else salvage_prompts(result.raw)
        for text in texts:
            try:
                prompt = accept(text, request.target_class, spec, split, held)
            except ValueError:
                continue
            if normalise(prompt.text) not in seen and len(prompts) < n:
                seen.add(normalise(prompt.text))
                prompts.append(prompt)
    filled = 0
    if not prompts and config.fallback != "builtin":
        raise RunPaused(no_valid_prompts(config, results))
    if len(prompts) < n and config.fallback == "builtin":
        log.warning("prompt writer gave %d valid prompts of %d; agents.prompt_writer.fallback: the builtin writer "
                    "fills the rest", len(prompts), n)
        for prompt in write_training(spec, split, n + len(prompts), seed, heldout, compositions):
            if normalise(prompt.text) not in seen and len(prompts) < n:
                seen.add(normalise(prompt.text))
                prompts.append(prompt)
                filled += 1
    write_json_atomic(record_file, {"n": n, "seed": seed, "requests": [r.record() for r in results],
                                    "filled_by_builtin": filled, "prompts": [p.model_dump(mode="json") for p in prompts]})
    return prompts
