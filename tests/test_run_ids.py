"""Run ids and run folders the commands are pointed at: a run id is one safe path component,
checked before anything is written, by every command that takes one; a `--run-dir` that is a
file, or a run whose status.json is corrupt, is one line, never a traceback, and one bad run
never hides the others from `atelier runs`."""

import json
import os

import pytest
import yaml

from atelier.cli import main
from atelier.runs import MAX_RUN_ID, RunError, check_run_id, new_run_id
from loop_helpers import TINY, atelier

BAD_IDS = {
    "parent": "../escaped",
    "absolute": "ABSOLUTE",  # made <tmp>/abs-escaped by the test: under the folder it watches
    "nested": "a/b",
    "dot": ".",
    "dotdot": "..",
    "empty": "",
    "hidden": ".hidden",
    "option": "-x",
    "nul": "x\0y",
    "newline": "x\ny",
    "backslash": "a\\b",
    "space": "a b",
    "non_ascii": "café",
    "too_long": "a" * (MAX_RUN_ID + 1),
}


def _tree(root):
    """Every path under root with its size and mtime: what a command must leave unchanged."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A user's working directory holding their own config.yaml and the config to run, whose
    run_dir is the relative `runs` (so `--run-id ..` would make the working directory the run folder)."""
    work = tmp_path / "work"
    (work / "runs").mkdir(parents=True)
    (work / "config.yaml").write_text("mine: true\n")
    cfg = {**json.loads(json.dumps(TINY)), "run_dir": "runs"}
    (work / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    # Runs outside the run folder that `../escaped` and `../x` reach: never to be read or resumed.
    for name in ("escaped", "x"):
        _fake_run(work, name, json.dumps({"state": "stopped", "node": "generate"}))
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize("command", ["run", "resume", "status"])
@pytest.mark.parametrize("bad", list(BAD_IDS.values()), ids=list(BAD_IDS))
def test_bad_run_id_is_refused_before_anything_is_written(workdir, capsys, command, bad):
    bad = str(workdir.parent / "abs-escaped") if bad == "ABSOLUTE" else bad
    before = _tree(workdir.parent)
    # `--run-id=ID` and `--` so that argparse hands over every id, even one that reads as an option
    argv = {"run": ["run", "tiny.yaml", f"--run-id={bad}"], "resume": ["resume", "--", bad],
            "status": ["status", "--run-dir", "runs", "--", bad]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("atelier: error: bad run id "), err
    assert "letters, digits" in err
    assert _tree(workdir.parent) == before


@pytest.mark.parametrize("argv", [["run", "tiny.yaml", "--run-id", "../escaped"], ["status", "../escaped"],
                                  ["resume", "../x"], ["resume", ".."]], ids=["run", "status", "resume", "resume_dotdot"])
def test_bad_run_id_through_the_real_cli(workdir, argv):
    before = _tree(workdir.parent)
    done = atelier(*argv, cwd=workdir)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("atelier: error: bad run id "), done.stderr
    assert done.stdout == ""  # nothing read from the runs outside the run folder
    assert _tree(workdir.parent) == before


@pytest.mark.parametrize("good", ["a", "A-1_b.c", "run.1", "_x", "a" * MAX_RUN_ID, new_run_id()])
def test_good_run_ids(good):
    assert check_run_id(good) == good


def test_library_start_run_checks_the_id_too(workdir):
    from atelier.config import load_config
    from atelier.loop import resume_run, start_run

    before = _tree(workdir.parent)
    with pytest.raises(RunError, match="bad run id"):
        start_run(load_config("tiny.yaml", []), "..")
    with pytest.raises(RunError, match="bad run id"):
        resume_run("..", workdir)
    assert _tree(workdir.parent) == before


# --- bad run folders: a file as --run-dir, a corrupt status.json -------------------------------


def _fake_run(root, name, status_text):
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({**TINY, "run_dir": str(root)}))
    (run / "status.json").write_text(status_text)
    return run


def test_runs_with_a_file_as_run_dir(tmp_path, capsys):
    f = tmp_path / "not_a_folder"
    f.write_text("x")
    assert main(["runs", "--run-dir", str(f)]) == 2
    err = capsys.readouterr().err
    assert err == f"atelier: error: --run-dir {f} is not a folder\n"


@pytest.mark.parametrize("corrupt", ["{oops", "[]", "\xff\xfe", "", '{"state": "running", "pid": "x"}'],
                         ids=["bad_json", "not_object", "bad_utf8", "empty", "bad_pid"])
def test_one_corrupt_status_does_not_hide_the_others(tmp_path, capsys, corrupt):
    root = tmp_path / "runs"
    _fake_run(root, "a_good", json.dumps({"state": "finished", "node": "done", "updated": "2026-01-01T00:00:00"}))
    bad = _fake_run(root, "b_bad", "")
    bad.joinpath("status.json").write_bytes(corrupt.encode("latin-1") if corrupt == "\xff\xfe" else corrupt.encode())
    _fake_run(root, "c_good", json.dumps({"state": "stopped", "reason": "stopped by SIGTERM", "updated": "2026-01-01"}))

    assert main(["runs", "--run-dir", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["a_good", "b_bad", "c_good"]
    assert out[0].split()[1] == "finished" and out[2].split()[1] == "stopped"
    if corrupt.startswith('{"state": "running"'):  # readable, a pid that is no pid: not alive
        assert out[1].split()[1] == "failed"
    else:
        assert out[1].split()[1] == "unreadable" and "status.json is unreadable" in out[1]

    assert main(["status", "b_bad", "--run-dir", str(root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["state"] in ("unreadable", "failed") and summary["error"]
    assert main(["status", "b_bad", "--run-dir", str(root)]) == 0
    text = capsys.readouterr()
    assert "Traceback" not in text.err and f"run b_bad: {summary['state']}" in text.out


def test_a_corrupt_checkpoint_or_plan_is_one_line(tmp_path, capsys):
    root = tmp_path / "runs"
    run = _fake_run(root, "r", json.dumps({"state": "stopped"}))
    (run / "plan.json").write_text("{not json")
    assert main(["status", "r", "--run-dir", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["goal"] is None
    (run / "checkpoints.sqlite").write_bytes(b"not a database, " * 100)
    assert main(["status", "r", "--run-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"atelier: error: {run / 'checkpoints.sqlite'} is unreadable"), err
    assert main(["resume", "r", "--run-dir", str(root)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"atelier: error: {run / 'checkpoints.sqlite'} is unreadable"), err
