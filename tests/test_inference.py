"""The CNN's inference path (hashing.inference): every path this machine offers gives embeddings within cosine
0.999 of the reference fp32 model on real photographs (colour photos and greyscale scans), the ImageNet check
still passes through it, the frozen graph is cached per machine and rebuilt when its file is bad, and a CPU
without native bf16 falls back to fp32."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dupwatch.daemon.demo import PHOTOS, load_photo
from dupwatch.hashing import inference
from dupwatch.hashing.embedding import (
    SameConv2d,
    TorchEmbedder,
    _padded,
    default_embedder,
    load_lite0,
    to_input,
)
from dupwatch.hashing.inference import (
    BF16_FROM_BLOCK,
    Precision,
    build_path,
    choose_precision,
    fold_batchnorm,
    native_bf16,
    pointwise_by_onednn,
)
from dupwatch.hashing.torch_libraries import skip_meta_kernels
from tests.helpers import run_python


@pytest.fixture(scope="module")
def model():
    return load_lite0()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    """Every sample photo (colour photos, micrographs, greyscale scans of a moon, a clock, a page) upright and
    turned: 22 images, not a multiple of the traced batch."""
    ims = [load_photo(p).resize((224, 224), Image.Resampling.BILINEAR) for p in PHOTOS]
    arr = np.stack([np.asarray(im) for im in ims] + [np.asarray(im.transpose(Image.Transpose.ROTATE_90)) for im in ims])
    return to_input(arr)


@pytest.fixture(scope="module")
def reference(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        return model.features_and_local(batch)


PATHS = [(Precision.FP32, False), (Precision.FP32, True), (Precision.BF16, False), (Precision.BF16, True)]


@pytest.mark.parametrize(("precision", "frozen"), PATHS, ids=["fp32", "fp32-frozen", "bf16", "bf16-frozen"])
def test_every_path_stays_within_0999_of_the_reference(model, batch, reference, precision, frozen, tmp_path) -> None:
    if precision == Precision.BF16 and not native_bf16():
        pytest.skip("this CPU has no native bf16 (the embedder falls back to fp32 here)")
    path = build_path(model, "cpu", precision, frozen, tmp_path, batch=16)
    with torch.inference_mode():
        feats = torch.cat([path.run(batch[i : i + 16])[0] for i in range(0, len(batch), 16)])
        local = torch.cat([path.run(batch[i : i + 16])[1] for i in range(0, len(batch), 16)])
    ref_f, ref_l = reference
    cos = F.cosine_similarity(feats, ref_f)
    assert cos.min().item() >= 0.999, cos.tolist()
    local_cos = F.cosine_similarity(local, ref_l, dim=1)  # per grid cell
    assert local_cos.mean().item() >= 0.999 and local_cos.min().item() >= 0.98
    assert feats.dtype == torch.float32 and local.dtype == torch.float32


def test_folding_batchnorm_is_exact_and_still_classifies(model, batch, reference) -> None:
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the reference is untouched
    with torch.inference_mode():
        feats, _ = folded.features_and_local(batch)
        assert F.cosine_similarity(feats, reference[0]).min().item() > 0.99999
        cat = PHOTOS.index("chelsea")
        assert folded._fc(feats[cat]).argmax().item() in range(281, 286)  # a cat, through the fast path too


def test_the_fast_path_classifies_like_the_reference(model, batch, tmp_path) -> None:
    precision = choose_precision("cpu", "auto")
    path = build_path(model, "cpu", precision, True, tmp_path)
    with torch.inference_mode():
        feats, _ = path.run(batch[:16])
        top = model._fc(feats).topk(5, dim=1).indices.tolist()
    assert top[PHOTOS.index("chelsea")][0] in range(281, 286)
    assert {967, 968} & set(top[PHOTOS.index("coffee")])


def test_without_native_bf16_the_cpu_runs_fp32_and_cuda_fp16() -> None:
    assert choose_precision("cpu", "auto", bf16_native=lambda: False) == Precision.FP32
    assert choose_precision("cpu", "bf16", bf16_native=lambda: False) == Precision.FP32
    assert choose_precision("cpu", "auto", bf16_native=lambda: True) == Precision.BF16
    assert choose_precision("cpu", "fp32", bf16_native=lambda: True) == Precision.FP32
    assert choose_precision("cuda", "auto") == Precision.FP16
    assert choose_precision("cuda:0", "fp32") == Precision.FP32


def test_the_frozen_graph_is_cached_and_a_bad_cache_file_is_rebuilt(model, batch, tmp_path: Path) -> None:
    first = build_path(model, "cpu", Precision.FP32, True, tmp_path, batch=8)
    [cached] = tmp_path.glob("cnn-*.pt")
    assert not first.cached
    t = time.perf_counter()
    second = build_path(model, "cpu", Precision.FP32, True, tmp_path, batch=8)
    assert second.cached and time.perf_counter() - t < first.build_seconds
    with torch.inference_mode():
        a, b = first.run(batch[:3])[0], second.run(batch[:3])[0]  # another batch size than traced
    assert F.cosine_similarity(a, b).min().item() > 0.99999
    cached.write_bytes(b"not a torchscript archive")
    third = build_path(model, "cpu", Precision.FP32, True, tmp_path, batch=8)
    assert not third.cached and cached.stat().st_size > 1000  # rebuilt and saved again
    other = build_path(model, "cpu", Precision.FP32, True, tmp_path, batch=4)  # another key, another file
    assert not other.cached and len(list(tmp_path.glob("cnn-*.pt"))) == 2


def test_a_cached_graph_named_by_its_weights_needs_no_network_made(model, batch, tmp_path: Path) -> None:
    """The weights are loaded (~0.05 s, and the key read from them ~0.015 s) only when the graph must be built:
    a command that finds it cached makes no network. Other weights, another graph."""
    made: list[int] = []

    def make():
        made.append(1)
        return model

    first = build_path(make, "cpu", Precision.FP32, True, tmp_path, batch=8, weights="lite0:a")
    assert not first.cached and made == [1]
    second = build_path(make, "cpu", Precision.FP32, True, tmp_path, batch=8, weights="lite0:a")
    assert second.cached and made == [1]
    with torch.inference_mode():
        a, b = first.run(batch[:3])[0], second.run(batch[:3])[0]
    assert F.cosine_similarity(a, b).min().item() > 0.99999
    other = build_path(make, "cpu", Precision.FP32, True, tmp_path, batch=8, weights="lite0:b")
    assert not other.cached and made == [1, 1]
    eager = build_path(make, "cpu", Precision.FP32, False, tmp_path, batch=8, weights="lite0:a")
    assert not eager.frozen and made == [1, 1, 1]  # an eager path runs the network itself
    emb = default_embedder(batch_size=8, cache_dir=tmp_path)
    assert emb.weights is not None and str(emb.weights).startswith("efficientnet-lite0:")  # the shipped file


def test_a_padded_run_gives_each_image_its_own_vectors(model) -> None:
    """On CUDA every run of the network is padded to one shape (each new shape cost ~2 s there): the padding
    copies the last image, and what comes back for the real images is what an unpadded run gives."""
    pixels = np.stack([np.asarray(load_photo(p).resize((224, 224))) for p in PHOTOS[:3]])
    x = to_input(pixels)
    padded = _padded(x, 8)
    assert padded.shape == (8, 3, 224, 224)
    assert torch.equal(padded[:3], x) and all(torch.equal(padded[i], x[2]) for i in range(3, 8))
    with torch.inference_mode():
        alone = model.features_and_local(x)[0]
        within = model.features_and_local(padded)[0][:3]
    assert float(F.cosine_similarity(alone, within).min()) > 0.99999


def test_the_embedder_builds_its_path_lazily_and_any_batch_size_works(tmp_path: Path) -> None:
    emb = default_embedder(batch_size=8, cache_dir=tmp_path)
    assert emb._path is None  # nothing built until the first image
    pixels = np.stack([np.asarray(load_photo(p).resize((224, 224))) for p in PHOTOS[:5]])
    one = emb.embed(pixels[:1])
    five = emb.embed(pixels)
    assert emb.path.frozen and emb.path.precision == choose_precision("cpu", "auto")
    assert float(one[0] @ five[0]) > 0.9999
    ref = TorchEmbedder(load_lite0(), precision="fp32", frozen=False).embed(pixels)
    assert float(np.min(np.sum(ref * five, axis=1))) >= 0.999  # vectors stored by one path match another's


def test_a_graph_that_cannot_be_cached_leaves_no_half_written_file(model, batch, tmp_path: Path, monkeypatch) -> None:
    """A full disk while the graph is saved: the path still works, is built again next time, and the cache folder
    keeps nothing of the attempt."""

    def full_disk(graph, name: str) -> None:  # type: ignore[no-untyped-def]
        Path(name).write_bytes(b"half a graph")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.jit, "save", full_disk)
    path = build_path(model, "cpu", Precision.FP32, True, tmp_path, batch=4)
    with torch.inference_mode():
        assert path.run(batch[:2])[0].shape[0] == 2
    assert list(tmp_path.iterdir()) == []


def test_a_graph_half_saved_by_a_killed_process_is_removed_at_the_next_save(model, batch, tmp_path: Path) -> None:
    """A process killed while saving the graph (once per machine, ~14 MB) left its temporary file in the cache
    folder for good. The next build removes it; a save still under way in a live process and any other name are
    kept."""
    pid = os.fork()
    if pid == 0:  # the child: killed halfway through writing the graph (never back into pytest)

        def killed(graph, name: str) -> None:  # type: ignore[no-untyped-def]
            Path(name).write_bytes(b"half a graph")
            os.kill(os.getpid(), signal.SIGKILL)

        try:
            torch.jit.save = killed
            inference._save(torch.jit.script(nn.Identity()), tmp_path / f"cnn-{'a' * 24}.pt")
        finally:
            os._exit(1)  # not reached
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    [left] = tmp_path.iterdir()
    assert left.name == f".cnn-{'a' * 24}.pt.{pid}"
    with subprocess.Popen(["sleep", "60"]) as live:
        try:
            kept = [f".cnn-{'b' * 24}.pt.{live.pid}", f".cnn-{'c' * 24}.pt.{pid}-notes", "holiday.jpg"]
            for name in kept:
                (tmp_path / name).write_bytes(b"x")
            path = build_path(model, "cpu", Precision.FP32, True, tmp_path, batch=4)
        finally:
            live.kill()
    assert not path.cached
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, *(p.name for p in tmp_path.glob("cnn-*.pt"))])
    assert len(list(tmp_path.glob("cnn-*.pt"))) == 1 and not left.exists()


def test_a_leftover_naming_no_process_is_swept_without_stopping_the_save(model, batch, tmp_path: Path) -> None:
    """The cache's sweep asks whether the process a leftover's name ends with is running, with the daemon's own
    check (hashing.processes.process_alive): a number too large to be a pid made the graph cache's own copy of it
    raise OverflowError out of the build, and 0 (which kill(2) takes for the process group) is no process."""
    huge, zero = f".cnn-{'d' * 24}.pt.{'9' * 20}", f".cnn-{'e' * 24}.pt.0"
    for name in (huge, zero):
        (tmp_path / name).write_bytes(b"x")
    path = build_path(model, "cpu", Precision.FP32, True, tmp_path, batch=4)
    with torch.inference_mode():
        assert path.run(batch[:2])[0].shape[0] == 2
    assert len(list(tmp_path.glob("cnn-*.pt"))) == 1  # the graph was cached
    assert not (tmp_path / huge).exists() and not (tmp_path / zero).exists()  # named by no running process


def test_the_frozen_graph_clips_in_place_and_never_pads_an_activation(model, tmp_path: Path) -> None:
    """Two costs a profile of the CNN on a CPU showed beside the convolutions: ReLU6 writing a new tensor after
    each one (20 % of the time) and the stride-2 'SAME' convolutions copying their input into a zero-padded tensor
    (17 %: allocating, zero-filling, copying tens of MB). In the graph now, ReLU6 clips in place and only weights
    are padded (see test_same_padding_is_tensorflows_without_a_padded_copy_of_the_input)."""
    path = build_path(model, "cpu", Precision.FP32, True, tmp_path, batch=4)
    nodes = list(path.run.graph.nodes())
    kinds = [n.kind() for n in nodes]
    assert kinds.count("aten::relu6_") == 33 and "aten::relu6" not in kinds and "aten::hardtanh" not in kinds
    padded = [next(n.inputs()).node().kind() for n in nodes if n.kind() in ("aten::pad", "aten::constant_pad_nd")]
    assert set(padded) <= {"prim::Constant"}  # a folded weight, never the image or an activation


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")
def test_fp32_pointwise_convolutions_run_through_onednn_on_a_cpu(model, tmp_path: Path) -> None:
    """PyTorch's own route for an fp32 1x1 convolution on one thread (the output first filled with the bias) is
    what the scan's single CNN thread got, all through the fp32 path and in the bf16 path's fp32 blocks: the graph
    now calls oneDNN for each of them, and for no bf16 one (autocast picks oneDNN there already)."""
    pointwise = [
        name
        for name, m in fold_batchnorm(model).named_modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1
    ]
    in_fp32_blocks = [n for n in pointwise if n.startswith("_blocks.") and int(n.split(".")[1]) < BF16_FROM_BLOCK]
    assert len(pointwise) == 32 and len(in_fp32_blocks) == 7  # 15 expansions, 16 projections, the head
    paths = [(Precision.FP32, len(pointwise))] + [(Precision.BF16, len(in_fp32_blocks))] * native_bf16()
    for precision, expected in paths:
        path = build_path(model, "cpu", precision, True, tmp_path, batch=4)
        kinds = [n.kind() for n in path.run.graph.nodes()]
        assert kinds.count("aten::mkldnn_convolution") == expected, precision


def test_a_pointwise_convolution_through_onednn_gives_the_same_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(24, 144, 1, bias=True)
    x = torch.randn(4, 24, 56, 56).contiguous(memory_format=torch.channels_last)
    net = pointwise_by_onednn(torch.nn.Sequential(conv))
    assert not isinstance(net[0], torch.nn.Conv2d) or not torch.backends.mkldnn.is_available()  # replaced
    with torch.no_grad():
        torch.testing.assert_close(net(x), F.conv2d(x, conv.weight, conv.bias), atol=1e-5, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's own route: a bf16 result
            assert net(x).dtype == torch.bfloat16
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # oneDNN switched off: the convolution stays
    assert isinstance(pointwise_by_onednn(torch.nn.Sequential(conv))[0], torch.nn.Conv2d)


def _tf_same(x: torch.Tensor, conv: SameConv2d) -> torch.Tensor:
    """TensorFlow's 'SAME' convolution written out: the input padded, the odd pixel bottom/right."""
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    ih, iw = x.shape[-2:]
    ph = max((-(-ih // sh) - 1) * sh + kh - ih, 0)
    pw = max((-(-iw // sw) - 1) * sw + kw - iw, 0)
    padded = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
    return F.conv2d(padded, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)


@pytest.mark.parametrize(
    ("kernel", "stride", "groups", "side"),
    [(3, 2, 1, 224), (3, 2, 8, 112), (5, 2, 8, 56), (5, 2, 8, 15), (3, 2, 8, 9), (3, 1, 8, 14), (5, 1, 1, 9)],
)
def test_same_padding_is_tensorflows_without_a_padded_copy_of_the_input(kernel, stride, groups, side) -> None:
    """The kernel sizes and strides of EfficientNet-Lite0 (and odd sides, where TF pads both sides equally): the
    same output as padding the input, and no operation ever receives a padded copy of it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Pads(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.padded: list[tuple[int, ...]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if func.overloadpacket in (torch.ops.aten.constant_pad_nd, torch.ops.aten.pad):
                self.padded.append(tuple(args[0].shape))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(side * kernel + stride)
    channels = 8
    conv = SameConv2d(channels if groups > 1 else 3, channels, kernel, stride=stride, groups=groups, bias=True)
    x = torch.randn(2, conv.in_channels, side, side)
    with torch.no_grad(), Pads() as pads:
        got = conv(x)
    with torch.no_grad():
        want = _tf_same(x, conv)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert tuple(x.shape) not in pads.padded


def test_a_cached_graph_runs_on_a_cpu_without_the_jit_executors_profiling_runs(model, batch, tmp_path: Path) -> None:
    """Freezing folds and fuses what the JIT executor's run-time passes would; their profiling runs only made the
    first batch of every command slower. The graph executed is the frozen one, with no profiling nodes in it."""
    build_path(model, "cpu", Precision.FP32, True, tmp_path, batch=4)
    path = build_path(model, "cpu", Precision.FP32, True, tmp_path, batch=4)  # a new process's first call
    assert path.cached
    with torch.inference_mode():
        path.run(batch[:4])
    executed = str(torch.jit.last_executed_optimized_graph())
    assert "aten::relu6_" in executed and "prim::profile" not in executed


def test_torchs_libraries_open_ahead_of_its_import_without_stopping_the_other_threads() -> None:
    """The CNN loads in a thread while the scan's other threads hand files to the workers: torch's libraries
    (~0.2 s of relocations and operator registrations) are opened through dlopen with the GIL released, so those
    threads keep running (Python's own import of them held the GIL throughout: one stall of ~0.2 s). Then
    `import torch` finds them loaded and works as usual. In a fresh process: here torch is loaded already."""
    code = (
        "import sys, threading, time\n"
        "from dupwatch.hashing.torch_libraries import open_torch_libraries\n"
        "opened = []\n"
        "loader = threading.Thread(target=lambda: opened.append(open_torch_libraries()))\n"
        "stamps = [time.perf_counter()]\n"
        "loader.start()\n"
        "while loader.is_alive():\n"
        "    stamps.append(time.perf_counter())\n"
        "gap = max(b - a for a, b in zip(stamps, stamps[1:]))\n"
        "maps = open('/proc/self/maps').read()\n"
        "took = stamps[-1] - stamps[0]\n"
        "print(opened[0], 'torch' in sys.modules, 'libtorch_cpu.so' in maps, round(took, 3), round(gap, 3))\n"
        "import torch\n"
        "print(float(torch.ones(3).sum()))\n"
    )
    r = run_python(code)
    first, second = r.stdout.split("\n")[:2]
    opened, imported, mapped, took, gap = first.split()
    assert (opened, imported, mapped) == ("True", "False", "True"), r.stdout
    # this thread went on while the libraries were opened: no stall near the length of the whole open
    assert float(gap) < 0.5 * float(took), r.stdout
    assert second == "3.0"


def test_torch_imported_without_its_meta_kernels_builds_and_runs_the_same_cnn(model, tmp_path: Path) -> None:
    """A command that loads the CNN has `import torch` leave out its Python meta kernels (~0.2 s of the import,
    used only by the compiler stack): the network is still made on the meta device, traced, frozen, cached, loaded
    and run, and gives the vectors and the ImageNet classes this process (torch imported as usual) gives. In a
    fresh process, as the command line does it."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from dupwatch.hashing.torch_libraries import META_KERNELS, prepare_torch_import\n"
        "prepare_torch_import('cpu')\n"
        "import numpy as np, torch\n"
        "from PIL import Image\n"
        "from dupwatch.daemon.demo import load_photo\n"
        "from dupwatch.hashing.embedding import load_lite0, to_input\n"
        "from dupwatch.hashing.inference import build_path, choose_precision\n"
        "kernels = sys.modules[META_KERNELS]\n"
        "left_out = torch._meta_registrations is kernels and not hasattr(kernels, 'register_meta')\n"
        "model = load_lite0()\n"
        "ims = [load_photo(n).resize((224, 224), Image.Resampling.BILINEAR) for n in ('chelsea', 'coffee')]\n"
        "x = to_input(np.stack([np.asarray(im) for im in ims]))\n"
        "path = build_path(model, 'cpu', choose_precision('cpu', 'auto'), True, Path(sys.argv[1]), batch=4)\n"
        "again = build_path(model, 'cpu', choose_precision('cpu', 'auto'), True, Path(sys.argv[1]), batch=4)\n"
        "with torch.inference_mode():\n"
        "    feats, local = path.run(x)\n"
        "    top = model._fc(feats).topk(5, dim=1).indices.tolist()\n"
        "    same = torch.equal(again.run(x)[0], feats)\n"
        "np.save(sys.argv[2], feats.numpy())\n"
        "print(left_out, path.cached, again.cached, same, top[0][0], *top[1])\n"
    )
    out = tmp_path / "feats.npy"
    r = run_python(code, str(tmp_path / "cache"), str(out), timeout=300)
    left_out, built, loaded, same, cat, *coffee = r.stdout.split()
    # built there without the meta kernels, then loaded from the cache: the same vectors
    assert (left_out, built, loaded, same) == ("True", "False", "True", "True"), r.stdout
    assert int(cat) in range(281, 286) and {967, 968} & {int(c) for c in coffee}
    ims = [load_photo(n).resize((224, 224), Image.Resampling.BILINEAR) for n in ("chelsea", "coffee")]
    here = build_path(model, "cpu", choose_precision("cpu", "auto"), True, tmp_path / "here", batch=4)
    with torch.inference_mode():
        want = here.run(to_input(np.stack([np.asarray(im) for im in ims])))[0]
    assert F.cosine_similarity(torch.from_numpy(np.load(out)), want).min().item() > 0.99999
    assert not skip_meta_kernels()  # torch is imported here already: nothing is changed


def test_the_meta_kernels_stay_where_the_cnn_runs_on_cuda() -> None:
    """The GPU path keeps torch as it was measured: asked for CUDA, `import torch` imports its meta kernels."""
    code = (
        "from dupwatch.hashing.torch_libraries import prepare_torch_import\n"
        "prepare_torch_import('cuda')\n"
        "import torch\n"
        "print(hasattr(torch._meta_registrations, 'register_meta'))\n"
    )
    assert run_python(code).stdout.split() == ["True"]
