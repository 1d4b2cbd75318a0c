"""What a pip-installed atelier carries and says: the examples inside the wheel (so `atelier run
shapes` and `atelier init` work anywhere), the report's templates and the shapes weights' pipeline
file; `atelier --version`; the version recorded in a run; paths re-rooted at the run folder."""

import importlib.metadata
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from atelier.config import load_config
from atelier.packaged_examples import config_argument, example_names, example_path
from atelier.runs import in_run
from loop_helpers import atelier
from report_helpers import tiny_run

ROOT = Path(__file__).resolve().parent.parent


def test_version_flag_prints_the_installed_version():
    done = atelier("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"atelier {importlib.metadata.version('atelier')}"


def test_init_writes_an_example_config_that_loads(tmp_path):
    done = atelier("init", "shapes", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    written = tmp_path / "shapes.yaml"
    assert load_config(written).model == "shapes"
    again = atelier("init", "shapes", "--out", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    unknown = atelier("init", "nope", "--out", str(tmp_path))
    assert unknown.returncode == 2 and "no example config 'nope'" in unknown.stderr and "shapes" in unknown.stderr


def test_an_example_is_named_by_its_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "shapes" in example_names() and config_argument("shapes") == example_path("shapes")
    assert config_argument("shapes.yaml") == example_path("shapes")
    (tmp_path / "shapes").write_text("goal: mine\n")  # a file of that name wins
    assert config_argument("shapes") == Path("shapes")
    assert config_argument("no-such.yaml") == Path("no-such.yaml")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the source tree (the checkout itself stays untouched)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("atelier", "examples"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                           str(src)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return next(out.glob("atelier-*.whl"))


def test_the_wheel_carries_examples_templates_and_the_pipeline_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for example in (ROOT / "examples").glob("*.yaml"):
        assert f"atelier/_examples/{example.name}" in names
    assert "atelier/report/templates/index.html.j2" in names
    assert "atelier/worlds/shapes/weights/pipeline.py" in names and "atelier/worlds/shapes/weights/model_index.json" in names


def test_the_wheels_own_examples_are_found_where_it_is_unpacked(wheel, tmp_path):
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = "from atelier.packaged_examples import example_path; print(example_path('shapes'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == tmp_path / "site" / "atelier" / "_examples" / "shapes.yaml"


def test_a_run_records_the_version_and_status_paths_follow_the_run_folder(tmp_path_factory, tmp_path):
    run_dir, _ = tiny_run(tmp_path_factory)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["atelier_version"] == importlib.metadata.version("atelier")
    moved = shutil.copytree(run_dir, tmp_path / "elsewhere" / "tiny")  # the run folder moved after the run
    done = atelier("status", "tiny", "--run-dir", "elsewhere", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["atelier_version"] == status["atelier_version"]
    assert summary["report"] == str(moved / "report" / "index.html")
    assert all(r["adapter"] == str(moved / f"round_{r['round']:03d}" / "adapter") for r in summary["rounds"])


def test_in_run_re_roots_recorded_paths(tmp_path):
    run_dir = tmp_path / "runs" / "abc"
    assert in_run("runs/abc/round_001/adapter", run_dir) == str(run_dir.absolute() / "round_001" / "adapter")
    assert in_run("/old/place/abc/report/index.html", run_dir) == str(run_dir.absolute() / "report" / "index.html")
    assert in_run("/models/sd15", run_dir) == "/models/sd15" and in_run(None, run_dir) is None
