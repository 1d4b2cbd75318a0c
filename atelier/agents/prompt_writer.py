"""Prompt writer: TargetSpec -> training prompts, and the held-out prompts that measure the goal.

The builtin writer draws shapes-world scenes for the spec from a seeded generator. It never emits
a held-out scene: no pair of objects from the held-out split appears together in its prompts.

A model writer works class by class, as in CCSR: each request asks for a few prompts that all
show one target class, with structured metadata. In the shapes world the caption is the truth:
a prompt that does not parse, repeats, or pairs held-out objects is sent back; the metadata is
recomputed from the caption. Three modes, one template each: training prompts, a held-out set
(prompts drawn only from held-out object pairs) and rewrites of one user prompt.
"""

from __future__ import annotations

import json
import logging
from itertools import permutations, product
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atelier.agents.backend import AgentRequest
from atelier.agents.backends import backend_for
from atelier.agents.planner import TargetSpec
from atelier.atomic import write_json_atomic
from atelier.config import AgentConfig
from atelier.worlds.shapes.heldout import HELDOUT_PAIRS, heldout_scenes, is_heldout
from atelier.worlds.shapes.sampling import SceneMix, draw_scene
from atelier.worlds.shapes.scene import COLOURS, MAX_COUNT, RELATIONS, SHAPES, CaptionError, Group, Scene, caption, parse

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


# --- the shapes world's rules -----------------------------------------------------------------


def describe(scene: Scene, target_class: str) -> WrittenPrompt:
    return WrittenPrompt(
        text=caption(scene), target_class=target_class,
        objects=[PromptObject(name=g.name, count=g.count) for g in scene.groups], relation=scene.relation,
        attributes=sorted({g.colour for g in scene.groups} | {g.shape for g in scene.groups}),
    )


def _parse_all(texts: list[str], heldout: bool) -> list[Scene]:
    """Scenes of the texts, or ValueError naming every text that breaks the world's rules."""
    problems, scenes, seen = [], [], set()
    for text in texts:
        try:
            scene = parse(text)
        except CaptionError as e:
            problems.append(str(e))
            continue
        if caption(scene) in seen:
            problems.append(f"{text!r} repeats an earlier prompt")
        elif is_heldout(scene) != heldout:
            problems.append(f"{text!r} {'does not pair' if heldout else 'pairs'} held-out objects")
        seen.add(caption(scene))
        scenes.append(scene)
    if problems:
        raise ValueError("; ".join(problems[:8]) + (f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""))
    return scenes


def _check_count(got: int, n: int) -> None:
    if got != n:
        raise ValueError(f"wrote {got} prompts; exactly {n} were asked for")


def _check_relations(spec: TargetSpec, scenes: list[Scene]) -> None:
    if spec.relations:
        off = [caption(s) for s in scenes if s.relation not in spec.relations]
        if off:
            raise ValueError(f"every prompt needs one of the relations {spec.relations}; these do not: {off[:6]}")


def _mix_for(spec: TargetSpec) -> SceneMix:
    if spec.relations:
        return SceneMix(single=0, counted=0, pair=0, triple=0, related=1, max_count=3 if spec.counts else 1)
    if spec.counts:
        return SceneMix(single=0, counted=0.7, pair=0, triple=0, related=0.3, max_count=3)
    return SceneMix(single=0.6, counted=0, pair=0.3, triple=0.1, related=0, max_count=1)


def write_prompts_builtin(spec: TargetSpec, n: int, seed: int) -> PromptBatch:
    """`n` distinct training prompts for the spec (fewer only if the spec admits fewer)."""
    rng = np.random.default_rng(seed)
    mix = _mix_for(spec)
    relations = spec.relations or list(RELATIONS)
    prompts: list[str] = []
    seen: set[str] = set()
    for _ in range(n * 50):
        scene = draw_scene(rng, mix, relations=relations, colours=spec.colours, shapes=spec.shapes)
        text = caption(scene)
        if text not in seen and not is_heldout(scene):
            seen.add(text)
            prompts.append(text)
            if len(prompts) == n:
                break
    return PromptBatch(prompts=prompts)


def heldout_prompts(spec: TargetSpec, n: int, seed: int) -> list[str]:
    """`n` held-out captions that test the spec (its relations, if any), in a seeded order."""
    scenes = heldout_scenes()
    if spec.relations:
        scenes = [s for s in scenes if s.relation in spec.relations]
    order = np.random.default_rng(seed).permutation(len(scenes))
    return [caption(scenes[i]) for i in order[:n]]


