"""`dtype: auto` (atelier.tools.dtype): bf16 on a CPU only where the CPU has fast bf16, float32
weights on a CPU always, and the same rule through the diffusers loader and the shapes pipeline.
Both kinds of CPU are simulated by monkeypatching `cpu_has_fast_bf16`."""

import warnings

import pytest
import torch

from atelier.tools import dtype as dtype_mod
from atelier.tools.diffusers_generator import DiffusersOptions, check_placement, torch_dtype
from atelier.tools.dtype import resolve_dtype
from atelier.worlds.shapes.model import load_generator
from atelier.worlds.shapes.model import load_pipeline


@pytest.fixture
def fast_cpu(monkeypatch):
    monkeypatch.setattr(dtype_mod, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(dtype_mod, "_warned_slow_bf16", False)


@pytest.fixture
def slow_cpu(monkeypatch):
    monkeypatch.setattr(dtype_mod, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(dtype_mod, "_warned_slow_bf16", False)


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline()


def test_cpu_has_fast_bf16_reports_torchs_checks(monkeypatch):
    assert isinstance(dtype_mod.cpu_has_fast_bf16(), bool)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert dtype_mod.cpu_has_fast_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert dtype_mod.cpu_has_fast_bf16() is True
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert dtype_mod.cpu_has_fast_bf16() is True
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert dtype_mod.cpu_has_fast_bf16() is False  # a torch without the private checks: "slow"


def test_auto_on_a_cpu_with_fast_bf16(fast_cpu):
    assert resolve_dtype("auto", "cpu", autocast=True) == "bfloat16"
    assert resolve_dtype("auto", "cpu", autocast=False) == "float32"


def test_auto_on_a_cpu_without_fast_bf16(slow_cpu):
    assert resolve_dtype("auto", "cpu", autocast=True) == "float32"
    assert resolve_dtype("auto", "cpu", autocast=False) == "float32"


@pytest.mark.parametrize("native_bf16, weights, autocast", [(True, "bfloat16", "bfloat16"), (False, "float16", "float32")])
def test_auto_on_cuda(monkeypatch, native_bf16, weights, autocast):
    monkeypatch.setattr(dtype_mod, "cuda_has_bf16", lambda: native_bf16)
    assert resolve_dtype("auto", "cuda", autocast=False) == weights
    assert resolve_dtype("auto", "cuda:0", autocast=True) == autocast


def test_explicit_dtypes_pass_through(fast_cpu):
    for name in ("float32", "bfloat16"):
        assert resolve_dtype(name, "cpu", autocast=True) == name
        assert resolve_dtype(name, "cpu", autocast=False) == name
    assert resolve_dtype("float16", "cuda", autocast=False) == "float16"


def test_forced_bf16_on_a_slow_cpu_warns_once_and_runs(slow_cpu):
    with pytest.warns(RuntimeWarning, match=r"16-22x slower than float32.*'auto' or 'float32'"):
        assert resolve_dtype("bfloat16", "cpu", autocast=True) == "bfloat16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second time: no warning
        assert resolve_dtype("bfloat16", "cpu", autocast=False) == "bfloat16"


def test_forced_bf16_on_a_fast_cpu_does_not_warn(fast_cpu):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_dtype("bfloat16", "cpu", autocast=True) == "bfloat16"


@pytest.mark.parametrize("autocast", [True, False])
def test_float16_on_a_cpu_is_refused_in_one_line(fast_cpu, autocast):
    with pytest.raises(ValueError, match="float16.*CUDA") as info:
        resolve_dtype("float16", "cpu", autocast=autocast)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="expected one of auto"):
        resolve_dtype("fp8", "cpu", autocast=autocast)


def test_diffusers_torch_dtype_auto_on_cpu_is_float32(fast_cpu):
    assert torch_dtype("auto", "cpu") is torch.float32
    assert check_placement("cpu", DiffusersOptions(dtype="auto")) is torch.float32
    assert torch_dtype("bfloat16", "cpu") is torch.bfloat16  # explicit dtypes unchanged
    with pytest.raises(ValueError, match="float16.*CUDA"):
        torch_dtype("float16", "cpu")


def test_shapes_pipeline_auto_follows_the_cpu(pipe, monkeypatch):
    try:
        monkeypatch.setattr(dtype_mod, "cpu_has_fast_bf16", lambda: True)
        pipe.set_compute_dtype("auto")
        assert pipe.compute_dtype == torch.bfloat16
        monkeypatch.setattr(dtype_mod, "cpu_has_fast_bf16", lambda: False)
        pipe.set_compute_dtype("auto")
        assert pipe.compute_dtype == torch.float32
        with pytest.raises(ValueError, match="float32 or bfloat16"):
            pipe.set_compute_dtype("float16")
    finally:
        pipe.set_compute_dtype("float32")


def test_shapes_pipeline_forced_bf16_on_a_slow_cpu_warns_and_samples(pipe, slow_cpu):
    try:
        with pytest.warns(RuntimeWarning, match="16-22x"):
            pipe.set_compute_dtype("bfloat16")
        assert pipe.compute_dtype == torch.bfloat16
        out = pipe(["a red circle"], seeds=[0], num_inference_steps=2, output_type="np").images
        assert out.shape == (1, 32, 32, 3)
    finally:
        pipe.set_compute_dtype("float32")


@pytest.mark.parametrize("fast, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_load_generator_shapes_with_auto(monkeypatch, fast, expected):
    monkeypatch.setattr(dtype_mod, "cpu_has_fast_bf16", lambda: fast)
    gen = load_generator("shapes", options=DiffusersOptions(dtype="auto"))
    assert gen.compute_dtype == expected
