"""An adapter loads whole or not at all (unless asked): diffusers drops LoRA keys that match no
module of the model without a word, and the pipeline would sample with the rest. Checked on the
shipped shapes model, a tiny SD 1.5 and a tiny SDXL, in both key namings atelier writes
(diffusers' lora.down/lora.up, peft's lora_A/lora_B), with text-encoder keys, through every
path that loads an adapter (the loop's LoadedGenerator, load_generator, the trainers' continue)."""

import copy
import re
import warnings

import numpy as np
import pytest
import safetensors.torch
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors import safe_open

from atelier.tools.diffusers_generator import load_adapter, load_diffusers_pipeline
from atelier.tools.lora import (
    ADAPTER_WEIGHTS,
    TEXT_ENCODER_PROJECTIONS,
    add_lora,
    attach_trainable_lora,
    lora_parameters,
    load_adapter_into,
    restored_after_training,
    write_adapter,
)
from atelier.runs import RunError
from atelier.worlds.generator import LoadedGenerator
from atelier.worlds.shapes.model import load_generator, load_pipeline

ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
WITH_CONVS = (*ATTENTION, "conv1", "conv2")  # beyond attention: the file keeps peft's lora_A/lora_B names
N_RENAMED = 12
REFUSED = re.compile(r"^adapter \S+: (\d+) of (\d+) tensors match no module of this model: ")


