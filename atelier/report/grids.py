"""Held-out images of the base and the best model side by side, labelled with each prompt and the
judge's verdict, for the report: as rows of small inline images (the HTML) and as one PNG (the
Markdown), both at most `MAX_WIDTH` pixels wide at any images-per-prompt.

32-pixel worlds are upscaled with nearest-neighbour (their pixels are the picture); larger images
are shrunk to thumbnails with Lanczos.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from atelier.runs import read_jsonl

MAX_WIDTH = 1200  # px: a 1280-px laptop window less its scroll bar and margins
THUMB = 96  # px: the side of one image in the report
MAX_ROWS = 8
# Which judgment field says "right" for a target metric (the verdict marked on each image).
VERDICT_FIELD = {"object_accuracy": "object_ok", "count_accuracy": "count_ok", "count_accuracy_multi": "count_ok",
                 "colour_accuracy": "colour_ok", "shape_accuracy": "shape_ok", "relation_accuracy_cond": "relation_ok",
                 "relation_accuracy_uncond": "relation_ok", "ipr_accuracy": "ipr_correct"}


def verdict(judgment: dict, metric: str) -> bool | None:
    """The judge's verdict on one image for `metric`: True (right), False (wrong) or None (not
    judged: a failed judgment, or a metric without a per-image yes/no such as CLIP score)."""
    if judgment.get("failed"):
        return None
    if metric == "relation_accuracy_cond" and judgment.get("object_ok") is False:
        return None  # VISOR_cond counts only images with both objects found
    if metric == "question_score":
        score = judgment.get("question_score")
        return None if score is None else score > 0
    value = judgment.get(VERDICT_FIELD.get(metric, "ipr_correct"))
    return value if isinstance(value, bool) else None


def thumbnail(path: Path, side: int = THUMB) -> Image.Image:
    """The image at `path` as a side x side RGB thumbnail: nearest-neighbour up, Lanczos down."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        resample = Image.NEAREST if max(img.size) <= side else Image.LANCZOS
        return ImageOps.pad(img, (side, side), method=resample, color="white")


def data_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass
class Cell:
    src: str  # a data: URL
    ok: bool | None
    seed: int | None = None


@dataclass
class Row:
    prompt: str
    base: list[Cell] = field(default_factory=list)
    best: list[Cell] = field(default_factory=list)


def _judged(eval_dir: Path) -> dict[str, dict]:
    try:
        return {Path(j["file"]).name: j for j in read_jsonl(eval_dir / "judgments.jsonl") if "file" in j}
    except (OSError, ValueError):
        return {}


def comparison_rows(base_eval: Path, best_eval: Path, prompts: list[str], k: int, metric: str,
                    rows: int = MAX_ROWS) -> list[Row]:
    """The first `rows` held-out prompts with their k base and k best images (same seeds) and the
    judge's verdict on each; images that are not on disk are left out."""
    judged = {"base": _judged(base_eval), "best": _judged(best_eval)}
    out = []
    for i, prompt in enumerate(prompts[:rows]):
        row = Row(prompt)
        for side, folder in (("base", base_eval), ("best", best_eval)):
            for j in range(k):
                name = f"p{i:03d}_{j}.png"
                if not (folder / "images" / name).exists():
                    continue
                judgment = judged[side].get(name, {})
                getattr(row, side).append(Cell(data_url(thumbnail(folder / "images" / name)), verdict(judgment, metric),
                                               judgment.get("seed")))
        out.append(row)
    return out


_GREEN, _RED, _GREY = (30, 150, 60), (200, 40, 40), (160, 160, 160)


def grid_png(base_eval: Path, best_eval: Path, prompts: list[str], k: int, metric: str, path: Path,
             rows: int = MAX_ROWS) -> Path:
    """One PNG of the same rows: per prompt a caption line, then base images | best images, each
    framed green (right), red (wrong) or grey (not judged). At most MAX_WIDTH wide: the image side
    shrinks with k (never below 32 px) and at most 6 images per side are shown."""
    judged = {"base": _judged(base_eval), "best": _judged(best_eval)}
    shown = min(k, 6)
    gap, border, caption = 16, 3, 14
    side = max(32, min(THUMB, (MAX_WIDTH - gap) // (2 * shown) - 2 * border))
    cell = side + 2 * border
    width = 2 * shown * cell + gap
    rows = min(rows, len(prompts))
    grid = Image.new("RGB", (width, caption + rows * (cell + caption)), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((0, 0), "base", fill="black")
    draw.text((shown * cell + gap, 0), "best", fill="black")
    for i in range(rows):
        top = caption + i * (cell + caption)
        draw.text((0, top), prompts[i][:160], fill="black")
        for s, (name, folder) in enumerate((("base", base_eval), ("best", best_eval))):
            for j in range(shown):
                file = folder / "images" / f"p{i:03d}_{j}.png"
                if not file.exists():
                    continue
                ok = verdict(judged[name].get(file.name, {}), metric)
                x, y = s * (shown * cell + gap) + j * cell, top + caption
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=_GREY if ok is None else _GREEN if ok else _RED)
                grid.paste(thumbnail(file, side), (x + border, y + border))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    grid.save(tmp, format="PNG")
    os.replace(tmp, path)  # the report is rewritten while a user may be looking at it
    return path
