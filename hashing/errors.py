"""The one error type for files that cannot be fingerprinted, with a short reason a user can act on."""

from __future__ import annotations


class DecodeError(Exception):
    """Raised for any file that is not a usable image: the reason goes into reports and the database."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
