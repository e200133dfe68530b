"""The CNN: real ImageNet weights loaded strictly, TF 'SAME' padding, normalised batched embeddings."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from dupwatch.daemon.demo import load_photo
from dupwatch.hashing.embedder import LazyEmbedder
from dupwatch.hashing.embedding import EfficientNetLite0, SameConv2d, load_lite0, tiny_embedder, to_input


def _top5(model: EfficientNetLite0, name: str) -> list[int]:
    im = load_photo(name).resize((224, 224), Image.Resampling.BILINEAR)
    with torch.inference_mode():
        logits = model(to_input(np.asarray(im)[None]))
    return logits[0].topk(5).indices.tolist()


def test_real_weights_classify_real_photographs() -> None:
    model = load_lite0()  # strict=True: any missing or unexpected key raises
    cats = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert _top5(model, "chelsea")[0] in cats
    assert {967, 968} & set(_top5(model, "coffee"))  # espresso, cup


def test_the_network_is_made_from_the_weight_file_alone() -> None:
    """No random initialisation to throw away (~0.04 s of every load): loading draws no random numbers, and every
    parameter and buffer is the file's, none left unmade."""
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    model = load_lite0()
    assert torch.equal(torch.rand(3), expected)
    tensors = [*model.parameters(), *model.buffers()]
    assert len(tensors) == len(model.state_dict()) and all(t.device.type == "cpu" for t in tensors)


def test_same_padding_puts_the_odd_pixel_bottom_right() -> None:
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    x = torch.ones(1, 1, 4, 4)
    y = conv(x)
    assert y.shape[-2:] == (2, 2)
    # TF pads one row/column at the bottom/right only: the top-left window sees 9 ones, the last ones 6 and 4
    assert y[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]


def test_embeddings_are_unit_vectors_and_batching_does_not_change_them(embedder) -> None:
    photos = [np.asarray(load_photo(n).resize((224, 224))) for n in ("chelsea", "coffee", "astronaut")]
    batch = embedder.embed(np.stack(photos))
    single = embedder.embed(photos[1][None])
    assert batch.shape == (3, 1280)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-4)
    assert np.allclose(batch[1], single[0], atol=1e-4)
    _, local = embedder.embed_with_local(np.stack(photos[:1]))
    assert local.shape == (1, 14, 14, 112)


def test_tiny_network_is_a_drop_in_for_speed() -> None:
    e = tiny_embedder(48)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    out, local = e.embed_with_local(np.stack([a, a, b]))
    assert out.shape == (3, 48) and local.shape[1:3] == (14, 14)
    assert out[0] @ out[1] > 0.999 and abs(out[0] @ out[2]) < 0.5  # same image alike, distinct images apart


def test_two_threads_embed_at_once_and_get_the_same_vectors(embedder) -> None:
    """The pipeline runs the next batch's CNN while the matcher embeds a turned view: the network is not locked,
    so the single view does not wait for the whole batch (it did: 28 turned views took 0.7 s of a camera-set
    scan), and both get the vectors they would get alone."""
    photos = np.stack([np.asarray(load_photo(n).resize((224, 224))) for n in ("chelsea", "coffee", "astronaut")])
    big = np.concatenate([photos] * 22)  # 66 images: most of a second
    alone_big, alone_one = embedder.embed(big), embedder.embed(photos[1:2])
    got: list[np.ndarray] = []
    big_done: list[float] = []
    started = threading.Event()

    def run_big() -> None:
        started.set()
        got.append(embedder.embed(big))
        big_done.append(time.perf_counter())

    worker = threading.Thread(target=run_big)
    worker.start()
    started.wait()
    time.sleep(0.1)
    one = embedder.embed(photos[1:2])
    one_done = time.perf_counter()
    worker.join()
    assert one_done < big_done[0]
    np.testing.assert_allclose(one, alone_one, atol=1e-5)
    np.testing.assert_allclose(got[0], alone_big, atol=1e-5)


def test_what_the_lazy_load_makes_is_kept_out_of_the_collectors_walks(embedder) -> None:
    """Loading the CNN (torch's import, the network) makes several hundred thousand objects that live as long as
    the process. The load runs with the cyclic collector paused and then freezes what is alive (gc.freeze): the
    full collections of a scan and the interpreter's exit no longer walk them (the exit alone took ~0.4 s of every
    command that loaded the CNN; a camera-set scan 5.5-6.1 -> 4.8-5.3 s). The collector runs again afterwards."""

    class Loaded:  # stands for the real network and whatever its import made, with a reference cycle
        def __init__(self) -> None:
            self.dim, self.name, self.me = embedder.dim, embedder.name, self

        def embed(self, pixels: np.ndarray) -> np.ndarray:
            return embedder.embed(pixels)

    made: list[Loaded] = []
    collecting_during_load: list[bool] = []

    def make() -> Loaded:
        collecting_during_load.append(gc.isenabled())
        made.append(Loaded())
        return made[0]

    lazy = LazyEmbedder(make, dim=embedder.dim, name=embedder.name)  # type: ignore[arg-type]
    assert gc.isenabled()
    try:
        photo = np.asarray(load_photo("coffee").resize((224, 224)))[None]
        np.testing.assert_allclose(lazy.embed(photo), embedder.embed(photo), atol=1e-6)
        assert collecting_during_load == [False]
        assert gc.isenabled()
        assert not any(o is made[0] for o in gc.get_objects())  # frozen: no collection looks at it
    finally:
        gc.unfreeze()


def test_a_preloading_embedder_says_it_is_loading_until_the_network_is_ready(embedder) -> None:
    """The pipeline decodes with one worker fewer while `loading()` holds (test_workers)."""
    release = threading.Event()

    def make():  # type: ignore[no-untyped-def]
        release.wait(10)
        return embedder

    lazy = LazyEmbedder(make, dim=embedder.dim, name=embedder.name)
    assert not lazy.loading()
    try:
        lazy.preload()
        assert lazy.loading() and not lazy.loaded
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while lazy.loading() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lazy.loaded and not lazy.loading()
    gc.unfreeze()


def test_a_background_load_that_fails_leaves_the_error_to_the_first_batch(monkeypatch) -> None:
    """No traceback from the loading thread on the user's terminal: the first batch loads again and raises."""
    uncaught: list[object] = []
    monkeypatch.setattr(threading, "excepthook", uncaught.append)

    def make():  # type: ignore[no-untyped-def]
        raise OSError("no weights")

    lazy = LazyEmbedder(make)
    lazy.preload()
    deadline = time.monotonic() + 10
    while lazy.loading() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not lazy.loading() and not lazy.loaded and uncaught == []
    with pytest.raises(OSError, match="no weights"):
        lazy.embed(np.zeros((1, 224, 224, 3), np.uint8))
