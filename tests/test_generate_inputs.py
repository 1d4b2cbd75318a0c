"""`atelier generate` refuses numbers out of their bounds and an --out that is a file, in one line
with exit code 2, before any model is loaded."""

import pytest

from loop_helpers import atelier

PROMPT = ["--prompt", "a red circle"]


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "--n must be at least 1, got 0"),
    (["--n", "-2"], "--n must be at least 1, got -2"),
    (["--seed", "-1"], "--seed must be at least 0, got -1"),
    (["--guidance", "-5"], "--guidance must be at least 1"),
    (["--steps", "0"], "--steps must be at least 1, got 0"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--scale", "-1"], "--scale must be at least 0"),
])
def test_out_of_bounds_numbers_are_one_line(tmp_path, args, message):
    out = atelier("generate", *PROMPT, "--out", str(tmp_path / "out"), *args)
    assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert not (tmp_path / "out").exists()


def test_an_out_that_is_a_file_is_refused(tmp_path):
    existing = tmp_path / "images"
    existing.write_text("mine")
    out = atelier("generate", *PROMPT, "--out", str(existing))
    assert out.returncode == 2 and "is a file" in out.stderr and existing.read_text() == "mine"


@pytest.mark.parametrize("command", [["generate", *PROMPT], ["shapes", "eval", "--n", "2"]], ids=["generate", "shapes-eval"])
@pytest.mark.parametrize("kind", ["missing", "empty-folder", "text-file"])
def test_an_adapter_that_is_not_there_is_one_line(tmp_path, command, kind):
    adapter = tmp_path / "adapter"
    if kind == "empty-folder":
        adapter.mkdir()
    elif kind == "text-file":
        adapter = tmp_path / "notes.txt"
        adapter.write_text("not weights")
    out = atelier(*command, "--adapter", str(adapter), *(["--out", str(tmp_path / "out")] if command[0] == "generate" else []))
    expected = {"missing": "no such folder", "empty-folder": "holds no LoRA adapter", "text-file": "not a LoRA weights file"}[kind]
    assert out.returncode == 2 and expected in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "out").exists()
