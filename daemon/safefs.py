"""Filesystem steps that never lose a photo: moves that never overwrite, copies that are verified before the
original goes, and the checks made immediately before anything is touched.

Every step leaves the disk in a state that `locate` can recognise, so that a process killed between any two system
calls can be finished or rolled back by `dupwatch undo` (see daemon/actions.py):

- same filesystem: link(src, dst), then unlink(src): in between, both names hold the same inode;
- across filesystems: copy to `dst + PARTIAL`, fsync, verify, rename to dst, then unlink(src): a partial copy only
  ever exists under our own temporary name, and dst only ever holds a complete, verified copy.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import stat
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from dupwatch.hashing.errors import DecodeError
from dupwatch.hashing.fingerprint import content_hash, read_file

PARTIAL = ".dupwatch-partial"  # suffix of a copy being written across filesystems
_NO_HARD_LINKS = (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS)
_CHUNK = 1 << 20


class UnsafeError(OSError):
    """A check made right before acting failed: nothing was touched."""


@dataclass(frozen=True)
class Expected:
    """What a file held when it was fingerprinted."""

    size: int | None
    mtime_ns: int | None
    content_hash: str | None


def file_digest(path: str) -> str:
    """The content hash of a regular file, read the way fingerprints read it (no symlink followed, nothing but a
    regular file opened), without its size cap or deadline."""
    try:
        data, _ = read_file(path, max_bytes=sys.maxsize, deadline_s=math.inf)
    except DecodeError as e:
        raise UnsafeError(errno.EINVAL, f"{path}: {e.reason}") from None
    return content_hash(data)


def check_regular_and_unchanged(path: str, expected: Expected, what: str = "file") -> None:
    """Raise UnsafeError unless `path` is a regular file (not a symlink) holding what was fingerprinted."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise UnsafeError(errno.ENOENT, f"the {what} {path} no longer exists") from None
    except OSError as e:
        raise UnsafeError(e.errno or errno.EIO, f"cannot check the {what} {path}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeError(errno.ELOOP, f"the {what} {path} is now a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeError(errno.EINVAL, f"the {what} {path} is not a regular file")
    if (st.st_size, st.st_mtime_ns) != (expected.size, expected.mtime_ns):
        raise UnsafeError(errno.ESTALE, f"the {what} {path} changed since it was scanned (size or mtime); rescan")
    try:
        digest = file_digest(path)
    except OSError as e:
        raise UnsafeError(e.errno or errno.EIO, f"cannot read the {what} {path}: {e.strerror}") from None
    if digest != expected.content_hash:
        raise UnsafeError(errno.ESTALE, f"the {what} {path} changed since it was scanned (content); rescan")


def _digest_or_none(path: str) -> str | None:
    try:
        return file_digest(path)
    except OSError:
        return None


def same_inode(a: str, b: str) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def copy_verified(src: str, dst: str) -> None:
    """Copy src to dst across filesystems through `dst + PARTIAL`: written, fsynced, read back and compared, then
    renamed into place (never over an existing file). On any failure the partial copy is removed and the source is
    untouched; the caller unlinks the source only after this returns."""
    tmp = dst + PARTIAL
    h_src = hashlib.blake2b()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                h_src.update(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        h_dst = hashlib.blake2b()
        with open(tmp, "rb") as f:
            while chunk := f.read(_CHUNK):
                h_dst.update(chunk)
        if h_dst.digest() != h_src.digest():
            raise OSError(errno.EIO, f"the copy of {src} does not match the original")
        st = os.stat(src)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, f"{dst} already exists")
        os.rename(tmp, dst)
        _fsync_dir(os.path.dirname(dst))
    except BaseException:
        remove_partial(dst)
        raise


def remove_partial(dst: str) -> bool:
    """Remove our own unfinished copy of `dst`, if there is one (it is never a user's file: only copy_verified
    writes that name)."""
    tmp = dst + PARTIAL
    if os.path.lexists(tmp):
        os.unlink(tmp)
        return True
    return False


def safe_move(src: str, dst: str) -> None:
    """Move without ever overwriting: link + unlink on one filesystem, verified copy across filesystems."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, f"{dst} already exists")
    try:
        os.link(src, dst, follow_symlinks=False)  # fails if dst appeared meanwhile: no clobbering
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
        copy_verified(src, dst)
    _fsync_dir(os.path.dirname(dst))
    os.unlink(src)  # dst now holds the same bytes (same inode, or a verified copy): this completes the move
    _fsync_dir(os.path.dirname(src))


# -- the desktop trash (freedesktop.org spec, as send2trash writes it) ---------------------------------------------


def _trash_dirs(src: str) -> list[Path]:
    home = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "Trash"
    dirs = [home]
    parts = Path(src).parts
    for i in range(len(parts) - 1, 0, -1):  # per-volume trash folders
        top = Path(*parts[:i])
        dirs += [top / ".Trash" / str(os.getuid()), top / f".Trash-{os.getuid()}"]
    return dirs


def find_in_trash(src: str, content: str | None = None) -> tuple[Path, Path] | None:
    """(trashed file, its .trashinfo) for the most recent trashing of src that is still in the trash (and holds
    the bytes whose content hash is `content`, when given: an older file trashed from the same place is not it)."""
    best: tuple[str, Path, Path] | None = None
    for d in _trash_dirs(src):
        info = d / "info"
        if not info.is_dir():
            continue
        for ti in info.glob("*.trashinfo"):
            lines = ti.read_text(errors="replace").splitlines()
            fields = dict(line.split("=", 1) for line in lines if "=" in line)
            path = urllib.parse.unquote(fields.get("Path", ""), errors="surrogateescape")
            if not os.path.isabs(path):
                path = str(d.parent.parent / path)
            trashed = d / "files" / ti.name[: -len(".trashinfo")]
            newer = best is None or fields.get("DeletionDate", "") > best[0]
            if path != src or not os.path.lexists(trashed) or not newer:
                continue
            if content is not None and _digest_or_none(str(trashed)) != content:
                continue
            best = (fields.get("DeletionDate", ""), trashed, ti)
    return None if best is None else (best[1], best[2])
