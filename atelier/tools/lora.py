"""LoRA adapters on a UNet2DConditionModel, through peft, saved in the diffusers LoRA format.

An adapter directory holds
- `pytorch_lora_weights.safetensors`: the weights as `StableDiffusionPipeline.save_lora_weights`
  writes them (keys `unet.<module>.lora.down/up.weight`, or peft's `lora_A/lora_B` names when
  targets go beyond the attention projections; peft's LoraConfig in the safetensors metadata so
  rank and alpha survive loading), readable by any pipeline's `load_lora_weights`;
- `atelier_adapter.json`: what atelier needs to know about it (rank, alpha, target modules,
  sha256 of the weights, plus whatever the caller passes: base model, steps, ...). It is written
  last, and the whole directory appears at once (staged, then renamed), so its presence means
  the adapter is complete.

When text encoders carry the adapter too (latent SFT with `train_text_encoder`), their weights
sit in the same file under `text_encoder.` / `text_encoder_2.`, as diffusers' training scripts
save them.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
TEXT_ENCODER_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")  # CLIP attention
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")  # pipeline attributes, also the key prefixes
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
    """Freeze the UNet (or a transformers text encoder) and add a trainable LoRA (B starts at
    zero, so the output is unchanged). `alpha` defaults to `rank` (scale 1). Returns the LoRA
    parameters, for the optimizer."""
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


# --- checking that an adapter loaded whole ----------------------------------------------------
# diffusers loads the LoRA keys that match a module and drops the rest with at most a log line
# (which atelier turns down while loading): an adapter whose keys name modules this model lacks
# would sample with part of its weights. Every load in atelier is checked against the file.

# The end of a LoRA matrix's key in each naming diffusers reads: its own (`lora.down`/`lora.up`,
# text encoders `lora_linear_layer.down`/`.up`), peft's (`lora_A`/`lora_B`, embeddings
# `lora_embedding_A`/`_B`), kohya's (`lora_down`/`lora_up`) and the old attention processors'
# (`to_q_lora.down`). What comes before it is the module's path.
_LORA_MATRIX = re.compile(
    r"(?:\.lora[._](?:down|up)|_lora\.(?:down|up)|\.lora_linear_layer\.(?:down|up)|\.lora_[AB]|\.lora_embedding_[AB])"
    r"(?:\.weight)?$"
)


CONTINUE_REFUSAL = "training on from part of it would save only that part"


def _injected_modules(modules: dict[str, torch.nn.Module], adapter_name: str) -> set[str]:
    """"<component>.<module path>" of every module carrying `adapter_name`'s LoRA weights."""
    injected = re.compile(rf"^(.+)\.lora_(?:A|B|embedding_A|embedding_B)\.{re.escape(adapter_name)}(?:\.weight)?$")
    return {f"{component}.{m.group(1)}" for component, module in modules.items()
            for name, _ in module.named_parameters() if (m := injected.match(name))}


def unloaded_lora_keys(lora_keys: Sequence[str], modules: dict[str, torch.nn.Module], adapter_name: str) -> list[str]:
    """The keys among `lora_keys` (LoRA matrices as diffusers' `lora_state_dict` names them:
    "unet.<module>.lora.down.weight", "text_encoder.<module>.lora_A.weight", ...) whose module
    carries no weights of `adapter_name` in `modules` ({"unet": unet, "text_encoder": ...}):
    the keys a load dropped. Keys of a component not in `modules` count as dropped."""
    loaded = _injected_modules(modules, adapter_name)
    dropped = []
    for key in lora_keys:
        if (end := _LORA_MATRIX.search(key)) is None:
            continue  # not a LoRA matrix (alphas, DoRA magnitudes): not counted
        module = key[: end.start()].replace(".processor.", ".")
        if module.endswith(".to_out"):  # the old processor naming (kohya files): to_out_lora is to_out.0
            module += ".0"
        if module not in loaded:
            dropped.append(key)
    return dropped


def lora_matrix_keys(keys: Sequence[str]) -> list[str]:
    """The keys of LoRA matrices (down/up, A/B) among a state dict's keys."""
    return [k for k in keys if _LORA_MATRIX.search(k)]


class PartialAdapterError(ValueError):
    """An adapter whose tensors match only part of the model's modules (one line naming them)."""


def check_adapter_loaded(
    adapter: str | Path,
    lora_keys: Sequence[str],
    modules: dict[str, torch.nn.Module],
    adapter_name: str,
    allow_partial: bool = False,
    model: str = "this model",
    refusal: str = "it was not loaded (allow_partial=True loads the rest)",
) -> None:
    """Refuse (PartialAdapterError, a ValueError: one line, ending in `refusal`) an adapter that loaded in part: some of
    its LoRA tensors (`lora_keys`, as diffusers read them from the file) found no module in
    `modules`. With `allow_partial` it warns instead and the part that matched stays loaded."""
    matrices = lora_matrix_keys(lora_keys)
    dropped = unloaded_lora_keys(matrices, modules, adapter_name)
    if not dropped:
        return
    named = ", ".join(dropped[:5]) + (f", ... ({len(dropped) - 5} more)" if len(dropped) > 5 else "")
    message = (f"adapter {adapter}: {len(dropped)} of {len(matrices)} tensors match no module of {model}: {named}")
    if not allow_partial:
        raise PartialAdapterError(f"{message}; {refusal}")
    warnings.warn(message + f"; loaded the other {len(matrices) - len(dropped)} (allow_partial)", stacklevel=3)


