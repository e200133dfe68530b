"""`dupwatch cluster` on real photos: bursts of distinct scenes (frames shifted, zoomed, exposed differently, some
shaken) made from the sample photos, clustered from the stored embeddings with k chosen automatically."""

from __future__ import annotations

import json
import random
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageEnhance, ImageFilter
from sklearn.metrics import adjusted_rand_score

from dupwatch.daemon import clustering
from dupwatch.daemon.cli import main
from dupwatch.daemon.demo import add_noise, exif_bytes, jpeg_bytes, load_photo, scale_to
from dupwatch.daemon.store import Store
from tests.helpers import scan_folder, tree_digest
from tests.test_html import CHROMIUM, FLAGS

SCENES = ("chelsea", "coffee", "rocket", "astronaut", "camera")


def _frame(im: Image.Image, rng: random.Random, strength: float) -> Image.Image:
    """Another frame of a burst: the view shifted and zoomed a little, another exposure, sensor noise."""
    w, h = im.size
    zoom = 1 + rng.uniform(0, 0.12) * strength
    cw, ch = int(w / zoom), int(h / zoom)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    out = im.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BICUBIC)
    out = ImageEnhance.Brightness(out).enhance(1 + rng.uniform(-0.25, 0.25) * strength)
    return add_noise(out, rng, 2 + 4 * strength)


def _bursts(root: Path, strength: float, seed: int) -> dict[str, tuple[int, bool]]:
    """Four frames per scene, one hour between scenes and a second between frames; frame 0 of each is the only
    one not shaken (blurred). Returns path -> (scene, is the sharp frame)."""
    rng = random.Random(seed)
    truth = {}
    for s, name in enumerate(SCENES):
        src = scale_to(load_photo(name), 640)
        for f in range(4):
            frame = _frame(src, rng, strength)
            if f:
                frame = frame.filter(ImageFilter.GaussianBlur(1.5 + f))
            when = f"2024:06:01 {10 + s:02d}:00:{f:02d}"
            path = root / f"{name}_{f}.jpg"
            path.write_bytes(jpeg_bytes(frame, 90, exif=exif_bytes(when=when)))
            truth[str(path)] = (s, f == 0)
    return truth


def _scan(root: Path, db: Path, embedder) -> Store:
    return scan_folder(root, db, embedder)


@pytest.fixture(scope="module")
def clean(tmp_path_factory, embedder) -> tuple[Path, dict, Store]:
    root = tmp_path_factory.mktemp("bursts")
    truth = _bursts(root, strength=0.5, seed=1)
    return root, truth, _scan(root, root.parent / "bursts.db", embedder)


def test_auto_finds_one_cluster_per_scene_and_its_sharpest_frame(clean) -> None:
    root, truth, store = clean
    result = clustering.cluster(clustering.stored_photos(store, [root]))
    assert result.k == len(SCENES), result.scores
    labels = [truth[f.path][0] for f in result.files]
    assert adjusted_rand_score(labels, result.labels.tolist()) == 1.0
    for c in result.clusters:
        assert truth[c.best.path][1], (c.best.path, c.best_reason)
    assert 0 < result.explained[0] < result.explained[-1] <= 1.0
    again = clustering.cluster(clustering.stored_photos(store, [root]))  # deterministic for one database
    assert [[m.path for m in c.members] for c in again.clusters] == [
        [m.path for m in c.members] for c in result.clusters
    ]


def test_auto_on_noisier_bursts(tmp_path: Path, embedder) -> None:
    root = tmp_path / "noisy"
    root.mkdir()
    truth = _bursts(root, strength=1.5, seed=2)
    store = _scan(root, tmp_path / "noisy.db", embedder)
    result = clustering.cluster(clustering.stored_photos(store))
    labels = [truth[f.path][0] for f in result.files]
    assert adjusted_rand_score(labels, result.labels.tolist()) >= 0.9, (result.k, result.scores)


def test_bursts_by_time_and_look(clean) -> None:
    root, truth, store = clean
    found = clustering.bursts(clustering.stored_photos(store, [root]))
    assert len(found) == len(SCENES)
    for b in found:
        assert len({truth[m.path][0] for m in b.members}) == 1 and len(b.members) == 4
        assert truth[b.best.path][1]
    # frames that the matcher put in one similar-shot group are a burst whatever their cosine
    files = clustering.stored_photos(store, [root])
    assert clustering.bursts(files, min_cosine=1.01) == []
    shots = {f.id: truth[f.path][0] for f in files}
    assert len(clustering.bursts(files, min_cosine=1.01, shots=shots)) == len(SCENES)


