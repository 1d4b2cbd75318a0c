"""The report's numbers: report.json (metrics per round, gains with paired and Newcombe intervals,
references, sampling settings) and report.md (the same as a Markdown summary with the labelled
held-out grid, base vs best, same prompts and seeds). The HTML page is atelier.report.page."""

from __future__ import annotations

from pathlib import Path

import yaml
from scipy.stats import norm

from atelier.atomic import write_json_atomic, write_text_atomic
from atelier.config import Config, GenerationConfig, parse_config
from atelier.report.grids import MAX_ROWS, grid_png
from atelier.runs import best_round, evaluation_dir, guided_base_dir, read_json, read_jsonl
from atelier.stats.intervals import difference_ci
from atelier.worlds.judgment import paired_difference, paired_win_rate

_KEYS = ("object_accuracy", "count_accuracy", "relation_accuracy_cond", "relation_accuracy_uncond", "visor_{k}",
         "question_score", "clip_score")


def table_keys(base: dict, k: int) -> list[str]:
    """The metrics the table shows: those the base has a value for, with VISOR_n at n = the images
    per held-out prompt (at most 4): VISOR_4 of 2 images per prompt is 0 by construction."""
    keys = [key.format(k=max(1, min(k, 4))) for key in _KEYS]
    return [key for key in keys if (base.get(key) or {}).get("value") is not None]


def format_share(m: dict | None, digits: int = 2) -> str:
    """'0.512 [0.43, 0.59]': a metric and its 95% interval, or 'n/a'."""
    if not m or m.get("value") is None:
        return "n/a"
    lo, hi = m["ci95"]
    return f"{m['value']:.3f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _paired_gains(base_eval: Path, best_eval: Path, keys: tuple[str, ...]) -> dict:
    """best - base per key with a 95% interval from the paired standard error; a key is left out
    when the two evaluations' judgments are not on disk, not on the same prompts and seeds, or
    have nothing to count for it."""
    try:
        base_rows, best_rows = read_jsonl(base_eval / "judgments.jsonl"), read_jsonl(best_eval / "judgments.jsonl")
    except OSError:
        return {}
    gains = {}
    for key in keys:
        try:
            g, se = paired_difference(best_rows, base_rows, key)
        except (ValueError, KeyError):
            continue
        gains[key] = {"value": g, "ci95": [g - 1.96 * se, g + 1.96 * se], "se": se}
    return gains


def _clip_win_rate(base_eval: Path, best_eval: Path) -> dict | None:
    try:
        return paired_win_rate(read_jsonl(best_eval / "judgments.jsonl"), read_jsonl(base_eval / "judgments.jsonl"))
    except OSError:
        return None


def guided_base_text(gains: dict, metric: str, generation: GenerationConfig) -> str:
    """Best minus the base sampled at the candidates' guidance, in a sentence (empty without it)."""
    if metric not in gains:
        return ""
    parts = [f"{key} {g['value']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]"
             for key, g in ((k, gains[k]) for k in (metric, "object_accuracy") if k in gains)]
    lo, hi = gains[metric]["ci95"]
    verdict = ("training beat raising the guidance" if lo > 0
               else "raising guidance_scale alone does better" if hi < 0
               else "training and raising the guidance cannot be told apart")
    return (f" Best minus the base sampled at the candidates' guidance "
            f"({generation.candidate_guidance_scale:g}), same prompts and seeds, paired 95% CI: "
            f"{', '.join(parts)}: {verdict} on {metric}.")


def sampling_text(generation: GenerationConfig) -> str:
    """How the run's images were drawn, in a sentence or two (empty when nothing is unusual)."""
    text = ""
    g, candidate_g = generation.guidance_scale, generation.candidate_guidance_scale
    if generation.candidates_guided_apart:
        text += (f" Training candidates from the base model were sampled at guidance {candidate_g:g};"
                 f" those from an adapter, and every held-out image a decision rests on, at guidance {g:g}.")
    if generation.adapter_min_timestep:
        text += (" Adapter images were drawn with the adapter on only at sampling timesteps >= "
                 f"{generation.adapter_min_timestep} (the base model below).")
    return text


def run_config(run_dir: Path) -> Config | None:
    """The run's own config (config.yaml), or None when it cannot be read."""
    try:
        return parse_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    except Exception:  # noqa: BLE001 - a report of an old or hand-made run still renders without it
        return None


