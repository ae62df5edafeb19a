"""Render the style picker's preview tiles with the real built-in style models.

    .venv/bin/python scripts/make_style_tiles.py

Writes one small JPEG per style to src/darkroom/web/static/styles/ (committed, so the server
never renders them at run time). The sample picture is drawn here, so no photo is shipped.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image, ImageDraw

from darkroom.providers.local import operations
from darkroom.providers.local.styles import STYLE_NAMES

OUT = Path(__file__).resolve().parents[1] / "src" / "darkroom" / "web" / "static" / "styles"
SIDE = 256
TILE = 96


def sample() -> bytes:
    """A little landscape: sky gradient, sun, hills, a house and a tree."""
    img = Image.new("RGB", (SIDE, SIDE))
    draw = ImageDraw.Draw(img)
    for y in range(SIDE):
        t = y / SIDE
        draw.line([(0, y), (SIDE, y)], fill=(int(70 + 120 * t), int(140 + 80 * t), int(230 - 60 * t)))
    draw.ellipse([170, 30, 225, 85], fill=(255, 214, 90))
    for i, color in enumerate([(70, 140, 60), (40, 110, 50)]):
        points = [
            (x, int(170 + 25 * i + 20 * math.sin(x / (30 + 15 * i) + i))) for x in range(0, SIDE + 8, 8)
        ]
        draw.polygon([*points, (SIDE, SIDE), (0, SIDE)], fill=color)
    draw.rectangle([50, 150, 110, 205], fill=(200, 70, 50))
    draw.polygon([(42, 152), (80, 115), (118, 152)], fill=(90, 50, 40))
    draw.rectangle([72, 175, 88, 205], fill=(60, 40, 30))
    draw.rectangle([175, 160, 185, 215], fill=(90, 60, 30))
    draw.ellipse([152, 110, 208, 170], fill=(30, 120, 45))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    data = sample()
    for name in STYLE_NAMES:
        out = operations.stylize(data, max_pixels=SIDE * SIDE, style=name)
        tile = Image.open(io.BytesIO(out.data)).convert("RGB").resize((TILE, TILE), Image.Resampling.LANCZOS)
        tile.save(OUT / f"{name}.jpg", "JPEG", quality=82, optimize=True)
        print(name)


if __name__ == "__main__":
    main()
