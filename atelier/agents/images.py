"""Images as PNG data URLs, the form every OpenAI-protocol server accepts inline."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

# Vision encoders work on patches of 14-28 px: a 32 px shapes-world image would be one or two
# patches, so small images are enlarged (nearest neighbour: no new colours, no blur).
MIN_SIDE = 224


def png_data_url(path: str | Path, min_side: int = MIN_SIDE) -> str:
    image = Image.open(path).convert("RGB")
    short = min(image.size)
    if short < min_side:
        factor = -(-min_side // short)
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
