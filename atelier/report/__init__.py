"""The run's report, rewritten after every round so that a user can watch a run:
report/index.html (atelier.report.page: curves, decisions, labelled grids, stories, failures,
timings), report.json and report.md (atelier.report.summary), and a model card (README.md) in
every round's adapter folder (atelier.model_card)."""

from __future__ import annotations

from pathlib import Path

from atelier.config import Config, GenerationConfig
from atelier.report.page import write_page
from atelier.report.summary import format_share, guided_base_text, run_config, sampling_text, write_summary

__all__ = ["format_share", "guided_base_text", "sampling_text", "write_report"]


def write_report(run_dir: Path, state: dict, generation: GenerationConfig) -> Path:
    """Write report.json, report.md, heldout_grid.png and index.html (also as report.html) under
    run_dir/report from the graph `state`; returns index.html's path."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)  # once for every part below
    data = write_summary(run_dir, state, generation, cfg, _strategy_sections(run_dir, cfg))
    write_cards(run_dir, state, data, cfg)
    return write_page(run_dir, state, generation, data, cfg)


def _strategy_sections(run_dir: Path, cfg: Config | None) -> list[str]:
    """A strategy's own sections at the end of report.md: the rewrite strategy's learned rule,
    best guesses next to the users' prompts and the paired comparison with the raw prompts."""
    if cfg is None or cfg.strategy != "rewrite":
        return []
    from atelier.rewriter.report import rewrite_section

    return [rewrite_section(run_dir, builtin_judge=cfg.agents.judge.backend == "builtin")]


def write_cards(run_dir: Path, state: dict, data: dict, cfg: Config | None) -> list[Path]:
    """A model card in every round's adapter folder that is on disk (a finished adapter)."""
    from atelier.graphs.nodes import image_seed
    from atelier.model_card import write_model_card
    from atelier.report.summary import heldout_prompts
    from atelier.runs import in_run
    from atelier.tools.lora import ADAPTER_METADATA

    prompts = heldout_prompts(state)
    if cfg is None or not prompts:
        return []
    written = []
    for record in state.get("rounds", []):
        adapter = Path(in_run(record.get("adapter"), run_dir)) if record.get("adapter") else None
        if adapter is None or not (adapter / ADAPTER_METADATA).exists():
            continue
        written.append(write_model_card(adapter, run_dir=run_dir, cfg=cfg, goal=data["goal"], metric=data["metric"],
                                        record=record, base=data["base"], prompt=prompts[0],
                                        seed=image_seed(cfg.seed, 0, 0, 0)))
    return written
