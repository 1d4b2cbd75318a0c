"""The open_vocab world's models, each loaded once per run, when first used, on `cfg.device`.

    generator  the diffusers pipeline (SD 1.5 / 2.x / SDXL) as a LoadedGenerator: adapters are
               swapped in and out of the one pipeline
    detector   OWLv2 or Grounding DINO (OpenVocabDetector)
    clip       the CLIP scorer; None when clip.model is null
    editor     img2img (SDEdit) over the generator's own components: nothing loaded twice
`loads` counts what was loaded, so tests can check that a run loads each model once.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from atelier.config import Config
from atelier.runs import RunError
from atelier.tools.clip_score import ClipScorer, ClipScorerConfig
from atelier.tools.diffusers_generator import load_diffusers_pipeline
from atelier.tools.dtype import resolve_dtype
from atelier.tools.generate import generation_options
from atelier.tools.open_vocab_detector import OpenVocabDetector, OpenVocabDetectorConfig
from atelier.worlds.generator import LoadedGenerator


@contextmanager
def loading(what: str, name: str) -> Iterator[None]:
    """A model that cannot be loaded (a hub id not in the cache offline, a wrong folder, a dtype
    the device cannot run) ends the run in one line, not a traceback."""
    try:
        yield
    except (OSError, ValueError) as e:
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise RunError(f"cannot load the {what} {name!r}: {first[:300]}") from e


class OpenVocabModels:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.loads: Counter[str] = Counter()
        self._generator: LoadedGenerator | None = None
        self._detector: OpenVocabDetector | None = None
        self._clip: ClipScorer | None = None
        self._editor = None

    @property
    def generator(self) -> LoadedGenerator:
        if self._generator is None:
            g = self.cfg.generation
            with loading("generator", self.cfg.model):
                pipe = load_diffusers_pipeline(self.cfg.model, None, 1.0, self.cfg.device, generation_options(g))
            self._generator = LoadedGenerator(pipe, steps=g.steps, batch_size=g.batch_size, scale=g.lora_scale,
                                              min_timestep=g.adapter_min_timestep)
            self.loads["generator"] += 1
        return self._generator

    @property
    def detector(self) -> OpenVocabDetector:
        if self._detector is None:
            d = self.cfg.detector
            with loading("detector", d.model):
                self._detector = OpenVocabDetector(OpenVocabDetectorConfig(
                    architecture=d.architecture, model=d.model, device=self.cfg.device, score_threshold=d.score_threshold,
                    dtype=resolve_dtype(d.dtype, self.cfg.device, autocast=False)))
            self.loads["detector"] += 1
        return self._detector

    @property
    def clip(self) -> ClipScorer | None:
        if self._clip is None and self.cfg.clip.model is not None:
            with loading("CLIP scorer", self.cfg.clip.model):
                self._clip = ClipScorer(ClipScorerConfig(model=self.cfg.clip.model, device=self.cfg.device,
                                                         dtype=resolve_dtype(self.cfg.clip.dtype, self.cfg.device,
                                                                             autocast=False)))
            self.loads["clip"] += 1
        return self._clip

    def editor(self, adapter: str | None = None):
        """The img2img pipeline over the generator's components, with `adapter` in (None = base)."""
        generator = self.generator
        generator.use(adapter)
        if self._editor is None:
            from diffusers import AutoPipelineForImage2Image

            self._editor = AutoPipelineForImage2Image.from_pipe(generator.pipe)
            self._editor.set_progress_bar_config(disable=True)
        return self._editor

    def close(self) -> None:
        self._generator = self._detector = self._clip = self._editor = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
