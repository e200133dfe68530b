"""Which paths are images we should look at: suffix filter (case-insensitive), temporary and hidden names skipped.

Shared by the batch scan and the watcher so both see exactly the same set of files.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# Names sync clients, browsers and editors use while a file is still being written.
TEMPORARY_PATTERNS: tuple[str, ...] = (
    "*.part",
    "*.crdownload",
    "*.tmp",
    "*.partial",
    "*.download",
    ".syncthing.*",
    ".~*",
    "~$*",
    "*.swp",
)


def is_under(path: str | Path, root: str | Path) -> bool:
    """Path containment by components, not by string prefix (/photos2 is not under /photos)."""
    p, r = str(path), str(root).rstrip("/") or "/"
    return p == r or p.startswith(r if r == "/" else r + "/")


def _temporary(name: str) -> bool:
    """Hidden files, and the names sync clients and browsers write under."""
    return name.startswith(".") or any(fnmatch.fnmatch(name, pat) for pat in TEMPORARY_PATTERNS)


def is_candidate(path: str | Path, suffixes: Iterable[str], exclude: Iterable[Path] = ()) -> bool:
    name = os.path.basename(str(path))
    if _temporary(name):
        return False
    if os.path.splitext(name)[1].lower() not in set(suffixes):
        return False
    return not any(is_under(path, e) for e in exclude)


@dataclass
class Tree:
    """What a walk of the roots found: candidate paths, and the folders it could not list (with the reason)."""

    paths: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # files that are no image we read, by suffix

    def in_unreadable(self, path: str) -> bool:
        return any(is_under(path, folder) for folder, _ in self.unreadable)


def scan_tree(roots: Iterable[Path], suffixes: Iterable[str], exclude: Iterable[Path] = ()) -> Tree:
    tree = Tree()
    tree.paths = list(walk_images(roots, suffixes, exclude, tree.unreadable, tree.skipped))
    return tree


def walk_images(
    roots: Iterable[Path],
    suffixes: Iterable[str],
    exclude: Iterable[Path] = (),
    unreadable: list[tuple[str, str]] | None = None,
    skipped: Counter[str] | None = None,
) -> Iterator[str]:
    """Absolute paths of candidate images under roots: every non-folder entry with an image name (whatever its
    file type), hidden folders skipped, symlinked folders not followed. Folders that cannot be listed are appended
    to `unreadable` with the reason."""
    suffixes = tuple(suffixes)
    exclude = tuple(Path(e).resolve() for e in exclude)
    for root in roots:
        root = Path(root).resolve()
        if root.is_file():
            if is_candidate(root, suffixes, exclude):
                yield str(root)
            continue

        def onerror(err: OSError) -> None:
            log.warning("cannot list %s: %s", err.filename, err.strerror)
            if unreadable is not None:
                unreadable.append((str(err.filename), err.strerror or str(err)))

        for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
            dirnames[:] = sorted(
                d for d in dirnames if not d.startswith(".") and str(Path(dirpath, d)) not in map(str, exclude)
            )
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                if is_candidate(full, suffixes, exclude):
                    yield full  # symlinks, FIFOs and devices too: the reader records why they are not read
                elif skipped is not None and not _temporary(name):
                    skipped[os.path.splitext(name)[1].lower() or "(no suffix)"] += 1
