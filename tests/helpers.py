"""Helpers shared by the tests (and the latency benchmark): distinct little images, waiting for a condition, a
service in a thread, the shared bench-data location, pairs of groups."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from dupwatch.daemon.demo import load_photo
from dupwatch.daemon.service import Service
from dupwatch.daemon.store import Store
from dupwatch.hashing.fingerprint import FileResult, fingerprint_file

if TYPE_CHECKING:
    from dupwatch.hashing.embedding import Embedder


def run_python(
    code: str, *args: str, timeout: float | None = 120, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`code` run by a fresh interpreter (this one) with `args` on its command line; it must succeed (its stderr is
    the failure's message). For what only a new process shows: what an import loads, what a start sets."""
    r = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )
    assert r.returncode == 0, r.stderr
    return r


BENCH_DATA = Path(
    os.environ.get("DUPWATCH_BENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "bench-data")
).resolve()


def pairs_of(groups: list[list[str]]) -> set[frozenset[str]]:
    """Every unordered pair of paths that share a group."""
    return {frozenset((a, b)) for g in groups for i, a in enumerate(g) for b in g[i + 1 :]}


def noise_png(seed: int, size: int = 48) -> bytes:
    """A distinct small image per seed (no two are near-duplicates)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    im = Image.fromarray(a).resize((size, size), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def photo_jpeg(name: str = "chelsea", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    load_photo(name).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def wait_until(cond: Callable[[], bool], timeout: float = 30.0, every: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(every)
    return cond()


class ServiceThread:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.service.run()
        except BaseException as e:  # surfaced by stop()
            self.error = e

    def __enter__(self) -> ServiceThread:
        self.thread.start()
        assert wait_until(lambda: self.service.status.state == "watching" or self.error is not None, 60)
        if self.error:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.service.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()
        if self.error:
            raise self.error


def write_slowly(path: Path, data: bytes, chunks: int = 5, pause: float = 0.3) -> None:
    step = len(data) // chunks + 1
    with open(path, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            time.sleep(pause)


def tree_digest(root: Path) -> dict[str, str]:
    """Every regular file under root -> sha256 of its bytes (symlinks as 'link -> target')."""
    out: dict[str, str] = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath, f)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = f"link -> {os.readlink(p)}"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@contextmanager
def tmpfs(where: Path, size: str = "1m", readonly: bool = False) -> Iterator[Path]:
    """A small tmpfs mounted at `where` (a full disk, or a read-only one, on demand); skips where mounting is not
    allowed (not root, no CAP_SYS_ADMIN)."""
    import pytest

    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def dying_fingerprinter(path: str, max_side: int, max_pixels: int, max_bytes: int) -> FileResult:
    """A fingerprinter that kills its own worker process (as the OOM killer would) on files named `poison*`
    always, and on files named `once*` the first time only (a marker file beside them remembers)."""
    name = os.path.basename(path)
    marker = path + ".killed-once"
    if name.startswith("poison") or (name.startswith("once") and not os.path.exists(marker)):
        if name.startswith("once"):
            Path(marker).touch()
        os.kill(os.getpid(), 9)
    return fingerprint_file(path, max_side, max_pixels, max_bytes)


def reporting_fingerprinter(path: str, max_side: int, max_pixels: int, max_bytes: int) -> FileResult:
    """A fingerprinter that reads no file: its result's error says how the worker process that ran it is set up."""
    from dupwatch.daemon.allocator import keeping_freed_memory

    return FileResult(path, error=f"nice={os.getpriority(os.PRIO_PROCESS, 0)} kept={keeping_freed_memory()}")


def marking_fingerprinter(path: str, max_side: int, max_pixels: int, max_bytes: int) -> FileResult:
    """The real fingerprint, taking 0.3 s; when done it leaves a marker named like the file in the folder `marks`
    beside the scanned folder."""
    time.sleep(0.3)
    result = fingerprint_file(path, max_side, max_pixels, max_bytes)
    marks = Path(path).parent.parent / "marks"
    marks.mkdir(exist_ok=True)
    (marks / Path(path).name).touch()
    return result


def overlap_fingerprinter(path: str, max_side: int, max_pixels: int, max_bytes: int) -> FileResult:
    """A fingerprinter that reads no file: it holds a marker beside the file for 0.3 s, and its result's error
    says how many other files of the folder were being decoded when it started."""
    folder, marker = os.path.dirname(path), path + ".decoding"
    others = sum(name.endswith(".decoding") for name in os.listdir(folder))
    Path(marker).touch()
    time.sleep(0.3)
    os.unlink(marker)
    return FileResult(path, error=f"others={others}")


def run_on_terminal(
    cmd: list[str],
    cwd: Path,
    answer: bytes | None = None,
    wait_for: bytes = b"",
    timeout: float = 120.0,
    columns: int = 200,
) -> str:
    """Run `cmd` with a pseudo-terminal (`columns` wide) as stdin, stdout and stderr; when `wait_for` shows up,
    type `answer`.
    Returns everything it printed."""
    import fcntl
    import select
    import struct
    import termios

    main_fd, sub_fd = os.openpty()
    fcntl.ioctl(sub_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}  # the terminal's own size
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=sub_fd, stdout=sub_fd, stderr=sub_fd, close_fds=True)
    os.close(sub_fd)
    seen = b""
    answered = answer is None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not answered and wait_for in seen:
            os.write(main_fd, answer or b"")
            answered = True
        if select.select([main_fd], [], [], 0.2)[0]:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # the other side is closed: the process ended
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    proc.wait(30)
    os.close(main_fd)
    return seen.decode(errors="replace")


