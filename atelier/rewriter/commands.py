"""The command-line pieces of the rewriter: `atelier rewriter train` and `generate --rewrite-with`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from atelier.rewriter.rewriter import STATE_FILE


def train_command(args) -> str:
    """Run `atelier rewriter train PAIRS --model M --out DIR`; returns the line to print.
    ValueError (one line) for bad input: an unreadable pairs file, a model that does not load,
    an --out that exists."""
    from atelier.rewriter.export import read_pairs
    from atelier.rewriter.train import DPOSettings, train_rewriter

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out}: exists and is not an empty folder; the adapter is written to a new folder")
    for flag, value in (("--beta", args.beta), ("--lr", args.lr), ("--epochs", args.epochs)):
        if value <= 0:
            raise ValueError(f"{flag} must be above 0, got {value:g}")
    for flag, value in (("--batch-size", args.batch_size), ("--rank", args.rank), ("--alpha", args.alpha)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    n = len(read_pairs(Path(args.pairs)))  # a bad file is one line before the model loads
    settings = DPOSettings(beta=args.beta, learning_rate=args.lr, epochs=args.epochs, max_steps=args.max_steps,
                           batch_size=args.batch_size, lora_rank=args.rank, lora_alpha=args.alpha, seed=args.seed,
                           device=args.device)
    init = Path(args.init_lora) if args.init_lora else None
    summary = train_rewriter(Path(args.pairs), args.model, out, settings, init_lora=init)
    (out / "atelier_rewriter.json").write_text(json.dumps({"base_model": args.model, "pairs": str(args.pairs), **summary},
                                                          indent=2) + "\n")
    return (f"trained on {n} pairs in {summary['steps']} steps (last loss {summary['loss']:.4f}); LoRA in {out}\n"
            f"serve it: vllm serve {args.model} --enable-lora --max-lora-rank {max(args.rank, 16)} "
            f"--lora-modules rewriter={out.resolve()}")


def rewriter_of(source: str | Path):
    """(config, rewriter folder or None) of `--rewrite-with`: a rewriter folder (rewriter.json; the
    run's config two levels up), a run folder (its best rewriter), or a config file (its rewriter
    untrained). ValueError (one line) for anything else."""
    from atelier.config import load_config

    path = Path(source)
    if (path / STATE_FILE).exists():
        run = path.parent.parent
        if not (run / "config.yaml").exists():
            raise ValueError(f"--rewrite-with {source}: a rewriter folder outside a run (no config.yaml two levels up)")
        return load_config(run / "config.yaml"), path
    if path.is_dir():
        if not (path / "config.yaml").exists():
            raise ValueError(f"--rewrite-with {source}: neither a run folder, a rewriter folder nor a config file")
        config = load_config(path / "config.yaml")
        best = None
        for decision in sorted(path.glob("round_*/decision.json")):
            record = json.loads(decision.read_text())
            if record.get("promoted"):
                best = Path(record["adapter"])
        return config, best
    config = load_config(path)
    if config.strategy != "rewrite":
        raise ValueError(f"--rewrite-with {source}: its strategy is {config.strategy!r}, not 'rewrite'")
    return config, None


def rewrite_prompts(source: str | Path, prompts: Sequence[str]) -> tuple[list[str], str]:
    """The best rewrite of each prompt by the rewriter of `source` (rewriter_of), and what that
    rewriter is, in words."""
    from atelier.rewriter.rewriter import load_rewriter

    config, folder = rewriter_of(source)
    rewrites, _ = load_rewriter(config, folder).best(list(prompts))
    return rewrites, f"{config.agents.prompt_writer.backend} rewriter {'(untrained)' if folder is None else str(folder)}"