def test_cli_json_and_export_links_without_touching_the_originals(clean, tmp_path: Path) -> None:
    root, truth, store = clean
    before = tree_digest(root)
    out = tmp_path / "by-cluster"
    r = CliRunner().invoke(
        main, ["--db", str(store.path), "cluster", str(root), "--format", "json", "--export", str(out)]
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["k"] == len(SCENES) and "silhouette" in data["method"]
    sizes = sorted(c["size"] for c in data["clusters"])
    assert sizes == [4] * len(SCENES)
    assert all(Path(c["best"]).is_absolute() and truth[c["best"]][1] for c in data["clusters"])
    links = sorted(out.glob("cluster_*/*"))
    assert len(links) == len(truth) and all(p.is_symlink() and str(p.resolve()) in truth for p in links)
    assert tree_digest(root) == before
    r = CliRunner().invoke(main, ["--db", str(store.path), "cluster", "--export", str(root / "inside")])
    assert r.exit_code == 2 and "inside a scanned folder" in r.output
    r = CliRunner().invoke(main, ["--db", str(store.path), "cluster", "--k", "2", "--format", "csv"])
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 1 + len(truth)
    copies = tmp_path / "copies"
    r = CliRunner().invoke(main, ["--db", str(store.path), "cluster", "--export", str(copies), "--copy"])
    assert r.exit_code == 0 and "20 copies" in r.output
    made = sorted(copies.glob("cluster_*/*"))
    assert len(made) == len(truth) and not any(p.is_symlink() for p in made)
    assert tree_digest(root) == before
    r = CliRunner().invoke(main, ["--db", str(store.path), "cluster", "--min-size", "5", "--format", "json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["k"] == 0  # every burst has 4 frames


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_cluster_page_draws_the_3d_map_and_the_thumbnails(clean, tmp_path: Path) -> None:
    root, truth, store = clean
    page = tmp_path / "clusters.html"
    r = CliRunner().invoke(main, ["--db", str(store.path), "cluster", str(root), "--html", str(page)])
    assert r.exit_code == 0, r.output
    text = page.read_text()
    # nothing fetched from anywhere: no tag loads a remote script, style or image (plotly.js is inlined; the URLs
    # inside its code are links it could show, not resources)
    assert not re.search(r"""<(script|link|img|iframe)\b[^>]*\b(src|href)=["']?(https?:)?//""", text)
    flags = [*FLAGS, "--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--virtual-time-budget=8000"]
    run = [CHROMIUM, *flags, f"--user-data-dir={tmp_path / 'p1'}", "--dump-dom", page.as_uri()]
    dom = subprocess.run(run, capture_output=True, text=True, timeout=90).stdout
    assert 'class="gl-container"' in dom or "<canvas" in dom  # the WebGL scene of the 3-D scatter was set up
    assert int(re.search(r'data-loaded="(\d+)"', dom).group(1)) == len(truth)  # every thumbnail decoded
    assert ("PC1 (" in dom and "cluster centres" in dom and 'class="bars"' in dom) or 'id="sizes"' in dom
    shot = tmp_path / "shot.png"
    run = [CHROMIUM, *flags, f"--user-data-dir={tmp_path / 'p2'}", f"--screenshot={shot}", "--window-size=1200,900"]
    subprocess.run([*run, page.as_uri()], capture_output=True, timeout=90)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    scene = pixels[150:800]  # the 3-D scatter: coloured points on plotly's grey-blue scene
    assert (pixels.max(axis=2) - pixels.min(axis=2) > 60).mean() > 0.001 and scene.std() > 5


def test_pngs_are_contact_sheets_and_a_scatter(clean, tmp_path: Path) -> None:
    root, _, store = clean
    out = tmp_path / "png"
    r = CliRunner().invoke(main, ["--db", str(store.path), "cluster", str(root), "--png", str(out)])
    assert r.exit_code == 0, r.output
    sheets = sorted(out.glob("cluster_*.png"))
    assert len(sheets) == len(SCENES)
    for sheet in sheets:
        with Image.open(sheet) as im:
            assert im.size == (8 * 160, 160)  # four thumbnails: one row of the 8-column grid
            assert np.asarray(im).std() > 20
    with Image.open(out / "scatter.png") as im:
        assert im.size == (800, 600) and im.format == "PNG"
