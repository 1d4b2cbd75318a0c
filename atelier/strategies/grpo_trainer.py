"""The `grpo` strategy's online training: K iterations of sample G images per prompt with the
stochastic DDIM policy (atelier.tools.policy_sampler) -> judge -> reward -> GRPO advantages ->
clipped policy-gradient update with a KL term to the base (atelier.tools.policy_gradient), on a
LoRA of the pipeline's UNet. DDPO (Black et al. 2023) and Flow-GRPO (Liu et al. 2025) are the
recipes; both are read, not copied.

Every iteration ends with a checkpoint written atomically under `work_dir` (the LoRA, AdamW's
state and the statistics so far); a killed training resumes from the last one. An iteration's
samples are not stored: they are regenerated from their seeds (deterministic), and its
judgments, written before its update, are read back instead of asking the judge again. So a
resumed run ends with the adapter an uninterrupted run ends with, bit for bit on a CPU at a
fixed thread count.

Files: work_dir/iter_KKKK/{images/, judgments.jsonl, stories.jsonl}, work_dir/checkpoint_KKKK/
(the newest only), `log_file` (one JSON line of statistics per iteration) and `stories_file`
(per sample: prompt, image, judgment summary, reward, advantage).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from atelier.atomic import staged_dir, write_json_atomic, write_jsonl_atomic
from atelier.faults import maybe_die
from atelier.strategies.grpo_config import GRPOConfig
from atelier.tools.lora import attach_trainable_lora, restored_after_training, write_adapter
from atelier.tools.lora_training import LoraTrainingConfig
from atelier.tools.policy_gradient import clipped_policy_loss, gaussian_step_kl, group_advantages
from atelier.tools.policy_sampler import PolicySampler
from atelier.tools.train_loop import (adapter_summary, base_model_name, finished_adapter, init_adapter_metadata,
                                      weights_finite)

ADAPTER_NAME = "default"
OPTIMIZER_STATE = "optimizer.pt"
CHECKPOINT_STATE = "state.json"

Judge = Callable[[list[dict]], list[dict]]
Reward = Callable[[dict], float | None]


def sample_seed(seed: int, iteration: int, prompt: int, k: int) -> int:
    """The seed of image k of a prompt at an iteration: depends on where it sits alone."""
    return int(np.random.SeedSequence([seed, iteration, prompt, k]).generate_state(1)[0])


def trained_steps(sampler: PolicySampler, n: int | None) -> list[int]:
    """Indices of the first `n` sampling steps that have noise and where the LoRA acts."""
    steps = [i for i in range(len(sampler.timesteps)) if sampler.has_noise(i) and sampler.lora_active(i)]
    return steps if n is None else steps[:n]


def latest_checkpoint(work_dir: Path) -> Path | None:
    done = sorted(work_dir.glob("checkpoint_[0-9][0-9][0-9][0-9]"))
    return done[-1] if done else None


def judgment_summary(j: dict) -> dict:
    keys = ("object_ok", "count_ok", "relation_ok", "ipr_correct", "question_score", "clip_score", "found", "failed")
    return {k: j.get(k) for k in keys if k in j}


def train_grpo(
    pipe,
    prompts: Sequence[dict],
    judge: Judge,
    reward_of: Reward,
    out_dir: str | Path,
    work_dir: str | Path,
    log_file: str | Path,
    stories_file: str | Path,
    cfg: GRPOConfig,
    lora: LoraTrainingConfig,
    guidance: float,
    lora_min_timestep: int = 0,
    batch_size: int = 64,
    init_adapter: str | Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Train a LoRA on `pipe` by online GRPO and save it to `out_dir` (diffusers LoRA format, as
    every trainer here saves it). `prompts` are {text, asked?, target_class?}; `judge(rows)` gets
    the loop's judge rows {file, prompt, prompt_index, seed, asked, target_class} and returns
    judgments; `reward_of(judgment)` is a float or None (no reward). `progress(iteration,
    iterations, loss)` runs after each iteration's checkpoint is on disk.

    Returns the trainers' summary {adapter_dir, adapter_hash, steps (= iterations), final_loss,
    wall_time_s, n_samples, init_adapter_hash}. FloatingPointError (one line) when the loss or
    the weights stop being finite; ValueError when no step can be trained."""
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    if not prompts:
        raise ValueError("grpo: no training prompts")
    record = {"grpo": cfg.model_dump(mode="json"), "lora": lora.model_dump(mode="json"), "guidance": guidance,
              "lora_min_timestep": lora_min_timestep, "n_prompts": len(prompts)}
    if (done := finished_adapter(out_dir, record)) is not None:
        return adapter_summary(done, out_dir)
    init_meta = init_adapter_metadata(init_adapter, lora)
    checkpoint = latest_checkpoint(work_dir)
    state = json.loads((checkpoint / CHECKPOINT_STATE).read_text()) if checkpoint else {"iteration": 0, "stats": []}
    if checkpoint and state.get("record") != record:
        raise ValueError(f"{checkpoint} was written by a grpo training with other settings; remove {work_dir} to start over")

    unet = pipe.unet
    with restored_after_training(pipe):
        params = attach_trainable_lora(pipe, lora.rank, lora.alpha, lora.target_modules, ADAPTER_NAME, lora.seed,
                                       None, checkpoint or init_adapter)
        optimizer = torch.optim.AdamW(params, lr=lora.lr, weight_decay=0.0)
        if checkpoint:
            optimizer.load_state_dict(torch.load(checkpoint / OPTIMIZER_STATE, weights_only=True))
        sampler = PolicySampler(pipe, cfg.sampler_steps, guidance, cfg.eta, lora_min_timestep, batch_size)
        steps = trained_steps(sampler, cfg.train_steps)
        if not steps:
            raise ValueError(f"grpo: no sampling step has both noise and the adapter (timesteps {sampler.timesteps}, "
                             f"adapter from {lora_min_timestep}); lower generation.adapter_min_timestep")
        stats = state["stats"]
        for k in range(state["iteration"], cfg.iterations):
            started = time.time()
            stat = _iteration(k, pipe, sampler, steps, prompts, judge, reward_of, work_dir, cfg, lora, params, optimizer)
            stat["seconds"] = round(time.time() - started, 3)
            stats.append(stat)
            _save_checkpoint(work_dir, k + 1, unet, optimizer, stats, record)
            write_jsonl_atomic(log_file, stats)
            if progress is not None:
                progress(k + 1, cfg.iterations, stat["loss"])
        stories = [json.loads(line) for k in range(cfg.iterations)
                   for line in (work_dir / f"iter_{k:04d}" / "stories.jsonl").read_text().splitlines()]
        write_jsonl_atomic(stories_file, stories)
        meta = {"config": record, "steps": cfg.iterations,
                "final_loss": float(np.mean([s["loss"] for s in stats[-3:]])),
                "wall_time_s": round(sum(s["seconds"] for s in stats), 3),
                "n_samples": sum(s["n_samples"] for s in stats),
                "base_model": base_model_name(pipe),
                "init_adapter": None if init_adapter is None else str(Path(init_adapter).resolve()),
                "init_adapter_hash": None if init_meta is None else init_meta["sha256"],
                "trainer": "atelier.strategies.grpo_trainer", "torch": torch.__version__}
        with staged_dir(out_dir) as stage:
            meta = write_adapter(unet, stage, meta, ADAPTER_NAME, loader=type(pipe))
    return adapter_summary(meta, out_dir)


