"""A precision/recall plot of the threshold sweep, drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from bench.scoring import Score

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def precision_recall_png(sweeps: dict[str, dict[tuple, Score]], out: Path, inliers: int, grey: int) -> None:
    """One curve per data set: points are cosine thresholds at the given inlier setting, x = recall, y = precision."""
    w, h, m = 720, 520, 70
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    lo = 0.8  # both axes from 0.8 to 1.0: the interesting corner
    x = lambda r: m + (r - lo) / (1 - lo) * (w - 2 * m)  # noqa: E731
    y = lambda p: h - m - (p - lo) / (1 - lo) * (h - 2 * m)  # noqa: E731
    d.rectangle((m, m, w - m, h - m), outline="black")
    for t in (0.8, 0.85, 0.9, 0.95, 1.0):
        d.line((x(t), h - m, x(t), h - m + 5), fill="black")
        d.text((x(t) - 12, h - m + 8), f"{t:.2f}", fill="black")
        d.line((m - 5, y(t), m, y(t)), fill="black")
        d.text((m - 40, y(t) - 6), f"{t:.2f}", fill="black")
    d.text((w // 2 - 20, h - 30), "recall", fill="black")
    d.text((10, m - 30), "precision", fill="black")
    d.text((m, 20), f"dupwatch threshold sweep (cosine 0.60-0.95, {inliers} geometric inliers)", fill="black")
    for n, (name, sweep) in enumerate(sweeps.items()):
        colour = COLOURS[n % len(COLOURS)]
        pts = sorted(((k[0], s) for k, s in sweep.items() if k[1] == inliers and k[2] == grey), key=lambda t: t[0])
        xy = [(x(max(lo, s.recall)), y(max(lo, s.precision))) for _, s in pts]
        if len(xy) > 1:
            d.line(xy, fill=colour, width=2)
        for (t, s), (px, py) in zip(pts, xy):
            d.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)
            d.text((px + 4, py - 12), f"{t:.2f}", fill=colour)
        d.text((w - m - 220, m + 10 + 16 * n), name, fill=colour)
    im.save(out)
