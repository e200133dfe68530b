"""The `dupwatch` console script's entry point, kept apart from the command line itself (daemon.cli).

multiprocessing starts each decoding worker by importing the program's main script again, and the script that pip
writes for `dupwatch` imports the module its entry point lives in. Were that daemon.cli, every worker would import
click, rich, the store and sqlite-utils (~0.1 s of CPU) before its first file; this module imports nothing until
the program runs.
"""

from __future__ import annotations


def main() -> None:
    """Run the `dupwatch` command line (daemon.cli)."""
    from dupwatch.daemon.cli import main as command_line

    command_line()
