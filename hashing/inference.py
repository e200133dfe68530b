"""The CNN's inference path, built for the machine it runs on.

- BatchNorm folded into the convolution before it (one op instead of three per layer; exact up to rounding);
- channels_last memory layout (what oneDNN's convolutions want on x86);
- bf16 where the CPU computes it natively (AVX512-BF16 or AMX), fp32 otherwise; fp16 on CUDA;
- a frozen TorchScript graph (traced, then `torch.jit.freeze`: constants folded, ops fused), cached on disk per
  torch version, weights, device, precision and CPU, so the build (seconds) is paid once per machine, not per
  command. A cache that cannot be read or written only costs the build.

Every path gives embeddings within cosine 0.999 of the reference fp32 model (tests/test_inference.py), so vectors
stored by one machine stay comparable with those of another.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import re
import time
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dupwatch.hashing.processes import process_alive

if typing.TYPE_CHECKING:
    from dupwatch.hashing.embedding import FeatureNetwork

log = logging.getLogger(__name__)

GRAPH_VERSION = 3  # bump when the traced wrapper or the folding changes: old cache files are then ignored


class Precision(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16() -> bool:
    """Does this CPU compute bf16 natively (AVX512-BF16 or AMX-BF16), and can torch's oneDNN use it? Elsewhere
    bf16 is emulated and slower than fp32."""
    if not torch.backends.mkldnn.is_available():
        return False
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if supported is not None and not supported():
        return False
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def choose_precision(device: str, asked: str = "auto", bf16_native: Callable[[], bool] = native_bf16) -> Precision:
    """`asked` (auto, fp32, bf16, fp16) made possible: bf16 falls back to fp32 on a CPU without native bf16, fp16
    is for CUDA only."""
    if device.startswith("cuda"):
        return Precision.FP32 if asked == "fp32" else Precision.FP16
    if asked in ("auto", "bf16") and bf16_native():
        return Precision.BF16
    if asked == "bf16":
        log.warning("this CPU has no native bf16 (AVX512-BF16/AMX): the CNN runs in fp32")
    return Precision.FP32


def fold_batchnorm(model: FeatureNetwork) -> FeatureNetwork:
    """A copy of `model` with every BatchNorm2d that follows a convolution (the attribute pairs of EfficientNet's
    checkpoint: _conv_stem/_bn0, _expand_conv/_bn0, _depthwise_conv/_bn1, _project_conv/_bn2, _conv_head/_bn1)
    folded into that convolution's weight and bias, and replaced by Identity."""
    pairs = {
        "_conv_stem": "_bn0",
        "_expand_conv": "_bn0",
        "_depthwise_conv": "_bn1",
        "_project_conv": "_bn2",
        "_conv_head": "_bn1",
    }
    folded = copy.deepcopy(model)
    for module in folded.modules():
        for conv_name, bn_name in pairs.items():
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
                continue
            assert bn.running_var is not None and bn.running_mean is not None
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            with torch.no_grad():
                conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
                bias = bn.bias - bn.running_mean * scale
                if conv.bias is not None:
                    bias = bias + conv.bias * scale
                conv.bias = nn.Parameter(bias.detach().clone())
            setattr(module, bn_name, nn.Identity())
    return folded.eval()


class _Pointwise(nn.Module):
    """A 1x1 convolution (stride 1, no groups) that oneDNN runs on a CPU in fp32 too. PyTorch sends an fp32 1x1
    convolution with one thread and a batch under 16 to its own GEMM route ("faster single-threaded"), which for a
    channels_last batch first fills the output with the bias: a pass over tens of MB per layer at 112 px, and the
    scan runs the CNN on one thread, four images at a time. With oneDNN's, EfficientNet-Lite0 took 8.8 ms/img
    instead of 9.5 in the bf16 path (whose first blocks stay fp32) and 11.5 instead of 13.1 in the fp32 path (batch
    4, one thread, 2-core Zen 4, the mean of interleaved runs); a camera scan 0.15 s less CPU. bf16 (autocast) and
    CUDA inputs take PyTorch's usual route."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"):
            out: torch.Tensor = torch.ops.aten.mkldnn_convolution(x, self.weight, self.bias, [0, 0], [1, 1], [1, 1], 1)
            return out
        return F.conv2d(x, self.weight, self.bias)


def pointwise_by_onednn(net: nn.Module) -> nn.Module:
    """`net` (changed in place) with its 1x1 convolutions replaced by `_Pointwise` where this torch has oneDNN (and
    it is not switched off)."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return net
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Conv2d) and _pointwise(child):
                setattr(module, name, _Pointwise(child))
    return net


def _pointwise(conv: nn.Conv2d) -> bool:
    return (
        conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding in ((0, 0), "valid")
    )


# bf16 from this block on: the stem and the first four blocks (112 and 56 px, where a low-contrast picture's detail
# lives) stay fp32. All in bf16, greyscale scans (a moon, a clock, a printed page) moved to cosine 0.9956 of fp32;
# from block 4 on, 0.9996 at most of the speed (bench.speed prints the figures per path).
BF16_FROM_BLOCK = 4


class _Features(nn.Module):
    """What is traced: images in, (pooled features, local map) out, both as float32."""

    def __init__(self, net: FeatureNetwork, precision: Precision) -> None:
        super().__init__()
        self.net = net
        self.fast = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}.get(precision)
        self.fast_from = BF16_FROM_BLOCK if precision == Precision.BF16 else 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)
        return self.net.features_and_local(x, self.fast, self.fast_from)


