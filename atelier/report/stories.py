"""Per-sample stories for the report: what happened to a few training samples of each round.

A strategy that writes round_NNN/stories.jsonl (one JSON object per sample: prompt, image,
judgment, reward, critique, instructions, edited_image, verdicts, kept, rewrites, ...) is shown
field by field, generically: a field whose name contains "image" and holds a path to a file is
shown as the image, other scalars as text, lists and objects as indented JSON. Without that file
(IPR, CCSR today) a story is read from the round's dataset: the original prompt, the generated
image, the judge's verdicts on it, and the caption it was trained under (relabelled or kept).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from atelier.report.grids import data_url, thumbnail
from atelier.runs import in_run, read_jsonl

MAX_STORIES = 8  # per round
MAX_TEXT = 2_000  # characters of one field


@dataclass
class Field:
    name: str
    kind: str  # "text", "image" or "json"
    value: str  # the text, a data: URL, or indented JSON


def _short(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + f"…[cut: {len(text)} characters]"


def _image(value, run_dir: Path, round_dir: Path) -> str | None:
    """A data: URL of the image a story field names, or None when it names no image on disk."""
    if not isinstance(value, str) or not value:
        return None
    for candidate in (Path(in_run(value, run_dir)), round_dir / value, run_dir / value):
        try:
            if candidate.is_file():
                return data_url(thumbnail(candidate))
        except OSError:
            continue
    return None


def story_fields(row: dict, run_dir: Path, round_dir: Path) -> list[Field]:
    """One stories.jsonl row as the report shows it, in the row's own order (null fields left out)."""
    fields = []
    for name, value in row.items():
        if value is None:
            continue  # a step the sample did not reach (no critique, no edit): nothing to show
        if "image" in name.lower() and (src := _image(value, run_dir, round_dir)) is not None:
            fields.append(Field(name, "image", src))
        elif isinstance(value, (str, int, float, bool)):
            fields.append(Field(name, "text", _short(str(value))))
        else:
            fields.append(Field(name, "json", _short(json.dumps(value, indent=1, ensure_ascii=False))))
    return fields


def _verdicts(judgment: dict) -> str:
    """A judgment in one line: what was found and which checks held."""
    if judgment.get("failed"):
        return f"judge failed: {(judgment.get('failure') or {}).get('error', 'no answer')}"
    marks = []
    for key, label in (("object_ok", "objects"), ("count_ok", "counts"), ("relation_ok", "relation"),
                       ("colour_ok", "colours"), ("shape_ok", "shapes")):
        if isinstance(judgment.get(key), bool):
            marks.append(f"{label} {'✓' if judgment[key] else '✗'}")
    found = ", ".join(f"{n} × {name}" for name, n in (judgment.get("found") or {}).items()) or "nothing"
    text = f"found {found}; " + ", ".join(marks)
    if judgment.get("question_score") is not None:
        text += f"; question score {judgment['question_score']}"
    if judgment.get("clip_score") is not None:
        text += f"; CLIP score {judgment['clip_score']:.2f}"
    return text


def _judgments_by_file(round_dir: Path) -> dict[str, dict]:
    out = {}
    for path in sorted((round_dir / "judge").glob("*.jsonl")):
        try:
            out.update({Path(j["file"]).name + "@" + Path(j["file"]).parent.name: j for j in read_jsonl(path) if "file" in j})
        except (OSError, ValueError, KeyError):
            continue
    return out


def dataset_stories(round_dir: Path, run_dir: Path, limit: int = MAX_STORIES) -> list[list[Field]]:
    """Stories from round_NNN/dataset/metadata.jsonl (IPR, CCSR): prompt → image → judgment →
    the caption trained on (relabelled or kept) with its weight."""
    try:
        rows = read_jsonl(round_dir / "dataset" / "metadata.jsonl")
    except (OSError, ValueError):
        return []
    judged = _judgments_by_file(round_dir)
    stories = []
    for row in rows[:limit]:
        source = row.get("source")
        image = _image(source, run_dir, round_dir) or _image(f"dataset/{row.get('file_name')}", run_dir, round_dir)
        fields = [Field("prompt", "text", str(row.get("original_prompt", "")))]
        if image:
            fields.append(Field("image", "image", image))
        if source and (j := judged.get(Path(source).name + "@" + Path(source).parent.name)):
            fields.append(Field("judgment", "text", _verdicts(j)))
        fields.append(Field(str(row.get("kind", "caption")), "text", str(row.get("text", ""))))
        if "weight" in row:
            fields.append(Field("weight", "text", str(row["weight"])))
        stories.append(fields)
    return stories


def round_stories(round_dir: Path, run_dir: Path, limit: int = MAX_STORIES) -> tuple[list[list[Field]], int]:
    """(the first `limit` stories of a round, how many it has): stories.jsonl when the strategy
    writes one, else the dataset's."""
    path = round_dir / "stories.jsonl"
    if path.exists():
        try:
            rows = read_jsonl(path)
        except (OSError, ValueError):
            rows = []
        return [story_fields(r, run_dir, round_dir) for r in rows[:limit] if isinstance(r, dict)], len(rows)
    try:
        total = len(read_jsonl(round_dir / "dataset" / "metadata.jsonl"))
    except (OSError, ValueError):
        total = 0
    return dataset_stories(round_dir, run_dir, limit), total
