"""The frozen held-out split of the open_vocab world: which prompts only ever measure the model.

Two rules, both fixed by the spec's classes and the settings alone (never by a run's seed):
- held-out class pairs (as VISOR's held-out pairs): with three classes or more, a quarter of
  the unordered pairs (at least one), chosen by a fixed permutation; the training writer never
  puts both classes of such a pair in one prompt;
- held-out settings: every fourth setting (the 4th, 8th, ...; the last of two or three; the only
  one, when there is one), which the training writer never uses.
A prompt is held-out when it pairs a held-out pair or uses a held-out setting; training prompts
do neither, so the two sets cannot meet, and a check says so all the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from atelier.worlds.base import WorldPrompt
from atelier.worlds.judgment import Asked
from atelier.worlds.open_vocab.parse import normalise

# Places for CCSR-style prompts when the config names none.
GENERIC_SETTINGS: tuple[str, ...] = (
    "in a park", "on a beach", "in a kitchen", "in a living room", "on a city street", "in a forest", "in a field",
    "in the snow", "at night", "on a sunny day", "in a garden", "by a lake", "in the desert", "on a farm",
    "in a studio", "in the rain",
)


class OverlapError(ValueError):
    """Training prompts that repeat held-out ones."""


@dataclass(frozen=True)
class Split:
    classes: tuple[str, ...]
    heldout_pairs: frozenset[frozenset[str]]
    heldout_settings: tuple[str, ...]
    training_settings: tuple[str, ...]

    def pair_is_heldout(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.heldout_pairs

    def training_pairs(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b in combinations(self.classes, 2) if not self.pair_is_heldout(a, b)]

    def asked_is_heldout(self, asked: Asked) -> bool:
        names = [o.name for o in asked.objects]
        return any(self.pair_is_heldout(a, b) for a, b in combinations(names, 2))

    def text_is_heldout(self, text: str, asked: Asked) -> bool:
        """Whether a prompt pairs held-out classes or uses a held-out setting."""
        return self.asked_is_heldout(asked) or any(
            re.search(rf"(?<!\w){re.escape(s)}(?!\w)", text, re.IGNORECASE) for s in self.heldout_settings)


def make_split(classes: Sequence[str], settings: Sequence[str]) -> Split:
    classes = tuple(dict.fromkeys(classes))
    settings = tuple(dict.fromkeys(settings)) or GENERIC_SETTINGS
    pairs = [frozenset(p) for p in combinations(sorted(classes), 2)]
    held_pairs: frozenset[frozenset[str]] = frozenset()
    if len(classes) >= 3:
        order = np.random.default_rng(0).permutation(len(pairs))
        held_pairs = frozenset(pairs[i] for i in order[: max(1, len(pairs) // 4)])
    if len(settings) >= 4:
        held = settings[3::4]
    else:
        held = settings[-1:]
    training = tuple(s for s in settings if s not in held)
    return Split(classes, held_pairs, tuple(held), training)


def composition(asked: Asked) -> str | None:
    """What a compositional prompt tests, whatever its wording or place: its objects with counts,
    in order, and its relation ('dog x1 | cat x1 | left of'). None for a single object drawn once
    (an appearance prompt: only its text is held out, or CCSR could never train on that class)."""
    if len(asked.objects) < 2 and asked.relation is None and all(o.count == 1 for o in asked.objects):
        return None
    return " | ".join([f"{o.name} x{o.count}" for o in asked.objects] + [asked.relation or "no relation"])


def heldout_keys(heldout: Iterable[WorldPrompt], compositions: bool) -> set[str]:
    """What no training prompt and no relabel may say again: the held-out prompts' normalised
    texts, and with `compositions` their compositions too ('a dog to the left of a cat' is then not
    trained on as '... in a park'). A user's held-out file needs compositions; the builtin split
    keeps whole class pairs (three classes or more) and places out of training already, and with
    two classes its held-out prompts differ from training by the place alone."""
    keys = set()
    for p in heldout:
        keys.add(normalise(p.text))
        if compositions and (c := composition(p.asked)) is not None:
            keys.add(c)
    return keys


def is_heldout_prompt(text: str, asked: Asked, keys: set[str]) -> bool:
    """Whether a prompt says a held-out prompt again, by its text or its composition."""
    return normalise(text) in keys or composition(asked) in keys


def check_disjoint(training: Iterable[WorldPrompt], heldout: Iterable[WorldPrompt], compositions: bool) -> None:
    """OverlapError naming the training prompts that say a held-out prompt again, by text
    (compared in `normalise`d form) or, with `compositions`, by composition."""
    keys = heldout_keys(heldout, compositions)
    if clash := [p.text for p in training if is_heldout_prompt(p.text, p.asked, keys)]:
        raise OverlapError(f"{len(clash)} training prompts are held-out prompts, e.g. {clash[0]!r}")
