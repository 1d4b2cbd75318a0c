"""The builtin rewriter's learned rule: the preferred phrasing per pattern, counted over pairs.

A rewrite is described by its phrasing features, {pattern: value} (the world says them: in the
shapes world e.g. {"relation left/right": "left of", "article": "one"}). For each pair and each
pattern where the chosen and the rejected rewrite say it differently, the chosen value counts a
win and the rejected value a loss. A value is preferred when it has the most net wins (wins -
losses) of its pattern and at least `min_net`. A rewrite's utility is the number of patterns in
which it uses the preferred value. Nothing is preferred before any pair: every phrasing is then
equally likely and the best guess is the prompt as written.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field


class PhrasingRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    counts: dict[str, dict[str, dict[str, int]]] = Field(default_factory=dict,
                                                         description="pattern -> value -> {'wins': n, 'losses': m}")
    preferred: dict[str, str] = Field(default_factory=dict, description="pattern -> the preferred value")
    pairs: int = Field(0, description="pairs counted")
    min_net: int = Field(2, description="net wins a value needs to be preferred")

    def utility(self, features: dict[str, str]) -> int:
        return sum(features.get(pattern) == value for pattern, value in self.preferred.items())

    def describe(self) -> list[str]:
        """One line per preferred phrasing, for logs and the report."""
        lines = []
        for pattern, value in sorted(self.preferred.items()):
            c = self.counts[pattern][value]
            lines.append(f"{pattern}: say {value!r} ({c['wins']} wins, {c['losses']} losses over {self.pairs} pairs)")
        return lines


def learn_rule(pairs: Iterable[tuple[dict[str, str], dict[str, str]]], min_net: int) -> PhrasingRule:
    """The rule counted over (chosen features, rejected features) pairs."""
    counts: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: {"wins": 0, "losses": 0}))
    n = 0
    for chosen, rejected in pairs:
        n += 1
        for pattern in sorted(set(chosen) & set(rejected)):
            if chosen[pattern] != rejected[pattern]:
                counts[pattern][chosen[pattern]]["wins"] += 1
                counts[pattern][rejected[pattern]]["losses"] += 1
    preferred = {}
    for pattern, values in counts.items():
        # Ties on net wins go to the value with more wins, then the alphabetically first: stated, not hidden.
        value, c = max(sorted(values.items()), key=lambda kv: (kv[1]["wins"] - kv[1]["losses"], kv[1]["wins"]))
        if c["wins"] - c["losses"] >= min_net:
            preferred[pattern] = value
    plain = {p: {v: dict(c) for v, c in values.items()} for p, values in counts.items()}
    return PhrasingRule(counts=plain, preferred=preferred, pairs=n, min_net=min_net)
