"""Held-out metrics per round as small inline SVG charts: the base (round 0) and each round's
candidate with its 95% interval, promoted rounds filled, and the base sampled at the candidates'
guidance as a dashed reference line. No JavaScript: the page stays self-contained and a chart's
numbers are also in the page as JSON (`curve_data`), which the tests compare with the run's."""

from __future__ import annotations

from markupsafe import Markup, escape

CURVE_METRICS = ("relation_accuracy_cond", "object_accuracy", "count_accuracy", "ipr_accuracy", "question_score",
                 "clip_score")
SHARES = {"relation_accuracy_cond", "object_accuracy", "count_accuracy", "ipr_accuracy"}
WIDTH, HEIGHT, PAD_L, PAD_R, PAD_T, PAD_B = 380, 190, 44, 12, 12, 28


def _value(metrics: dict | None, key: str) -> float | None:
    m = (metrics or {}).get(key)
    return m.get("value") if isinstance(m, dict) else None


def curve_data(metric: str, base: dict, rounds: list[dict], guided: dict | None) -> dict[str, dict]:
    """{metric: {'round': [0, 1, ...], 'value': [...], 'ci95': [...], 'promoted': [...], 'guided_base': v}}
    for the target metric and every other charted metric the base has a value for; round 0 is
    the base, value None where a round has no candidate (training failed, no data)."""
    keys = [metric, *(k for k in CURVE_METRICS if k != metric)]
    data = {}
    for key in keys:
        if _value(base, key) is None:
            continue
        points = [(0, base[key], None)] + [(r["round"], (r.get("metrics") or {}).get(key), r["promoted"]) for r in rounds]
        data[key] = {
            "round": [p[0] for p in points],
            "value": [m.get("value") if isinstance(m, dict) else None for _, m, _ in points],
            "ci95": [m.get("ci95") if isinstance(m, dict) else None for _, m, _ in points],
            "promoted": [p[2] for p in points],
            "guided_base": _value(guided, key),
        }
    return data


def _bounds(key: str, series: dict) -> tuple[float, float]:
    if key in SHARES:
        return 0.0, 1.0
    numbers = [v for v in series["value"] if v is not None] + [x for ci in series["ci95"] if ci for x in ci]
    if series["guided_base"] is not None:
        numbers.append(series["guided_base"])
    lo, hi = min(numbers), max(numbers)
    pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 1.0
    return lo - pad, hi + pad


def svg_chart(key: str, series: dict) -> Markup:
    """One metric's chart as an <svg> element (HTML-safe markup)."""
    lo, hi = _bounds(key, series)
    n = max(series["round"]) or 1
    x = lambda r: PAD_L + (WIDTH - PAD_L - PAD_R) * r / n  # noqa: E731
    y = lambda v: PAD_T + (HEIGHT - PAD_T - PAD_B) * (1 - (v - lo) / (hi - lo))  # noqa: E731
    parts = [f'<svg class="curve" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{escape(key)} per round" data-metric="{escape(key)}">',
             f'<line x1="{PAD_L}" y1="{HEIGHT - PAD_B}" x2="{WIDTH - PAD_R}" y2="{HEIGHT - PAD_B}" stroke="#999"/>',
             f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{HEIGHT - PAD_B}" stroke="#999"/>']
    for tick in (lo, (lo + hi) / 2, hi):
        parts.append(f'<text x="{PAD_L - 4}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="10">{tick:.2f}</text>')
    for r in series["round"]:
        parts.append(f'<text x="{x(r):.1f}" y="{HEIGHT - PAD_B + 14}" text-anchor="middle" font-size="10">'
                     f'{"base" if r == 0 else r}</text>')
    if (g := series["guided_base"]) is not None:
        parts.append(f'<line class="guided" x1="{PAD_L}" y1="{y(g):.1f}" x2="{WIDTH - PAD_R}" y2="{y(g):.1f}" '
                     f'stroke="#c60" stroke-dasharray="5 4"><title>base at the candidates\' guidance: {g:.3f}</title></line>')
    line = [(x(r), y(v)) for r, v in zip(series["round"], series["value"]) if v is not None]
    if len(line) > 1:
        parts.append('<polyline fill="none" stroke="#36c" stroke-width="1.5" points="'
                     + " ".join(f"{a:.1f},{b:.1f}" for a, b in line) + '"/>')
    for r, v, ci, promoted in zip(series["round"], series["value"], series["ci95"], series["promoted"]):
        if v is None:
            continue
        if ci:
            parts.append(f'<line x1="{x(r):.1f}" y1="{y(ci[0]):.1f}" x2="{x(r):.1f}" y2="{y(ci[1]):.1f}" stroke="#36c"/>')
        fill = "#36c" if promoted or r == 0 else "white"
        interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        label = "base" if r == 0 else f"round {r}" + (" (promoted)" if promoted else " (rolled back)")
        parts.append(f'<circle class="point" cx="{x(r):.1f}" cy="{y(v):.1f}" r="4" fill="{fill}" stroke="#36c" '
                     f'data-round="{r}" data-value="{v!r}"><title>{label}: {v:.3f}{interval}</title></circle>')
    parts.append("</svg>")
    return Markup("".join(parts))
