"""Settings of the `rewrite` strategy: self-rewarding prompt rewriting (issue 21). Imported by atelier.config; keep it light (pydantic only).

The rewriter is the `prompt_writer` role in its rewrite mode (agents.prompt_writer: builtin, or a
model behind an OpenAI-protocol endpoint); the judge is the `judge` role in its rubric mode. They
may be the same model (one endpoint), as in the paper, or two.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RewriteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    rewrites_per_prompt: int = Field(8, ge=2, le=32, description="N: rewrites sampled per training prompt, one image "
                                     "each (all with the prompt's seed, so that only the wording differs)")
    temperature: float = Field(0.9, ge=0, le=2, description="sampling temperature of the rewrites (the paper's 0.9); "
                               "the held-out evaluation asks for the single best guess (temperature 0)")
    top_p: float = Field(0.9, gt=0, le=1, description="nucleus sampling of the rewrites (the paper's 0.9): of the "
                         "builtin rewriter's phrasings, or sent as top_p to a model rewriter")
    rubric_samples: int = Field(3, ge=1, le=8, description="times the judge scores each image; each rubric score is "
                                "the mean of these (the paper's 3)")
    rule_min_net: int = Field(2, ge=1, description="builtin rewriter: a phrasing is preferred only when it won at least "
                              "this many more pairs than it lost")
    train_model: str | None = Field(None, description="a model rewriter's weights (hub id or local folder) that "
                                    "`train` fine-tunes with DPO (trl) into a LoRA; null = the rewriter is not trained "
                                    "and each round's candidate is the same rewriter, asked for its best guess")
    beta: float = Field(0.1, gt=0, description="DPO beta (the paper's 0.1)")
    learning_rate: float = Field(5e-6, gt=0, description="DPO learning rate of the rewriter's LoRA (the paper: 1e-5 to 5e-6)")
    epochs: float = Field(1.0, gt=0, description="passes over the pairs per training")
    batch_size: int = Field(4, ge=1, description="pairs per optimizer step")
    lora_rank: int = Field(16, ge=1, description="LoRA rank of the rewriter's adapter")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha of the rewriter's adapter")


def check(config) -> None:
    """Cross-field checks of a whole Config using this strategy; raise ValueError(one line)."""
    writer = config.agents.prompt_writer
    if config.world_name != "shapes" and writer.backend == "builtin":
        raise ValueError("strategy 'rewrite': the builtin rewriter knows only the shapes world's phrasings; set "
                         "agents.prompt_writer to a model (backend 'openai')")
    if config.rewrite.train_model is not None and writer.backend == "builtin":
        raise ValueError("rewrite.train_model: the builtin rewriter learns a phrasing rule, not weights; set "
                         "agents.prompt_writer to the model served from these weights, or leave train_model null")
