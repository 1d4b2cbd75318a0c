"""Is a local folder a model of the kind a config field wants? Read from its config files alone,
so `atelier config check` answers in one line without loading weights.

A name that looks like a hub id ("org/name") and is not a local folder cannot be checked offline:
it passes here and fails at load time with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

SHAPES_PIPELINE = "ShapesPipeline"
TEXT_TO_IMAGE = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")
MODEL_TYPES = {"owlv2": ("owlv2",), "grounding_dino": ("grounding-dino",), "clip": ("clip",)}
_CONFIG_FILE = {"text-to-image": "model_index.json", "owlv2": "config.json", "grounding_dino": "config.json",
                "clip": "config.json"}


def looks_local(name: str | Path) -> bool:
    """A path rather than a hub id: absolute, relative with ./ ../ ~, deeper than org/name, or on disk."""
    name = str(name)
    return Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or Path(name).exists()


def is_shapes_model(model: str | Path) -> bool:
    """'shapes', or a folder whose model_index.json names the shapes world's pipeline."""
    if str(model) == "shapes":
        return True
    index = Path(model).expanduser() / "model_index.json"
    try:
        return index.is_file() and json.loads(index.read_text()).get("_class_name") == SHAPES_PIPELINE
    except (OSError, ValueError):
        return False


def check_model_folder(model: str | Path, kind: str, field: str) -> None:
    """ValueError (one line, naming `field`) when `model` is a local folder that is not a `kind`
    model: 'text-to-image' (a diffusers SD 1.5 / 2.x / SDXL pipeline), 'owlv2', 'grounding_dino'
    or 'clip' (transformers models)."""
    if not looks_local(model):
        return
    path = Path(model).expanduser()
    config_file = path / _CONFIG_FILE[kind]
    if not path.is_dir():
        raise ValueError(f"{field} {str(model)!r}: no such folder")
    try:
        config = json.loads(config_file.read_text())
    except FileNotFoundError:
        raise ValueError(f"{field} {str(model)!r}: not a {kind} model folder (no {config_file.name})") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{field} {str(model)!r}: unreadable {config_file.name} ({type(e).__name__})") from None
    if kind == "text-to-image":
        found = config.get("_class_name")
        if found not in TEXT_TO_IMAGE:
            raise ValueError(f"{field} {str(model)!r} is a {found}; the open_vocab world runs "
                             f"{' or '.join(TEXT_TO_IMAGE)} (SD 1.5 / 2.x / SDXL)")
    elif config.get("model_type") not in MODEL_TYPES[kind]:
        raise ValueError(f"{field} {str(model)!r} is a {config.get('model_type')!r} model, not {kind}")


LORA_WEIGHT_FILES = ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin")  # diffusers' names


def adapter_error(adapter: str | Path | None, flag: str = "--adapter") -> str | None:
    """The one-line reason a local LoRA adapter cannot be loaded (missing, not a folder or a
    weights file, no diffusers LoRA weights inside); None when it can be tried, or for a hub id
    (checked when it is downloaded)."""
    if adapter is None or not looks_local(adapter):
        return None
    path = Path(adapter).expanduser()
    if not path.exists():
        return f"{flag} {adapter}: no such folder"
    if path.is_file():
        return None if path.suffix in (".safetensors", ".bin") else f"{flag} {adapter}: not a LoRA weights file (.safetensors)"
    if not any((path / name).is_file() for name in LORA_WEIGHT_FILES):
        return f"{flag} {adapter}: holds no LoRA adapter ({LORA_WEIGHT_FILES[0]})"
    return None
