"""What `dupwatch cluster` shows besides text: one self-contained HTML page (plotly embedded, thumbnails as data
URIs, nothing fetched) and PNGs (a contact sheet per cluster, a 2-D scatter of the PCA space by matplotlib)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dupwatch.daemon.clustering import Clustering
from dupwatch.daemon.html import thumbnail
from dupwatch.daemon.thumbnails import thumbnail_image

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
 body {{ font-family: system-ui, sans-serif; margin: 1.5em; background: #f6f6f4; color: #222; }}
 .cluster {{ background: #fff; border: 1px solid #ddd; border-radius: 6px; margin: 1em 0; padding: .6em; }}
 .cluster h2 {{ font-size: 1em; margin: 0 0 .4em; }}
 .cluster img {{ height: 96px; margin: 2px; border: 2px solid transparent; }}
 .cluster img.best {{ border-color: #1a7f37; }}
 #hover {{ position: fixed; right: 1em; top: 1em; background: #fff; border: 1px solid #aaa; padding: 4px;
          display: none; font-size: .8em; max-width: 220px; }}
 #hover img {{ max-width: 210px; display: block; }}
</style></head>
<body data-images="{images}" data-loaded="0">
<h1>{title}</h1>
<p>{summary}</p>
<div id="hover"><img alt=""><div></div></div>
{scatter}
<h2>Cluster sizes</h2>
<p>{sizes_text}</p>
{bars}
{grids}
<script>
(() => {{
  const thumbs = {thumbs};
  const hover = document.getElementById("hover");
  const plot = document.getElementById("pca-3d");
  plot.on("plotly_hover", e => {{
    const p = e.points[0];
    if (p.customdata === undefined || p.customdata < 0) return;
    hover.querySelector("img").src = thumbs[p.customdata] || "";
    hover.querySelector("div").textContent = p.text;
    hover.style.display = "block";
  }});
  plot.on("plotly_unhover", () => {{ hover.style.display = "none"; }});
  let loaded = 0;
  for (const img of document.querySelectorAll(".cluster img")) {{
    const done = () => {{ loaded += 1; document.body.dataset.loaded = loaded; }};
    if (img.complete && img.naturalWidth > 0) done(); else img.addEventListener("load", done);
  }}
}})();
</script>
</body></html>
"""


def _axis(result: Clustering, i: int) -> str:
    if i >= len(result.explained):
        return f"PC{i + 1}"
    share = result.explained[i] - (result.explained[i - 1] if i else 0.0)
    return f"PC{i + 1} ({100 * share:.1f} % of the variance)"


