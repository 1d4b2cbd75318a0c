"""report/index.html: one self-contained page (images inline as data: URLs, no script but data),
rendered from templates/index.html.j2 with Jinja2 (autoescaped: model text is shown, never run).

What it shows: the goal and the headline gain; the promotion rule in words; each round's
decision with its gain, its one-sided lower bound at the rule's z and the reason; curves of the
held-out metrics per round; the full metrics table; labelled base-vs-best grids; per-sample
stories; failures with raw answers; wall time per node; links to adapters, cards and datasets.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jinja2
from markupsafe import Markup

from atelier.atomic import write_text_atomic
from atelier.config import Config, GenerationConfig
from atelier.report.curves import curve_data, svg_chart
from atelier.report.failures import node_times, run_failures
from atelier.report.grids import comparison_rows
from atelier.report.stories import round_stories
from atelier.report.summary import (format_share, gain_text, guided_base_text, heldout_prompts, images_per_prompt,
                                    rule_text, sampling_text, table_keys, table_rows)
from atelier.runs import evaluation_dir, get_status, in_run, read_jsonl, round_dir
from atelier.version import atelier_version

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("atelier.report", "templates"),
                          autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)


def _rel(path: str | Path | None, run_dir: Path) -> str | None:
    """A link from report/ to a path of the run (None when it is not on disk)."""
    if not path:
        return None
    target = Path(in_run(str(path), run_dir))
    return os.path.relpath(target, run_dir / "report") + ("/" if target.is_dir() else "") if target.exists() else None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _round_rows(data: dict, cfg: Config | None, run_dir: Path, per_round: dict[int, float]) -> list[dict]:
    metric, z = data["metric"], cfg.decide.noise_sigmas if cfg else None
    rows = []
    for r in data["rounds"]:
        gain, se = r.get("gain"), r.get("noise")
        adapter = r.get("adapter")
        dataset = round_dir(run_dir, r["round"]) / "dataset"
        try:
            n_samples = len(read_jsonl(dataset / "metadata.jsonl"))
        except (OSError, ValueError):
            n_samples = 0
        card = Path(in_run(adapter, run_dir)) / "README.md" if adapter else None
        rows.append({
            "round": r["round"], "promoted": r["promoted"], "reason": r["reason"],
            "value": format_share((r.get("candidate") or {}).get(metric)),
            "gain": "—" if gain is None else f"{gain:+.3f} ± {se:.3f} (SE)" if se is not None else f"{gain:+.3f}",
            "bound": "—" if gain is None or se is None or z is None else f"{gain - z * se:+.3f} (at {z:g} SE)",
            "adapter_link": _rel(adapter, run_dir), "card_link": _rel(card, run_dir) if card else None,
            "dataset_link": _rel(dataset, run_dir) if n_samples else None, "n_samples": n_samples,
            "wall": _duration(per_round.get(r["round"])),
        })
    return rows


def write_page(run_dir: Path, state: dict, generation: GenerationConfig, data: dict, cfg: Config | None) -> Path:
    """Render report/index.html from the run folder, report.json's `data` and the run's config
    (None where it cannot be read); returns its path."""
    metric, base, best = data["metric"], data["base"], data["best"]["metrics"]
    prompts = heldout_prompts(state)
    base_eval = evaluation_dir(run_dir, None)
    k = images_per_prompt(base_eval)
    keys = table_keys(base, k)
    curves = curve_data(metric, base, [{**r, "metrics": r["candidate"]} for r in data["rounds"]],
                        data["base_at_candidate_guidance"])
    times, per_round = node_times(run_dir)
    failures, n_failures = run_failures(run_dir)
    stories = []
    for r in data["rounds"]:
        items, total = round_stories(round_dir(run_dir, r["round"]), run_dir)
        stories.append({"round": r["round"], "samples": items, "shown": len(items), "total": total})
    best_no = data["best"]["round"]
    status = get_status(run_dir)
    page = _ENV.get_template("index.html.j2").render(
        run_id=run_dir.name, goal=data["goal"], state=status.get("state", "unknown"), stop_reason=data["stop_reason"],
        live=data["stop_reason"] is None, metric=metric, n_heldout=len(prompts), k=k,
        base_text=format_share(base.get(metric)), best_text=format_share(best.get(metric)),
        best_label=f"round {best_no}" if best_no else "the base: no adapter kept", gain_text=gain_text(data),
        scale_text="".join(f" {m.get('label', kind).capitalize()}: {format_share(m.get(metric))}."
                           for kind, m in data["references"].items()),
        sampling_text=(sampling_text(generation) + guided_base_text(data["gain_over_guided_base_paired"], metric,
                                                                    generation)).strip(),
        rule_text=rule_text(cfg, metric), rounds=_round_rows(data, cfg, run_dir, per_round),
        charts=[{"metric": key, "svg": svg_chart(key, series)} for key, series in curves.items()],
        curve_json=Markup(json.dumps(curves).replace("<", "\\u003c")),
        has_guided=data["base_at_candidate_guidance"] is not None,
        table_keys=keys, table=table_rows(data, generation, keys),
        grid=comparison_rows(base_eval, evaluation_dir(run_dir, best_no), prompts, k, metric),
        stories=stories, failures=failures, n_failures=n_failures, timings=times,
        version=status.get("atelier_version") or atelier_version(), written=time.strftime("%Y-%m-%d %H:%M:%S"),
        heldout_link=_rel(state.get("heldout_file"), run_dir),
    )
    path = run_dir / "report" / "index.html"
    write_text_atomic(path, page)
    write_text_atomic(run_dir / "report" / "report.html", page)  # the name earlier versions wrote
    return path
