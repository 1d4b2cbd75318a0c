"""SIGKILL at several points, then `atelier resume`: the run must end exactly as an
uninterrupted run with the same seed (same best adapter bytes, same metrics)."""

import errno
import json
import os
import re
import subprocess

import pytest

from atelier.tools.lora import adapter_hash
from loop_helpers import TINY, atelier, write_config


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


# --- a disk that refuses a write: one line, exit 2, status failed with the reason, resume works ---


def _disk_message(code: int, path_pattern: str, run_id: str = "d") -> str:
    what, remedy = {errno.ENOSPC: ("no space left on device", "free space"),
                    errno.EROFS: ("read-only file system", "make the run folder writable")}[code]
    return rf"{what} writing {path_pattern}; {remedy} and `atelier resume {run_id}`"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["ENOSPC", "EROFS"])
def test_a_refused_write_mid_run_ends_it_in_one_line(tmp_path, monkeypatch, capsys, code):
    """In-process (tests run as root, where chmod stops no write): the first image a generate
    batch writes, on a LangGraph worker thread, is refused as a full disk refuses it (the file
    opens, the write fails: no filename in the error) or as a read-only one does (open fails)."""
    from PIL import Image

    from atelier.cli import main
    from atelier.runs import get_status

    real_save = Image.Image.save

    def save(self, fp, *args, **kwargs):
        if isinstance(fp, (str, os.PathLike)) and f"round_001{os.sep}generate" in str(fp):
            if code == errno.EROFS:
                raise OSError(code, os.strerror(code), str(fp))
            with open(fp, "wb"):
                raise OSError(code, os.strerror(code))
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    cfg = write_config(tmp_path, budget={**TINY["budget"], "rounds": 1, "patience": 1})
    assert main(["run", str(cfg), "--run-id", "d"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = _disk_message(code, rf"\S+{re.escape(os.sep)}round_001{re.escape(os.sep)}generate\S*\.png")
    assert re.fullmatch("atelier: error: " + expected, err[-1]), err[-1]
    assert not any("Traceback" in line for line in err)
    run_dir = tmp_path / "runs" / "d"
    status = get_status(run_dir)
    assert status["state"] == "failed" and status["error"] == err[-1].removeprefix("atelier: error: ")

    monkeypatch.undo()  # space freed
    assert main(["resume", "d", "--run-dir", str(run_dir.parent)]) == 0
    assert get_status(run_dir)["state"] == "finished"


def test_a_full_tmpfs_ends_the_run_in_one_line(tmp_path):
    """A real full disk, where this machine lets the test mount a 400 KiB tmpfs (root): the run
    runs out of space wherever it does (an image, a dataset, the checkpoint database)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        cfg = write_config(tmp_path, run_dir=str(mnt / "runs"))
        full = atelier("run", str(cfg), "--run-id", "d")
        assert full.returncode == 2, full.stderr[-3000:]
        assert "Traceback" not in full.stderr, full.stderr[-3000:]
        last = full.stderr.strip().splitlines()[-1]
        assert re.fullmatch("atelier: error: " + _disk_message(errno.ENOSPC, re.escape(str(mnt)) + r"\S*"), last), last
        status = json.loads((mnt / "runs" / "d" / "status.json").read_text())
        assert status["state"] == "failed" and status["error"] == last.removeprefix("atelier: error: ")
        subprocess.run(["mount", "-o", "remount,size=8m", str(mnt)], check=True)
        resumed = atelier("resume", "d", "--run-dir", str(mnt / "runs"))
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert json.loads((mnt / "runs" / "d" / "status.json").read_text())["state"] == "finished"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_sqlite_saying_the_disk_is_full_is_a_disk_error(tmp_path):
    """The checkpointer (SQLite) says so in words, not in errno."""
    import sqlite3

    from atelier.runs import disk_error

    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as e:
            raise RuntimeError("a checkpoint could not be saved") from e
    except RuntimeError as e:
        err = disk_error(e, tmp_path / "d", "d")
    assert str(err) == _disk_message(errno.ENOSPC, str(tmp_path / "d" / "checkpoints.sqlite"))
    assert disk_error(ValueError("no"), tmp_path, "d") is None
    assert disk_error(FileNotFoundError(errno.ENOENT, "gone", "x"), tmp_path, "d") is None