def classes_of(spec: TargetSpec) -> list[str]:
    return spec.objects or [f"{c} {s}" for c in spec.colours for s in spec.shapes]


def _prompts_for_class(spec: TargetSpec, n: int, target_class: str, seed: int) -> list[Scene]:
    """Builtin class-conditioned prompts: scenes of the spec with `target_class` as one group."""
    rng = np.random.default_rng(seed)
    colour, shape = target_class.split()
    mix = _mix_for(spec)
    scenes: list[Scene] = []
    seen: set[str] = set()
    for _ in range(n * 50):
        scene = draw_scene(rng, mix, relations=spec.relations or list(RELATIONS), colours=COLOURS, shapes=SHAPES)
        if target_class not in {g.name for g in scene.groups}:
            k = int(rng.integers(0, len(scene.groups)))
            groups = list(scene.groups)
            groups[k] = Group(colour=colour, shape=shape, count=groups[k].count)
            if len({g.name for g in groups}) < len(groups):
                continue
            scene = Scene(groups=tuple(groups), relation=scene.relation)
        if is_heldout(scene) or caption(scene) in seen:
            continue
        seen.add(caption(scene))
        scenes.append(scene)
        if len(scenes) == n:
            break
    return scenes


_ONE = {"a": "one"}
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def equivalent_captions(scene: Scene) -> list[str]:
    """Other ways of saying the same scene: groups in another order (a relation flipped to
    match), and 'one' for 'a'. The first entry is never the scene's own caption."""
    orders = [scene.groups[::-1]] if scene.relation else list(permutations(scene.groups))
    relation = _OPPOSITE[scene.relation] if scene.relation else None
    # Reordered groups first: they differ most from the original.
    variants = [(o, relation) for o in orders if o != scene.groups] + [(scene.groups, scene.relation)]
    texts: list[str] = []
    for groups, rel in variants:
        for words in product(*[("a", "one") if g.count == 1 else (None,) for g in groups]):
            phrases = [(f"{w} " + g.phrase().split(" ", 1)[1]) if w else g.phrase() for g, w in zip(groups, words)]
            if rel:
                text = f"{phrases[0]} {_phrase(rel)} {phrases[1]}"
            else:
                text = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
            if text != caption(scene) and text not in texts:
                texts.append(text)
    return texts


def _phrase(relation: str) -> str:
    return {"left of": "to the left of", "right of": "to the right of"}.get(relation, relation)


def _same_scene(a: Scene, b: Scene) -> bool:
    if a.relation is None or b.relation is None:
        return a.relation == b.relation and set(a.groups) == set(b.groups)
    return (a.groups, a.relation) == (b.groups, b.relation) or (a.groups[::-1], _OPPOSITE[a.relation]) == (b.groups, b.relation)


# --- requests ---------------------------------------------------------------------------------


def _spec_values(spec: TargetSpec) -> dict[str, str]:
    return {
        "relations": ", ".join(spec.relations) or "none in particular",
        "counts": ", ".join(map(str, spec.counts)) or "none in particular",
        "colours": ", ".join(spec.colours), "shapes": ", ".join(spec.shapes),
        "style": ", ".join(spec.style) or "none",
        "heldout_pairs": "; ".join(f"{a} + {b}" for a, b in HELDOUT_PAIRS),
    }


class WritePromptsRequest(AgentRequest):
    """spec + target class -> n training prompts that all show the class"""

    role = "prompt_writer"
    mode = "train"
    answer_schema = WrittenPrompts
    spec: TargetSpec = Field(description="what the loop should improve")
    n: int = Field(ge=1, le=64, description="prompts to write")
    target_class: str = Field(description="the object class every prompt must show")
    seed: int = Field(0, description="seeds the builtin writer")

    def template_values(self) -> dict[str, str]:
        return {**_spec_values(self.spec), "n": str(self.n), "target_class": self.target_class}

    def answer_builtin(self) -> WrittenPrompts:
        scenes = _prompts_for_class(self.spec, self.n, self.target_class, self.seed)
        return WrittenPrompts(prompts=[describe(s, self.target_class) for s in scenes])

    def check(self, answer: BaseModel) -> None:
        scenes = _parse_all([p.text for p in answer.prompts], heldout=False)
        _check_count(len(answer.prompts), self.n)
        missing = [caption(s) for s in scenes if self.target_class not in {g.name for g in s.groups}]
        if missing:
            raise ValueError(f"every prompt must show a {self.target_class}; these do not: {missing[:6]}")
        _check_relations(self.spec, scenes)


