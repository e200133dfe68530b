"""The self-contained HTML report: thumbnails embedded as data URIs, no network, no external assets.

Groups are rendered page by page from an embedded JSON blob, so a report of thousands of groups opens quickly: the
browser decodes only the thumbnails of the page on screen.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from dupwatch.daemon.reports import Report, summary
from dupwatch.daemon.thumbnails import THUMB_SIDE, ThumbnailCache, data_uri, thumbnail_jpeg

PAGE_SIZE = 50


def thumbnail(
    path: str, side: int = THUMB_SIDE, cache: ThumbnailCache | None = None, content_hash: str | None = None
) -> str | None:
    """A small upright JPEG as a data URI (through the thumbnail cache beside the database, when given); None when
    the file cannot be read now (the page shows a placeholder)."""
    data = cache.get(path, content_hash, side) if cache is not None else thumbnail_jpeg(path, side)
    return None if data is None else data_uri(data)


def render_html(report: Report, title: str = "dupwatch report", cache: ThumbnailCache | None = None) -> str:
    groups = []
    for g in report.groups:
        d = asdict(g)
        for m in d["members"]:
            m["thumb"] = thumbnail(m["path"], cache=cache, content_hash=m.get("content_hash"))
            m["keeper"] = m["path"] == g.keeper
            m["protected"] = m["path"] in g.protected
        groups.append(d)
    env = Environment(
        loader=PackageLoader("dupwatch.daemon", "templates"), autoescape=select_autoescape(["html", "j2"])
    )
    # Inside <script>, '</script' ends the element and '<!--' switches the parser into a state where the rest of
    # the page can be swallowed: no '<' may appear literally. JSON allows the escaped form of every character.
    blob = json.dumps({"groups": groups, "errors": [asdict(e) for e in report.errors]}).replace("<", "\\u003c")
    return env.get_template("report.html.j2").render(
        title=title, summary=summary(report), noun=report.noun, data=blob, page_size=PAGE_SIZE
    )


def write_html(report: Report, out: Path, cache: ThumbnailCache | None = None) -> None:
    out.write_text(render_html(report, cache=cache), encoding="utf-8")
