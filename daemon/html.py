"""The self-contained HTML report: thumbnails embedded as data URIs, no network, no external assets.

Groups are rendered page by page from an embedded JSON blob, so a report of thousands of groups opens quickly: the
browser decodes only the thumbnails of the page on screen.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import asdict
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image, ImageOps

from dupwatch.daemon.reports import Report, summary
from dupwatch.hashing.errors import DecodeError
from dupwatch.hashing.fingerprint import read_file

log = logging.getLogger(__name__)

THUMB_SIDE = 200
PAGE_SIZE = 50


def thumbnail_image(path: str, side: int = THUMB_SIDE) -> Image.Image | None:
    """A small upright RGB image of the file, read as every reader does (regular files only, no symlink followed);
    None when it cannot be read now."""
    try:
        data, _ = read_file(path, max_bytes=1 << 30)
        opened = Image.open(io.BytesIO(data))
        if opened.format == "JPEG":
            opened.draft("RGB", (side, side))
        im = (ImageOps.exif_transpose(opened) or opened).convert("RGB")
        im.thumbnail((side, side))
    except (DecodeError, OSError, ValueError, Image.DecompressionBombError) as e:
        log.warning("no thumbnail for %s: %s", path, e)
        return None
    return im


def thumbnail(path: str, side: int = THUMB_SIDE) -> str | None:
    """A small upright JPEG as a data URI; None when the file cannot be read now (the page shows a placeholder)."""
    im = thumbnail_image(path, side)
    if im is None:
        return None
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def render_html(report: Report, title: str = "dupwatch report") -> str:
    groups = []
    for g in report.groups:
        d = asdict(g)
        for m in d["members"]:
            m["thumb"] = thumbnail(m["path"])
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


def write_html(report: Report, out: Path) -> None:
    out.write_text(render_html(report), encoding="utf-8")
