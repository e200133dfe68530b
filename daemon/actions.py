"""Acting on groups, safely: every non-keeper is moved (to a quarantine, the desktop trash, or aside with a link to
the keeper left in its place), never deleted; every move is journaled before it happens and can be undone.

Refused, with the reason recorded: files outside the roots dupwatch scanned, files that changed since they were
scanned (size, mtime or content hash), destinations that are already taken.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dupwatch.daemon.files import is_under
from dupwatch.daemon.keeper import DEFAULT_RULES, choose
from dupwatch.daemon.records import FileRecord, FileStatus
from dupwatch.daemon.store import ActionMode, ItemState, Store
from dupwatch.hashing.fingerprint import content_hash

log = logging.getLogger(__name__)


class ActionError(Exception):
    """An action that cannot start at all (no quarantine given, nothing to undo, ...)."""


@dataclass
class Step:
    file: FileRecord
    keeper: FileRecord
    dst: str | None  # where the file goes (quarantine path); None for the trash
    refused: str | None = None


def quarantine_path(quarantine: Path, src: str) -> Path:
    """The absolute source path mirrored under the quarantine: two files can never collide."""
    return quarantine / src.lstrip("/")


def _unchanged(rec: FileRecord) -> str | None:
    try:
        st = os.stat(rec.path, follow_symlinks=False)
    except OSError as e:
        return f"cannot stat: {e.strerror}"
    if (st.st_size, st.st_mtime_ns) != (rec.size, rec.mtime_ns):
        return "changed since it was scanned (size or mtime differ); rescan first"
    with open(rec.path, "rb") as f:
        if content_hash(f.read()) != rec.content_hash:
            return "changed since it was scanned (content differs); rescan first"
    return None


def plan(
    store: Store,
    mode: ActionMode,
    quarantine: Path | None,
    groups: Sequence[int] = (),
    rules: Sequence[str] = (),
    reference_dirs: Sequence[str] = (),
) -> list[Step]:
    if mode != ActionMode.TRASH and quarantine is None:
        raise ActionError("--move-to QUARANTINE is required (files are moved there, never deleted)")
    roots = store.decisions.roots()
    selected = set(groups)
    groups_now = store.read.groups()
    missing = selected - {gid for gid, _ in groups_now}
    if missing:
        raise ActionError(f"no such group: {', '.join(map(str, sorted(missing)))}")
    steps: list[Step] = []
    for gid, members in groups_now:
        if selected and gid not in selected:
            continue
        decision = choose(members, rules or DEFAULT_RULES, reference_dirs)
        for rec in decision.remove:
            dst = None if quarantine is None or mode == ActionMode.TRASH else str(quarantine_path(quarantine, rec.path))
            step = Step(rec, decision.keeper, dst)
            if not any(is_under(rec.path, r) for r in roots):
                step.refused = "outside the scanned roots"
            elif quarantine is not None and is_under(rec.path, str(quarantine)):
                step.refused = "already inside the quarantine"
            elif dst is not None and os.path.lexists(dst):
                step.refused = f"the quarantine already holds {dst}"
            else:
                step.refused = _unchanged(rec)
            steps.append(step)
    return steps


def _copy_verified(src: str, dst: str) -> None:
    """Across filesystems: copy to a new file (never over an existing one), fsync, check the bytes, then drop the
    source. Only a verified copy ever replaces the original."""
    with open(src, "rb") as f:
        data = f.read()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    shutil.copystat(src, dst)
    with open(dst, "rb") as f:
        if hashlib.blake2b(f.read()).digest() != hashlib.blake2b(data).digest():
            raise OSError(f"copy of {src} to {dst} does not match the original; the original is untouched")
    os.unlink(src)  # the verified copy now holds the photo: this completes a move, it loses nothing


def safe_move(src: str, dst: str) -> None:
    """Move without ever overwriting: link + unlink on one filesystem, verified copy across filesystems."""
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dst):
        raise FileExistsError(f"{dst} already exists")
    try:
        os.link(src, dst, follow_symlinks=False)  # fails if dst appeared meanwhile: no clobbering
        os.unlink(src)  # dst is now the same inode: this completes a move
    except OSError as e:
        if e.errno in (18, 1, 95, 38):  # EXDEV, EPERM, EOPNOTSUPP, ENOSYS: no hard links here
            _copy_verified(src, dst)
        else:
            raise


def _trash_info_dirs(src: str) -> list[Path]:
    home = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "Trash"
    dirs = [home]
    parts = Path(src).parts
    for i in range(len(parts) - 1, 0, -1):  # per-volume trash folders of the freedesktop spec
        top = Path(*parts[:i])
        dirs += [top / ".Trash" / str(os.getuid()), top / f".Trash-{os.getuid()}"]
    return dirs


def find_in_trash(src: str) -> tuple[Path, Path] | None:
    """(trashed file, its .trashinfo) for the most recent trashing of src, per the freedesktop trash spec."""
    best: tuple[str, Path, Path] | None = None
    for d in _trash_info_dirs(src):
        info = d / "info"
        if not info.is_dir():
            continue
        for ti in info.glob("*.trashinfo"):
            fields = dict(line.split("=", 1) for line in ti.read_text(errors="replace").splitlines() if "=" in line)
            path = urllib.parse.unquote(fields.get("Path", ""))
            if not os.path.isabs(path):
                path = str(d.parent.parent / path)
            if path == src and (best is None or fields.get("DeletionDate", "") > best[0]):
                best = (fields.get("DeletionDate", ""), d / "files" / ti.name[: -len(".trashinfo")], ti)
    return None if best is None else (best[1], best[2])


def execute(store: Store, steps: Sequence[Step], mode: ActionMode, quarantine: Path | None) -> tuple[int, list[Step]]:
    """Journal every step, then carry them out one by one; returns the action id and the steps that failed."""
    journal = store.journal
    with store.atomic():
        action_id = journal.begin(mode, None if quarantine is None else str(quarantine))
        items = [(journal.plan_item(action_id, s.file, s.keeper.id, s.dst), s) for s in steps]
        for item_id, s in items:
            if s.refused:
                journal.set_item_state(item_id, ItemState.REFUSED, s.refused)
    failed: list[Step] = []
    for item_id, s in items:
        if s.refused:
            continue
        src = s.file.path
        try:
            dst = s.dst
            if mode == ActionMode.TRASH:
                from send2trash import send2trash

                send2trash(src)
                found = find_in_trash(src)
                dst = None if found is None else str(found[0])
            elif s.dst is None:
                raise OSError(f"no place in the quarantine was planned for {src}")
            else:
                safe_move(src, s.dst)
                if mode == ActionMode.HARDLINK:
                    os.link(s.keeper.path, src)
                elif mode == ActionMode.SYMLINK:
                    os.symlink(s.keeper.path, src)
        except OSError as e:
            s.refused = f"failed: {e}"
            failed.append(s)
            journal.set_item_state(item_id, ItemState.FAILED, s.refused)
            log.error("%s: %s", src, s.refused)
            continue
        with store.atomic():
            journal.set_item_state(item_id, ItemState.DONE, dst=dst)
            store.files.set_status([s.file.id], FileStatus.RESOLVED, store.next_gen())
            store.graph.regroup([s.file.id])
        log.info("%s %s -> %s", mode, src, dst or "trash")
    return action_id, failed


def undo(store: Store, action_id: int | None = None) -> tuple[int, list[str]]:
    """Put every file of an action back exactly where it was; refuse (per file, with a reason) where the place is
    taken or the file is no longer where dupwatch put it. Returns the action id and the refusals."""
    journal = store.journal
    act = journal.action(action_id)
    if act is None:
        raise ActionError("nothing to undo" if action_id is None else f"no action #{action_id}")
    if act.undone_at is not None:
        raise ActionError(f"action #{act.id} was already undone")
    refusals: list[str] = []
    keepers = store.files.many(i.keeper_id for i in act.items if i.keeper_id is not None)
    mode = act.mode
    for item in reversed(act.items):
        if item.state != ItemState.DONE:
            continue
        src, dst = item.src, item.dst
        try:
            if mode in (ActionMode.HARDLINK, ActionMode.SYMLINK):
                keeper = None if item.keeper_id is None else keepers.get(item.keeper_id)
                ours = (
                    keeper is not None
                    and os.path.lexists(src)
                    and (
                        (mode == ActionMode.SYMLINK and os.path.islink(src) and os.readlink(src) == keeper.path)
                        or (
                            mode == ActionMode.HARDLINK
                            and not os.path.islink(src)
                            and os.path.samefile(src, keeper.path)
                        )
                    )
                )
                if not ours:
                    raise FileExistsError(f"{src} is no longer the link dupwatch made; left as it is")
                os.unlink(src)  # only the link dupwatch made: the keeper still holds those bytes
            elif os.path.lexists(src):
                raise FileExistsError(f"{src} is taken by another file; left in {dst or 'the trash'}")
            if mode == ActionMode.TRASH:
                found = find_in_trash(src)
                if found is None:
                    raise FileNotFoundError(f"{src} is no longer in the trash")
                safe_move(str(found[0]), src)
                found[1].unlink()  # the trash's own bookkeeping entry for a file that is now restored
            else:
                if not dst or not os.path.lexists(dst):
                    raise FileNotFoundError(f"{dst} is no longer in the quarantine")
                safe_move(dst, src)
        except OSError as e:
            refusals.append(str(e))
            log.error("undo: %s", e)
            continue
        with store.atomic():
            journal.set_item_state(item.id, ItemState.UNDONE)
            store.files.set_status([item.file_id], FileStatus.OK, store.next_gen())
            store.graph.regroup([item.file_id])
    if not refusals:
        with store.atomic():
            journal.mark_undone(act.id)
    return act.id, refusals
