"""Acting on groups, safely: every non-keeper is moved (to a quarantine, the desktop trash, or aside with a link to
the keeper left in its place), never deleted; every step is journaled before it happens and can be undone.

The journal is crash-consistent. An item is marked `moving` (committed) before its file is touched and `done` only
after the move (and the link, if any) is complete; `undo` marks it `restoring` before it touches the file again.
Whatever instant a process is killed at, the disk is in a state that `_bring_back` recognises (see safefs), so
`undo` puts every file of the action back, and never reports the action undone while one of them is not.

Refused, with the reason recorded, before anything moves and again right before each move: a keeper that is gone,
changed, a symlink, outside the roots or inside a quarantine; a file that changed since it was scanned, is a
symlink, or lies outside the roots; a destination that is already taken.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dupwatch.daemon.files import is_under
from dupwatch.daemon.keeper import KeeperPolicy, choose
from dupwatch.daemon.records import FileRecord, FileStatus
from dupwatch.daemon.safefs import (
    PARTIAL,
    Expected,
    UnsafeError,
    check_regular_and_unchanged,
    file_digest,
    find_in_trash,
    remove_partial,
    safe_move,
    same_inode,
)
from dupwatch.daemon.store import ActionItem, ActionMode, ItemState, Store
from dupwatch.daemon.store.graph import DUPLICATES, SHOTS

log = logging.getLogger(__name__)

_LINK_MODES = (ActionMode.HARDLINK, ActionMode.SYMLINK)
_IN_FLIGHT = (ItemState.MOVING, ItemState.DONE, ItemState.RESTORING)  # the file may not be at its place


class ActionError(Exception):
    """An action that cannot start at all (no quarantine given, nothing to undo, ...)."""


@dataclass
class Step:
    file: FileRecord
    keeper: FileRecord
    dst: str | None  # where the file goes (quarantine path); None for the trash or a dry run without a target
    refused: str | None = None


@dataclass
class Outcome:
    """What `execute` did, counted from what happened, not from what was planned."""

    action_id: int
    moved: int = 0
    refused: list[Step] = field(default_factory=list)
    failed: list[Step] = field(default_factory=list)


@dataclass
class UndoOutcome:
    action_id: int
    restored: int = 0  # files put back by this call
    refusals: list[str] = field(default_factory=list)  # files that could not be put back, with the reason
    complete: bool = False  # every file of the action is back where it was


def quarantine_path(quarantine: Path, src: str) -> Path:
    """The absolute source path mirrored under the quarantine: two files can never collide."""
    return quarantine / src.lstrip("/")


def _expected(rec: FileRecord | ActionItem) -> Expected:
    return Expected(rec.size, rec.mtime_ns, rec.content_hash)


def _check_keeper(keeper: FileRecord, roots: Sequence[str], quarantines: Sequence[str]) -> None:
    if not any(is_under(keeper.path, r) for r in roots):
        raise UnsafeError(errno.EPERM, f"the keeper {keeper.path} is outside the scanned roots")
    if any(is_under(keeper.path, q) for q in quarantines):
        raise UnsafeError(errno.EPERM, f"the keeper {keeper.path} is inside a quarantine")
    check_regular_and_unchanged(keeper.path, _expected(keeper), "keeper")


def _check_file(step: Step, mode: ActionMode, roots: Sequence[str], quarantines: Sequence[str]) -> None:
    path = step.file.path
    if not any(is_under(path, r) for r in roots):
        raise UnsafeError(errno.EPERM, "outside the scanned roots")
    if any(is_under(path, q) for q in quarantines):
        raise UnsafeError(errno.EPERM, "already inside a quarantine")
    if step.dst is not None and (os.path.lexists(step.dst) or os.path.lexists(step.dst + PARTIAL)):
        raise UnsafeError(errno.EEXIST, f"the quarantine already holds {step.dst}")
    check_regular_and_unchanged(path, _expected(step.file))
    if mode == ActionMode.HARDLINK and os.stat(path).st_dev != os.stat(step.keeper.path).st_dev:
        raise UnsafeError(errno.EXDEV, "the keeper is on another filesystem: no hard link possible")


def plan(
    store: Store,
    mode: ActionMode,
    quarantine: Path | None,
    groups: Sequence[int] = (),
    policy: KeeperPolicy | None = None,
    similar: bool = False,
) -> list[Step]:
    """The steps for every duplicate group (or `groups`), each with its refusal, if any; with `similar`, for the
    similar-shot groups instead (only when asked for explicitly; the best shot is kept). Nothing is touched."""
    if similar:
        policy = (policy or KeeperPolicy()).best_shot()
    roots = store.decisions.roots()
    quarantines = store.journal.quarantines() + ([str(quarantine)] if quarantine else [])
    selected = set(groups)
    groups_now = store.read.groups(SHOTS if similar else DUPLICATES)
    missing = selected - {gid for gid, _ in groups_now}
    if missing:
        raise ActionError(f"no such group: {', '.join(map(str, sorted(missing)))}")
    chosen = store.decisions.keepers()
    steps: list[Step] = []
    for gid, members in groups_now:
        if selected and gid not in selected:
            continue
        decision = choose(members, policy, chosen)
        try:
            _check_keeper(decision.keeper, roots, quarantines)
            keeper_problem = None
        except UnsafeError as e:
            keeper_problem = f"group {gid} refused: {e.strerror}"
        for rec in decision.remove:
            dst = None
            if quarantine is not None and mode != ActionMode.TRASH:
                dst = str(quarantine_path(quarantine, rec.path))
            step = Step(rec, decision.keeper, dst, keeper_problem)
            if step.refused is None:
                try:
                    _check_file(step, mode, roots, quarantines)
                except UnsafeError as e:
                    step.refused = e.strerror
                except OSError as e:
                    step.refused = f"cannot check it: {e.strerror}"
            steps.append(step)
    return steps


def execute(store: Store, steps: Sequence[Step], mode: ActionMode, quarantine: Path | None) -> Outcome:
    """Journal every step, then carry them out one by one, checking the keeper and the file again right before
    each move. A step that fails is rolled back on the spot (the file stays where it was)."""
    if mode != ActionMode.TRASH and quarantine is None:
        raise ActionError("--move-to QUARANTINE is required (files are moved there, never deleted)")
    journal = store.journal
    with store.atomic():
        action_id = journal.begin(mode, None if quarantine is None else str(quarantine))
        items = [(journal.plan_item(action_id, s.file, s.keeper.id, s.dst), s) for s in steps]
        for item_id, s in items:
            if s.refused:
                journal.set_item_state(item_id, ItemState.REFUSED, s.refused)
    out = Outcome(action_id, refused=[s for s in steps if s.refused])
    roots = store.decisions.roots()
    quarantines = store.journal.quarantines()
    for item_id, s in items:
        if s.refused:
            continue
        try:  # the last look before anything moves
            _check_keeper(s.keeper, roots, quarantines)
            _check_file(s, mode, roots, quarantines)
        except OSError as e:
            s.refused = e.strerror or str(e)
            journal.set_item_state(item_id, ItemState.REFUSED, s.refused)
            out.refused.append(s)
            log.warning("%s: refused: %s", s.file.path, s.refused)
            continue
        with store.atomic():
            journal.set_item_state(item_id, ItemState.MOVING)
        try:
            dst = _move_away(s, mode)
        except OSError as e:
            s.refused = f"failed: {e.strerror or e}"
            out.failed.append(s)
            log.error("%s: %s", s.file.path, s.refused)
            item = _item(store, action_id, item_id)
            try:
                _bring_back(item, mode, s.keeper.path)
            except OSError as back:  # left `moving`: undo will look again
                journal.set_item_state(item_id, ItemState.MOVING, f"{s.refused}; not rolled back: {back}")
                continue
            journal.set_item_state(item_id, ItemState.FAILED, s.refused)
            continue
        with store.atomic():
            journal.set_item_state(item_id, ItemState.DONE, dst=dst)
            store.files.set_status([s.file.id], FileStatus.RESOLVED, store.next_gen())
            store.graph.regroup([s.file.id])
        out.moved += 1
        log.info("%s %s -> %s", mode, s.file.path, dst or "trash")
    return out


def _move_away(s: Step, mode: ActionMode) -> str | None:
    src = s.file.path
    if mode == ActionMode.TRASH:
        from send2trash import send2trash

        send2trash(src)
        found = find_in_trash(src, s.file.content_hash)
        return None if found is None else str(found[0])
    if s.dst is None:
        raise OSError(errno.EINVAL, f"no place in the quarantine was planned for {src}")
    safe_move(src, s.dst)
    if mode == ActionMode.HARDLINK:
        os.link(s.keeper.path, src)
    elif mode == ActionMode.SYMLINK:
        os.symlink(s.keeper.path, src)
    return s.dst


def _item(store: Store, action_id: int, item_id: int) -> ActionItem:
    act = store.journal.action(action_id)
    assert act is not None
    return next(i for i in act.items if i.id == item_id)


def _is_our_link(src: str, mode: ActionMode, keeper: str | None) -> bool:
    """Is `src` the link `resolve` left in the file's place (and not the file itself)?"""
    if keeper is None or mode not in _LINK_MODES or not os.path.lexists(src):
        return False
    if mode == ActionMode.SYMLINK:
        return os.path.islink(src) and os.readlink(src) == keeper
    return not os.path.islink(src) and same_inode(src, keeper)


