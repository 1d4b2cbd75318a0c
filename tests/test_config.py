import subprocess
import sys
from pathlib import Path

import pytest

from atelier.config import Config, ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).parent.parent / "examples" / "shapes.yaml"


def test_example_config_is_valid():
    cfg = load_config(EXAMPLE)
    assert cfg.strategy == "ipr" and cfg.model == "shapes" and cfg.budget.rounds == 3


def test_every_field_has_a_description():
    def walk(schema, defs):
        for name, prop in schema.get("properties", {}).items():
            ref = prop.get("$ref") or (prop.get("allOf") or [{}])[0].get("$ref")
            assert prop.get("description"), f"field {name} has no description"
            if ref:
                walk(defs[ref.split("/")[-1]], defs)

    schema = Config.model_json_schema()
    walk(schema, schema["$defs"])


@pytest.mark.parametrize(
    "override, field",
    [
        ("budget.rounds=0", "budget.rounds"),
        ("train.bogus=1", "train.bogus"),
        ("strategy=magic", "strategy"),
        ("train.learning_rate=-1", "train.learning_rate"),
        ("agents.judge.backend=telepathy", "agents.judge.backend"),
        ("generation.candidate_guidance_scale=0.5", "generation.candidate_guidance_scale"),
    ],
)
def test_bad_fields_are_named_in_one_line(override, field):
    with pytest.raises(ConfigError) as e:
        load_config(EXAMPLE, [override])
    msg = str(e.value)
    assert msg.startswith(field) and "\n" not in msg


def test_unknown_top_level_key_and_missing_goal():
    with pytest.raises(ConfigError, match="^goal"):
        parse_config({})
    with pytest.raises(ConfigError, match="^colour_scheme"):
        parse_config({"goal": "counts", "colour_scheme": "dark"})


