"""Judge: image + prompt -> judgment. The builtin judge answers from the exact detector's output
with the VISOR rules (counts, relation by box centres); every judgment keeps all detections so
that relabelling and later reports can be redone from disk.
"""

from __future__ import annotations

from PIL import Image

from atelier.shapes.detect import detect_all
from atelier.shapes.metrics import judge_image
from atelier.shapes.scene import parse


def judge_builtin(rows: list[dict]) -> list[dict]:
    """rows: {file, prompt, ...} -> the same rows with detections and the judgment added."""
    out = []
    for row in rows:
        detections = detect_all(Image.open(row["file"]).convert("RGB"))
        judgment = judge_image(parse(row["prompt"]), detections, row.get("prompt_index", 0))
        out.append({**row, **judgment.model_dump(), "detections": [d.to_dict() for d in detections]})
    return out


def judge_batch(backend: str, rows: list[dict]) -> list[dict]:
    match backend:
        case "builtin":
            return judge_builtin(rows)
    raise ValueError(f"unknown judge backend {backend!r}")
