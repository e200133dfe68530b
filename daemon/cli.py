"""The `dupwatch` command line. Data goes to stdout, logs and progress to stderr.

Exit codes: 0 success, 1 runtime error (unreadable database, another writer, bad query image), 2 usage error.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import click
from rich.console import Console

from daemon.config import Config, ConfigError, default_state_dir, load_config
from daemon.lock import AlreadyRunning, WriterLock
from daemon.store import StoreError

log = logging.getLogger("dupwatch")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    cfg: Config
    quiet: bool


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="SQLite database (default: state dir).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="TOML config file.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, errors only.")
@click.version_option(package_name="dupwatch")
@click.pass_context
def main(ctx: click.Context, db: Path | None, config_path: Path | None, verbose: int, quiet: bool) -> None:
    """Find near-duplicate photos: fingerprints, CNN embeddings and an HNSW index, recorded in SQLite."""
    _setup_logging(verbose, quiet)
    try:
        cfg = load_config(config_path)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    ctx.obj = Context(cfg.with_overrides(db=db.resolve() if db else None), quiet)


def _embedder(cfg: Config):  # noqa: ANN202 - torch is imported lazily so `report` and `status` start fast
    from hashing.embedding import default_embedder

    return default_embedder(batch_size=cfg.batch_size, device=cfg.device)


def _store(cfg: Config, readonly: bool = False):  # noqa: ANN202
    from daemon.store import Store

    try:
        return Store(cfg.db, readonly=readonly)
    except StoreError as e:
        _fail(str(e))


def _progress(quiet: bool) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A rich progress bar on stderr when it is a terminal; nothing otherwise."""
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        return None, lambda: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=console, transient=True)  # fmt: skip
    task = bar.add_task("fingerprinting", total=None)
    bar.start()

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return update, bar.stop


def matching_options(f: F) -> F:
    for opt in reversed([
        click.option("--threshold", "cosine_threshold", type=click.FloatRange(0, 1), help="CNN cosine that confirms a pair."),
        click.option("--workers", type=click.IntRange(0, 64), help="Decoding processes (0: in this process)."),
        click.option("--batch-size", type=click.IntRange(1, 1024), help="Images per CNN batch."),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Where the CNN runs."),
    ]):  # fmt: skip
        f = opt(f)
    return f


@main.command()
@click.argument("dirs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@matching_options
@click.pass_obj
def scan(obj: Context, dirs: tuple[Path, ...], **overrides: Any) -> None:
    """Fingerprint DIRS, confirm near-duplicates and record them in the database."""
    cfg = obj.cfg.with_overrides(**overrides)
    _scan(cfg, list(dirs), obj.quiet)


def _scan(cfg: Config, dirs: list[Path], quiet: bool) -> None:
    from daemon.pipeline import Pipeline

    try:
        lock = WriterLock(cfg.lock_path).acquire()
    except AlreadyRunning as e:
        _fail(str(e))
    try:
        store = _store(cfg)
        update, stop = _progress(quiet)
        try:
            with Pipeline(cfg, store, _embedder(cfg)) as pipeline:
                stats = pipeline.scan(dirs, progress=update)
        except sqlite3.OperationalError as e:  # e.g. locked past the busy timeout by another program
            _fail(f"database {cfg.db}: {e}; nothing of the unfinished batch was recorded, run the scan again")
        finally:
            stop()
        counts = store.counts()
        click.echo(
            f"scanned {stats.seen} files ({stats.unchanged} unchanged, {stats.fingerprinted} fingerprinted, "
            f"{stats.reused} identical copies, {stats.moved} moved, {stats.deleted} gone, {stats.errors} unreadable) "
            f"in {stats.seconds['total']:.1f}s; {counts['groups']} duplicate groups, {counts['grouped_files']} files",
            err=True,
        )
    finally:
        lock.release()


@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file instead of stdout.")
@click.pass_obj
def report(obj: Context, fmt: str, out: Path | None) -> None:
    """Print the duplicate groups with the evidence for each match, and the files that could not be read."""
    from daemon.reports import build_report, to_json, write_csv, write_table

    store = _store(obj.cfg, readonly=True)
    rep = build_report(store)
    fh = open(out, "w", newline="") if out else sys.stdout
    try:
        if fmt == "json":
            json.dump(to_json(rep), fh, indent=1)
            fh.write("\n")
        elif fmt == "csv":
            write_csv(rep, fh)
        else:
            write_table(rep, Console(file=fh, width=None if fh.isatty() else 160))
    finally:
        if out:
            fh.close()


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True, help="How many look-alikes.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def query(obj: Context, image: Path, k: int, fmt: str) -> None:
    """Show the indexed images most like IMAGE (which need not be indexed itself)."""
    from daemon.pipeline import Pipeline
    from hashing.errors import DecodeError
    from hashing.views import describe

    cfg = obj.cfg.with_overrides(workers=0)
    store = _store(cfg, readonly=True)
    with Pipeline(cfg, store, _embedder(cfg)) as pipeline:
        try:
            probe = pipeline.probe_file(str(image.resolve()))
        except DecodeError as e:
            _fail(f"{image}: {e.reason}")
        hits = pipeline.matcher.lookalikes(probe, k)
        confirmed = {m.other: m for m in pipeline.matcher.find(probe)}
        recs = store.many(fid for fid, _, _ in hits)
        results = [
            {
                "path": recs[fid].path,
                "cosine": round(sim, 4),
                "view": describe(view),
                "duplicate": fid in confirmed,
                "inliers": confirmed[fid].inliers if fid in confirmed else None,
                "group": store.group_of(fid),
            }
            for fid, sim, view in hits
            if recs[fid].path != str(image.resolve())
        ]
    if fmt == "json":
        click.echo(json.dumps({"query": str(image.resolve()), "results": results}, indent=1))
        return
    from rich.table import Table

    t = Table(title=f"look-alikes of {image}", title_justify="left")
    for col in ("cosine", "view", "duplicate", "group", "path"):
        t.add_column(col, overflow="fold")
    for r in results:
        t.add_row(f"{r['cosine']:.3f}", r["view"], "yes" if r["duplicate"] else "", str(r["group"] or ""), r["path"])
    Console().print(t)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(obj: Context, as_json: bool) -> None:
    """Counts of files, groups and errors in the database."""
    store = _store(obj.cfg, readonly=True)
    counts = {"database": str(obj.cfg.db), **store.counts()}
    if as_json:
        click.echo(json.dumps(counts, indent=1))
    else:
        for key, value in counts.items():
            click.echo(f"{key:>14}: {value}")


@main.command()
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def demo(obj: Context, folder: Path | None) -> None:
    """Make a demo folder of real sample photos and near-duplicate variants (if absent), scan it, report."""
    folder = folder or default_state_dir() / "demo-photos"
    if not (folder / "images").is_dir():
        try:
            from bench.datagen import generate
        except ImportError as e:  # scikit-image ships the sample photos
            _fail(f"the demo needs scikit-image for its sample photos ({e}); run ./quickstart run")
        click.echo(f"writing demo photos to {folder} ...", err=True)
        generate(folder, size=1600, photos=("chelsea", "coffee", "astronaut", "rocket"), split=("gravel",))
    _scan(obj.cfg, [folder / "images"], obj.quiet)
    from daemon.reports import build_report, write_table

    write_table(build_report(_store(obj.cfg, readonly=True)), Console())


if __name__ == "__main__":  # pragma: no cover
    main()
