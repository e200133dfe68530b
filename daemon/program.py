"""The `dupwatch` console script's entry point, kept apart from the command line itself (daemon.cli).

multiprocessing starts each decoding worker by importing the program's main script again, and the script that pip
writes for `dupwatch` imports the module its entry point lives in. Were that daemon.cli, every worker would import
click, rich, the store and sqlite-utils (~0.1 s of CPU) before its first file; this module imports nothing until
the program runs.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

# the commands that decode images in worker processes (a scan, or the watcher's first scan)
DECODING_COMMANDS = frozenset({"scan", "watch", "demo"})
# daemon.cli's global options that take a value, which may come before the command (`dupwatch --db x.db scan`)
VALUE_OPTIONS = frozenset({"--db", "--config"})


def command_of(argv: Sequence[str]) -> str | None:
    """The command a command line names: its first word that is neither an option nor an option's value."""
    words = iter(argv)
    for word in words:
        if word == "--":
            return next(words, None)
        if word in VALUE_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main() -> None:
    """Run the `dupwatch` command line (daemon.cli), then leave at once (see `leave`). A command that decodes
    images starts its workers' fork server first (daemon.pool.start_server): the server imports what a worker needs
    on the other core while this process imports the command line, the store and the matcher (~0.2 s on one core,
    the other idle). A scan of 85 camera photos had its first file back from a worker 0.47 s after its start
    instead of 0.57-0.71 s (0.31 s once torch's libraries no longer held the GIL: hashing.torch_libraries)."""
    if command_of(sys.argv[1:]) in DECODING_COMMANDS:
        from dupwatch.daemon.pool import start_server

        with contextlib.suppress(Exception):  # only a head start: a pool that cannot start says why when it is made
            start_server()
    from dupwatch.daemon.cli import main as command_line

    try:
        command_line()
    except SystemExit as e:
        leave(e.code)
    leave(0)


def leave(code: object) -> None:
    """End the process with exit status `code` without the interpreter's teardown. By the time a command returns it
    has committed and closed its database, saved its index and stopped its workers; what the interpreter would do
    after that is unload every module one by one, which once torch is imported took 0.1-0.3 s (a third of a
    second after a bare `import torch`, ~0.15 s after an 85-photo camera scan, whose whole run is ~3.5 s). Log
    handlers and the output streams are flushed first; a closed pipe on the other end loses nothing more than it
    would have. `sys.exit("message")` is left to Python, which prints the message and exits 1."""
    if code is not None and not isinstance(code, int):
        raise SystemExit(code)
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe: nothing more can be written anyway
            stream.flush()
    os._exit(code or 0)