def test_overrides_are_typed():
    cfg = load_config(EXAMPLE, ["budget.rounds=5", "train.learning_rate=2e-4", "train.relabel=false"])
    assert cfg.budget.rounds == 5 and cfg.train.learning_rate == 2e-4 and cfg.train.relabel is False
    # null switches the candidates' own guidance off: they are sampled at guidance_scale
    assert load_config(EXAMPLE, ["generation.candidate_guidance_scale=null"]).generation.candidate_guidance_scale is None


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("goal: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_cli_config_check_exit_codes(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "atelier.cli", "config", "check", str(EXAMPLE)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "atelier.cli", "config", "check", str(EXAMPLE), "--set", "budget.rounds=0"],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "budget.rounds" in bad.stderr
    schema = subprocess.run([sys.executable, "-m", "atelier.cli", "config", "schema"], capture_output=True, text=True)
    assert schema.returncode == 0 and '"goal"' in schema.stdout


def test_only_the_base_candidates_get_the_candidate_guidance():
    gen = load_config(EXAMPLE, ["generation.guidance_scale=3", "generation.candidate_guidance_scale=6"]).generation
    assert gen.candidate_guidance(None) == 6.0
    assert gen.candidate_guidance("runs/x/round_001/adapter") == 3.0
    # an adapter at scale 0 is the base model
    assert gen.model_copy(update={"lora_scale": 0.0}).candidate_guidance("runs/x/round_001/adapter") == 6.0
    assert gen.model_copy(update={"candidate_guidance_scale": None}).candidate_guidance(None) == 3.0


def test_candidates_are_guided_apart_only_at_another_guidance():
    gen = load_config(EXAMPLE, ["generation.guidance_scale=3", "generation.candidate_guidance_scale=6"]).generation
    assert gen.candidates_guided_apart
    assert not gen.model_copy(update={"candidate_guidance_scale": 3.0}).candidates_guided_apart
    assert not gen.model_copy(update={"candidate_guidance_scale": None}).candidates_guided_apart
    assert load_config(EXAMPLE, ["budget.guided_base_reference=false"]).budget.guided_base_reference is False


def _folder(root: Path, name: str, file: str, content: dict) -> Path:
    import json

    folder = root / name
    folder.mkdir(parents=True)
    (folder / file).write_text(json.dumps(content))
    return folder


def _open_vocab(root: Path, **models) -> list[str]:
    """--set overrides for an open_vocab config whose models are folders under `root` (config
    files only: the check never loads weights), with `models` replacing some of them."""
    paths = {
        "model": _folder(root, "sd", "model_index.json", {"_class_name": "StableDiffusionPipeline"}),
        "detector.model": _folder(root, "owl", "config.json", {"model_type": "owlv2"}),
        "clip.model": _folder(root, "clip", "config.json", {"model_type": "clip"}),
        **models,
    }
    return ["goal=realistic elephants", "vocabulary.classes=[elephant, giraffe]", *(f"{k}={v}" for k, v in paths.items())]


def test_an_open_vocab_config_names_its_world_and_checks_folders_without_loading(tmp_path):
    cfg = load_config(EXAMPLE, _open_vocab(tmp_path / "a"))
    assert cfg.world_name == "open_vocab" and cfg.vocabulary.classes == ["elephant", "giraffe"]
    # A hub id cannot be checked offline: it passes here and fails at load time.
    assert load_config(EXAMPLE, _open_vocab(tmp_path / "b", model="org/sd15")).model == "org/sd15"


@pytest.mark.parametrize("field, content, message", [
    ("model", ("model_index.json", {"_class_name": "StableDiffusionImg2ImgPipeline"}),
     "is a StableDiffusionImg2ImgPipeline; the open_vocab world runs StableDiffusionPipeline or StableDiffusionXLPipeline"),
    ("model", ("config.json", {"model_type": "owlv2"}), "not a text-to-image model folder (no model_index.json)"),
    ("detector.model", ("config.json", {"model_type": "clip"}), "is a 'clip' model, not owlv2"),
    ("clip.model", ("model_index.json", {"_class_name": "StableDiffusionPipeline"}), "not a clip model folder (no config.json)"),
])
def test_config_check_says_in_one_line_when_a_folder_is_not_the_right_kind(tmp_path, field, content, message):
    overrides = _open_vocab(tmp_path, **{field: _folder(tmp_path, "wrong", *content)})
    with pytest.raises(ConfigError) as e:
        load_config(EXAMPLE, overrides)
    assert field in str(e.value) and message in str(e.value) and "\n" not in str(e.value)
    out = subprocess.run([sys.executable, "-m", "atelier.cli", "config", "check", str(EXAMPLE),
                          *(arg for o in overrides for arg in ("--set", o))], capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1


def test_a_missing_folder_and_a_builtin_planner_without_classes_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        load_config(EXAMPLE, _open_vocab(tmp_path / "a", model=tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="vocabulary.classes"):
        load_config(EXAMPLE, [o for o in _open_vocab(tmp_path / "b") if not o.startswith("vocabulary")])
    with pytest.raises(ConfigError, match="the shapes world has its own"):
        load_config(EXAMPLE, ["vocabulary.classes=[dog]"])


@pytest.mark.parametrize("name, strategy, world", [("shapes.yaml", "ipr", "shapes"),
                                                   ("sd15-ccsr-elephants.yaml", "ccsr", "open_vocab"),
                                                   ("sd15-ipr-spatial.yaml", "ipr", "open_vocab")])
def test_every_example_config_is_valid_and_takes_local_models(tmp_path, name, strategy, world):
    path = EXAMPLE.parent / name
    cfg = load_config(path, ["device=cpu"])  # the real-model examples name a GPU this machine lacks
    assert (cfg.strategy, cfg.world_name) == (strategy, world)
    if world == "open_vocab":
        local = _open_vocab(tmp_path)[2:]  # model, detector.model and clip.model as local folders
        assert load_config(path, [*local, "device=cpu"]).model == str(tmp_path / "sd")


def test_a_config_error_has_no_pydantic_prefix(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(EXAMPLE, ["vocabulary.classes=[dog]"])
    assert str(e.value).startswith("vocabulary: the shapes world") or str(e.value).startswith("the shapes world")
    assert "Value error" not in str(e.value)


@pytest.mark.parametrize("override, message", [
    (["decide.metric=clip_score"], "decide.metric 'clip_score': this world measures"),  # the shapes world has no CLIP
    (["decide.max_drop={clip_score: 1.0}"], "decide.max_drop: clip_score is not measured here"),
    (["budget.heldout_prompts=81"], "the shapes world's held-out split has 80 prompts"),
    (["device=cuda", "generation.dtype=float16"], "the shapes model samples in float32 or under bfloat16"),
])
def test_what_the_shapes_world_cannot_do_is_refused_before_a_run(override, message, monkeypatch):
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)  # as on a machine with one GPU
    with pytest.raises(ConfigError, match=message):
        load_config(EXAMPLE, override)


def test_what_an_open_vocab_run_would_reject_later_is_refused_now(tmp_path):
    base = _open_vocab(tmp_path)
    assert "clip_score" in load_config(EXAMPLE, base).world_metrics
    for override, message in [
        ("decide.metric=colour_accuracy", "decide.metric 'colour_accuracy': this world measures"),
        ("vocabulary.heldout_file=" + str(tmp_path / "missing.txt"), "no such file"),
        ("detector.dtype=float16", "detector.dtype 'float16' on device 'cpu'"),
        ("clip.dtype=float16", "clip.dtype 'float16' on device 'cpu'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(EXAMPLE, [*base, override])
    with pytest.raises(ConfigError, match="decide.metric 'clip_score'"):  # no CLIP scorer, no CLIP score
        load_config(EXAMPLE, [*base, "clip.model=null", "decide.metric=clip_score"])


@pytest.mark.parametrize("args, message", [
    (["--set", "budget.rounds=[unclosed"], "--set budget.rounds: not a YAML value"),
    (["--set", "device=banana"], "device: String should match pattern"),
    (["--set", "device=cuda:7"], "device 'cuda:7': this machine has"),
])
def test_bad_inputs_are_one_line_before_anything_runs(args, message):
    out = subprocess.run([sys.executable, "-m", "atelier.cli", "config", "check", str(EXAMPLE), *args],
                         capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_a_folder_given_as_the_config_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "atelier.cli", "run", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and "is a folder; give a config file" in out.stderr and "Traceback" not in out.stderr


def test_a_tracker_that_is_not_installed_or_unknown_fails_the_config_check(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec  # wandb absent here whether or not this environment has it
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"^logging\.report_to: .*wandb is not installed; pip install 'atelier\[wandb\]'"):
        parse_config({"goal": "left and right", "logging": {"report_to": ["wandb"]}})
    with pytest.raises(ConfigError, match=r"^logging\.report_to\.0: Input should be 'tensorboard' or 'wandb'"):
        parse_config({"goal": "left and right", "logging": {"report_to": ["mlflow"]}})
    assert parse_config({"goal": "left and right"}).logging.report_to is None