@dataclass
class InferencePath:
    """How images run through the network here; call it with a float32 (N, 3, 224, 224) batch on `device`."""

    run: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    device: str
    precision: Precision
    frozen: bool
    build_seconds: float = 0.0
    cached: bool = False  # the frozen graph came from the disk cache

    @property
    def name(self) -> str:
        frozen = " frozen" if self.frozen else ""
        return f"{self.device} {self.precision}{frozen}" + (" (cached)" if self.cached else "")


def _cache_key(weights: nn.Module | str, device: str, precision: Precision, batch: int) -> str:
    """The graph's file name: what the weights are (a string that names them, else the first bytes of every
    tensor) and everything the graph was built for."""
    h = hashlib.sha256()
    if isinstance(weights, str):
        h.update(b"named:" + weights.encode())
    else:
        for name, t in sorted(weights.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes()[:4096])  # enough to tell checkpoints apart
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni"})
    for part in (torch.__version__, device, precision, str(batch), str(GRAPH_VERSION), *flags):
        h.update(part.encode())
    return h.hexdigest()[:24]


def build_path(
    model: FeatureNetwork | Callable[[], FeatureNetwork],
    device: str = "cpu",
    precision: Precision = Precision.FP32,
    frozen: bool = True,
    cache_dir: Path | None = None,
    batch: int = 16,
    weights: str | None = None,
) -> InferencePath:
    """The fastest path this machine offers for `model` (an eval-mode FeatureNetwork on `device`, or a function
    that makes one). With `weights`, a string that names the network's weights (their file and its stamp), a
    cached graph is found without making the network at all: a command that finds one loads no weights."""
    start = time.perf_counter()
    path = None
    if frozen and cache_dir is not None:
        named: nn.Module | str
        if weights is None:
            model = named = _made(model)
        else:
            named = weights
        path = cache_dir / f"cnn-{_cache_key(named, device, precision, batch)}.pt"
    if path is not None and path.exists():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript: deprecated, still the frozen path
                graph = torch.jit.load(str(path), map_location=device)
            log.info("CNN graph loaded from %s", path)
            return InferencePath(_runner(graph, device), device, precision, True, time.perf_counter() - start, True)
        except (RuntimeError, OSError, ValueError) as e:
            log.warning("CNN graph cache %s unusable (%s): building it again", path, e)
    # the folded network is only needed to run eagerly or to trace: a cached graph carries its own weights
    net = fold_batchnorm(_made(model)).to(device=device)
    if device == "cpu":
        pointwise_by_onednn(net)
    net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    wrapper = _Features(net, precision).eval()
    if not frozen:
        return InferencePath(wrapper, device, precision, False, time.perf_counter() - start)
    example = torch.zeros(batch, 3, 224, 224, device=device)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: the 'SAME' padding is fixed for 224 px inputs
        graph = torch.jit.freeze(torch.jit.trace(wrapper, example, check_trace=False))
    if path is not None:
        _save(graph, path)
    log.info("CNN graph (%s, %s) built in %.1f s", device, precision, time.perf_counter() - start)
    return InferencePath(_runner(graph, device), device, precision, True, time.perf_counter() - start)


def _made(model: FeatureNetwork | Callable[[], FeatureNetwork]) -> FeatureNetwork:
    return typing.cast("FeatureNetwork", model) if isinstance(model, nn.Module) else model()


class _Unprofiled:
    """A frozen graph called without the JIT executor's run-time passes (on a CPU): freezing has already folded and
    fused what they would, and their profiling runs made a command's first batch of 16 images take 0.15-0.19 s
    instead of 0.10-0.13 (the same vectors to the last bit, the same speed after)."""

    def __init__(self, module: torch.jit.ScriptModule) -> None:
        self.module = module

    @property
    def graph(self) -> torch.Graph:
        """The module's graph, as a ScriptModule shows it."""
        return self.module.graph

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.jit.optimized_execution(False):  # a per-thread setting: only this call is affected
            out: tuple[torch.Tensor, torch.Tensor] = self.module(x)
        return out


def _runner(graph: torch.jit.ScriptModule, device: str) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """How a frozen graph is called: on CUDA as it is (the executor's fusers may join pointwise ops into kernels
    there), on a CPU without the run-time passes."""
    return graph if device != "cpu" else _Unprofiled(graph)


# what `_save` writes before it renames: `.cnn-KEY.pt.PID`
_UNFINISHED = re.compile(r"\.cnn-[0-9a-f]{24}\.pt\.([0-9]+)")


def _save(graph: torch.jit.ScriptModule, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _sweep_unfinished(path.parent)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(graph, str(tmp))
        os.replace(tmp, path)
        log.info("CNN graph cached at %s", path)
    except (OSError, RuntimeError) as e:
        log.warning("CNN graph not cached (%s): it is built again next time", e)
        with contextlib.suppress(OSError):  # our own half-written file in the cache folder (a full disk)
            tmp.unlink()


def _sweep_unfinished(folder: Path) -> None:
    """Remove the graphs that processes killed while saving them left half-written in the cache folder (~14 MB
    each), never a name `_save` does not write nor one whose writer is still running."""
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            m = _UNFINISHED.fullmatch(name)
            if m is not None and not process_alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    (folder / name).unlink()
                    log.info("removed %s, left by a process killed while saving the CNN graph", name)
