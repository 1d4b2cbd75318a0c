"""The shapes world's text-to-image model: a pixel-space diffusers UNet and a small CLIP text
encoder with a word-level tokenizer, wrapped as a DiffusionPipeline so that a folder holds it all
(`save_pretrained` / `from_pretrained`).

Design choices (see the model card written by train-base for the measured effect):
- text reaches the image only through cross-attention (16x16, 8x8 and the middle block), as in
  Stable Diffusion. The first shipped base also added an attention-pooled caption to the time
  embedding; that steers every block with all of the caption's colours at once, unbound to any
  object, and its commonest error on two-object prompts was a shape in the other object's
  colour. Without it, the same recipe and data measured held-out object accuracy 0.48/0.50 against
  0.38/0.42 at 1500/1750 steps (BENCHMARKS.md). The 32x32 blocks are convolutional:
  cross-attention there measured 1.7x the step time and no gain;
- v-prediction on a cosine schedule, sampled by DPM-Solver++ 2M with trailing timesteps: in
  pixel space the cosine schedule's last steps are almost pure noise, where epsilon prediction
  is ill-posed, and "trailing" makes the first sampling step start from it;
- classifier-free guidance, trained by dropping the caption for 10% of samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast
from transformers.utils import logging as transformers_logging

from atelier.tools.dtype import resolve_dtype
from atelier.worlds.shapes.scene import VOCABULARY

DEFAULT_STEPS = 8  # DPM-Solver++ 2M steps: as good as or better than DDIM at 12 or 20 (benchmarks/sampler_sweep.py)
DEFAULT_GUIDANCE = 3.0
MAX_TOKENS = 16  # the longest caption is 12 words plus begin/end markers
SHIPPED_MODEL_DIR = Path(__file__).parent / "weights"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the world's vocabulary; special tokens last, as in real CLIP."""
    words = sorted(VOCABULARY | {","})
    specials = ["<|unk|>", "<|pad|>", "<|startoftext|>", "<|endoftext|>"]
    vocab = {w: i for i, w in enumerate(words + specials)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        model_max_length=MAX_TOKENS,
    )


def build_text_encoder(tokenizer: PreTrainedTokenizerFast, hidden: int = 64) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_unet(size: int = 32, text_dim: int = 64) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 96),
        layers_per_block=1,
        # 32x32: convolutions only (cross-attention there measured 1.7x the step time, no gain);
        # 16x16: cross-attention only (self-attention there doubles the step time); 8x8 and
        # middle: self- and cross-attention. No pooled text in the time embedding (see above).
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        only_cross_attention=(False, True, False),
        cross_attention_dim=text_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def training_scheduler() -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"
    )


def sampling_scheduler() -> DPMSolverMultistepScheduler:
    # Second-order multistep solver with trailing timesteps: 8 steps beat DDIM's 12 on held-out
    # object and count accuracy (benchmarks/sampler_sweep.py); the last step lands on sigma 0.
    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="trailing",
        final_sigmas_type="zero",
    )


class ShapesPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    """Text -> 32x32 RGB in pixel space, with classifier-free guidance and one seed per image.

    LoRA adapters in the diffusers format load as on Stable Diffusion: `load_lora_weights`,
    `set_adapters`, `disable_lora`, `unload_lora_weights` (the mixin needs `unet` and `text_encoder`).
    """

    samples_by_seed = True  # atelier.tools.generate passes seeds=, not torch generators

    def __init__(self, unet, text_encoder, tokenizer, scheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        self.compute_dtype = torch.float32

    def set_compute_dtype(self, name: str) -> None:
        """'bfloat16' runs the networks under bf16 autocast (weights stay float32, as in training):
        twice as fast on CPUs with AVX512-BF16 (or AMX). Results then depend on torch's thread count.

        'auto' picks by `atelier.tools.dtype.resolve_dtype(..., autocast=True)` on this pipeline's
        device: bfloat16 on a CPU with fast bf16 and on a GPU with native bf16, else float32 (on a
        CPU without AVX512-BF16/AMX, bf16 measured 16-22x slower than float32). An explicit
        'bfloat16' on such a CPU runs, with a one-time warning; 'float16' is refused."""
        if name not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype {name!r}: the shapes model runs in float32 or bfloat16 (or auto)")
        match resolve_dtype(name, str(self.device), autocast=True):
            case "bfloat16":
                self.compute_dtype = torch.bfloat16
            case _:
                self.compute_dtype = torch.float32

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.compute_dtype == torch.bfloat16)

    def encode(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
        ).input_ids.to(self.text_encoder.device)
        with self._autocast():
            return self.text_encoder(ids).last_hidden_state.float()

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        seeds: list[int] | None = None,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        output_type: str = "pil",
    ):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        seeds = list(range(len(prompts))) if seeds is None else list(seeds)
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        device, dtype = self.unet.device, self.unet.dtype
        size = self.unet.config.sample_size
        # Noise from one generator per image, so an image depends on its seed alone.
        noise = [torch.randn((3, size, size), generator=torch.Generator().manual_seed(s)) for s in seeds]
        x = torch.stack(noise).to(device, dtype)
        cond = self.encode(prompts).to(dtype)
        use_cfg = guidance_scale != 1.0
        if use_cfg:
            cond = torch.cat([self.encode([""] * len(prompts)).to(dtype), cond])
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(self.scheduler.timesteps):
            inp = torch.cat([x, x]) if use_cfg else x
            with self._autocast():
                out = self.unet(inp, t, encoder_hidden_states=cond).sample.float()
            if use_cfg:
                uncond, text = out.chunk(2)
                out = uncond + guidance_scale * (text - uncond)
            x = self.scheduler.step(out, t, x).prev_sample
        images = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        if output_type == "np":
            return ShapesOutput(images=images)
        return ShapesOutput(images=[Image.fromarray(a) for a in images])


@dataclass
class ShapesOutput:
    images: list[Image.Image] | np.ndarray


def new_pipeline(size: int = 32) -> ShapesPipeline:
    """An untrained pipeline with the shipped architecture."""
    tokenizer = build_tokenizer()
    return ShapesPipeline(
        unet=build_unet(size),
        text_encoder=build_text_encoder(tokenizer),
        tokenizer=tokenizer,
        scheduler=sampling_scheduler(),
    )


def load_pipeline(path: str | Path = SHIPPED_MODEL_DIR, device: str = "cpu") -> ShapesPipeline:
    path = Path(path)
    if not (path / "model_index.json").exists():
        raise FileNotFoundError(f"no shapes model at {path} (expected model_index.json); run `atelier shapes train-base`")
    # A loop loads this folder a dozen times per round: its loading bars would bury the progress.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    pipe = ShapesPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_generator(model: str | Path = "shapes", adapter: str | Path | None = None, scale: float = 1.0,
                   device: str = "cpu", options=None) -> ShapesPipeline:
    """The shipped model ('shapes') or a shapes model folder on `device`, sampling in
    `options.dtype` (float32 without options), with `adapter` loaded at `scale`, gated to
    timesteps >= options.adapter_min_timestep."""
    from atelier.tools.diffusers_generator import load_adapter

    pipe = load_pipeline(SHIPPED_MODEL_DIR if str(model) == "shapes" else Path(model), device=device)
    if options is not None:
        pipe.set_compute_dtype(options.dtype)
    if adapter is not None:
        load_adapter(pipe, adapter, scale, 0 if options is None else options.adapter_min_timestep)
    return pipe
