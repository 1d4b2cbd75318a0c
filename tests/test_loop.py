"""End to end: a tiny run of the real loop (shipped shapes model, real detector, real LoRA
training, real SQLite checkpointer), its outputs, its status, and its checkpoint size."""

import json
import shutil
import sqlite3

import numpy as np
import pytest
from PIL import Image

from atelier.config import GenerationConfig
from atelier.graphs.nodes import image_seed
from atelier.report import guided_base_text, sampling_text, write_report
from atelier.tools.generate import GenerationRequest, generate
from atelier.worlds.shapes.model import load_generator
from atelier.tools.lora import adapter_hash
from loop_helpers import atelier, write_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loop")
    cfg = write_config(tmp)
    done = atelier("run", str(cfg), "--run-id", "tiny")
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "runs" / "tiny", done


def test_run_prints_its_id_and_report(finished_run):
    run_dir, done = finished_run
    assert "tiny" in done.stderr
    assert "report:" in done.stdout and (run_dir / "report" / "report.html").exists()


def test_outputs_are_on_disk(finished_run):
    run_dir, _ = finished_run
    for r in ("round_001", "round_002"):
        assert len(list((run_dir / r / "generate").glob("batch_*/manifest.jsonl"))) == 2
        assert len(list((run_dir / r / "judge").glob("batch_*.jsonl"))) == 2
        assert (run_dir / r / "dataset" / "metadata.jsonl").exists()
        assert (run_dir / r / "decision.json").exists()
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert len(report["rounds"]) == 2 and report["metric"] == "relation_accuracy_cond"
    # Chance level and ceiling of the same held-out prompts, in the JSON and the summary.
    chance = report["references"]["relation_blind_renders"]["relation_accuracy_cond"]["value"]
    assert chance < report["references"]["renders"]["relation_accuracy_cond"]["value"]
    assert "(chance)" in (run_dir / "report" / "report.md").read_text()
    assert report["adapter_min_timestep"] == 500
    assert "sampling timesteps >= 500" in (run_dir / "report" / "report.md").read_text()
    assert report["candidate_guidance_scale"] == 5.0 and report["guidance_scale"] == 3.0
    assert "candidates from the base model were sampled at guidance 5" in (run_dir / "report" / "report.md").read_text()
    # The base at the candidates' guidance, as a reference row and a paired comparison with the best.
    guided = report["base_at_candidate_guidance"]
    assert guided["n_images"] == 8 and guided != report["base"]
    assert guided["guidance_scale"] == 5.0 and report["base"]["guidance_scale"] == 3.0
    summary = (run_dir / "report" / "report.md").read_text()
    assert "| base at guidance 5 (the candidates') |" in summary
    # With no adapter kept there is nothing to set against the guidance (a later test keeps one).
    if report["best"]["round"] is None:
        assert report["gain_over_guided_base_paired"] == {} and "Best minus the base sampled" not in summary
    else:
        assert set(report["gain_over_guided_base_paired"]) == {"relation_accuracy_cond", "object_accuracy"}
        assert "Best minus the base sampled at the candidates' guidance (5)" in summary
    # best - base also with the paired interval: the same point estimate, its own width.
    paired, newcombe = report["gain_paired"]["object_accuracy"], report["gain"]["object_accuracy"]
    assert paired["value"] == pytest.approx(newcombe["value"]) and paired["ci95"][0] <= paired["value"] <= paired["ci95"][1]
    for judgment in (run_dir / "round_001" / "judge" / "batch_000.jsonl").read_text().splitlines():
        j = json.loads(judgment)
        assert {"prompt", "file", "detections", "ipr_correct", "count_ok", "relation_ok", "seed"} <= set(j)


