"""The one place for every threshold and path: defaults here, a TOML file over them, command-line flags over that.

The matching thresholds were chosen from measured precision/recall (see bench/accuracy.py and README), not guessed.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from dupwatch.hashing.raw import RAW_SUFFIXES

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
    *RAW_SUFFIXES,
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
    decode_side: int = 448
    # matching: hashes find candidates cheaply, the CNN's cosine similarity decides
    ahash_radius: int = 12  # loose: a candidate only, never a match by itself
    chash_radius: int = 3
    max_hash_candidates: int = 16  # per hash and view, nearest first
    cosine_threshold: float = 0.80  # CNN cosine similarity that confirms a pair on its own
    match_rotations: bool = True  # copies rotated by 90/180/270 degrees or mirrored count as duplicates
    rotated_min_cosine: float = 0.35  # a rotated view is embedded only for candidates at least this alike unturned
    verify_inliers: int = 25  # geometric agreement (hashing.geometry) a pair over cosine_threshold needs
    verify_agreement: float = 0.45  # aligned luminance must agree this well (median block correlation)
    verify_low: float = 0.50  # grey zone: below cosine_threshold but above this ...
    grey_inliers: int = 40  # ... a pair needs this much geometric agreement
    verify_max_candidates: int = 3  # grey-zone candidates checked per new file
    # tiers (hashing.detail): a confirmed pair is a copy only if it covers and agrees in detail, else similar
    copy_min_overlap: float = 0.5  # each image covers at least this share of the other (a crop up to ~30 %)
    copy_max_changed: float = 0.22  # at most this share of detail blocks disagree once aligned ...
    copy_max_scattered: float = 0.016  # ... and nearly all of them in one or two compact regions (an overlay)
    min_texture: float = 0.01  # share of blocks with any detail below which an image is featureless
    turned_views: int = 2  # a pair found similar unturned: how many other views (nearest hash first) to try
    hnsw_k: int = 16
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    hnsw_ef: int = 64
    # keeping and resolving
    keeper_rules: tuple[str, ...] = ("resolution", "format", "sharpness", "exif", "size", "oldest")
    keeper_formats: tuple[str, ...] = ("raw", "heic", "png", "jpeg")  # the `format` rule: earlier is better
    keeper_folders: tuple[str, ...] = ()  # the `folder` rule: e.g. ("DCIM", "Camera"), earlier is better
    keeper_min_difference: float = 0.05  # resolution or size must differ by this (relative) to decide
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
    torch_threads: int = 0  # the CNN's threads; 0: the cores the decode workers leave free, at least 1
    worker_memory_mb: int = 1536  # memory one decoding worker may take for an image (0: no limit); larger ones fail
    worker_nice: int = 3  # decoding workers run this much below the process they feed (whose matching is serial)
    nice: int = 10  # `watch` lowers its CPU priority to this nice value and its disk priority to idle (0: neither)
    batch_size: int = 16  # files fingerprinted, matched and recorded together (one transaction)
    cnn_batch: int = 0  # images per run of the CNN; 0: 4 on a CPU (faster per image than larger), 64 on CUDA (padded)
    local_cache: int = 512  # recent files whose verification details stay in memory (~250 KB each)
    device: str | None = None  # "cpu", "cuda"; None = CUDA when present
    precision: str = "auto"  # the CNN's: auto (bf16 where the CPU has it natively, fp16 on CUDA, else fp32), fp32
    # the web app (`dupwatch serve`)
    host: str = "127.0.0.1"  # any other address needs a token (given, or made and printed at start)
    port: int = 8765
    quarantine: Path | None = None  # where its "resolve" moves files (default: the quarantine folder beside the db)
    max_upload_mb: int = 50  # a larger search upload is refused

    @property
    def index_path(self) -> Path:
        return self.db.with_name(self.db.name + ".hnsw")

    def cnn_threads(self, cores: int) -> int:
        """Threads for the CNN on `cores` cores: what the decode workers leave free, at least 1. More would
        oversubscribe the cores: on 2 cores a scan ran 17 s with 2 torch threads and 16 s with 1, and with another
        busy process beside it 29 s against 20 s (README, Speed)."""
        return self.torch_threads or max(1, cores - self.workers)

    @property
    def thumbs_path(self) -> Path:
        return self.db.with_name(self.db.name + ".thumbs")

    @property
    def quarantine_path(self) -> Path:
        return self.quarantine or self.db.with_name("quarantine")

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


# Ranges of the numbers a config file may set (inclusive; None: open). Every int not named here must be >= 0.
_LIMITS: dict[str, tuple[float | None, float | None]] = {
    "cosine_threshold": (0.0, 1.0),
    "verify_low": (0.0, 1.0),
    "rotated_min_cosine": (0.0, 1.0),
    "verify_agreement": (-1.0, 1.0),
    "copy_min_overlap": (0.0, 1.0),
    "copy_max_changed": (0.0, 1.0),
    "copy_max_scattered": (0.0, 1.0),
    "min_texture": (0.0, 1.0),
    "turned_views": (0, 7),
    "ahash_radius": (0, 64),
    "chash_radius": (0, 42),
    "max_pixels": (1, None),
    "max_file_bytes": (1, None),
    "decode_side": (32, 4096),
    "max_hash_candidates": (1, None),
    "hnsw_k": (1, None),
    "hnsw_m": (2, 256),
    "hnsw_ef_construction": (1, None),
    "hnsw_ef": (1, None),
    "workers": (0, 256),
    "torch_threads": (0, 1024),
    "port": (0, 65535),
    "max_upload_mb": (1, 100_000),
    "nice": (0, 19),
    "worker_nice": (0, 19),
    "batch_size": (1, 4096),
    "cnn_batch": (0, 4096),
    "queue_size": (1, None),
    "settle_seconds": (0.0, 3600.0),
    "keeper_min_difference": (0.0, 1.0),
    "incomplete_grace": (0.0, None),
    "reconcile_interval": (1.0, None),
    "index_save_interval": (1.0, None),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "model": ("efficientnet-lite0", "tinynet"),
    "device": ("cpu", "cuda"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
}


def _check(key: str, value: Any, hint: Any) -> Any:
    """The value for a field, converted, or a ValueError saying what was expected."""
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if hint is int or hint is float:
        ok = isinstance(value, int | float) if hint is float else isinstance(value, int)
        if isinstance(value, bool) or not ok:
            raise ValueError("expected a whole number" if hint is int else "expected a number")
        low, high = _LIMITS.get(key, (0, None))
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"must be {span}")
        return hint(value)
    if hint is Path or hint == Path | None:
        if not isinstance(value, str):
            raise ValueError("expected a path (a string)")
        return Path(value).expanduser()
    if hint == tuple[Path, ...] or hint == tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError('expected a list of strings, like ["a", "b"]')
        if hint == tuple[Path, ...]:
            return tuple(Path(v).expanduser().resolve() for v in value)
        return tuple(value)
    if hint == str | None or hint is str:
        if not isinstance(value, str):
            raise ValueError("expected a string")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ValueError(f"must be one of {', '.join(_CHOICES[key])}")
        return value
    raise ValueError(f"cannot be set from a config file ({hint})")  # pragma: no cover - every field is covered


def _line_of(text: str, key: str) -> int | None:
    for n, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return n
    return None


def load_config(path: Path | None = None) -> Config:
    """Read TOML (explicit path, or the user's config file if it exists). Every key is checked at once: unknown
    ones (with a "did you mean"), wrong types and values out of range are one clear error naming the file, the
    line and the key, never a traceback later."""
    explicit = path is not None
    path = path or default_config_path()
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file not found: {path}")
        return Config()
    try:
        text = path.read_text()
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):  # sections are only for readability: [matching] cosine_threshold = ...
            flat.update(value)
        else:
            flat[key] = value
    hints = typing.get_type_hints(Config)
    checked: dict[str, Any] = {}
    for key, value in flat.items():
        where = f"{path}:{_line_of(text, key) or '?'}"
        if key not in hints:
            close = difflib.get_close_matches(key, hints, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
        try:
            checked[key] = _check(key, value, hints[key])
        except ValueError as e:
            raise ConfigError(f"{where}: {key} = {value!r}: {e}") from None
    if "suffixes" in checked:
        checked["suffixes"] = tuple(s.lower() for s in checked["suffixes"])
    if "keeper_rules" in checked:
        from dupwatch.daemon.keeper import RuleError, parse_rules

        try:
            parse_rules(checked["keeper_rules"])
        except RuleError as e:
            raise ConfigError(f"{path}:{_line_of(text, 'keeper_rules') or '?'}: keeper_rules: {e}") from None
    cfg = Config(**checked)
    if cfg.verify_low > cfg.cosine_threshold:
        raise ConfigError(f"{path}: verify_low ({cfg.verify_low}) must not be above cosine_threshold")
    return cfg