def rule_text(cfg: Config | None, metric: str) -> str:
    """The promotion rule (atelier.stats.promotion) in words, with its one-sided confidence."""
    if cfg is None:
        return "The run's config.yaml could not be read: the rule's settings are unknown."
    d = cfg.decide
    z = d.noise_sigmas
    se = ("paired standard error (the same held-out prompts and seeds on both sides, prompts as units)" if d.paired
          else "standard error from the two Wilson intervals, as if independent")
    guards = ", ".join(f"{k} by more than {v:g}" for k, v in d.max_drop.items())
    text = (f"A round's adapter is promoted when its held-out {metric} beats the best model so far by more than "
            f"{z:g} × the {se} of the gain, i.e. when the gain's one-sided lower bound, gain − {z:g} × SE, is above 0 "
            f"(a one-sided test at {norm.cdf(z):.0%} confidence)")
    text += f", and no guarded metric falls below the base's ({guards})." if guards else "."
    if z < 1.96:
        text += (f" The 95% intervals elsewhere on this page are two-sided (1.96 × SE), so a promoted adapter's 95% "
                 f"interval can include 0: the rule asks for {z:g} standard errors, not 1.96 (decide.noise_sigmas).")
    return text


def heldout_prompts(state: dict) -> list[str]:
    return [p["text"] if isinstance(p, dict) else p for p in read_json(Path(state["heldout_file"]))]


def images_per_prompt(base_eval: Path) -> int:
    return len(list((base_eval / "images").glob("p000_*.png")))


def report_data(run_dir: Path, state: dict, generation: GenerationConfig) -> dict:
    """What report.json holds. `generation` is the run's own (the guidance of held-out and
    candidate images, the adapter's gate): said in the text, kept in the JSON."""
    rounds = state.get("rounds", [])
    metric = state["metric"]
    base = state["base_metrics"]
    best_adapter = state.get("best_adapter")
    best = state.get("best_metrics", base)
    best_no = best_round(state)
    references_file = evaluation_dir(run_dir, None) / "references.json"
    references = read_json(references_file) if references_file.exists() else {}
    base_eval, best_eval = evaluation_dir(run_dir, None), evaluation_dir(run_dir, best_no)
    guided_eval = guided_base_dir(run_dir)
    guided = read_json(guided_eval / "metrics.json") if (guided_eval / "metrics.json").exists() else None
    # Only an adapter can have beaten the guidance; with the base kept, there is nothing to compare.
    guided_gains = _paired_gains(guided_eval, best_eval, (metric, "object_accuracy")) if guided and best_no else {}
    return {
        "goal": read_json(run_dir / "plan.json")["goal"],
        "metric": metric,
        "base": base,
        "rounds": [{"round": r["round"], "candidate": r["metrics"], "promoted": r["promoted"], "gain": r["gain"],
                    "noise": r["noise"], "reason": r["reason"], "adapter": r["adapter"]} for r in rounds],
        "best": {"adapter": best_adapter, "round": best_no, "metrics": best},
        "stop_reason": state.get("stop_reason"),
        # best - base with Newcombe's 95% interval (conservative for these paired evaluations)
        "gain": {k: difference_ci(best[k], base[k]) for k in (metric, "object_accuracy")},
        # the same, with the paired standard error of atelier.stats.paired (what decide uses)
        "gain_paired": _paired_gains(base_eval, best_eval, (metric, "object_accuracy")),
        # CCSR's win rate of best over base on the CLIP score, image by image (null without CLIP scores)
        "clip_win_rate": _clip_win_rate(base_eval, best_eval) if best_no else None,
        # The same prompts judged on ground-truth renders, with and without the relation (shapes world).
        "references": references,
        # The base sampled at the candidates' guidance, and best minus it (paired): did training beat
        # raising the guidance? Null when the candidates use guidance_scale.
        "base_at_candidate_guidance": guided,
        "gain_over_guided_base_paired": guided_gains,
        "adapter_min_timestep": generation.adapter_min_timestep,
        "guidance_scale": generation.guidance_scale,
        "candidate_guidance_scale": generation.candidate_guidance_scale,
    }


