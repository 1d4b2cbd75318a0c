"""Random-weight models of the real architectures, saved as local folders the product loads.

    build_all(folder, size="real")   # -> {"model": .../sd15, "detector": .../owlv2, "clip": .../clip}

- `sd15`: a StableDiffusionPipeline folder with SD 1.5's UNet2DConditionModel, AutoencoderKL,
  CLIP ViT-L/14 text encoder and PNDM scheduler, their values as in the public
  stable-diffusion-v1-5 configs (UNet 860M parameters, VAE 84M, text encoder 123M).
- `owlv2`: Owlv2ForObjectDetection as google/owlv2-base-patch16-ensemble (ViT-B/16 vision tower
  at 960 px, 60x60 patches; the transformers default image_size is OWL-ViT's 768, so 960 is set
  here) with its processor (960x960).
- `clip`: CLIPModel as openai/clip-vit-large-patch14 (text 768/12 layers, vision ViT-L/14 at
  224 px, projection 768) with its processor (224 px).

`size="tiny"` builds the same classes, block layouts and processors at toy widths (64 px images,
8x8 latents) for a CPU smoke run. Weights are random and seeded: throughput and memory are those
of the real models, outputs are noise.

The tokenizers are real CLIPTokenizers (byte-level BPE) over a vocabulary written here: the 256
byte symbols, the same with the end-of-word marker, whole-word merges for the words the
benchmark's prompts use (any other text still tokenizes, byte by byte), and the two special
tokens last as in CLIP. At real size the embedding tables keep CLIP's 49408 rows (ids past the
small vocabulary are never used), so parameter counts and memory match the real models.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CLIP_VOCAB_SIZE = 49408  # the real CLIP BPE vocabulary, kept for the embedding tables at real size

WORDS = """a an the of and in on at to next by with photo close-up realistic wide-angle left right above below
person dog cat horse car bench elephant giraffe bird chair savanna watering hole acacia trees zoo enclosure
sunset tall grass river forest two three one""".split()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map of the 256 byte values to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def write_clip_vocab(folder: Path, words=WORDS) -> Path:
    """vocab.json + merges.txt of a small byte-level BPE laid out as CLIP's (specials last: the
    text encoder pools at the end token, and OWLv2 masks a query whose first id is 0)."""
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    for word in dict.fromkeys(words):
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            merge = f"{parts[0]} {parts[1]}"
            if merge not in merges:
                merges.append(merge)
                tokens.append(parts[0] + parts[1])
            parts = [parts[0] + parts[1], *parts[2:]]
    tokens = list(dict.fromkeys(tokens)) + [BOS, EOS]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def clip_tokenizer(max_length: int, pad_token: str):
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as folder:
        write_clip_vocab(Path(folder))
        return CLIPTokenizer.from_pretrained(folder, pad_token=pad_token, model_max_length=max_length)


def _vocab_size(tokenizer, size: str) -> int:
    return CLIP_VOCAB_SIZE if size == "real" else len(tokenizer)


def _special_ids(tokenizer) -> dict:
    return dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


# --- Stable Diffusion 1.5 ---------------------------------------------------------------------

SD15 = {
    "real": dict(
        unet=dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8,
                  cross_attention_dim=768, norm_num_groups=32),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512, norm_num_groups=32),
        text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768),
    ),
    "tiny": dict(
        unet=dict(sample_size=8, block_out_channels=(32, 32, 64, 64), layers_per_block=1, attention_head_dim=8,
                  cross_attention_dim=32, norm_num_groups=8),
        vae=dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, sample_size=64, norm_num_groups=8),
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32),
    ),
}


def build_sd15(folder: Path, size: str = "real", save_dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    """A StableDiffusionPipeline folder of SD 1.5's architecture with random weights."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    c = SD15[size]
    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(max_length=77, pad_token=EOS)  # SD 1.5 pads with the end token
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=_vocab_size(tokenizer, size), max_position_embeddings=77, hidden_act="quick_gelu",
        **c["text"], **_special_ids(tokenizer)))
    unet = UNet2DConditionModel(
        in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        act_fn="silu", norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
        **c["unet"])
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, act_fn="silu", scaling_factor=0.18215,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, **c["vae"])
    scheduler = PNDMScheduler(  # as shipped with SD 1.5
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if save_dtype != torch.float32:
        pipe.to(dtype=save_dtype)
    pipe.save_pretrained(folder)
    return folder


# --- OWLv2 base patch16 -----------------------------------------------------------------------

OWLV2 = {
    "real": dict(  # google/owlv2-base-patch16-ensemble
        text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    image_size=960, patch_size=16),
        projection_dim=512,
    ),
    "tiny": dict(
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    image_size=64, patch_size=16),
        projection_dim=32,
    ),
}


def build_owlv2(folder: Path, size: str = "real", save_dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    c = OWLV2[size]
    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(max_length=16, pad_token="!")  # as google/owlv2-*: '!' pads, id 0
    config = Owlv2Config(
        text_config=dict(vocab_size=_vocab_size(tokenizer, size), max_position_embeddings=16, **c["text"],
                         **_special_ids(tokenizer)),
        vision_config=c["vision"], projection_dim=c["projection_dim"])
    model = Owlv2ForObjectDetection(config).eval().to(save_dtype)
    side = c["vision"]["image_size"]
    model.save_pretrained(folder)
    Owlv2Processor(image_processor=Owlv2ImageProcessorPil(size={"height": side, "width": side}),
                   tokenizer=tokenizer).save_pretrained(folder)
    return folder


# --- CLIP ViT-L/14 ----------------------------------------------------------------------------

CLIP = {
    "real": dict(  # openai/clip-vit-large-patch14
        text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=224, patch_size=14),
        projection_dim=768,
    ),
    "tiny": dict(
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    image_size=32, patch_size=8),
        projection_dim=32,
    ),
}


def build_clip(folder: Path, size: str = "real", save_dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    c = CLIP[size]
    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(max_length=77, pad_token=EOS)  # as openai/clip-*
    config = CLIPConfig(
        text_config=dict(vocab_size=_vocab_size(tokenizer, size), max_position_embeddings=77, hidden_act="quick_gelu",
                         **c["text"], **_special_ids(tokenizer)),
        vision_config=dict(hidden_act="quick_gelu", **c["vision"]), projection_dim=c["projection_dim"])
    model = CLIPModel(config).eval().to(save_dtype)
    side = c["vision"]["image_size"]
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side}),
                  tokenizer=tokenizer).save_pretrained(folder)
    return folder


# --- all three --------------------------------------------------------------------------------

BUILDERS = {"model": ("sd15", build_sd15), "detector": ("owlv2", build_owlv2), "clip": ("clip", build_clip)}


def build_all(folder: Path, size: str = "real", save_dtype: torch.dtype = torch.float32, rebuild: bool = False,
              log=print) -> dict[str, Path]:
    """The three model folders under `folder` (reused when a finished build is there)."""
    import time

    out = {}
    for key, (name, builder) in BUILDERS.items():
        path = Path(folder) / name
        done = path / ".built"
        if rebuild or not done.exists():
            started = time.time()
            builder(path, size=size, save_dtype=save_dtype)
            done.write_text(str(save_dtype))
            log(f"built {name} ({size}) in {time.time() - started:.1f}s -> {path}")
        out[key] = path
    return out


def parameter_count(folder: Path) -> int:
    """Parameters stored in a folder's safetensors files (all components of a pipeline)."""
    from safetensors import safe_open

    total = 0
    for file in Path(folder).rglob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            for key in f.keys():
                total += _numel(f.get_slice(key).get_shape())
    return total


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