def _random_adapter(modules: dict, targets: dict, out, loader=StableDiffusionPipeline):
    """An adapter with random non-zero weights on `modules` ({"unet": unet, "text_encoder": ...}),
    `targets` per component, written as atelier writes adapters. The modules keep the LoRA layers:
    pass a pipeline's that is thrown away."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        for name, module in modules.items():
            for p in add_lora(module, 2, target_modules=targets[name], adapter_name="default"):
                torch.nn.init.normal_(p, std=0.1)
    text_encoders = {n: m for n, m in modules.items() if n != "unet"}
    out.mkdir(parents=True)
    write_adapter(modules["unet"], out, {}, text_encoders=text_encoders, loader=loader)
    return out


def _tensors(adapter):
    with safe_open(adapter / ADAPTER_WEIGHTS, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _rewritten(adapter, out, rename, extra: bool = True, only: str = "unet."):
    """A copy of `adapter` with N_RENAMED of its `only`-prefixed keys renamed by `rename`: added
    beside the originals (`extra`) or in their place. Its metadata (peft's LoraConfig) is kept."""
    tensors, metadata = _tensors(adapter)
    picked = [k for k in sorted(tensors) if k.startswith(only)][:N_RENAMED]
    renamed = {rename(k): tensors[k].clone() for k in picked}
    if not extra:
        tensors = {k: v for k, v in tensors.items() if k not in picked}
    out.mkdir(parents=True)
    safetensors.torch.save_file({**tensors, **renamed}, out / ADAPTER_WEIGHTS, metadata=metadata)
    return out, sorted(renamed), len(tensors) + len(renamed)


def _unknown_block(key: str) -> str:
    return key.replace("unet.", "unet.nowhere_", 1)


def _sample(pipe) -> np.ndarray:
    return pipe(["a red circle left of a blue square"], seeds=[3], num_inference_steps=3, output_type="np").images


def _check_refusal(error: pytest.ExceptionInfo, renamed: list[str], total: int) -> None:
    message = str(error.value)
    assert "\n" not in message
    match = REFUSED.match(message)
    assert match and (int(match.group(1)), int(match.group(2))) == (len(renamed), total), message
    named = [k for k in renamed if k in message]
    assert len(named) == 5, message  # up to 5 of the keys, and how many more
    assert f"({len(renamed) - 5} more)" in message


# --- the shipped shapes model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_adapters(tmp_path_factory):
    """Whole adapters for the shipped model, in both namings, one with its text encoder."""
    tmp = tmp_path_factory.mktemp("shapes_adapters")
    pipes = [load_pipeline() for _ in range(3)]
    adapters = {
        "lora.down": _random_adapter({"unet": pipes[0].unet}, {"unet": ATTENTION}, tmp / "attention"),
        "lora_A": _random_adapter({"unet": pipes[1].unet}, {"unet": WITH_CONVS}, tmp / "convs"),
        "text_encoder": _random_adapter({"unet": pipes[2].unet, "text_encoder": pipes[2].text_encoder},
                                        {"unet": ATTENTION, "text_encoder": TEXT_ENCODER_PROJECTIONS}, tmp / "te"),
    }
    keys = {name: list(_tensors(a)[0]) for name, a in adapters.items()}
    assert any(".lora.down." in k for k in keys["lora.down"]) and not any(".lora_A." in k for k in keys["lora.down"])
    assert any(".lora_A." in k for k in keys["lora_A"]) and not any(".lora.down." in k for k in keys["lora_A"])
    assert any(k.startswith("text_encoder.") for k in keys["text_encoder"])
    return adapters


@pytest.mark.parametrize("naming", ["lora.down", "lora_A", "text_encoder"])
def test_a_whole_adapter_loads_without_a_word(shapes_adapters, naming):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pipe = load_generator("shapes", adapter=shapes_adapters[naming])
    tensors, _ = _tensors(shapes_adapters[naming])
    loaded = sum(len(lora_parameters(m, "atelier")) for m in (pipe.unet, pipe.text_encoder))
    assert loaded == len(tensors)


@pytest.mark.parametrize("naming", ["lora.down", "lora_A"])
def test_extra_keys_that_match_nothing_are_refused_by_name(shapes_adapters, naming, tmp_path):
    partial, renamed, total = _rewritten(shapes_adapters[naming], tmp_path / "partial", _unknown_block)
    with pytest.raises(ValueError) as error:
        load_generator("shapes", adapter=partial)
    _check_refusal(error, renamed, total)


def test_keys_renamed_in_place_are_refused(shapes_adapters, tmp_path):
    """The user report's case: a file of N tensors of which 12 name modules this model lacks."""
    partial, renamed, total = _rewritten(shapes_adapters["lora.down"], tmp_path / "in_place", _unknown_block,
                                         extra=False)
    with pytest.raises(ValueError) as error:
        load_generator("shapes", adapter=partial)
    _check_refusal(error, renamed, total)


def test_a_second_text_encoders_keys_on_a_one_encoder_model_are_refused(shapes_adapters, tmp_path):
    partial, renamed, total = _rewritten(shapes_adapters["text_encoder"], tmp_path / "te2",
                                         lambda k: k.replace("text_encoder.", "text_encoder_2.", 1), only="text_encoder.")
    with pytest.raises(ValueError) as error:
        load_generator("shapes", adapter=partial)
    _check_refusal(error, renamed, total)
    assert all(k.startswith("text_encoder_2.") for k in renamed)


def test_allow_partial_warns_and_loads_the_rest(shapes_adapters, tmp_path):
    whole = shapes_adapters["lora.down"]
    partial, renamed, total = _rewritten(whole, tmp_path / "partial", _unknown_block)
    pipe = load_pipeline()
    with pytest.warns(UserWarning, match=rf"{N_RENAMED} of {total} tensors match no module of this model: "
                                         + re.escape(renamed[0])):
        load_adapter(pipe, partial, allow_partial=True)
    assert len(lora_parameters(pipe.unet, "atelier")) == total - N_RENAMED
    # What loaded is the whole adapter: the same images.
    reference = load_generator("shapes", adapter=whole)
    np.testing.assert_array_equal(_sample(pipe), _sample(reference))


def test_the_loops_generator_refuses_and_stays_usable(shapes_adapters, tmp_path):
    """LoadedGenerator (the loop's way to load adapters) gets the check by default; a refused
    adapter leaves the pipeline as it was, so the next adapter (or the base) still loads."""
    whole = shapes_adapters["lora.down"]
    partial, _, _ = _rewritten(whole, tmp_path / "partial", _unknown_block)
    generator = LoadedGenerator(load_pipeline(), steps=3, batch_size=4)
    base = generator.sample(["a red circle"], [3], 3.0, None)
    with pytest.raises(RunError, match="match no module of this model"):  # the loop's one-line error
        generator.sample(["a red circle"], [3], 3.0, partial)
    assert generator.adapter is None and not getattr(generator.pipe.unet, "peft_config", {}).get("atelier")
    np.testing.assert_array_equal(np.asarray(generator.sample(["a red circle"], [3], 3.0, None)[0]), np.asarray(base[0]))
    generator.use(whole)
    assert generator.adapter == str(whole)


@pytest.mark.parametrize("damage", ["truncated", "zeros", "text"])
def test_a_damaged_adapter_is_one_line_and_the_generator_stays_usable(shapes_adapters, tmp_path, damage):
    """A weights file cut short by a full disk, zeroed, or overwritten: a RunError naming the
    adapter (the CLI prints it in one line), the base unchanged."""
    whole = shapes_adapters["lora.down"]
    broken = tmp_path / "broken"
    broken.mkdir()
    data = (whole / ADAPTER_WEIGHTS).read_bytes()
    (broken / ADAPTER_WEIGHTS).write_bytes({"truncated": data[: len(data) // 2], "zeros": bytes(len(data)),
                                            "text": b"not a safetensors file"}[damage])
    generator = LoadedGenerator(load_pipeline(), steps=3, batch_size=4)
    base = generator.sample(["a red circle"], [3], 3.0, None)
    with pytest.raises(RunError) as error:
        generator.sample(["a red circle"], [3], 3.0, broken)
    assert str(broken) in str(error.value) and "damaged" in str(error.value) and "\n" not in str(error.value)
    assert generator.adapter is None
    np.testing.assert_array_equal(np.asarray(generator.sample(["a red circle"], [3], 3.0, None)[0]), np.asarray(base[0]))


def test_continuing_from_a_partial_adapter_is_refused(shapes_adapters, tmp_path):
    """The trainers' continue paths: training on from part of an adapter would save only that part."""
    partial, _, _ = _rewritten(shapes_adapters["lora.down"], tmp_path / "partial", _unknown_block)
    pipe = load_pipeline()
    with pytest.raises(ValueError, match=r"match no module of this UNet: unet\.nowhere_"):
        load_adapter_into(copy.deepcopy(pipe.unet), partial, "sft")
    assert len(load_adapter_into(copy.deepcopy(pipe.unet), shapes_adapters["lora.down"], "sft")) > 0
    with pytest.raises(ValueError, match=r"match no module of this model: unet\.nowhere_"):
        with restored_after_training(pipe):
            attach_trainable_lora(pipe, 2, None, ATTENTION, "latent_sft", seed=0, init_adapter=partial)


# --- tiny SD 1.5 and SDXL (diffusers pipelines, loaded with from_pretrained) -------------------


def test_tiny_sd15_whole_adapter_loads_and_extra_keys_are_refused(tiny_sd15, tiny_sd15_lora, tmp_path):
    tensors, _ = _tensors(tiny_sd15_lora)
    pipe = load_diffusers_pipeline(tiny_sd15, adapter=tiny_sd15_lora)
    assert len(lora_parameters(pipe.unet, "atelier")) == len(tensors)
    partial, renamed, total = _rewritten(tiny_sd15_lora, tmp_path / "partial", _unknown_block)
    with pytest.raises(ValueError) as error:
        load_diffusers_pipeline(tiny_sd15, adapter=partial)
    _check_refusal(error, renamed, total)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd15)
    with pytest.warns(UserWarning, match=rf"{N_RENAMED} of {total} tensors"):
        load_adapter(pipe, partial, allow_partial=True)
    assert len(lora_parameters(pipe.unet, "atelier")) == len(tensors)


@pytest.fixture(scope="module")
def tiny_sdxl_adapter(tiny_sdxl, tmp_path_factory):
    """An adapter on the tiny SDXL's UNet and both its text encoders."""
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl)
    modules = {"unet": pipe.unet, "text_encoder": pipe.text_encoder, "text_encoder_2": pipe.text_encoder_2}
    targets = {"unet": ATTENTION, "text_encoder": TEXT_ENCODER_PROJECTIONS, "text_encoder_2": TEXT_ENCODER_PROJECTIONS}
    adapter = _random_adapter(modules, targets, tmp_path_factory.mktemp("sdxl") / "adapter",
                              loader=StableDiffusionXLPipeline)
    assert any(k.startswith("text_encoder_2.") for k in _tensors(adapter)[0])
    return adapter


def test_tiny_sdxl_adapter_on_both_text_encoders_loads_whole(tiny_sdxl, tiny_sdxl_adapter):
    pipe = load_diffusers_pipeline(tiny_sdxl, adapter=tiny_sdxl_adapter)
    loaded = sum(len(lora_parameters(m, "atelier")) for m in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2))
    assert loaded == len(_tensors(tiny_sdxl_adapter)[0])


def test_tiny_sdxl_second_text_encoder_keys_that_match_nothing_are_refused(tiny_sdxl, tiny_sdxl_adapter, tmp_path):
    partial, renamed, total = _rewritten(
        tiny_sdxl_adapter, tmp_path / "partial", lambda k: k.replace(".layers.", ".nowhere.", 1), only="text_encoder_2.")
    with pytest.raises(ValueError) as error:
        load_diffusers_pipeline(tiny_sdxl, adapter=partial)
    _check_refusal(error, renamed, total)