def test_status_json(finished_run):
    run_dir, _ = finished_run
    out = atelier("status", "tiny", "--run-dir", str(run_dir.parent), "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["state"] == "finished"
    assert [r["round"] for r in status["rounds"]] == [1, 2]
    for r in status["rounds"]:
        assert isinstance(r["promoted"], bool)
        for key in ("object_accuracy", "count_accuracy", "relation_accuracy_cond", "relation_accuracy_uncond", "visor_1"):
            m = r["metrics"][key]
            assert m["value"] is None or 0 <= m["value"] <= 1
    promoted = [r for r in status["rounds"] if r["promoted"]]
    if promoted:
        assert status["best_adapter"] == promoted[-1]["adapter"]
        assert len(adapter_hash(status["best_adapter"])) == 64
    else:
        assert status["best_adapter"] is None
    listing = atelier("runs", "--run-dir", str(run_dir.parent))
    assert "tiny" in listing.stdout and "finished" in listing.stdout


def test_checkpoint_stays_small(finished_run):
    run_dir, _ = finished_run
    con = sqlite3.connect(run_dir / "checkpoints.sqlite")
    sizes = [len(row[0]) for row in con.execute("select checkpoint from checkpoints")]
    con.close()
    assert sizes and max(sizes) < 64 * 1024, max(sizes)


def test_bad_goal_is_one_line_exit_2(tmp_path):
    cfg = write_config(tmp_path, goal="realistic elephants and giraffes")
    out = atelier("run", str(cfg))
    assert out.returncode == 2
    assert "cannot map the goal" in out.stderr and out.stderr.strip().count("\n") <= 1


def test_candidates_use_their_own_guidance(finished_run):
    """Candidates from the base are drawn at candidate_guidance_scale (5), those from an adapter and
    held-out images at guidance_scale (3): redrawing a round-1 candidate matches guidance 5, not 3."""
    run_dir, _ = finished_run
    for manifest in run_dir.glob("round_*/generate/batch_*/manifest.jsonl"):
        for line in manifest.read_text().splitlines():
            candidate = json.loads(line)
            assert candidate["guidance_scale"] == (5.0 if candidate["adapter"] is None else 3.0), candidate
    row = json.loads((run_dir / "round_001" / "generate" / "batch_000" / "manifest.jsonl").read_text().splitlines()[0])
    assert row["guidance_scale"] == 5.0 and row["adapter"] is None and row["scale"] is None
    pipe = load_generator("shapes")

    def closer_to(file: str, prompt: str, seed: int) -> float:
        """The guidance (3 or 5) whose redraw of (prompt, seed) matches the saved image."""
        saved = np.asarray(Image.open(file).convert("RGB"), dtype=np.float32)
        error = {g: np.abs(saved - np.asarray(generate(pipe, GenerationRequest([prompt], [seed], 3, g))[0],
                                               dtype=np.float32)).mean() for g in (3.0, 5.0)}
        assert min(error.values()) < 1.0 < max(error.values()), error
        return min(error, key=error.get)

    assert closer_to(row["file"], row["prompt"], row["seed"]) == 5.0
    # The base's held-out images stay at guidance_scale.
    prompt = json.loads((run_dir / "heldout" / "prompts.json").read_text())[0]["text"]
    assert closer_to(str(run_dir / "base" / "images" / "p000_0.png"), prompt, image_seed(7, 0, 0, 0)) == 3.0
    # ...and the base's reference evaluation is drawn at the candidates' guidance, on the same seeds.
    guided = run_dir / "base" / "at_candidate_guidance" / "images" / "p000_0.png"
    assert closer_to(str(guided), prompt, image_seed(7, 0, 0, 0)) == 5.0


def test_report_says_whether_training_beat_raising_the_guidance():
    generation = GenerationConfig(guidance_scale=3.0, candidate_guidance_scale=6.0)
    metric = "relation_accuracy_cond"

    def text(lo: float, hi: float) -> str:
        return guided_base_text({metric: {"value": (lo + hi) / 2, "ci95": [lo, hi]}}, metric, generation)

    assert "training beat raising the guidance" in text(0.01, 0.05)
    assert "raising guidance_scale alone does better" in text(-0.05, -0.01)
    assert "cannot be told apart" in text(-0.02, 0.03)
    assert "candidates' guidance (6)" in text(0.01, 0.05) and "[+0.010, +0.050]" in text(0.01, 0.05)
    assert guided_base_text({}, metric, generation) == ""


def test_report_sets_the_best_adapter_against_the_guided_base(finished_run, tmp_path):
    """The report of a run whose round 1 was kept: best minus the base at the candidates' guidance,
    paired on the same seeds (its value is the plain difference), and the sentence that says it."""
    run_dir = shutil.copytree(finished_run[0], tmp_path / "tiny")
    report = json.loads((run_dir / "report" / "report.json").read_text())
    rounds = [{**r, "metrics": r["candidate"], "promoted": r["round"] == 1} for r in report["rounds"]]
    state = {"rounds": rounds, "metric": report["metric"], "base_metrics": report["base"],
             "best_adapter": rounds[0]["adapter"], "best_metrics": rounds[0]["metrics"],
             "heldout_file": str(run_dir / "heldout" / "prompts.json"), "stop_reason": "test"}
    write_report(run_dir, state, GenerationConfig(guidance_scale=3.0, candidate_guidance_scale=5.0))
    kept = json.loads((run_dir / "report" / "report.json").read_text())
    guided, gains = kept["base_at_candidate_guidance"], kept["gain_over_guided_base_paired"]
    assert kept["best"]["round"] == 1 and set(gains) == {"relation_accuracy_cond", "object_accuracy"}
    for key, gain in gains.items():
        assert gain["value"] == pytest.approx(rounds[0]["metrics"][key]["value"] - guided[key]["value"])
        assert gain["ci95"][0] <= gain["value"] <= gain["ci95"][1]
    sentence = "Best minus the base sampled at the candidates' guidance (5)"
    assert sentence in (run_dir / "report" / "report.md").read_text()
    assert sentence.replace("'", "&#39;") in (run_dir / "report" / "report.html").read_text()


def test_report_says_how_images_were_sampled():
    assert sampling_text(GenerationConfig()) == ""
    assert sampling_text(GenerationConfig(guidance_scale=3.0, candidate_guidance_scale=3.0)) == ""
    text = sampling_text(GenerationConfig(guidance_scale=3.0, candidate_guidance_scale=6.0, adapter_min_timestep=749))
    assert "base model were sampled at guidance 6" in text and "at guidance 3" in text and ">= 749" in text
