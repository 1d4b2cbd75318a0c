"""The report as a user opens it: report/index.html in a real headless Chromium (Debian's, driven
by Playwright). No console errors, the base-vs-best grid inside a 1280-px window at any images per
prompt, model text shown and never run, and the curves' numbers equal to the run's metrics.

Without a browser the tests skip on a developer's machine and fail in CI (.ci/run installs
chromium and sets ATELIER_REQUIRE_BROWSER=1)."""

import json
import os
import shutil
from pathlib import Path

import pytest

from atelier.loop import graph_state
from atelier.report import write_report
from atelier.report.summary import run_config
from report_helpers import tiny_run

EVIL = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def _browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    exe = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if sync_playwright is None or exe is None:
        why = f"no headless browser here (playwright: {sync_playwright is not None}, chromium: {exe})"
        if os.environ.get("ATELIER_REQUIRE_BROWSER"):
            pytest.fail(why + "; CI must have one (.ci/run installs chromium)")
        pytest.skip(why)
    return sync_playwright, exe


def _open(path: Path) -> dict:
    """Load the page at 1280x800 and read what the tests check."""
    sync_playwright, exe = _browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors = []
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.goto(path.as_uri(), wait_until="load")
            return {
                "errors": errors,
                "pwned": page.evaluate("window.__pwned === undefined ? null : window.__pwned"),
                "text": page.inner_text("body"),
                "page_width": page.evaluate("document.documentElement.scrollWidth"),
                "cells": page.eval_on_selector_all(
                    "#grid figure.cell img",
                    "els => els.map(e => { const r = e.getBoundingClientRect(); return [r.left, r.right, e.complete && e.naturalWidth > 0]; })"),
                "curve_data": json.loads(page.text_content("#curve-data")),
                "points": page.eval_on_selector_all(
                    "svg.curve circle.point",
                    "els => els.map(e => [e.closest('svg').dataset.metric, +e.dataset.round, +e.dataset.value])"),
                "story_images": page.eval_on_selector_all(".story img", "els => els.filter(e => e.naturalWidth > 0).length"),
            }
        finally:
            browser.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    return shutil.copytree(run_dir, tmp_path / "copy" / run_dir.name)  # same name: recorded paths re-root to it


def _rewrite(run_dir: Path) -> Path:
    state = graph_state(run_dir, run_dir.name)
    return write_report(run_dir, state, run_config(run_dir).generation)


def test_the_page_loads_without_console_errors_and_the_grid_fits_1280_px(run):
    run_dir, _ = run
    seen = _open(run_dir / "report" / "index.html")
    assert seen["errors"] == []
    assert seen["cells"] and all(ok for _, _, ok in seen["cells"])  # every grid image decoded
    assert all(0 <= left and right <= 1280 for left, right, _ in seen["cells"]), seen["cells"]
    assert seen["page_width"] <= 1280
    assert "The promotion rule" in seen["text"] and "one-sided" in seen["text"]


def test_the_grid_fits_at_sixteen_images_per_prompt(run, tmp_path):
    run_dir = _copy(run[0], tmp_path)
    for folder in (run_dir / "base" / "images", run_dir / "round_001" / "eval" / "images"):
        for i in range(4):
            for j in range(2, 16):  # the demo's 8 per prompt, and twice that
                shutil.copy(folder / f"p{i:03d}_{j % 2}.png", folder / f"p{i:03d}_{j}.png")
    page = _rewrite(run_dir)
    seen = _open(page)
    assert len(seen["cells"]) == 4 * 16 * 2
    assert all(0 <= left and right <= 1280 for left, right, _ in seen["cells"])
    assert seen["page_width"] <= 1280 and seen["errors"] == []


def test_model_text_is_shown_escaped_never_run(run, tmp_path):
    run_dir = _copy(run[0], tmp_path)
    plan = json.loads((run_dir / "plan.json").read_text())
    (run_dir / "plan.json").write_text(json.dumps({**plan, "goal": "left and right " + EVIL}))
    image = sorted((run_dir / "round_002" / "generate" / "batch_000").glob("*.png"))[0]
    story = {"prompt": "a red circle " + EVIL, "image": str(image), "critique": "</script><script>window.__pwned = 3</script>",
             "reward": 0.25, "rewrites": [{"text": "<b>bold?</b>", "score": 0.5}], "edited_image": "no/such/file.png"}
    (run_dir / "round_002" / "stories.jsonl").write_text(json.dumps(story) + "\n")
    agents = run_dir / "round_001" / "agents"
    agents.mkdir(exist_ok=True)
    (agents / "prompt_writer.json").write_text(json.dumps(
        {"role": "prompt_writer", "ok": False, "error": "no valid answer " + EVIL, "raw": "<script>window.__pwned = 4</script>"}))
    seen = _open(_rewrite(run_dir))
    assert seen["pwned"] is None and seen["errors"] == []
    assert "left and right <script>window.__pwned = 1</script>" in seen["text"]  # shown as text
    assert "</script><script>window.__pwned = 3</script>" in seen["text"]
    assert "no valid answer <script>" in seen["text"] and "prompt_writer" in seen["text"]
    assert seen["story_images"] >= 1  # the story's image field, shown as an image
    assert "no/such/file.png" in seen["text"]  # an image path that is not on disk stays text


def test_the_curves_show_the_runs_metrics(run):
    run_dir, _ = run
    report = json.loads((run_dir / "report" / "report.json").read_text())
    seen = _open(run_dir / "report" / "index.html")
    data = seen["curve_data"]
    metric = report["metric"]
    assert list(data)[0] == metric
    for key, series in data.items():
        expected = [report["base"][key]["value"]] + [r["candidate"][key]["value"] for r in report["rounds"]]
        assert series["value"] == expected and series["round"] == [0] + [r["round"] for r in report["rounds"]]
        assert series["ci95"][0] == report["base"][key]["ci95"]
        assert series["promoted"][1:] == [r["promoted"] for r in report["rounds"]]
        guided = report["base_at_candidate_guidance"][key]["value"]
        assert series["guided_base"] == guided
        drawn = sorted((r, v) for m, r, v in seen["points"] if m == key)
        assert drawn == sorted((r, v) for r, v in zip(series["round"], expected) if v is not None)
