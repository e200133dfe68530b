"""A precision/recall plot of the threshold sweep, drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from bench.scoring import Score

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75)]


def precision_recall_png(sweeps: dict[str, dict[tuple, Score]], out: Path, inliers: int, grey: int) -> None:
    """One curve per data set and inlier setting: points are cosine thresholds (0.60 .. 0.95), x = recall,
    y = precision. The axes zoom to the data, so small differences in precision stay visible."""
    settings = sorted({k[1] for sw in sweeps.values() for k in sw if k[2] == grey} | {inliers})
    curves = []
    for name, sw in sweeps.items():
        for inl in settings:
            pts = sorted(((k[0], s) for k, s in sw.items() if k[1] == inl and k[2] == grey), key=lambda t: t[0])
            if pts:
                curves.append((f"{name}, inliers >= {inl}" + (" (default)" if inl == inliers else ""), pts))
    values = [v for _, pts in curves for _, s in pts for v in (s.precision, s.recall)]
    lo = min(0.99, min(values) - 0.002)
    w, h, m = 900, 620, 80
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    x = lambda r: m + (r - lo) / (1 - lo) * (w - 2 * m - 260)  # noqa: E731
    y = lambda p: h - m - (p - lo) / (1 - lo) * (h - 2 * m)  # noqa: E731
    d.rectangle((x(lo), y(1.0), x(1.0), y(lo)), outline="black")
    for i in range(5):
        t = lo + (1 - lo) * i / 4
        d.line((x(t), y(lo), x(t), y(lo) + 5), fill="black")
        d.text((x(t) - 14, y(lo) + 8), f"{t:.4f}", fill="black")
        d.line((x(lo) - 5, y(t), x(lo), y(t)), fill="black")
        d.text((x(lo) - 48, y(t) - 6), f"{t:.4f}", fill="black")
    d.text((x((lo + 1) / 2) - 20, h - 35), "recall", fill="black")
    d.text((10, m - 30), "precision", fill="black")
    d.text(
        (m, 20), f"dupwatch threshold sweep: cosine 0.60-0.95 along each curve, grey zone {grey} inliers", fill="black"
    )
    for n, (label, pts) in enumerate(curves):
        colour = COLOURS[n % len(COLOURS)]
        xy = [(x(s.recall), y(s.precision)) for _, s in pts]
        if len(xy) > 1:
            d.line(xy, fill=colour, width=3 if "default" in label else 1)
        for px, py in xy:
            d.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)
        d.text((w - m - 250, m + 16 * n), label, fill=colour)
    im.save(out)
