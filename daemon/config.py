"""The one place for every threshold and path: defaults here, a TOML file over them, command-line flags over that.

The matching thresholds were chosen from measured precision/recall (see bench/accuracy.py and README), not guessed.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

APP = "dupwatch"

IMAGE_SUFFIXES: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".webp",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".heic",
    ".heif",
    ".avif",
    ".pbm",
    ".pgm",
    ".ppm",
    ".pnm",
    ".svg",
)


class ConfigError(Exception):
    """A config file or flag value that cannot be used; the CLI turns it into exit code 2."""


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir(APP))


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP)) / "config.toml"


@dataclass(frozen=True)
class Config:
    # where things live
    db: Path = field(default_factory=lambda: default_state_dir() / "dupwatch.db")
    roots: tuple[Path, ...] = ()
    # what counts as an image
    suffixes: tuple[str, ...] = IMAGE_SUFFIXES
    max_pixels: int = 200_000_000
    max_file_bytes: int = 1 << 30
    decode_side: int = 256
    # matching: hashes find candidates cheaply, the CNN's cosine similarity decides
    ahash_radius: int = 12  # loose: a candidate only, never a match by itself
    chash_radius: int = 3
    max_hash_candidates: int = 16  # per hash and view, nearest first
    cosine_threshold: float = 0.80  # CNN cosine similarity that confirms a pair on its own
    match_rotations: bool = True  # copies rotated by 90/180/270 degrees or mirrored count as duplicates
    verify_inliers: int = 25  # geometric agreement (hashing.geometry) a pair over cosine_threshold needs
    verify_agreement: float = 0.45  # aligned luminance must agree this well (median block correlation)
    verify_low: float = 0.50  # grey zone: below cosine_threshold but above this ...
    grey_inliers: int = 40  # ... a pair needs this much geometric agreement
    verify_max_candidates: int = 3  # grey-zone candidates checked per new file
    hnsw_k: int = 16
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    hnsw_ef: int = 64
    # keeping and resolving
    keeper_rules: tuple[str, ...] = ("resolution", "sharpness", "exif", "size", "oldest")
    reference_dirs: tuple[Path, ...] = ()  # never proposed for removal
    # watching
    settle_seconds: float = 0.5  # a file's size and mtime must hold still this long before it is read
    incomplete_grace: float = 30.0  # a file still unreadable this soon after its last write is retried, not failed
    reconcile_interval: float = 900.0  # full rescan of the roots: the safety net for lost events
    index_save_interval: float = 60.0
    queue_size: int = 100_000  # filesystem events held before an overflow turns into a reconcile
    on_duplicate: str | None = None  # shell command run with each duplicate event as JSON on stdin
    # throughput
    model: str = "efficientnet-lite0"  # or "tinynet": a small random network, for tests and load benchmarks
    workers: int = 2
    worker_memory_mb: int = 1536  # memory one decoding worker may take for an image (0: no limit); larger ones fail
    batch_size: int = 16
    local_cache: int = 2048  # recent files whose local descriptors stay in memory (~44 KB each)
    device: str | None = None  # "cpu", "cuda"; None = CUDA when present

    @property
    def index_path(self) -> Path:
        return self.db.with_name(self.db.name + ".hnsw")

    @property
    def lock_path(self) -> Path:
        return self.db.with_name(self.db.name + ".lock")

    @property
    def status_path(self) -> Path:
        return self.db.with_name(self.db.name + ".status.json")

    @property
    def events_path(self) -> Path:
        return self.db.with_name(self.db.name + ".events.jsonl")

    def with_overrides(self, **overrides: Any) -> Config:
        """Flags win over the file; None means 'flag not given'."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **given)


_PATH_FIELDS = {"db"}


def load_config(path: Path | None = None) -> Config:
    """Read TOML (explicit path, or the user's config file if it exists); unknown keys are an error, not a shrug."""
    explicit = path is not None
    path = path or default_config_path()
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file not found: {path}")
        return Config()
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):  # sections are only for readability: [matching] cosine_threshold = ...
            flat.update(value)
        else:
            flat[key] = value
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(f"unknown config keys in {path}: {', '.join(unknown)}")
    for key in _PATH_FIELDS & set(flat):
        flat[key] = Path(flat[key]).expanduser()
    for key in ("roots", "reference_dirs"):
        if key in flat:
            flat[key] = tuple(Path(p).expanduser().resolve() for p in flat[key])
    if "keeper_rules" in flat:
        flat["keeper_rules"] = tuple(flat["keeper_rules"])
    if "suffixes" in flat:
        flat["suffixes"] = tuple(s.lower() for s in flat["suffixes"])
    return Config(**flat)
