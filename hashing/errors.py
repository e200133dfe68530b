"""The one error type for files that cannot be fingerprinted, with a short reason a user can act on."""

from __future__ import annotations


class DecodeError(Exception):
    """Raised for any file that is not a usable image: the reason goes into reports and the database."""

    def __init__(self, reason: str, *, final: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # final: waiting cannot help (a FIFO, a symlink, a folder, permission denied). Otherwise the file may only
        # be half-written yet, and a watcher may look again once it has settled.
        self.final = final


class ModelError(Exception):
    """The CNN cannot run as asked (a device this machine does not have): one line for the user, no traceback."""