def gain_text(data: dict) -> str:
    """best - base on the target metric with its intervals, in words (the headline's bracket)."""
    metric = data["metric"]
    gain = data["gain"][metric]
    text = "n/a" if gain is None else f"{gain['value']:+.3f}, 95% CI [{gain['ci95'][0]:+.3f}, {gain['ci95'][1]:+.3f}]"
    if gain is not None and data["gain_paired"].get(metric):
        lo, hi = data["gain_paired"][metric]["ci95"]
        text += f"; paired 95% CI [{lo:+.3f}, {hi:+.3f}]"
    if (wins := data["clip_win_rate"]) is not None:
        text += (f"; CLIP score win rate over the base {wins['value']:.3f} [{wins['ci95'][0]:.2f}, "
                 f"{wins['ci95'][1]:.2f}] ({wins['wins']} wins, {wins['ties']} ties within 0.01, {wins['losses']} losses)")
    return text


def table_rows(data: dict, generation: GenerationConfig, keys: list[str]) -> list[tuple[str, list[str], str]]:
    """(label, the `keys` metrics as text, promoted) rows: base, rounds, best, references."""
    base, best, best_no = data["base"], data["best"]["metrics"], data["best"]["round"]
    rows = [("base", [format_share(base.get(k)) for k in keys], "")]
    rows += [(f"round {r['round']}", [format_share(r["candidate"].get(k)) for k in keys], "yes" if r["promoted"] else "no")
             for r in data["rounds"]]
    rows.append((f"best ({'round ' + str(best_no) if best_no else 'base'})", [format_share(best.get(k)) for k in keys], ""))
    if guided := data["base_at_candidate_guidance"]:
        guided_g = guided.get("guidance_scale", generation.candidate_guidance_scale)
        rows.append((f"base at guidance {guided_g:g} (the candidates')", [format_share(guided.get(k)) for k in keys], ""))
    rows += [(m.get("label", kind), [format_share(m.get(k)) for k in keys], "") for kind, m in data["references"].items()]
    return rows


def write_summary(run_dir: Path, state: dict, generation: GenerationConfig, cfg: Config | None,
                  sections: list[str] = ()) -> dict:
    """report.json, report.md (ending with `sections`, markdown) and heldout_grid.png; returns
    report.json's data. `cfg`: the run's config (run_config), None where it cannot be read."""
    out = run_dir / "report"
    data = report_data(run_dir, state, generation)
    write_json_atomic(out / "report.json", data)
    metric, base, best = data["metric"], data["base"], data["best"]["metrics"]
    prompts = heldout_prompts(state)
    base_eval, best_eval = evaluation_dir(run_dir, None), evaluation_dir(run_dir, data["best"]["round"])
    k = images_per_prompt(base_eval)
    grid = grid_png(base_eval, best_eval, prompts, k, metric, out / "heldout_grid.png")
    keys = table_keys(base, k)
    header = "| | " + " | ".join(keys) + " | promoted |\n|" + "---|" * (len(keys) + 2) + "\n"
    lines = [f"| {label} | " + " | ".join(cells) + f" | {promoted} |" for label, cells, promoted in table_rows(data, generation, keys)]
    gate_text = sampling_text(generation) + guided_base_text(data["gain_over_guided_base_paired"], metric, generation)
    scale_text = "".join(f" {m.get('label', kind).capitalize()}: {format_share(m.get(metric))}."
                         for kind, m in data["references"].items())
    shown = min(MAX_ROWS, len(prompts))
    decisions = "".join(f"- round {r['round']}: {'promoted' if r['promoted'] else 'rolled back'}: {r['reason']}\n"
                        for r in data["rounds"])
    md = (
        f"# atelier run {run_dir.name}\n\n**Goal:** {data['goal']}\n\n"
        f"**Target metric:** `{metric}` on {len(prompts)} held-out prompts: base {format_share(base[metric])} -> best "
        f"{format_share(best[metric])} (gain {gain_text(data)}).{scale_text}\n\n**Stopped:** {data['stop_reason']}\n\n"
        f"Values are held-out metrics with Wilson 95% intervals.{gate_text}\n\n" + header + "\n".join(lines) + "\n\n"
        f"**Promotion rule:** {rule_text(cfg, metric)}\n\n{decisions}\n"
        f"![held-out prompts, base (left) vs best (right); green frame: the judge says right on {metric}, red: wrong]"
        f"({grid.name})\n\nRows (first {shown} held-out prompts):\n\n"
        + "".join(f"{i + 1}. {p}\n" for i, p in enumerate(prompts[:shown]))
        + "\nThe full report with curves, per-sample stories and failures: index.html\n"
        + "".join(f"\n{section.strip()}\n" for section in sections)
    )
    write_text_atomic(out / "report.md", md)
    return data
