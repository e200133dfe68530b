"""What the rest of dupwatch knows of the CNN, without importing torch: the `Embedder` protocol, the default
model's name and size, and `LazyEmbedder`, which loads the real one (torch, the weights, the inference graph) only
when the first image needs embedding: a rescan that finds nothing new, `status`, `report` never pay for it."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

EMBEDDING_DIM = 1280
LITE0 = "efficientnet-lite0"


class Embedder(Protocol):
    """Anything that turns a batch of 224x224 RGB uint8 images into L2-normalised vectors (and local maps). Its
    methods may be called from two threads at once (the pipeline embeds the next batch while the matcher embeds
    a turned view): an implementation serialises them if it must."""

    dim: int
    name: str

    @property
    def batch_size(self) -> int:
        """Images per run of the network: a batch's results can be handed on a run at a time."""
        ...

    def embed(self, pixels: np.ndarray) -> np.ndarray: ...

    def embed_with_local(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def preload(self) -> None:
        """Images are coming: get ready now, in the background where that takes a while."""

    def loading(self) -> bool:
        """Whether what `preload` started in the background is still under way (it keeps a core busy)."""


def _kept_for_good(make: Callable[[], Embedder]) -> Embedder:
    """`make()` with the cyclic garbage collector paused, then everything alive moved out of its sight
    (`gc.freeze`): torch's import makes several hundred thousand objects that live as long as the process, and
    every full collection of a scan walked them all, and so did the interpreter's exit (~0.4 s of each command
    that loads the CNN). The pause spares the import the collections its allocations would trigger."""
    running = gc.isenabled()
    gc.disable()
    try:
        real = make()
    finally:
        if running:
            gc.enable()
    gc.freeze()
    return real


class LazyEmbedder:
    """An Embedder whose network is made by `make` at the first batch (thread-safe)."""

    def __init__(self, make: Callable[[], Embedder], dim: int = EMBEDDING_DIM, name: str = LITE0) -> None:
        self._make = make
        self._real: Embedder | None = None
        self._lock = threading.Lock()
        self._loader: threading.Thread | None = None  # preload's background load
        self.dim = dim
        self.name = name

    @property
    def loaded(self) -> bool:
        return self._real is not None

    @property
    def real(self) -> Embedder:
        with self._lock:
            if self._real is None:
                self._real = _kept_for_good(self._make)
                if (self._real.dim, self._real.name) != (self.dim, self.name):
                    raise ValueError(f"the model is {self._real.name} ({self._real.dim}-d), not {self.name}")
            return self._real

    @property
    def batch_size(self) -> int:
        """The network's run size (asking loads it)."""
        return self.real.batch_size

    @property
    def images(self) -> int:
        """Images embedded so far (0 before the network is loaded)."""
        return int(getattr(self._real, "images", 0))

    def preload(self) -> None:
        """Import torch and load the network in a thread while the first files are being decoded."""
        if self._real is None and not self.loading():
            self._loader = threading.Thread(target=self._load, name="dupwatch-cnn-load", daemon=True)
            self._loader.start()

    def _load(self) -> None:
        try:
            self.real  # noqa: B018 - loads it
        except Exception as e:  # the first batch loads it again and reports why it cannot
            log.debug("loading the CNN in the background failed: %s", e)

    def loading(self) -> bool:
        return self._loader is not None and self._loader.is_alive()

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        return self.real.embed(pixels)

    def embed_with_local(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.real.embed_with_local(pixels)