def write_html(result: Clustering, out: Path, title: str = "dupwatch clusters") -> None:
    """The page: a 3-D scatter of the first three principal components (points coloured by cluster, file name and
    thumbnail on hover, centres marked, axes with their explained variance), cluster sizes as text and as bars,
    and a thumbnail grid per cluster with its best shot outlined."""
    import plotly.graph_objects as go

    coords = result.coords if result.coords.shape[1] >= 3 else np.pad(result.coords, ((0, 0), (0, 3)))[:, :3]
    index = {f.path: n for n, f in enumerate(result.files)}
    shown = {m.path for c in result.clusters for m in c.members}
    thumbs = [thumbnail(f.path, 160) if f.path in shown else None for f in result.files]
    fig = go.Figure()
    for c in result.clusters:
        rows = [index[m.path] for m in c.members]
        fig.add_trace(
            go.Scatter3d(
                x=coords[rows, 0],
                y=coords[rows, 1],
                z=coords[rows, 2],
                mode="markers",
                marker={"size": 4},
                name=f"cluster {c.id} ({len(c.members)})",
                text=[Path(m.path).name for m in c.members],
                customdata=rows,
                hovertemplate="%{text}<extra>cluster " + str(c.id) + "</extra>",
            )
        )
    centres = np.array([c.centre[:3] if len(c.centre) >= 3 else np.pad(c.centre, (0, 3))[:3] for c in result.clusters])
    if len(centres):
        fig.add_trace(
            go.Scatter3d(
                x=centres[:, 0],
                y=centres[:, 1],
                z=centres[:, 2],
                mode="markers",
                marker={"size": 6, "symbol": "diamond", "color": "black", "opacity": 0.6},
                name="cluster centres",
                text=[f"centre of cluster {c.id}" for c in result.clusters],
                customdata=[-1] * len(centres),
                hovertemplate="%{text}<extra></extra>",
            )
        )
    fig.update_layout(
        scene={"xaxis_title": _axis(result, 0), "yaxis_title": _axis(result, 1), "zaxis_title": _axis(result, 2)},
        height=640,
        margin={"l": 0, "r": 0, "t": 30, "b": 0},
        title=f"{len(result.files)} photos, {result.k} clusters: the first three principal components",
    )
    bars = go.Figure(
        go.Bar(x=[f"cluster {c.id}" for c in result.clusters], y=[len(c.members) for c in result.clusters])
    )
    bars.update_layout(height=300, margin={"l": 40, "r": 10, "t": 10, "b": 40}, yaxis_title="photos")
    grids = []
    for c in result.clusters:
        imgs = "".join(
            f'<img src="{thumbs[index[m.path]]}" title="{html.escape(m.path)}" alt="{html.escape(Path(m.path).name)}"'
            + (' class="best"' if m is c.best else "")
            + ">"
            for m in c.members
            if thumbs[index[m.path]]
        )
        best = html.escape(c.best.path)
        grids.append(
            f'<section class="cluster" id="cluster-{c.id}"><h2>Cluster {c.id}: {len(c.members)} photos, best shot '
            f"{best} ({html.escape(c.best_reason)})</h2>{imgs}</section>"
        )
    page = _PAGE.format(
        title=html.escape(title),
        summary=html.escape(
            f"{result.method}; explained variance of the components kept: "
            f"{100 * (result.explained[-1] if result.explained else 0):.1f} %"
        ),
        images=sum(1 for c in result.clusters for m in c.members if thumbs[index[m.path]]),
        scatter=fig.to_html(full_html=False, include_plotlyjs=True, div_id="pca-3d", config={"displaylogo": False}),
        sizes_text=html.escape(", ".join(f"cluster {c.id}: {len(c.members)}" for c in result.clusters)),
        bars=bars.to_html(full_html=False, include_plotlyjs=False, div_id="sizes", config={"displaylogo": False}),
        grids="\n".join(grids),
        thumbs=json.dumps(thumbs).replace("<", "\\u003c"),
    )
    out.write_text(page, encoding="utf-8")


def write_pngs(result: Clustering, folder: Path, side: int = 160, columns: int = 8) -> list[Path]:
    """A contact sheet per cluster (cluster_001.png: thumbnails in a grid, the best shot outlined in green) and
    scatter.png (PC1 against PC2, coloured by cluster, centres marked). Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for c in result.clusters:
        rows = -(-len(c.members) // columns)
        sheet = Image.new("RGB", (columns * side, rows * side), (246, 246, 244))
        draw = ImageDraw.Draw(sheet)
        for n, m in enumerate(c.members):
            x, y = (n % columns) * side, (n // columns) * side
            tile = thumbnail_image(m.path, side - 8)
            if tile is None:
                continue
            sheet.paste(tile, (x + (side - tile.width) // 2, y + (side - tile.height) // 2))
            if m is c.best:
                draw.rectangle((x + 1, y + 1, x + side - 2, y + side - 2), outline=(26, 127, 55), width=4)
        path = folder / f"cluster_{c.id:03d}.png"
        sheet.save(path)
        written.append(path)
    fig, ax = plt.subplots(figsize=(8, 6), dpi=100)
    index = {f.path: n for n, f in enumerate(result.files)}
    coords = result.coords if result.coords.shape[1] >= 2 else np.pad(result.coords, ((0, 0), (0, 2)))[:, :2]
    for c in result.clusters:
        members = [index[m.path] for m in c.members]
        ax.scatter(coords[members, 0], coords[members, 1], s=12, label=f"cluster {c.id}")
        ax.scatter([c.centre[0]], [c.centre[1] if len(c.centre) > 1 else 0], marker="X", s=90, color="black")
    ax.set_xlabel(_axis(result, 0))
    ax.set_ylabel(_axis(result, 1))
    ax.set_title(f"{len(result.files)} photos, {result.k} clusters (x: centres)")
    if len(result.clusters) <= 20:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    scatter = folder / "scatter.png"
    fig.savefig(scatter)
    plt.close(fig)
    written.append(scatter)
    return written
