"""The tools people use today, run on the same files and scored the same way: imagededup's hashing methods
(PHash, DHash, WHash, AHash; its CNN method downloads weights at first use and is reported as unavailable),
Debian's findimagedupes, and a plain average-hash + Hamming baseline.

Their installs live here: imagededup goes into its own virtual environment (bench/out/peers-venv) without its
torch/torchvision requirements, which only its CNN method needs; findimagedupes comes from Debian's packages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dupwatch.daemon.components import components

OUT = Path(__file__).resolve().parent / "out"
PEERS_VENV = OUT / "peers-venv"
IMAGEDEDUP = "imagededup==0.3.3.post2"
IMAGEDEDUP_DEPS = ["PyWavelets", "scipy", "scikit-learn", "tqdm", "matplotlib", "numpy", "pillow"]


@dataclass
class PeerRun:
    tool: str
    groups: list[list[str]] = field(default_factory=list)
    seconds: float = 0.0
    files: int = 0
    unavailable: str | None = None


def install(log: Callable[[str], None] = print) -> None:
    """Idempotent: a venv for imagededup's hashing methods, Debian's findimagedupes where apt is usable."""
    py = PEERS_VENV / "bin" / "python"
    if not py.exists():
        log(f"creating {PEERS_VENV} for imagededup ...")
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *IMAGEDEDUP_DEPS], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", IMAGEDEDUP], check=True)
    if shutil.which("findimagedupes") is None and shutil.which("apt-get") and os.geteuid() == 0:
        log("installing findimagedupes from Debian's packages ...")
        subprocess.run(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq findimagedupes",
            shell=True,
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


# Run inside the peers venv: stub the CNN modules (torch/torchvision are not installed there), hash, print JSON.
_IMAGEDEDUP_SCRIPT = r"""
import json, sys, time, types
for name in ("imagededup.methods.cnn", "imagededup.utils.models"):
    stub = types.ModuleType(name); stub.CNN = stub.CustomModel = None; sys.modules[name] = stub
from imagededup.methods import AHash, DHash, PHash, WHash
root, method = sys.argv[1], sys.argv[2]
hasher = {"PHash": PHash, "DHash": DHash, "WHash": WHash, "AHash": AHash}[method](verbose=False)
t = time.perf_counter()
dups = hasher.find_duplicates(image_dir=root, recursive=True, max_distance_threshold=10)
print(json.dumps({"seconds": time.perf_counter() - t, "dups": dups, "files": len(dups)}))
"""


def imagededup(root: Path, method: str) -> PeerRun:
    run = PeerRun(f"imagededup {method}")
    py = PEERS_VENV / "bin" / "python"
    if not py.exists():
        run.unavailable = "not installed (run bench/run.py, which installs it)"
        return run
    r = subprocess.run([str(py), "-c", _IMAGEDEDUP_SCRIPT, str(root), method], capture_output=True, text=True)
    if r.returncode != 0:
        run.unavailable = f"failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
        return run
    data = json.loads(r.stdout.strip().splitlines()[-1])
    edges = [(str(root / a), str(root / b)) for a, others in data["dups"].items() for b in others]
    run.groups, run.seconds, run.files = components(edges), data["seconds"], data["files"]
    return run


def imagededup_cnn() -> PeerRun:
    return PeerRun("imagededup CNN", unavailable="downloads its MobileNet weights at first use: no internet here")


def findimagedupes(root: Path) -> PeerRun:
    run = PeerRun("findimagedupes (90%)")
    exe = shutil.which("findimagedupes")
    if exe is None:
        run.unavailable = "not installed (Debian package findimagedupes)"
        return run
    files = [str(p) for p in sorted(root.rglob("*")) if p.is_file()]
    t = time.perf_counter()
    r = subprocess.run([exe, "-q", "-t", "90%", *files], capture_output=True, text=True)
    run.seconds = time.perf_counter() - t
    run.files = len(files)
    groups = []
    for line in r.stdout.splitlines():  # one set per line, paths separated by spaces (ours contain none)
        paths = line.split()
        if len(paths) > 1:
            groups.append(paths)
    run.groups = components([(g[0], p) for g in groups for p in g[1:]])
    return run


def ahash_baseline(root: Path, max_distance: int = 5) -> PeerRun:
    """What a one-evening script does: imagehash.average_hash, no EXIF orientation, Hamming <= 5."""
    import imagehash
    from PIL import Image

    run = PeerRun(f"average hash <= {max_distance} bits")
    t = time.perf_counter()
    hashes = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        run.files += 1
        try:
            with Image.open(p) as im:
                hashes.append((str(p), imagehash.average_hash(im)))
        except Exception:
            continue
    edges = [(a, b) for i, (a, ha) in enumerate(hashes) for b, hb in hashes[i + 1 :] if ha - hb <= max_distance]
    run.seconds = time.perf_counter() - t
    run.groups = components(edges)
    return run


def all_peers(root: Path) -> list[PeerRun]:
    runs = [imagededup(root, m) for m in ("PHash", "DHash", "WHash", "AHash")]
    return [*runs, imagededup_cnn(), findimagedupes(root), ahash_baseline(root)]
