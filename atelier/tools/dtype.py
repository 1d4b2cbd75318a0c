"""The compute dtype, chosen from what the device reports: `resolve_dtype("auto", ...)`.

Why a choice at all: on a CPU, bfloat16 is fast only where the CPU has bf16 instructions
(AVX512-BF16, or AMX tiles). Elsewhere torch emulates it, and on a 2-core AMD EPYC without
AVX512-BF16 a bf16 matmul measured 22x slower than float32 and a conv under bf16 autocast 16x
slower: the demo's baseline ran 12 minutes without finishing. So `auto` takes bf16 on a CPU only
where it is fast, and an explicit `bfloat16` on a CPU without it still runs, with one warning.

The rule (`resolve_dtype`):

| device | `autocast=False` (diffusers: weights in that dtype) | `autocast=True` (shapes: float32 weights, bf16 autocast) |
|---|---|---|
| CUDA | bfloat16 if the GPU has native bf16, else float16 | bfloat16 if the GPU has native bf16, else float32 |
| CPU  | float32 (half-precision weights on a CPU are slow or broken) | bfloat16 if `cpu_has_fast_bf16()`, else float32 |
| other (mps, ...) | float32 | float32 |

Autocast never resolves to float16: float16 autocast without a gradient scaler underflows in
training, and the shapes model only knows bf16 autocast. Explicit names pass through unchanged,
except float16 on a CPU, which is an error as before.
"""

from __future__ import annotations

import warnings

import torch

AUTO = "auto"
DTYPE_NAMES = ("float32", "float16", "bfloat16")
CPU_BF16_SLOWDOWN = "16-22x"  # measured on a 2-core AMD EPYC without AVX512-BF16: conv under autocast 16x, matmul 22x

_warned_slow_bf16 = False  # the slow-bf16 warning is given once per process (a loop loads models many times)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bfloat16 natively (AVX512-BF16 or AMX tiles), as torch reports it.

    Without either, torch emulates bf16 and it is 16-22x slower than float32 (see the module
    docstring). The checks are private torch functions, so a torch without them counts as "no".
    Tests monkeypatch this function to simulate either kind of CPU."""
    for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, check, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # a private check that fails means "unknown": treat as slow
            continue
    return False


def cuda_has_bf16() -> bool:
    """Whether the CUDA device computes bfloat16 natively (Ampere and later), not by emulation."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # an older torch without `including_emulation`
        return bool(torch.cuda.is_bf16_supported())
    except Exception:  # no usable CUDA: the device will fail later, where it is placed
        return False


def resolve_dtype(name: str, device: str, *, autocast: bool) -> str:
    """The compute dtype for `name` ("auto", "float32", "float16" or "bfloat16") on `device`:
    "float32", "bfloat16" or "float16".

    `autocast=True` is for models whose weights stay float32 and run under bf16 autocast (the
    shapes model); `autocast=False` for models whose weights are cast to the dtype (diffusers).

    `auto`: on CUDA, bfloat16 where the GPU has native bf16, else float16 for weights and float32
    for autocast (float16 autocast without a grad scaler is not used); on a CPU, float32 for
    weights always, and for autocast bfloat16 only where `cpu_has_fast_bf16()` (AVX512-BF16 or
    AMX), since elsewhere bf16 measured 16-22x slower than float32; on any other device float32.

    An explicit name is returned as is. "bfloat16" on a CPU without fast bf16 runs, with a
    one-time warning; "float16" on a CPU raises ValueError (float16 needs a CUDA device)."""
    if name != AUTO and name not in DTYPE_NAMES:
        raise ValueError(f"dtype {name!r}: expected one of {AUTO}, {', '.join(DTYPE_NAMES)}")
    kind = torch.device(device).type
    if name == AUTO:
        if kind == "cuda":
            if cuda_has_bf16():
                return "bfloat16"
            return "float32" if autocast else "float16"
        if kind == "cpu" and autocast and cpu_has_fast_bf16():
            return "bfloat16"
        return "float32"
    if kind == "cpu":
        if name == "float16":
            raise ValueError(f"dtype 'float16' on device {device!r}: float16 needs a CUDA device; use float32 on a CPU")
        if name == "bfloat16" and not cpu_has_fast_bf16():
            _warn_slow_bf16(device)
    return name


def _warn_slow_bf16(device: str) -> None:
    global _warned_slow_bf16
    if _warned_slow_bf16:
        return
    _warned_slow_bf16 = True
    warnings.warn(
        f"dtype 'bfloat16' on device {device!r}: this CPU has no AVX512-BF16 or AMX, so bf16 runs emulated, "
        f"about {CPU_BF16_SLOWDOWN} slower than float32; dtype 'auto' or 'float32' is faster here",
        RuntimeWarning,
        stacklevel=3,
    )


def train_in_bf16(setting: bool | None, device: str) -> bool:
    """Whether a LoRA trainer runs under bf16 autocast: `setting` when given; None = on a CUDA
    device with native bf16 only. On CPUs bf16 training measured 1.3x slower than float32 even
    with AVX512-BF16 (benchmarks/cpu_dtype.py), and float32 there is exact."""
    if setting is not None:
        return setting
    return torch.device(device).type == "cuda" and cuda_has_bf16()
