"""Whether the process a pid names is still running: asked of the numbers that dupwatch writes into names and files
(a half-saved CNN graph's, a half-made database's, the writer lock's, the daemon's status). It lives at the bottom
of the package, beside the CNN's graph cache that asks it too: hashing never imports the daemon."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists: another user's process (the system service's, seen by a user) counts. 0 and
    negative numbers name no process (kill(2) would take them for process groups)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and is not ours to signal
        return True
    except (OSError, OverflowError):  # too large to be a pid
        return False
    return True