def screen_lines(raw: str) -> list[str]:
    """What a terminal ends up showing, line by line: ANSI sequences removed, each line as left after its last
    carriage return."""
    import re

    text = re.sub(r"\x1b\[(2K|[0-9]*G)", "\r", raw)  # erase line, cursor to a column: the line starts again
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    return [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]


def write_dng(rgb: np.ndarray, path: Path) -> Path:
    """A real DNG (a 12-bit RGGB mosaic of an 8-bit RGB image, sRGB colour matrix) written with pidng, which
    LibRaw reads like a camera's. `path` without its suffix; returns the file written."""
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import (
        CalibrationIlluminant,
        CFAPattern,
        DNGVersion,
        Orientation,
        PhotometricInterpretation,
        PreviewColorSpace,
    )

    h, w = rgb.shape[:2]
    mosaic = np.zeros((h, w), np.uint16)
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = rgb[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    xyz_to_srgb = [3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570]
    tags = DNGTags()
    for tag, value in (
        (Tag.ImageWidth, w),
        (Tag.ImageLength, h),
        (Tag.TileWidth, w),
        (Tag.TileLength, h),
        (Tag.Orientation, Orientation.Horizontal),
        (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
        (Tag.SamplesPerPixel, 1),
        (Tag.BitsPerSample, 16),
        (Tag.CFARepeatPatternDim, [2, 2]),
        (Tag.CFAPattern, CFAPattern.RGGB),
        (Tag.BlackLevel, 0),
        (Tag.WhiteLevel, 4095),
        (Tag.ColorMatrix1, [[round(x * 10000), 10000] for x in xyz_to_srgb]),
        (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
        (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]),
        (Tag.Make, "dupwatch"),
        (Tag.Model, "Synthetic DNG"),
        (Tag.DNGVersion, DNGVersion.V1_4),
        (Tag.DNGBackwardVersion, DNGVersion.V1_2),
        (Tag.PreviewColorSpace, PreviewColorSpace.sRGB),
    ):
        tags.set(tag, value)
    writer = RAW2DNG()
    writer.options(tags, path="", compress=False)
    writer.convert(mosaic * 16, filename=str(path))
    return path.with_suffix(".dng")


def scan_folder(root: Path, db: Path, embedder: Embedder, workers: int = 2) -> Store:
    """`root` scanned into a new database at `db` with the given embedder; the open store."""
    from dupwatch.daemon.config import Config
    from dupwatch.daemon.pipeline import open_pipeline

    store = Store(db)
    with open_pipeline(Config(db=db, workers=workers), store, embedder) as p:
        p.scan([root])
    return store
