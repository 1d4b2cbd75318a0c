"""`atelier export RUN --format kohya|dpo-pairs|sft`: a run's adapter and data in the layouts other
tools read.

- kohya: the adapter's weights with kohya-ss / A1111 / ComfyUI key names (`lora_unet_…`,
  `lora_te_…`, `.lora_down`/`.lora_up`/`.alpha`), converted by diffusers' own
  `convert_state_dict_to_kohya`; `.alpha` carries the adapter's LoRA alpha (the converter would
  write the rank, i.e. scale 1). diffusers' `load_lora_weights` reads the file back to the same
  weights (tests/test_export.py).
- sft: every round's training images in one image folder (`metadata.jsonl` with file_name,
  text, weight and the round), the layout of 🤗 datasets' imagefolder and diffusers'
  train_text_to_image.py.
- dpo-pairs: preference pairs as one parquet file with Pick-a-Pic's columns (jpg_0, jpg_1,
  label_0, caption; diffusers' train_diffusion_dpo.py). Pairs a strategy wrote (parquet files or
  pairs.jsonl folders under round_NNN/) are exported as they are; a run without any (IPR, CCSR)
  gets pairs from its judged candidates: per prompt, an image the judge found right on the
  target metric against one it found wrong, drawn at the same guidance.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import safetensors.torch
from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya, convert_state_dict_to_peft, convert_unet_state_dict_to_peft

from atelier.atomic import staged_dir, write_text_atomic
from atelier.report.grids import verdict
from atelier.runs import RunError, in_run, read_json, read_jsonl, round_dir
from atelier.tools.datasets import PAIRS_FILE, PreferencePair, read_dpo_pairs, write_dpo_parquet
from atelier.tools.lora import ADAPTER_WEIGHTS, TEXT_ENCODERS, UNET_PREFIX, read_adapter_metadata

FORMATS = ("kohya", "dpo-pairs", "sft")


def _rounds(run_dir: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in run_dir.glob("round_[0-9][0-9][0-9]") if p.is_dir())


def chosen_adapter(run_dir: Path, round_no: int | None) -> tuple[Path, int]:
    """The adapter folder of `round_no`, or of the best round (the last promoted one) when None."""
    if round_no is None:
        promoted = [r for r in _rounds(run_dir)
                    if (round_dir(run_dir, r) / "decision.json").exists()
                    and read_json(round_dir(run_dir, r) / "decision.json").get("promoted")]
        if not promoted:
            raise RunError(f"run {run_dir.name} kept no adapter (no round was promoted); pick one with --round N")
        round_no = promoted[-1]
    adapter = round_dir(run_dir, round_no) / "adapter"
    if not (adapter / ADAPTER_WEIGHTS).exists():
        raise RunError(f"run {run_dir.name} has no adapter for round {round_no} ({adapter} has no {ADAPTER_WEIGHTS})")
    return adapter, round_no


def kohya_state_dict(adapter: Path) -> dict:
    """The adapter's LoRA weights with kohya's key names and its alpha (diffusers' converters)."""
    state = safetensors.torch.load_file(str(adapter / ADAPTER_WEIGHTS))
    unet = {k: v for k, v in state.items() if k.startswith(UNET_PREFIX + ".")}
    rest = {k: v for k, v in state.items() if k not in unet}
    peft = convert_unet_state_dict_to_peft(unet)  # diffusers' lora.down/up names -> lora_A/B (peft's kept)
    if rest:
        if not all(k.split(".")[0] in TEXT_ENCODERS for k in rest):
            raise RunError(f"{adapter}: keys outside the UNet and text encoders: {sorted(rest)[:3]}")
        peft |= convert_state_dict_to_peft(rest) if not any(".lora_A." in k or ".lora_B." in k for k in rest) else rest
    kohya = convert_state_dict_to_kohya(peft)
    meta = read_adapter_metadata(adapter) or {}
    alpha = float(meta.get("alpha") or meta.get("rank") or 0) or None
    if alpha is not None:  # the converter writes alpha = rank (scale 1): put the adapter's own back
        for key in [k for k in kohya if k.endswith(".alpha")]:
            kohya[key] = kohya[key].new_tensor(alpha)
    return kohya


def export_kohya(run_dir: Path, out: Path, round_no: int | None = None) -> Path:
    adapter, round_no = chosen_adapter(run_dir, round_no)
    meta = read_adapter_metadata(adapter) or {}
    path = out / f"{run_dir.name}_round_{round_no:03d}_kohya.safetensors"
    out.mkdir(parents=True, exist_ok=True)
    info = {"ss_network_module": "networks.lora", "ss_network_dim": str(meta.get("rank", "")),
            "ss_network_alpha": str(meta.get("alpha", "")), "atelier_run": run_dir.name, "atelier_round": str(round_no)}
    tmp = path.with_name(f".{path.name}.tmp")
    safetensors.torch.save_file(kohya_state_dict(adapter), str(tmp), metadata=info)
    tmp.replace(path)
    card = adapter / "README.md"
    if card.exists():  # how to sample it travels with the file
        shutil.copyfile(card, path.with_suffix(".md"))
    return path


def export_sft(run_dir: Path, out: Path) -> Path:
    """Every round's dataset in one image folder: out/sft/metadata.jsonl and the images."""
    rows, files = [], []
    for r in _rounds(run_dir):
        dataset = round_dir(run_dir, r) / "dataset"
        if not (dataset / "metadata.jsonl").exists():
            continue
        for row in read_jsonl(dataset / "metadata.jsonl"):
            name = f"r{r:03d}_{row['file_name']}"
            rows.append({**row, "file_name": name, "round": r})
            files.append((dataset / row["file_name"], name))
    if not rows:
        raise RunError(f"run {run_dir.name} has no training data yet (no round_NNN/dataset/metadata.jsonl)")
    target = out / "sft"
    if target.exists():
        raise RunError(f"{target} already exists; remove it or give another --out")
    with staged_dir(target) as tmp:
        for source, name in files:
            shutil.copyfile(source, tmp / name)
        write_text_atomic(tmp / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return target


def strategy_pairs(run_dir: Path) -> list[PreferencePair]:
    """Pairs a strategy wrote under round_NNN/ (parquet files with Pick-a-Pic columns, or folders
    holding pairs.jsonl)."""
    pairs: list[PreferencePair] = []
    for r in _rounds(run_dir):
        rd = round_dir(run_dir, r)
        for source in sorted([*rd.rglob("*.parquet"), *(p.parent for p in rd.rglob(PAIRS_FILE))]):
            try:
                pairs += read_dpo_pairs(source)
            except (ValueError, KeyError, OSError):
                continue  # a parquet file that is not a pairs file
    return pairs


def judged_pairs(run_dir: Path, metric: str) -> list[PreferencePair]:
    """Pairs from the judged candidates: per round, prompt and guidance, each image the judge
    found right on `metric` against one it found wrong (in file order, each used once)."""
    pairs = []
    for r in _rounds(run_dir):
        groups: dict[tuple, dict[bool, list[Path]]] = {}
        for path in sorted((round_dir(run_dir, r) / "judge").glob("*.jsonl")):
            for j in read_jsonl(path):
                ok = verdict(j, metric)
                if ok is None:
                    continue
                key = (j["prompt"], j.get("guidance_scale"))
                groups.setdefault(key, {True: [], False: []})[ok].append(Path(in_run(j["file"], run_dir)))
        for (prompt, _), sides in groups.items():
            for good, bad in zip(sides[True], sides[False]):
                if good.exists() and bad.exists():
                    pairs.append(PreferencePair(prompt, good.read_bytes(), bad.read_bytes(), 1.0))
    return pairs


def export_dpo_pairs(run_dir: Path, out: Path) -> tuple[Path, int, str]:
    """(the parquet file, its number of pairs, where they came from)."""
    pairs, source = strategy_pairs(run_dir), "the strategy's pairs"
    if not pairs:
        metric = read_json(run_dir / "plan.json")["metric"] if (run_dir / "plan.json").exists() else "ipr_accuracy"
        pairs, source = judged_pairs(run_dir, metric), f"judged candidates (right vs wrong on {metric})"
    if not pairs:
        raise RunError(f"run {run_dir.name} has no preference pairs: no strategy pairs, and no prompt with both a right "
                       "and a wrong judged candidate")
    path = out / f"{run_dir.name}_dpo_pairs.parquet"
    out.mkdir(parents=True, exist_ok=True)
    write_dpo_parquet(path, pairs)
    return path, len(pairs), source


def export_run(run_dir: Path, fmt: str, out: Path, round_no: int | None = None) -> str:
    """Export and say what was written, in one line. RunError (one line) for what cannot be."""
    match fmt:
        case "kohya":
            path = export_kohya(run_dir, out, round_no)
            return f"wrote {path} (kohya / A1111 / ComfyUI LoRA keys)"
        case "sft":
            path = export_sft(run_dir, out)
            return f"wrote {path} ({len(read_jsonl(path / 'metadata.jsonl'))} images and metadata.jsonl)"
        case "dpo-pairs":
            path, n, source = export_dpo_pairs(run_dir, out)
            return f"wrote {path} ({n} pairs from {source})"
    raise RunError(f"--format {fmt!r}: one of {', '.join(FORMATS)}")
