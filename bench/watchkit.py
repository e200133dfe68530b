"""Helpers for the watcher tests and benchmarks: distinct little images, waiting for a condition, a service
in a thread."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image


def noise_png(seed: int, size: int = 48) -> bytes:
    """A distinct small image per seed (no two are near-duplicates)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    im = Image.fromarray(a).resize((size, size), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def photo_jpeg(name: str = "chelsea", quality: int = 90) -> bytes:
    from bench.datagen import load_photo

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
    def __init__(self, service) -> None:  # noqa: ANN001
        self.service = service
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.service.run()
        except BaseException as e:  # surfaced by stop()
            self.error = e

    def __enter__(self) -> "ServiceThread":
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
