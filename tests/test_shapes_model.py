"""The shipped shapes model: loads from its folder, samples deterministically, and the commands
around it (generate, shapes eval, train-base) work end to end."""

import json

import numpy as np
import pytest
import torch

from atelier.worlds.shapes.model import SHIPPED_MODEL_DIR, load_pipeline
from atelier.worlds.shapes.train_base import BaseRecipe, train_base
from loop_helpers import atelier


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline()


def test_shipped_model_generates_rgb_32(pipe):
    out = pipe(["a red circle", "a blue square above a green triangle"], seeds=[0, 1], num_inference_steps=3)
    assert [im.size for im in out.images] == [(32, 32), (32, 32)] and out.images[0].mode == "RGB"
    arr = pipe(["a red circle"], seeds=[0], num_inference_steps=3, output_type="np").images
    assert arr.shape == (1, 32, 32, 3) and arr.dtype == np.uint8


def test_sampling_is_seeded(pipe):
    a = pipe(["a red circle"] * 2, seeds=[5, 6], num_inference_steps=3, output_type="np").images
    b = pipe(["a red circle"] * 2, seeds=[5, 6], num_inference_steps=3, output_type="np").images
    assert np.array_equal(a, b) and not np.array_equal(a[0], a[1])


def test_bf16_autocast_samples_close_to_float32_and_float16_is_refused(pipe):
    prompts, seeds = ["a red circle to the left of a blue square"] * 2, [3, 4]
    full = pipe(prompts, seeds=seeds, output_type="np").images.astype(int)
    pipe.set_compute_dtype("bfloat16")
    try:
        half = pipe(prompts, seeds=seeds, output_type="np").images.astype(int)
    finally:
        pipe.set_compute_dtype("float32")
    # bf16 keeps 8 bits of mantissa: pixels move a little, the picture does not.
    assert not np.array_equal(full, half) and np.abs(full - half).mean() < 2
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        pipe.set_compute_dtype("float16")


def test_model_card_and_size():
    card = json.loads((SHIPPED_MODEL_DIR / "recipe.json").read_text())
    assert {"recipe", "steps_done", "wall_time_s", "command"} <= set(card)
    assert (SHIPPED_MODEL_DIR / "README.md").exists()
    size = sum(p.stat().st_size for p in SHIPPED_MODEL_DIR.rglob("*") if p.is_file())
    assert size <= 20 * 2**20, size


def test_generate_cli_writes_pngs_and_metadata(tmp_path):
    out = atelier("generate", "--model", "shapes", "--prompt", "a red circle to the left of a blue triangle",
                  "--n", "2", "--seed", "3", "--steps", "3", "--out", str(tmp_path / "gen"))
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "gen" / "metadata.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == [3, 4]
    for r in rows:
        assert {"prompt", "seed", "model", "adapter", "scale", "file"} <= set(r)
        assert (tmp_path / "gen" / r["file"]).exists()


def test_generate_cli_rejects_words_outside_the_world(tmp_path):
    out = atelier("generate", "--prompt", "a purple elephant", "--out", str(tmp_path / "gen"))
    assert out.returncode == 2 and "purple" in out.stderr and "elephant" in out.stderr
    assert out.stderr.strip().count("\n") == 0


