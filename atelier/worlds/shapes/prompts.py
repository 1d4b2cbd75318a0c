"""The shapes world's prompt writing: training prompts, the held-out prompts, rewrites.

The builtin writer draws scenes for the spec from a seeded generator. It never emits a held-out
scene: no pair of objects from the held-out split appears together in its prompts.

A model writer works class by class (atelier.agents.prompt_writer). Here the caption is the
truth: a prompt that does not parse, repeats, or pairs held-out objects is sent back; the
metadata is recomputed from the caption. A spec's empty `colours` / `shapes` mean all of them.
"""

from __future__ import annotations

from itertools import permutations, product
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from atelier.agents.prompt_writer import (
    HeldoutPromptsRequest,
    PromptBatch,
    PromptObject,
    RewriteRequest,
    WritePromptsRequest,
    WrittenPrompt,
    WrittenPrompts,
    Rewrites,
    check_count,
    class_slots,
    write_prompts_by_class,
)
from atelier.agents.planner import TargetSpec
from atelier.config import AgentConfig
from atelier.tools.detection import OPPOSITE
from atelier.worlds.shapes.heldout import HELDOUT_PAIRS, heldout_scenes, is_heldout
from atelier.worlds.shapes.sampling import SceneMix, draw_scene
from atelier.worlds.shapes.scene import COLOURS, RELATIONS, SHAPES, CaptionError, Group, Scene, caption, parse


def colours_of(spec: TargetSpec) -> list[str]:
    return spec.colours or list(COLOURS)


def shapes_of(spec: TargetSpec) -> list[str]:
    return spec.shapes or list(SHAPES)


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
    colours, shapes = colours_of(spec), shapes_of(spec)
    prompts: list[str] = []
    seen: set[str] = set()
    for _ in range(n * 50):
        scene = draw_scene(rng, mix, relations=relations, colours=colours, shapes=shapes)
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
    return spec.objects or [f"{c} {s}" for c in colours_of(spec) for s in shapes_of(spec)]


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




def equivalent_captions(scene: Scene) -> list[str]:
    """Other ways of saying the same scene: groups in another order (a relation flipped to
    match), and 'one' for 'a'. The first entry is never the scene's own caption."""
    orders = [scene.groups[::-1]] if scene.relation else list(permutations(scene.groups))
    relation = OPPOSITE[scene.relation] if scene.relation else None
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
    return (a.groups, a.relation) == (b.groups, b.relation) or (a.groups[::-1], OPPOSITE[a.relation]) == (b.groups, b.relation)


# --- requests -----------------------------------------------------------------------------------


def _spec_values(spec: TargetSpec) -> dict[str, str]:
    return {
        "relations": ", ".join(spec.relations) or "none in particular",
        "counts": ", ".join(map(str, spec.counts)) or "none in particular",
        "colours": ", ".join(colours_of(spec)), "shapes": ", ".join(shapes_of(spec)),
        "style": ", ".join(spec.style) or "none",
        "heldout_pairs": "; ".join(f"{a} + {b}" for a, b in HELDOUT_PAIRS),
    }


class ShapesWritePromptsRequest(WritePromptsRequest):
    """spec + target class -> n shapes captions that all show the class, none held out"""

    def template_values(self) -> dict[str, str]:
        return {**_spec_values(self.spec), "n": str(self.n), "target_class": self.target_class}

    def answer_builtin(self) -> WrittenPrompts:
        scenes = _prompts_for_class(self.spec, self.n, self.target_class, self.seed)
        return WrittenPrompts(prompts=[describe(s, self.target_class) for s in scenes])

    def check(self, answer: BaseModel) -> None:
        scenes = _parse_all([p.text for p in answer.prompts], heldout=False)
        check_count(len(answer.prompts), self.n)
        missing = [caption(s) for s in scenes if self.target_class not in {g.name for g in s.groups}]
        if missing:
            raise ValueError(f"every prompt must show a {self.target_class}; these do not: {missing[:6]}")
        _check_relations(self.spec, scenes)


class ShapesHeldoutPromptsRequest(HeldoutPromptsRequest):
    """spec -> n held-out captions, built only from the held-out object pairs"""

    def template_values(self) -> dict[str, str]:
        return {**_spec_values(self.spec), "n": str(self.n)}

    def answer_builtin(self) -> WrittenPrompts:
        return WrittenPrompts(prompts=[describe(parse(t), "") for t in heldout_prompts(self.spec, self.n, self.seed)])

    def check(self, answer: BaseModel) -> None:
        scenes = _parse_all([p.text for p in answer.prompts], heldout=True)
        check_count(len(answer.prompts), self.n)
        _check_relations(self.spec, scenes)


class ShapesRewriteRequest(RewriteRequest):
    """one caption -> n captions of the same scene"""

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
        super().check(answer)


# --- the role in the loop -----------------------------------------------------------------------


def _accept(text: str, target_class: str) -> WrittenPrompt | None:
    """A written prompt as the world reads it (its canonical caption), or None when it is no
    caption of the world or pairs held-out objects."""
    try:
        scene = parse(text)
    except CaptionError:
        return None
    return None if is_heldout(scene) else describe(scene, target_class)


def write_prompts_with_agent(config: AgentConfig, spec: TargetSpec, n: int, seed: int, record_dir: Path) -> PromptBatch:
    """`n` training prompts from a model writer, class by class (the classes of the spec in a
    seeded order); what it falls short of is filled by the builtin writer, and said so."""
    requests = [ShapesWritePromptsRequest(spec=spec, n=size, target_class=target, seed=request_seed)
                for target, size, request_seed in class_slots(classes_of(spec), n, seed)]
    fallback = lambda: (describe(parse(t), "") for t in write_prompts_builtin(spec, n * 2, seed).prompts)  # noqa: E731
    return write_prompts_by_class(config, requests, n, record_dir, accept=_accept, fallback=fallback)


def write_prompts(spec: TargetSpec, n: int, seed: int, writer_cfg: AgentConfig, record_dir: Path) -> PromptBatch:
    """A round's `n` training prompts from the configured writer (builtin: no record)."""
    match writer_cfg.backend:
        case "builtin":
            return write_prompts_builtin(spec, n, seed)
        case "openai":
            return write_prompts_with_agent(writer_cfg, spec, n, seed, record_dir)
    raise ValueError(f"agents.prompt_writer: unknown backend {writer_cfg.backend!r}")
