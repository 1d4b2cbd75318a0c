"""LoRA adapters on a UNet2DConditionModel, through peft, saved in the diffusers LoRA format.

An adapter directory holds
- `pytorch_lora_weights.safetensors`: the weights as `StableDiffusionPipeline.save_lora_weights`
  writes them (keys `unet.<module>.lora.down/up.weight`, peft's LoraConfig in the safetensors
  metadata so rank and alpha survive loading), readable by any pipeline's `load_lora_weights`;
- `atelier_adapter.json`: what atelier needs to know about it (rank, alpha, target modules,
  sha256 of the weights, plus whatever the caller passes: base model, steps, ...). It is written
  last, and the whole directory appears at once (staged, then renamed), so its presence means
  the adapter is complete.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import safetensors.torch
import torch
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
from diffusers.utils.state_dict_utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from atelier.atomic import staged_dir

ADAPTER_WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
ADAPTER_METADATA = "atelier_adapter.json"
ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
UNET_PREFIX = StableDiffusionLoraLoaderMixin.unet_name  # "unet"


def lora_parameters(unet: torch.nn.Module, adapter_name: str) -> list[torch.nn.Parameter]:
    """The LoRA matrices of one adapter, in module order."""
    marker = f".{adapter_name}."
    return [p for n, p in unet.named_parameters() if "lora_" in n and marker in n]


def add_lora(
    unet,
    rank: int,
    alpha: float | None = None,
    target_modules: Sequence[str] = ATTENTION_PROJECTIONS,
    adapter_name: str = "default",
) -> list[torch.nn.Parameter]:
    """Freeze the UNet and add a trainable LoRA (B starts at zero, so the output is unchanged).
    `alpha` defaults to `rank` (scale 1). Returns the LoRA parameters, for the optimizer."""
    config = LoraConfig(
        r=rank,
        lora_alpha=rank if alpha is None else alpha,
        target_modules=list(target_modules),
        init_lora_weights=True,
    )
    unet.requires_grad_(False)
    unet.add_adapter(config, adapter_name=adapter_name)
    params = lora_parameters(unet, adapter_name)
    for p in params:
        p.requires_grad_(True)
    return params


def load_adapter_into(unet, adapter_dir: str | Path, adapter_name: str) -> list[torch.nn.Parameter]:
    """Load a saved adapter into `unet` as `adapter_name`, trainable (the rest frozen), to continue
    training from it. Returns its LoRA parameters."""
    weights = Path(adapter_dir) / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"no LoRA weights at {weights}")
    unet.requires_grad_(False)
    unet.load_lora_adapter(str(adapter_dir), weight_name=ADAPTER_WEIGHTS, prefix=UNET_PREFIX, adapter_name=adapter_name)
    unet.set_adapter(adapter_name)
    params = lora_parameters(unet, adapter_name)
    if not params:
        raise ValueError(f"{weights} holds no UNet LoRA weights (keys must start with '{UNET_PREFIX}.')")
    # diffusers 0.42 leaves loaded LoRA weights trainable, but does not promise it.
    for p in params:
        p.requires_grad_(True)
    return params


def _lora_config_metadata(config: LoraConfig) -> dict:
    """peft's LoraConfig as JSON-ready data; sets become sorted lists, so the bytes never depend
    on the interpreter's string hashing."""
    return {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}


def _save_with_one_metadata_key(lora_metadata: dict):
    """A `save_function` for `save_lora_weights` that stores only diffusers' LoRA-config key.

    safetensors writes `__metadata__` in a random order (a Rust HashMap; safetensors issue #584),
    so with diffusers' two keys ("format" and the LoRA config) two saves of the same weights
    differ in their bytes. One key keeps the file byte-reproducible; diffusers reads only this one.
    """
    packed = {f"{UNET_PREFIX}.{k}": v for k, v in lora_metadata.items()}
    text = json.dumps(packed, indent=2, sort_keys=True)

    def save(weights: dict[str, torch.Tensor], filename: str) -> None:
        safetensors.torch.save_file(weights, filename, metadata={LORA_ADAPTER_METADATA_KEY: text})

    return save


def adapter_hash(adapter_dir: str | Path) -> str:
    """sha256 of the adapter's safetensors file."""
    digest = hashlib.sha256()
    with open(Path(adapter_dir) / ADAPTER_WEIGHTS, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_adapter(unet, directory: str | Path, metadata: dict, adapter_name: str = "default") -> dict:
    """Write the adapter's weights and metadata into an existing directory (not atomic: use
    `save_adapter`, or write into a `staged_dir`). Returns the metadata written."""
    directory = Path(directory)
    config = unet.peft_config[adapter_name]
    own = {
        "format": "diffusers-lora",
        "weights": ADAPTER_WEIGHTS,
        "rank": config.r,
        "alpha": config.lora_alpha,
        "target_modules": sorted(config.target_modules),
    }
    if clash := sorted((set(own) | {"sha256"}) & set(metadata)):
        raise ValueError(f"metadata keys {clash} are set by save_adapter itself")
    peft_state = get_peft_model_state_dict(unet, adapter_name=adapter_name)
    state = {
        k: v.detach().to("cpu", torch.float32).contiguous()
        for k, v in convert_state_dict_to_diffusers(peft_state).items()
    }
    StableDiffusionLoraLoaderMixin.save_lora_weights(
        save_directory=directory,
        unet_lora_layers=state,
        weight_name=ADAPTER_WEIGHTS,
        save_function=_save_with_one_metadata_key(_lora_config_metadata(config)),
    )
    written = {**own, "sha256": adapter_hash(directory), **metadata}
    (directory / ADAPTER_METADATA).write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")
    return written


def save_adapter(unet, out_dir: str | Path, metadata: dict, adapter_name: str = "default") -> dict:
    """Save the adapter to `out_dir`, which must not exist yet; it appears complete or not at all."""
    with staged_dir(out_dir) as stage:
        return write_adapter(unet, stage, metadata, adapter_name)


def read_adapter_metadata(adapter_dir: str | Path) -> dict | None:
    """The adapter's `atelier_adapter.json`, or None when the directory holds no finished adapter."""
    path = Path(adapter_dir) / ADAPTER_METADATA
    return json.loads(path.read_text()) if path.is_file() else None