def _bring_back(item: ActionItem, mode: ActionMode, keeper: str | None) -> bool:
    """Put the file of `item` back at its place from whatever state an interrupted move or restore left; True
    when something was moved back. Raises OSError (nothing touched) when that cannot be done safely."""
    src = item.src
    dst: str | None = item.dst
    trash_info = None
    if mode == ActionMode.TRASH:
        found = find_in_trash(src, item.content_hash)
        dst, trash_info = (None, None) if found is None else (str(found[0]), found[1])
    elif dst is not None:
        remove_partial(dst)  # our own unfinished copies, never a user's file
    remove_partial(src)
    if _is_our_link(src, mode, keeper):
        if dst is None or not os.path.lexists(dst):
            raise OSError(errno.ENOENT, f"{src}: the photo is not in {dst or 'the trash'}; the link was left")
        os.unlink(src)  # only the link dupwatch made: the keeper and the quarantined file still hold the bytes
    there = dst is not None and os.path.lexists(dst)
    if os.path.lexists(src):
        if not there:
            return False  # it never left
        assert dst is not None
        # Both names exist: a move stopped between link and unlink (one file, two names), or a verified copy
        # stopped before the original went (two identical files). Either way the quarantine's name goes.
        halfway = same_inode(src, dst) or (_holds(src, item) and _holds(dst, item))
        if not halfway:
            raise FileExistsError(errno.EEXIST, f"{src} is taken by another file; the photo stays in {dst}")
        os.unlink(dst)
        if trash_info is not None:
            trash_info.unlink()
        return True
    if not there or dst is None:
        raise FileNotFoundError(errno.ENOENT, f"{src} is neither in its place nor in {dst or 'the trash'}")
    safe_move(dst, src)
    if trash_info is not None:
        trash_info.unlink()  # the trash's own record of a file that is back
    return True