def adapter_lora_keys(pipe, adapter: str | Path, **kwargs) -> list[str]:
    """The keys of `adapter` (a folder or a weights file) as `pipe.load_lora_weights` reads them:
    through the pipeline's own `lora_state_dict`, which converts other naming schemes (kohya,
    SGM block names) to diffusers'."""
    if getattr(pipe, "unet", None) is not None:
        kwargs.setdefault("unet_config", pipe.unet.config)  # SDXL's SGM block names, as load_lora_weights does
    out = pipe.lora_state_dict(str(adapter), **kwargs)
    state = out[0] if isinstance(out, tuple) else out
    return list(state)


def pipeline_lora_modules(pipe) -> dict[str, torch.nn.Module]:
    """The pipeline's components that LoRA weights load into ("unet", "text_encoder", ...)."""
    names = getattr(pipe, "_lora_loadable_modules", None) or [UNET_PREFIX, *TEXT_ENCODERS]
    return {n: m for n in names if isinstance(m := getattr(pipe, n, None), torch.nn.Module)}


def load_adapter_into(unet, adapter_dir: str | Path, adapter_name: str) -> list[torch.nn.Parameter]:
    """Load a saved adapter into `unet` as `adapter_name`, trainable (the rest frozen), to continue
    training from it. Returns its LoRA parameters. Every LoRA tensor of the file must load into
    the UNet (a text-encoder or unmatched key is an error: training on would drop it)."""
    weights = Path(adapter_dir) / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"no LoRA weights at {weights}")
    unet.requires_grad_(False)
    unet.load_lora_adapter(str(adapter_dir), weight_name=ADAPTER_WEIGHTS, prefix=UNET_PREFIX, adapter_name=adapter_name)
    keys, _ = StableDiffusionLoraLoaderMixin.lora_state_dict(str(adapter_dir), weight_name=ADAPTER_WEIGHTS)
    try:
        check_adapter_loaded(adapter_dir, list(keys), {UNET_PREFIX: unet}, adapter_name, model="this UNet",
                             refusal=CONTINUE_REFUSAL)
    except ValueError:
        unet.delete_adapters(adapter_name)
        raise
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


def _save_with_one_metadata_key(lora_metadata: dict[str, dict]):
    """A `save_function` for `save_lora_weights` that stores only diffusers' LoRA-config key.

    safetensors writes `__metadata__` in a random order (a Rust HashMap; safetensors issue #584),
    so with diffusers' two keys ("format" and the LoRA config) two saves of the same weights
    differ in their bytes. One key keeps the file byte-reproducible; diffusers reads only this one.
    `lora_metadata` maps a component ("unet", "text_encoder", ...) to its LoraConfig data.
    """
    packed = {f"{component}.{k}": v for component, config in lora_metadata.items() for k, v in config.items()}
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


def _diffusers_lora_state(model, adapter_name: str) -> dict[str, torch.Tensor]:
    peft_state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    converted = convert_state_dict_to_diffusers(peft_state)
    # The conversion renames attention projections only (to_q.lora_A -> to_q.lora.down). With
    # other targets (conv1, proj_in, ...) the file would mix both namings, and diffusers decides
    # how to read a file from its first key, so one half would silently not load. PEFT names
    # throughout load as they are.
    if any(".lora_A." in k or ".lora_B." in k for k in converted):
        converted = peft_state
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in converted.items()}


def write_adapter(
    unet,
    directory: str | Path,
    metadata: dict,
    adapter_name: str = "default",
    text_encoders: dict | None = None,
    loader=StableDiffusionLoraLoaderMixin,
) -> dict:
    """Write the adapter's weights and metadata into an existing directory (not atomic: use
    `save_adapter`, or write into a `staged_dir`). Returns the metadata written.

    `text_encoders` maps "text_encoder" / "text_encoder_2" to text encoders that carry the
    adapter too; `loader` is the pipeline class (or its LoRA mixin) whose `save_lora_weights`
    writes the file, e.g. StableDiffusionXLPipeline when there is a `text_encoder_2`."""
    directory = Path(directory)
    text_encoders = text_encoders or {}
    config = unet.peft_config[adapter_name]
    own = {
        "format": "diffusers-lora",
        "weights": ADAPTER_WEIGHTS,
        "rank": config.r,
        "alpha": config.lora_alpha,
        "target_modules": sorted(config.target_modules),
    }
    if text_encoders:
        own["text_encoder_target_modules"] = {
            name: sorted(te.peft_config[adapter_name].target_modules) for name, te in text_encoders.items()
        }
    if clash := sorted((set(own) | {"sha256"}) & set(metadata)):
        raise ValueError(f"metadata keys {clash} are set by save_adapter itself")
    layers = {f"{name}_lora_layers": _diffusers_lora_state(te, adapter_name) for name, te in text_encoders.items()}
    configs = {UNET_PREFIX: _lora_config_metadata(config)}
    configs.update({name: _lora_config_metadata(te.peft_config[adapter_name]) for name, te in text_encoders.items()})
    loader.save_lora_weights(
        save_directory=directory,
        unet_lora_layers=_diffusers_lora_state(unet, adapter_name),
        weight_name=ADAPTER_WEIGHTS,
        save_function=_save_with_one_metadata_key(configs),
        **layers,
    )
    written = {**own, "sha256": adapter_hash(directory), **metadata}
    (directory / ADAPTER_METADATA).write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")
    return written