class HeldoutPromptsRequest(AgentRequest):
    """spec -> n held-out prompts, built only from the held-out object pairs"""

    role = "prompt_writer"
    mode = "heldout"
    answer_schema = WrittenPrompts
    spec: TargetSpec = Field(description="what the loop should improve")
    n: int = Field(ge=1, le=80, description="prompts to write")
    seed: int = Field(0, description="seeds the builtin choice")

    def template_values(self) -> dict[str, str]:
        return {**_spec_values(self.spec), "n": str(self.n)}

    def answer_builtin(self) -> WrittenPrompts:
        return WrittenPrompts(prompts=[describe(parse(t), "") for t in heldout_prompts(self.spec, self.n, self.seed)])

    def check(self, answer: BaseModel) -> None:
        scenes = _parse_all([p.text for p in answer.prompts], heldout=True)
        _check_count(len(answer.prompts), self.n)
        _check_relations(self.spec, scenes)


class RewriteRequest(AgentRequest):
    """one user prompt -> n rewrites that keep its meaning"""

    role = "prompt_writer"
    mode = "rewrite"
    answer_schema = Rewrites
    prompt: str = Field(description="the user's prompt")
    n: int = Field(ge=1, le=32, description="rewrites to write")

    def template_values(self) -> dict[str, str]:
        return {"prompt": self.prompt, "n": str(self.n), "colours": ", ".join(COLOURS), "shapes": ", ".join(SHAPES)}

    def answer_builtin(self) -> Rewrites:
        return Rewrites(rewrites=equivalent_captions(parse(self.prompt))[: self.n])

    def check(self, answer: BaseModel) -> None:
        original = parse(self.prompt)
        problems = []
        for text in answer.rewrites:
            try:
                if not _same_scene(parse(text), original):
                    problems.append(f"{text!r} changes the meaning")
            except CaptionError as e:
                problems.append(str(e))
        if problems:
            raise ValueError("; ".join(problems[:6]))
        if len(set(answer.rewrites)) != len(answer.rewrites) or self.prompt in answer.rewrites:
            raise ValueError("rewrites must differ from each other and from the user prompt")
        if len(answer.rewrites) != self.n:
            raise ValueError(f"wrote {len(answer.rewrites)} rewrites; exactly {self.n} were asked for")


# --- the role in the loop ---------------------------------------------------------------------


def _salvage(raw: str) -> list[str]:
    """Prompt texts from an answer that failed validation as a whole (parts may still be good)."""
    try:
        items = json.loads(raw).get("prompts", [])
        return [i["text"] if isinstance(i, dict) else i for i in items if isinstance(i, dict | str)]
    except (ValueError, AttributeError, KeyError, TypeError):
        return []


def write_prompts_with_agent(config: AgentConfig, spec: TargetSpec, n: int, seed: int, record_dir: Path) -> PromptBatch:
    """`n` training prompts from the configured writer, PROMPTS_PER_REQUEST per request, each
    request for one class of the spec (in a seeded order). Prompts of failed requests that are
    still valid are kept; what is missing is filled by the builtin writer, and said so."""
    classes = classes_of(spec)
    order = np.random.default_rng(seed).permutation(len(classes))
    sizes = [min(PROMPTS_PER_REQUEST, n - start) for start in range(0, n, PROMPTS_PER_REQUEST)]
    requests = [WritePromptsRequest(spec=spec, n=size, target_class=classes[order[k % len(classes)]], seed=seed * 100 + k)
                for k, size in enumerate(sizes)]
    results = backend_for(config, "prompt_writer").ask_many(requests)
    prompts: list[str] = []
    metadata: list[WrittenPrompt] = []
    for request, result in zip(requests, results):
        texts = [p.text for p in result.answer.prompts] if result.ok else _salvage(result.raw)
        for text in texts:
            try:
                scene = parse(text)
            except CaptionError:
                continue
            if not is_heldout(scene) and caption(scene) not in prompts and len(prompts) < n:
                prompts.append(caption(scene))
                metadata.append(describe(scene, request.target_class))
    filled = 0
    if len(prompts) < n:
        log.warning("prompt writer gave %d valid prompts of %d; the builtin writer fills the rest", len(prompts), n)
        for text in write_prompts_builtin(spec, n * 2, seed).prompts:
            if text not in prompts and len(prompts) < n:
                prompts.append(text)
                metadata.append(describe(parse(text), ""))
                filled += 1
    write_json_atomic(Path(record_dir) / "prompt_writer.json",
                      {"requests": [r.record() for r in results], "filled_by_builtin": filled,
                       "metadata": [m.model_dump(mode="json") for m in metadata]})
    return PromptBatch(prompts=prompts, metadata=metadata, filled_by_builtin=filled)
