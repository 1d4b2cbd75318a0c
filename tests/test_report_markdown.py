"""report.md: the promotion rule in words, each round's decision with its reason, and VISOR_n at
the images per held-out prompt (VISOR_4 of 2 images per prompt would read 0 by construction)."""

import json

import pytest

from report_helpers import tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def test_markdown_states_the_rule_and_each_decision(run):
    run_dir, _ = run
    md = (run_dir / "report" / "report.md").read_text()
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert "**Promotion rule:** A round's adapter is promoted when" in md and "one-sided" in md
    for r in report["rounds"]:
        verdict = "promoted" if r["promoted"] else "rolled back"
        assert f"- round {r['round']}: {verdict}: {r['reason']}" in md
    header = next(line for line in md.splitlines() if line.startswith("| | object_accuracy"))
    assert "visor_2" in header and "visor_4" not in header  # 2 images per held-out prompt in the tiny run
    assert "The 95% intervals elsewhere on this page are two-sided" in md  # noise_sigmas 0 < 1.96
