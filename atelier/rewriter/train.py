"""DPO of a causal-LM rewriter on preference pairs: trl's DPOTrainer with a peft LoRA.

Direct Preference Optimization (Rafailov et al. 2023), loss -log sigmoid(beta * ((log pi(y_w|x) -
log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)))), as trl's DPOTrainer computes it; the
reference is the model with the adapter disabled (trl does this for a peft model). The pairs are
trl's conversational preference rows (atelier.rewriter.export), formatted by the model's chat
template. The adapter is saved with peft's `save_pretrained` (adapter_config.json +
adapter_model.safetensors): what vLLM serves with --enable-lora (--lora-modules NAME=DIR, or
loaded at run time), and what peft's PeftModel.from_pretrained loads.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("atelier.rewriter")


class DPOSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    beta: float = Field(0.1, gt=0, description="DPO beta (the paper's 0.1)")
    learning_rate: float = Field(5e-6, gt=0, description="AdamW learning rate of the LoRA (the paper: 1e-5 to 5e-6)")
    epochs: float = Field(1.0, gt=0, description="passes over the pairs")
    max_steps: int = Field(-1, description="optimizer steps; -1 = from epochs")
    batch_size: int = Field(4, ge=1, description="pairs per optimizer step")
    lora_rank: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    max_length: int | None = Field(None, ge=16, description="tokens of prompt + answer kept; None = all (trl drops longer rows otherwise)")
    seed: int = 0
    device: str = "cpu"


def load_causal_lm(model: str):
    """(model, tokenizer) by hub id or local folder; ValueError (one line) when it cannot be loaded.
    A tokenizer without a pad token pads with its end-of-sequence token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        lm = AutoModelForCausalLM.from_pretrained(model)
    except (OSError, ValueError) as e:
        raise ValueError(f"--model {model}: cannot load a causal language model ({str(e).splitlines()[0][:200]})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ValueError(f"--model {model}: its tokenizer has no chat template; the pairs are chat messages")
    return lm, tokenizer


def train_rewriter(pairs: Path, model: str, out: Path, settings: DPOSettings, init_lora: Path | None = None,
                   progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Fine-tune `model` with DPO on `pairs` (a trl preference file, atelier.rewriter.export) into a
    LoRA saved in `out`; continue from `init_lora` (a LoRA of the same model) when given.
    Returns {steps, loss, rewards/margins, ...} of the last logged step. FloatingPointError when
    the loss is not finite (as the loop's other trainers)."""
    import math

    from peft import LoraConfig, PeftModel
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from atelier.rewriter.export import read_pairs

    data = read_pairs(pairs)
    keep = [c for c in ("prompt", "chosen", "rejected") if c in data.column_names]
    data = data.select_columns(keep)
    lm, tokenizer = load_causal_lm(model)
    peft_config = None
    if init_lora is not None:
        lm = PeftModel.from_pretrained(lm, str(init_lora), is_trainable=True)
    else:
        peft_config = LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha, target_modules="all-linear",
                                 lora_dropout=0.0, task_type="CAUSAL_LM")
    history: list[dict] = []

    class Logged(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            record = logs or {}
            if "loss" in record:
                history.append({"step": state.global_step, **record})
                if not math.isfinite(record["loss"]):
                    raise FloatingPointError(f"DPO loss is {record['loss']} at step {state.global_step}")
                if progress is not None:
                    progress(state.global_step, state.max_steps, float(record["loss"]))

    with tempfile.TemporaryDirectory(prefix="atelier-dpo-") as work:
        args = DPOConfig(
            output_dir=work, beta=settings.beta, learning_rate=settings.learning_rate,
            num_train_epochs=settings.epochs, max_steps=settings.max_steps,
            per_device_train_batch_size=settings.batch_size, max_length=settings.max_length,
            logging_steps=1, save_strategy="no", report_to=[], seed=settings.seed,
            use_cpu=settings.device == "cpu", bf16=False, fp16=False, dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = DPOTrainer(model=lm, args=args, train_dataset=data, processing_class=tokenizer,
                             peft_config=peft_config, callbacks=[Logged()])
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        trainer.train()
        trained = trainer.model
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        trained.save_pretrained(str(out))
    last = history[-1] if history else {}
    summary = {"steps": last.get("step", 0), "pairs": len(data), "loss": last.get("loss"),
               "reward_margin": last.get("rewards/margins"), "beta": settings.beta,
               "learning_rate": settings.learning_rate}
    log.info("rewriter DPO: %s", summary)
    return summary
