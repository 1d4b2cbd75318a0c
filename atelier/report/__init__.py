"""The run's report, rewritten after every round so that a user can watch a run:
report/index.html (atelier.report.page: curves, decisions, labelled grids, stories, failures,
timings), report.json and report.md (atelier.report.summary), and a model card (README.md) in
every round's adapter folder (atelier.model_card)."""

from __future__ import annotations

from pathlib import Path

from atelier.config import GenerationConfig
from atelier.report.page import write_page
from atelier.report.summary import format_share, guided_base_text, sampling_text, write_summary

__all__ = ["format_share", "guided_base_text", "sampling_text", "write_report"]


def write_report(run_dir: Path, state: dict, generation: GenerationConfig) -> Path:
    """Write report.json, report.md, heldout_grid.png and index.html (also as report.html) under
    run_dir/report from the graph `state`; returns index.html's path."""
    run_dir = Path(run_dir)
    data = write_summary(run_dir, state, generation)
    write_cards(run_dir, state, data)
    _append_strategy_section(run_dir)
    return write_page(run_dir, state, generation, data)


def _append_strategy_section(run_dir: Path) -> None:
    """A strategy's own section at the end of report.md: the rewrite strategy's learned rule,
    best guesses next to the users' prompts and the paired comparison with the raw prompts."""
    from atelier.report.page import run_config

    cfg = run_config(run_dir)
    if cfg is None or cfg.strategy != "rewrite":
        return
    from atelier.atomic import write_text_atomic
    from atelier.rewriter.report import rewrite_section

    report_md = run_dir / "report" / "report.md"
    section = rewrite_section(run_dir, builtin_judge=cfg.agents.judge.backend == "builtin")
    write_text_atomic(report_md, report_md.read_text().rstrip("\n") + "\n\n" + section + "\n")


def write_cards(run_dir: Path, state: dict, data: dict) -> list[Path]:
    """A model card in every round's adapter folder that is on disk (a finished adapter)."""
    from atelier.graphs.nodes import image_seed
    from atelier.model_card import write_model_card
    from atelier.report.page import run_config
    from atelier.report.summary import heldout_prompts
    from atelier.runs import in_run
    from atelier.tools.lora import ADAPTER_METADATA

    cfg = run_config(run_dir)
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