def _holds(path: str, item: ActionItem) -> bool:
    try:
        return file_digest(path) == item.content_hash
    except OSError:
        return False


def undo(store: Store, action_id: int | None = None) -> UndoOutcome:
    """Put every file of an action back exactly where it was, from any state an interrupted resolve or undo left;
    refuse (per file, with a reason) where the place is taken or the file is not where dupwatch put it."""
    journal = store.journal
    act = journal.action(action_id)
    if act is None:
        raise ActionError("nothing to undo" if action_id is None else f"no action #{action_id}")
    if act.undone_at is not None:
        raise ActionError(f"action #{act.id} was already undone")
    out = UndoOutcome(act.id)
    keepers = store.files.many(i.keeper_id for i in act.items if i.keeper_id is not None)
    for item in reversed(act.items):
        if item.state not in _IN_FLIGHT:
            continue
        keeper = None if item.keeper_id is None or item.keeper_id not in keepers else keepers[item.keeper_id].path
        with store.atomic():
            journal.set_item_state(item.id, ItemState.RESTORING)
        try:
            moved = _bring_back(item, act.mode, keeper)
        except OSError as e:
            out.refusals.append(e.strerror or str(e))
            log.error("undo: %s", e.strerror or e)
            continue
        with store.atomic():
            journal.set_item_state(item.id, ItemState.UNDONE)
            store.files.set_status([item.file_id], FileStatus.OK, store.next_gen())
            store.graph.regroup([item.file_id])
        out.restored += int(moved)
    out.complete = not out.refusals
    if out.complete:
        with store.atomic():
            journal.mark_undone(act.id)
    return out