def test_eval_cli_json_keys():
    out = atelier("shapes", "eval", "--n", "1", "--seed", "2", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.loads(out.stdout)
    for key in ("object_accuracy", "count_accuracy", "relation_accuracy_cond", "relation_accuracy_uncond",
                "visor_1", "visor_2", "visor_3", "visor_4"):
        m = metrics[key]
        assert set(m) >= {"value", "ci95"}
        if m["value"] is not None:
            assert 0 <= m["ci95"][0] <= m["value"] <= m["ci95"][1] <= 1
    assert metrics["n_images"] == 4 and metrics["seed"] == 2
    assert atelier("shapes", "eval", "--n", "0").returncode == 2
    bad = atelier("shapes", "eval", "--images-per-prompt", "17")
    assert bad.returncode == 2 and "--images-per-prompt" in bad.stderr


def test_eval_cli_images_per_prompt_and_bf16():
    out = atelier("shapes", "eval", "--n", "1", "--images-per-prompt", "2", "--dtype", "bfloat16", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.loads(out.stdout)
    assert metrics["n_images"] == 2 and metrics["dtype"] == "bfloat16"


def test_train_base_writes_a_loadable_pipeline_and_card(tmp_path):
    out = train_base(tmp_path / "m", BaseRecipe(steps=2, batch_size=4, warmup=1, save_every=1))
    card = json.loads((out / "recipe.json").read_text())
    assert card["steps_done"] == 2 and card["recipe"]["batch_size"] == 4
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 2
    again = load_pipeline(out)
    assert again(["a red circle"], seeds=[0], num_inference_steps=2).images[0].size == (32, 32)


def test_train_base_continues_from_a_model_folder_and_records_it(tmp_path):
    first = train_base(tmp_path / "a", BaseRecipe(steps=1, batch_size=2, warmup=1))
    second = train_base(tmp_path / "b", BaseRecipe(seed=1, steps=1, batch_size=2, warmup=1, lr=1e-2, init_from=str(first)))
    card = json.loads((second / "recipe.json").read_text())
    assert card["recipe"]["init_from"] == str(first)
    assert card["continued_from"]["recipe"]["seed"] == 0 and card["continued_from"]["steps_done"] == 1
    a, b = load_pipeline(first).unet.state_dict(), load_pipeline(second).unet.state_dict()
    # One step from `first` moves the weights a little; a fresh init (another seed) would be far away.
    key = "conv_in.weight"
    assert not torch.equal(a[key], b[key]) and (a[key] - b[key]).abs().max() < 0.1


def test_schedule_steps_cuts_a_run_part_way_down_its_cosine():
    from atelier.worlds.shapes.train_base import _lr_factor

    full = BaseRecipe(steps=1000, warmup=100)
    cut = BaseRecipe(steps=400, warmup=100, schedule_steps=1000)
    assert [_lr_factor(s, cut) for s in range(400)] == [_lr_factor(s, full) for s in range(400)]
    assert _lr_factor(399, cut) > 0.5 and _lr_factor(999, full) == pytest.approx(0.1, abs=1e-5)
    assert _lr_factor(5000, full) == pytest.approx(0.1)  # past the end it stays at the floor


def test_train_base_cli_rejects_a_bad_recipe_in_one_line(tmp_path):
    bad = tmp_path / "recipe.json"
    bad.write_text('{"recipe": {"steps": 0}}')
    proc = atelier("shapes", "train-base", "--out", str(tmp_path / "m"), "--recipe", str(bad))
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "atelier: error: recipe field steps: Input should be greater than or equal to 1")
    assert not (tmp_path / "m").exists()


def test_a_layout_pool_reuses_shared_layout_seeds(monkeypatch):
    import numpy as np

    import atelier.worlds.shapes.train_base as tb

    seeds = []
    real_render = tb.render
    monkeypatch.setattr(tb, "render", lambda scene, seed, size: seeds.append(seed) or real_render(scene, seed, size))
    tb._batch(np.random.default_rng(0), BaseRecipe(batch_size=32, layout_pool=3))
    assert set(seeds) <= {0, 1, 2} and len(set(seeds)) > 1
    seeds.clear()
    tb._batch(np.random.default_rng(0), BaseRecipe(batch_size=8))
    assert len(set(seeds)) == 8  # fresh layouts by default


def test_min_timestep_bounds_the_training_timesteps_and_keeps_the_default_draw():
    import torch

    from atelier.worlds.shapes.model import training_scheduler
    from atelier.tools.diffusion_loss import sample_noise_and_timesteps

    x0 = torch.zeros(64, 3, 8, 8)
    _, late = sample_noise_and_timesteps(training_scheduler(), x0, torch.Generator().manual_seed(0), min_timestep=975)
    assert late.min() >= 975 and late.max() <= 999
    _, default = sample_noise_and_timesteps(training_scheduler(), x0, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    torch.randn(x0.shape, generator=g)
    assert torch.equal(default, torch.randint(0, 1000, (64,), generator=g))


def test_a_drill_puts_related_scenes_at_pooled_layouts_first_and_leaves_the_rest_as_the_mix(monkeypatch):
    import numpy as np

    import atelier.worlds.shapes.train_base as tb
    from atelier.worlds.shapes.train_base import RelationDrill

    drawn = []
    real_render = tb.render
    monkeypatch.setattr(tb, "render", lambda scene, seed, size: drawn.append((scene, seed)) or real_render(scene, seed, size))
    recipe = BaseRecipe(batch_size=16, caption_dropout=0.0, drill=RelationDrill(share=0.25, layout_pool=2))
    _, texts = tb._batch(np.random.default_rng(0), recipe)
    drill, rest = drawn[:4], drawn[4:]
    assert all(scene.relation is not None and seed in (0, 1) for scene, seed in drill)
    assert len({seed for _, seed in rest}) == 12  # the rest keeps fresh layouts
    assert any(scene.relation is None for scene, _ in rest)  # and the recipe's own mix
    assert all(" of " in t or " above " in t or " below " in t for t in texts[:4])


def test_a_drill_trains_its_share_on_late_timesteps_only(monkeypatch, tmp_path):
    import atelier.worlds.shapes.train_base as tb
    from atelier.worlds.shapes.train_base import RelationDrill

    calls = []
    real_loss = tb.per_sample_loss
    monkeypatch.setattr(tb, "per_sample_loss", lambda unet, sch, x, emb, gen, min_timestep=0:
                        calls.append((x.shape[0], min_timestep)) or real_loss(unet, sch, x, emb, gen, min_timestep=min_timestep))
    tb.train_base(tmp_path / "m", BaseRecipe(steps=1, batch_size=8, image_size=16, drill=RelationDrill(share=0.25)))
    assert calls == [(6, 0), (2, 975)]
    assert "relation drill: {'share': 0.25" in (tmp_path / "m" / "README.md").read_text()