def _iteration(k, pipe, sampler, steps, prompts, judge, reward_of, work_dir, cfg, lora, params, optimizer) -> dict:
    unet = pipe.unet
    rng = np.random.default_rng([lora.seed, k])
    chosen = rng.choice(len(prompts), size=min(cfg.prompts_per_iteration, len(prompts)), replace=False)
    items = [(int(p), g) for p in chosen for g in range(cfg.group_size)]
    texts = [prompts[p]["text"] for p, _ in items]
    seeds = [sample_seed(lora.seed, k, p, g) for p, g in items]
    unet.eval()
    clock = time.time()
    traj = sampler.sample(texts, seeds)
    sample_s, clock = time.time() - clock, time.time()
    it_dir = work_dir / f"iter_{k:04d}"
    names = [f"p{p:03d}_{g}.png" for p, g in items]
    judged_file = it_dir / "judgments.jsonl"
    if judged_file.exists():  # judged before a crash: the judge is not asked again
        judgments = [json.loads(line) for line in judged_file.read_text().splitlines()]
    else:
        if not (it_dir / "images").exists():
            with staged_dir(it_dir / "images") as tmp:
                for name, image in zip(names, sampler.decode(traj.latents[-1])):
                    image.save(tmp / name)
        rows = [{"file": str(it_dir / "images" / n), "prompt": prompts[p]["text"], "prompt_index": p, "seed": s,
                 "asked": prompts[p].get("asked"), "target_class": prompts[p].get("target_class")}
                for (p, _), s, n in zip(items, seeds, names)]
        judgments = judge(rows)
        write_jsonl_atomic(judged_file, judgments)
        maybe_die(f"grpo:judged:{k}")  # mid-iteration, before its update: a crash point for the resume tests
    judge_s, clock = time.time() - clock, time.time()
    rewards = [reward_of(j) for j in judgments]
    advantages, flat_share = group_advantages(rewards, [p for p, _ in items], cfg.advantage_clip)
    write_jsonl_atomic(it_dir / "stories.jsonl", [
        {"iteration": k, "prompt": j["prompt"], "image": j["file"], "seed": j.get("seed"), "judgment": judgment_summary(j),
         "reward": r, "advantage": round(float(a), 6)} for j, r, a in zip(judgments, rewards, advantages)])

    # The update: minibatches of samples, each one optimizer step over the trained denoising steps.
    unet.train()
    device = unet.device
    cond, uncond = sampler.conditioning(texts)
    adv = torch.tensor(advantages, dtype=torch.float32, device=device)
    dims = int(np.prod(traj.latents.shape[2:]))
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(int(rng.integers(2**31))))
    losses, kls, clipfracs = [], [], []
    for mb in order.tensor_split(cfg.updates_per_iteration):
        optimizer.zero_grad(set_to_none=True)
        mb_loss = mb_kl = mb_clip = 0.0
        for j in steps:
            x = traj.latents[j][mb].to(device)
            x_prev = traj.latents[j + 1][mb].to(device)
            c, u = cond[mb.to(device)], None if uncond is None else uncond[mb.to(device)]
            step = sampler.step(sampler.guided_output(x, j, c, u), x, j, prev_sample=x_prev)
            pg, clipfrac = clipped_policy_loss(step.log_prob, traj.log_probs[j][mb].to(device), adv[mb.to(device)],
                                               cfg.clip_range, dims)
            loss = pg
            if cfg.kl_coef > 0:
                with torch.no_grad():
                    ref = sampler.step(sampler.reference_output(x, j, c, u), x, j, prev_sample=x_prev)
                kl = gaussian_step_kl(step.mean, ref.mean, step.std).mean()
                loss = loss + cfg.kl_coef * kl
                mb_kl += kl.item() / len(steps)
            loss = loss / len(steps)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"grpo loss is {loss.item()} at iteration {k}; lower lr (now {lora.lr})")
            loss.backward()
            mb_loss += loss.item()
            mb_clip += clipfrac.item() / len(steps)
        if lora.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, lora.max_grad_norm)
        optimizer.step()
        if not weights_finite(params):
            raise FloatingPointError(f"grpo weights are not finite after iteration {k}; lower lr (now {lora.lr})")
        losses.append(mb_loss)
        kls.append(mb_kl)
        clipfracs.append(mb_clip)
    unet.eval()
    valid = [r for r in rewards if r is not None]
    goal = [j for j in judgments if not j.get("failed")]
    return {"iteration": k, "n_samples": len(items), "n_failed": len(items) - len(valid),
            "reward_mean": float(np.mean(valid)) if valid else None,
            "reward_std": float(np.std(valid)) if valid else None,
            "zero_variance_groups": flat_share,
            "relation_ok": float(np.mean([j.get("relation_ok") is True for j in goal])) if goal else None,
            "object_ok": float(np.mean([bool(j.get("object_ok")) for j in goal])) if goal else None,
            "kl": float(np.mean(kls)), "clip_fraction": float(np.mean(clipfracs)), "loss": float(np.mean(losses)),
            "updates": len(losses), "sample_s": round(sample_s, 3), "judge_s": round(judge_s, 3),
            "update_s": round(time.time() - clock, 3)}


def _save_checkpoint(work_dir: Path, iteration: int, unet, optimizer, stats: list[dict], record: dict) -> None:
    """checkpoint_KKKK appears whole (staged, then renamed); older ones are removed after it."""
    final = work_dir / f"checkpoint_{iteration:04d}"
    with staged_dir(final) as stage:
        write_adapter(unet, stage, {"iteration": iteration}, ADAPTER_NAME)
        torch.save(optimizer.state_dict(), stage / OPTIMIZER_STATE)
        write_json_atomic(stage / CHECKPOINT_STATE, {"iteration": iteration, "stats": stats, "record": record})
    for old in work_dir.glob("checkpoint_[0-9][0-9][0-9][0-9]"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