def save_adapter(unet, out_dir: str | Path, metadata: dict, adapter_name: str = "default") -> dict:
    """Save the adapter to `out_dir`, which must not exist yet; it appears complete or not at all."""
    with staged_dir(out_dir) as stage:
        return write_adapter(unet, stage, metadata, adapter_name)


def check_adapter_matches(init_meta: dict, rank: int, alpha: float | None, target_modules: Sequence[str]) -> None:
    """Continuing keeps the adapter's shape; a config asking for another one is a mistake."""
    want = {"rank": rank, "alpha": rank if alpha is None else alpha, "target_modules": sorted(target_modules)}
    have = {k: init_meta.get(k) for k in want}
    if have != want:
        raise ValueError(f"init_adapter has {have}, the config asks for {want}")


def read_adapter_metadata(adapter_dir: str | Path) -> dict | None:
    """The adapter's `atelier_adapter.json`, or None when the directory holds no finished adapter."""
    path = Path(adapter_dir) / ADAPTER_METADATA
    return json.loads(path.read_text()) if path.is_file() else None


@contextmanager
def restored_after_training(pipe) -> Iterator[None]:
    """Train LoRA layers on `pipe`'s own modules (no copy: a real SDXL UNet is 10 GB in float32)
    and give the pipeline back as it was, even when training fails: LoRA layers removed,
    `requires_grad`, train/eval modes and gradient checkpointing as before."""
    modules = [m for m in (getattr(pipe, name, None) for name in (UNET_PREFIX, *TEXT_ENCODERS)) if m is not None]
    if loaded := [type(m).__name__ for m in modules if getattr(m, "peft_config", None)]:
        raise ValueError(
            f"{loaded} already carry LoRA adapters; train from the clean base and pass the adapter to "
            "continue from as init_adapter"
        )
    grads = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    modes = [(m, m.training) for m in modules]
    checkpointing = pipe.unet.is_gradient_checkpointing
    try:
        yield
    finally:
        pipe.unload_lora_weights()
        for p, requires_grad in grads:
            p.requires_grad_(requires_grad)
        for m, training in modes:
            m.train(training)
        if pipe.unet.is_gradient_checkpointing and not checkpointing:
            pipe.unet.disable_gradient_checkpointing()


def attach_trainable_lora(
    pipe,
    rank: int,
    alpha: float | None,
    target_modules: Sequence[str],
    adapter_name: str,
    seed: int,
    text_encoder_targets: Sequence[str] | None = None,
    init_adapter: str | Path | None = None,
) -> list[torch.nn.Parameter]:
    """Add a trainable LoRA to `pipe.unet` (and its text encoders when `text_encoder_targets` is
    given), or load `init_adapter` to continue from it. The LoRA init is seeded without touching
    the caller's global RNG; LoRA weights are float32 whatever the model's dtype (AdamW on fp16
    weights loses small updates). Returns the parameters to optimize."""
    text_encoders = [getattr(pipe, n) for n in TEXT_ENCODERS if getattr(pipe, n, None) is not None]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if init_adapter is None:
            params = add_lora(pipe.unet, rank, alpha, target_modules, adapter_name)
            if text_encoder_targets is not None:
                for te in text_encoders:
                    params += add_lora(te, rank, alpha, text_encoder_targets, adapter_name)
        else:
            if not (Path(init_adapter) / ADAPTER_WEIGHTS).is_file():
                raise FileNotFoundError(f"no LoRA weights at {Path(init_adapter) / ADAPTER_WEIGHTS}")
            for m in (pipe.unet, *text_encoders):
                m.requires_grad_(False)
            pipe.load_lora_weights(str(init_adapter), adapter_name=adapter_name)
            # Continuing from part of an adapter would save only that part: no allow_partial here.
            check_adapter_loaded(init_adapter, adapter_lora_keys(pipe, init_adapter), pipeline_lora_modules(pipe),
                                 adapter_name, refusal=CONTINUE_REFUSAL)
            params = [p for m in (pipe.unet, *text_encoders) for p in lora_parameters(m, adapter_name)]
            if text_encoder_targets is None and len(params) != len(lora_parameters(pipe.unet, adapter_name)):
                raise ValueError(f"{init_adapter} has text-encoder LoRA weights; this config trains the UNet only")
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params
