"""The rewrite strategy's part of a run's report, as Markdown: per round what the rewriter
learned, its held-out best guesses next to the users' prompts, the paired comparison with the raw
prompts (gains with 95% intervals, win / tie / loss) and a few per-prompt stories."""

from __future__ import annotations

from pathlib import Path

from atelier.rewriter.compare import builtin_rubric_sum, compare_metrics, compare_scores
from atelier.runs import evaluation_dir, read_json, read_jsonl
from atelier.worlds.base import WorldPrompt

KEYS = ("relation_accuracy_cond", "relation_accuracy_uncond", "object_accuracy", "count_accuracy", "ipr_accuracy",
        "question_score", "clip_score")


def round_comparison(run_dir: Path, round_no: int, builtin_judge: bool) -> dict | None:
    """The candidate rewriter of a round against the raw prompts on the held-out images, or None
    when the round has no evaluation. The rubric sum only with the builtin judge (a model judge's
    rubric is not asked at evaluation)."""
    new_file, raw_file = evaluation_dir(run_dir, round_no) / "judgments.jsonl", evaluation_dir(run_dir, None) / "judgments.jsonl"
    if not new_file.exists() or not raw_file.exists():
        return None
    new, raw = read_jsonl(new_file), read_jsonl(raw_file)
    out = {"metrics": compare_metrics(new, raw, KEYS),
           "rewritten_images": sum(r.get("rewrite", r["prompt"]) != r["prompt"] for r in new), "images": len(new)}
    if builtin_judge:
        heldout = [WorldPrompt.model_validate(p) for p in read_json(run_dir / "heldout" / "prompts.json")]
        out["rubric_sum"] = compare_scores(new, raw, builtin_rubric_sum(lambda i: heldout[i].asked))
    return out


def _interval(m: dict) -> str:
    lo, hi = m["ci95"] if m.get("ci95") else (float("nan"), float("nan"))
    return f"{m['gain']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def rewrite_section(run_dir: Path, builtin_judge: bool, examples: int = 8, stories: int = 3) -> str:
    """Markdown for the report of a rewrite run."""
    run_dir = Path(run_dir)
    lines = ["## The rewriter", ""]
    for round_path in sorted(run_dir.glob("round_*")):
        round_no = int(round_path.name.split("_")[1])
        state_file = round_path / "adapter" / "rewriter.json"
        if not state_file.exists():
            continue
        state = read_json(state_file)
        decision = read_json(round_path / "decision.json") if (round_path / "decision.json").exists() else {}
        verdict = "promoted" if decision.get("promoted") else "rolled back"
        lines += [f"### Round {round_no}: {state['kind']} rewriter on {state.get('pairs', 0)} pairs, {verdict}",
                  "", decision.get("reason", ""), ""]
        lines += [f"- {line}" for line in state.get("rule", [])] + ([""] if state.get("rule") else [])
        comparison = round_comparison(run_dir, round_no, builtin_judge)
        if comparison:
            lines += [f"Held-out images drawn from a rewrite: {comparison['rewritten_images']} of {comparison['images']}.", "",
                      "| metric | raw prompts | rewritten | gain [95% CI, paired] | win / tie / loss |", "|---|---|---|---|---|"]
            for key, m in comparison["metrics"].items():
                lines.append(f"| {key} | {m['raw']:.3f} | {m['rewritten']:.3f} | {_interval(m)} | "
                             f"{m['wins']} / {m['ties']} / {m['losses']} |")
            if (m := comparison.get("rubric_sum")) and m["gain"] is not None:
                lines.append(f"| judge's rubric sum (0-15) | | | {_interval(m)} | {m['wins']} / {m['ties']} / {m['losses']} |")
            lines.append("")
        guesses = round_path / "eval" / "rewrites.json"
        if guesses.exists():
            lines += ["| user's prompt | rewriter's best guess |", "|---|---|"]
            lines += [f"| {p['prompt']} | {p['rewrite']} |" for p in read_json(guesses)["prompts"][:examples]] + [""]
        story_file = round_path / "stories.jsonl"
        if story_file.exists():
            for story in [s for s in read_jsonl(story_file) if s["pair"]][:stories]:
                scored = ", ".join(f"'{w['text']}' {w['score']:g}" if w["score"] is not None else f"'{w['text']}' unscored"
                                   for w in story["rewrites"])
                lines.append(f"- '{story['prompt']}': {scored}; kept '{story['pair']['chosen']}' over "
                             f"'{story['pair']['rejected']}'")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    """`python -m atelier.rewriter.report RUN_DIR`: the section of a finished or running run."""
    import sys

    from atelier.config import load_config

    run_dir = Path((sys.argv[1:] if argv is None else argv)[0])
    config = load_config(run_dir / "config.yaml")
    print(rewrite_section(run_dir, builtin_judge=config.agents.judge.backend == "builtin"), end="")


if __name__ == "__main__":
    main()
