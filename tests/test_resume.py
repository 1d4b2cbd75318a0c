"""SIGKILL at several points, then `atelier resume`: the run must end exactly as an
uninterrupted run with the same seed (same best adapter bytes, same metrics)."""

import json

import pytest

from atelier.tools.lora import adapter_hash
from loop_helpers import atelier, write_config


def _outcome(run_dir):
    report = json.loads((run_dir / "report" / "report.json").read_text())
    best = report["best"]["adapter"]
    rounds = [(r["round"], r["promoted"], json.dumps(r["candidate"], sort_keys=True)) for r in report["rounds"]]
    guided = json.dumps([report["base_at_candidate_guidance"], report["gain_over_guided_base_paired"]], sort_keys=True)
    return (adapter_hash(best) if best else None), rounds, json.dumps(report["base"], sort_keys=True), guided


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    done = atelier("run", str(write_config(tmp)), "--run-id", "ref")
    assert done.returncode == 0, done.stderr[-3000:]
    return _outcome(tmp / "runs" / "ref")


@pytest.mark.parametrize("point", ["baseline:base", "generate", "train_step:2", "evaluate"])
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, reference, point):
    cfg = write_config(tmp_path)
    killed = atelier("run", str(cfg), "--run-id", "r", env={"ATELIER_DIE_AT": point})
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    run_dir = tmp_path / "runs" / "r"
    status = atelier("status", "r", "--run-dir", str(run_dir.parent), "--json")
    assert json.loads(status.stdout)["state"] == "failed"  # the process is gone; the run is not finished
    resumed = atelier("resume", "r", "--run-dir", str(run_dir.parent))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _outcome(run_dir) == reference
