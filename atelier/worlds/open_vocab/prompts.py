"""The open_vocab world's builtin prompt writer: VISOR-, count- and CCSR-style prompts, seeded.

    spatial     "a dog to the left of a cat"        (VISOR; two of a kind when the spec has counts)
    count       "two dogs", "a photo of three cats in a park"
    appearance  "a photo of an elephant in the savanna"    (CCSR; target_class set)

Every prompt is built from a few factors (classes, relation, counts, template, setting); the
held-out writer draws from held-out class pairs and settings, the training writer from the
others (atelier.worlds.open_vocab.split), each in a seeded order. A user's held-out file
replaces the written held-out set: each line's objects and relation are read from its text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import permutations, product
from pathlib import Path

import numpy as np

from atelier.agents.planner import TargetSpec
from atelier.tools.phrases import count_phrase, describe_relation
from atelier.worlds.base import WorldPrompt
from atelier.worlds.judgment import Asked, AskedObject
from atelier.worlds.open_vocab.parse import asked_of_text, normalise
from atelier.worlds.open_vocab.split import Split, heldout_keys, is_heldout_prompt

PHOTO_TEMPLATES = ("a photo of {x}", "a close-up photo of {x}", "a realistic photo of {x}", "{x}", "a wide-angle photo of {x}")
COUNT_TEMPLATES = ("{x}", "a photo of {x}")
ENUMERATE_BELOW = 200_000  # pools up to this size are shuffled whole; larger ones are drawn from


def prompt_kind(spec: TargetSpec) -> str:
    """'spatial', 'count' or 'appearance': what the spec's prompts look like."""
    if spec.relations:
        return "spatial"
    if spec.counts:
        return "count"
    return "appearance"


def _with_setting(text: str, setting: str | None) -> str:
    return text if setting is None else f"{text} {setting}"


@dataclass(frozen=True)
class Pool:
    """Prompts as the product of factor lists; `build` makes the prompt of one choice of each."""

    factors: tuple[tuple, ...]
    build: Callable[..., WorldPrompt]

    @property
    def size(self) -> int:
        return math.prod(len(f) for f in self.factors)

    def at(self, index: int) -> WorldPrompt:
        choice = []
        for factor in reversed(self.factors):
            index, k = divmod(index, len(factor))
            choice.append(factor[k])
        return self.build(*reversed(choice))

    def draw(self, n: int, seed: int, skip: Callable[[WorldPrompt], bool] = lambda p: False) -> list[WorldPrompt]:
        """Up to `n` distinct prompts in a seeded order, leaving out those `skip` names."""
        rng = np.random.default_rng(seed)
        total = self.size
        if total == 0 or n <= 0:
            return []
        if total <= ENUMERATE_BELOW:
            order = iter(rng.permutation(total).tolist())
        else:
            order = (int(rng.integers(total)) for _ in range(50 * n))
        out: list[WorldPrompt] = []
        seen: set[str] = set()
        for index in order:
            prompt = self.at(index)
            key = normalise(prompt.text)
            if key in seen or skip(prompt):
                continue
            seen.add(key)
            out.append(prompt)
            if len(out) == n:
                break
        return out


def _spatial(spec: TargetSpec, split: Split, heldout: bool) -> Pool:
    if heldout:
        pairs = [p for pair in split.heldout_pairs for p in permutations(sorted(pair))]
        pairs = sorted(pairs) if pairs else list(permutations(split.classes, 2))
        settings = ([None] if split.heldout_pairs else []) + list(split.heldout_settings)
    else:
        pairs = [p for pair in split.training_pairs() for p in (pair, pair[::-1])]
        settings = [None, *split.training_settings]
    counts = list(product([1, *spec.counts], repeat=2)) if spec.counts else [(1, 1)]

    def build(pair, relation, count, setting) -> WorldPrompt:
        (a, b), (ca, cb) = pair, count
        text = _with_setting(describe_relation((a, ca), relation, (b, cb)), setting)
        asked = Asked(objects=(AskedObject(name=a, count=ca), AskedObject(name=b, count=cb)), relation=relation)
        return WorldPrompt(text=text, asked=asked, target_class=a)

    return Pool((tuple(pairs), tuple(spec.relations), tuple(counts), tuple(settings)), build)


def _single_class(templates: Sequence[str], counts: Sequence[int], split: Split, heldout: bool) -> Pool:
    settings = list(split.heldout_settings) if heldout else [None, *split.training_settings]

    def build(name, count, template, setting) -> WorldPrompt:
        text = _with_setting(template.format(x=count_phrase(name, count)), setting)
        return WorldPrompt(text=text, asked=Asked(objects=(AskedObject(name=name, count=count),)), target_class=name)

    return Pool((tuple(split.classes), tuple(counts), tuple(templates), tuple(settings)), build)


def prompt_pool(spec: TargetSpec, split: Split, heldout: bool) -> Pool:
    """Every prompt the builtin writer may write for the spec, held-out or training."""
    match prompt_kind(spec):
        case "spatial":
            return _spatial(spec, split, heldout)
        case "count":
            return _single_class(COUNT_TEMPLATES, spec.counts, split, heldout)
        case _:
            return _single_class(PHOTO_TEMPLATES, [1], split, heldout)


def write_heldout(spec: TargetSpec, split: Split, n: int, seed: int) -> list[WorldPrompt]:
    return prompt_pool(spec, split, heldout=True).draw(n, seed)


def write_training(spec: TargetSpec, split: Split, n: int, seed: int, heldout: Sequence[WorldPrompt],
                   compositions: bool = False) -> list[WorldPrompt]:
    """`n` training prompts (fewer only if the spec admits fewer), none of them held-out (with
    `compositions`, none with a held-out prompt's objects, counts and relation either)."""
    keys = heldout_keys(heldout, compositions)
    return prompt_pool(spec, split, heldout=False).draw(n, seed, skip=lambda p: is_heldout_prompt(p.text, p.asked, keys))


def read_heldout_file(path: str | Path, classes: Sequence[str], n: int) -> list[WorldPrompt]:
    """The first `n` distinct prompts of a file (one a line; blank lines and '#' comments
    skipped), each with what it asks for read from its text. ValueError for a line that names
    none of `classes` (nothing a detector could check)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ValueError(f"vocabulary.heldout_file {str(path)!r}: no such file") from None
    prompts: list[WorldPrompt] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#") or normalise(text) in seen:
            continue
        asked = asked_of_text(text, classes)
        if not asked.objects:
            raise ValueError(f"{path} line {number}: {text!r} names none of the classes {', '.join(classes)}")
        seen.add(normalise(text))
        prompts.append(WorldPrompt(text=text, asked=asked, target_class=asked.objects[0].name))
        if len(prompts) == n:
            break
    if not prompts:
        raise ValueError(f"{path}: no prompts in it")
    return prompts
