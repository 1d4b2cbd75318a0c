"""The minimal end-of-run report: metrics per round as JSON, a Markdown and an HTML summary, and a
grid of held-out images, base model vs best adapter (same prompts, same seeds)."""

from __future__ import annotations

import html
from pathlib import Path

from PIL import Image, ImageDraw

from atelier.atomic import write_json_atomic, write_text_atomic
from atelier.config import GenerationConfig
from atelier.runs import best_round, evaluation_dir, guided_base_dir, read_json, read_jsonl
from atelier.stats.intervals import difference_ci
from atelier.worlds.judgment import paired_difference, paired_win_rate

_KEYS = ("object_accuracy", "count_accuracy", "relation_accuracy_cond", "relation_accuracy_uncond", "visor_4")


def format_share(m: dict | None, digits: int = 2) -> str:
    """'0.512 [0.43, 0.59]': a metric and its 95% interval, or 'n/a'."""
    if not m or m.get("value") is None:
        return "n/a"
    lo, hi = m["ci95"]
    return f"{m['value']:.3f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _grid(run_dir: Path, base_eval: Path, best_eval: Path, prompts: list[str], k: int, rows: int = 8,
          scale: int = 3) -> Path:
    """Rows of held-out prompts: k base images, a gap, k best images."""
    rows = min(rows, len(prompts))
    sample = Image.open(base_eval / "images" / "p000_0.png")
    side = sample.width * scale
    gap = side // 2
    grid = Image.new("RGB", (2 * k * side + gap, rows * side), "white")
    for i in range(rows):
        for j in range(k):
            for col0, folder in ((0, base_eval / "images"), (k * side + gap, best_eval / "images")):
                img = Image.open(folder / f"p{i:03d}_{j}.png").resize((side, side), Image.NEAREST)
                grid.paste(img, (col0 + j * side, i * side))
    ImageDraw.Draw(grid).line([(k * side + gap // 2, 0), (k * side + gap // 2, grid.height)], fill="black")
    path = run_dir / "report" / "heldout_grid.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


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


def write_report(run_dir: Path, state: dict, generation: GenerationConfig) -> Path:
    """report.json, report.md, report.html and the held-out grid. `generation` is the run's own
    (the guidance of held-out and candidate images, the adapter's gate): said in the text, kept in
    the JSON."""
    out = run_dir / "report"
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
    data = {
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
    write_json_atomic(out / "report.json", data)
    prompts = [p["text"] if isinstance(p, dict) else p for p in read_json(Path(state["heldout_file"]))]
    cfg_k = len([p for p in (base_eval / "images").glob("p000_*.png")])
    grid = _grid(run_dir, base_eval, best_eval, prompts, cfg_k)

    header = "| | " + " | ".join(_KEYS) + " | promoted |\n|" + "---|" * (len(_KEYS) + 2) + "\n"
    lines = ["| base | " + " | ".join(format_share(base.get(k)) for k in _KEYS) + " | |"]
    for r in rounds:
        lines.append(f"| round {r['round']} | " + " | ".join(format_share(r["metrics"].get(k)) for k in _KEYS)
                     + f" | {'yes' if r['promoted'] else 'no'} |")
    lines.append(f"| best ({'round ' + str(best_no) if best_no else 'base'}) | "
                 + " | ".join(format_share(best.get(k)) for k in _KEYS) + " | |")
    if guided:
        guided_g = guided.get("guidance_scale", generation.candidate_guidance_scale)
        lines.append(f"| base at guidance {guided_g:g} (the candidates') | "
                     + " | ".join(format_share(guided.get(k)) for k in _KEYS) + " | |")
    for kind, m in references.items():
        lines.append(f"| {m.get('label', kind)} | " + " | ".join(format_share(m.get(k)) for k in _KEYS) + " | |")
    gain = data["gain"][metric]
    gain_text = "n/a" if gain is None else f"{gain['value']:+.3f}, 95% CI [{gain['ci95'][0]:+.3f}, {gain['ci95'][1]:+.3f}]"
    if gain is not None and data["gain_paired"].get(metric):
        lo, hi = data["gain_paired"][metric]["ci95"]
        gain_text += f"; paired 95% CI [{lo:+.3f}, {hi:+.3f}]"
    gate_text = sampling_text(generation) + guided_base_text(data["gain_over_guided_base_paired"], metric, generation)
    if (wins := data["clip_win_rate"]) is not None:
        gain_text += (f"; CLIP score win rate over the base {wins['value']:.3f} [{wins['ci95'][0]:.2f}, "
                      f"{wins['ci95'][1]:.2f}] ({wins['wins']} wins, {wins['ties']} ties within 0.01, {wins['losses']} losses)")
    scale_text = "".join(f" {m.get('label', kind).capitalize()}: {format_share(m.get(metric))}."
                         for kind, m in references.items())
    md = (
        f"# atelier run {run_dir.name}\n\n**Goal:** {data['goal']}\n\n"
        f"**Target metric:** `{metric}` on {len(prompts)} held-out prompts: base {format_share(base[metric])} -> best "
        f"{format_share(best[metric])} (gain {gain_text}).{scale_text}\n\n**Stopped:** {data['stop_reason']}\n\n"
        f"Values are held-out metrics with Wilson 95% intervals.{gate_text}\n\n" + header + "\n".join(lines) + "\n\n"
        f"![held-out prompts, base (left) vs best (right)](heldout_grid.png)\n\nRows (first {min(8, len(prompts))} held-out prompts):\n\n"
        + "".join(f"{i + 1}. {p}\n" for i, p in enumerate(prompts[:8]))
    )
    write_text_atomic(out / "report.md", md)
    rows_html = "".join(f"<li>{html.escape(p)}</li>" for p in prompts[:8])
    table = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|")) + "</tr>" for line in lines
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>atelier run "
        f"{html.escape(run_dir.name)}</title><style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}"
        "td,th{padding:4px 8px;border-bottom:1px solid #ddd}img{image-rendering:pixelated}</style></head><body>"
        f"<h1>atelier run {html.escape(run_dir.name)}</h1><p><b>Goal:</b> {html.escape(data['goal'])}</p>"
        f"<p><b>{html.escape(metric)}</b>: base {format_share(base[metric])} &rarr; best {format_share(best[metric])} (gain {gain_text}).{html.escape(scale_text)}</p>"
        f"<p><b>Stopped:</b> {html.escape(str(data['stop_reason']))}</p><p>{html.escape(gate_text.strip())}</p>"
        "<table><tr><th></th>" + "".join(f"<th>{k}</th>" for k in _KEYS) + "<th>promoted</th></tr>" + table + "</table>"
        f"<h2>Held-out prompts: base (left) vs best (right)</h2><img src='{grid.name}' alt='grid'><ol>{rows_html}</ol>"
        "</body></html>"
    )
    write_text_atomic(out / "report.html", page)
    return out / "report.html"
