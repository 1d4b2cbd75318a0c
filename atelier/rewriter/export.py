"""Preference pairs in trl's format, the files `atelier rewriter train` and trl's DPOTrainer read.

Conversational preference format (trl docs, "Dataset formats"): each row has `prompt` (the
system and user messages the rewriter is asked with: exactly what a served rewriter receives),
`chosen` and `rejected` (one assistant message each: the answer the rewriter writes, the JSON of
atelier.rewriter.request.OneRewrite). Written twice, as pairs.jsonl and pairs.parquet; atelier's
own columns (`user_prompt`, scores) ride along and trl ignores them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from atelier.atomic import write_jsonl_atomic

PAIRS_JSONL = "pairs.jsonl"
PAIRS_PARQUET = "pairs.parquet"


def answer_text(rewrite: str) -> str:
    """The assistant's answer for one rewrite, as a model rewriter writes it (OneRewrite JSON)."""
    return json.dumps({"rewrite": rewrite})


def trl_rows(pairs: Sequence[dict], messages_of: Callable[[str], list[dict]]) -> list[dict]:
    """pairs {prompt, chosen, rejected, ...} (texts) -> trl conversational preference rows;
    `messages_of(user_prompt)` gives the system and user messages the rewriter is asked with."""
    return [{"prompt": messages_of(p["prompt"]),
             "chosen": [{"role": "assistant", "content": answer_text(p["chosen"])}],
             "rejected": [{"role": "assistant", "content": answer_text(p["rejected"])}],
             "user_prompt": p["prompt"], "chosen_score": p.get("chosen_score"), "rejected_score": p.get("rejected_score")}
            for p in pairs]


def write_pairs(rows: Sequence[dict], folder: Path) -> tuple[Path, Path]:
    """rows -> folder/pairs.jsonl and folder/pairs.parquet (via `datasets`, read back by it)."""
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()  # a loop's log keeps to its own lines
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(folder / PAIRS_JSONL, list(rows))
    parquet = folder / PAIRS_PARQUET
    tmp = folder / f".{PAIRS_PARQUET}.tmp"
    Dataset.from_list(list(rows)).to_parquet(str(tmp))
    tmp.replace(parquet)
    return folder / PAIRS_JSONL, parquet


def read_pairs(path: Path):
    """A pairs file (.jsonl or .parquet) or a folder holding pairs.jsonl, as a `datasets.Dataset`;
    ValueError (one line) for anything else or rows without prompt/chosen/rejected."""
    from datasets import disable_progress_bars, load_dataset

    disable_progress_bars()  # a CLI's error must stay one line on stderr
    path = Path(path)
    if path.is_dir():
        path = path / PAIRS_JSONL
    kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(path.suffix)
    if kind is None or not path.is_file():
        raise ValueError(f"{path}: no pairs file (give pairs.jsonl, pairs.parquet or the folder holding them)")
    try:
        data = load_dataset(kind, data_files=str(path), split="train")
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds for a broken file
        raise ValueError(f"{path}: cannot read it as {kind} ({type(e).__name__})") from None
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in data.column_names]
    if missing or len(data) == 0:
        raise ValueError(f"{path}: {'no pairs' if not missing else 'rows lack ' + ', '.join(missing)}")
    return data
