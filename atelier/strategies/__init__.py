"""The Strategy seam: what turns judged samples into training data, and which trainer runs.

`strategy_for(config)` picks one by a plain match on `config.strategy`. A strategy may add
nodes to the graph between judge and curate (RPO's critique -> edit -> pair), never reorder it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # atelier.config imports the strategies' settings modules: keep this package light
    from atelier.strategies.base import Strategy


def strategy_for(config) -> Strategy:
    match config.strategy:
        case "ipr":
            from atelier.strategies.ipr import IPR

            return IPR(config)
        case "ccsr":
            from atelier.strategies.ccsr import CCSR

            return CCSR(config)
        case "rpo":
            from atelier.strategies.rpo import RPO

            return RPO(config)
        case "grpo":
            from atelier.strategies.grpo import GRPO

            return GRPO(config)
        case "rewrite":
            from atelier.strategies.rewrite import Rewrite

            return Rewrite(config)
    raise ValueError(f"unknown strategy {config.strategy!r}")
