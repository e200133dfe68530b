"""The `dupwatch` command line. Data goes to stdout, logs and progress to stderr.

Exit codes: 0 success, 1 runtime error (unreadable database, another writer, bad query image), 2 usage error.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from dupwatch.daemon.allocator import keep_freed_memory
from dupwatch.daemon.config import Config, ConfigError, default_state_dir, load_config
from dupwatch.daemon.lock import AlreadyRunning, WriterLock
from dupwatch.daemon.store import StoreError
from dupwatch.hashing.errors import ModelError

if TYPE_CHECKING:
    from dupwatch.daemon.records import FileRecord
    from dupwatch.daemon.reports import Filters, Report
    from dupwatch.daemon.store import Store
    from dupwatch.hashing.embedder import Embedder

log = logging.getLogger("dupwatch")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    cfg: Config
    quiet: bool
    config_path: Path | None = None
    db_given: bool = False  # --db was named (not the default database)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def _lossless_output() -> None:
    """File names that are not UTF-8 (held as surrogates) print as their original bytes, as `ls` shows them,
    instead of raising UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="surrogateescape")


def _fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


class _Commands(click.Group):
    """Errors of the database (damaged, not dupwatch's, locked) end any command with one line and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (StoreError, ModelError) as e:
            _fail(str(e))
        except sqlite3.DatabaseError as e:
            db = ctx.meta.get("dupwatch.db", "the database")
            _fail(f"database {db}: {e} (damaged? a backup, or a new scan into a new database, gets you going again)")


@dataclass
class GlobalOptions:
    """--db, --config, -v, -q as given before the command; the same options after it win."""

    db: Path | None = None
    config_path: Path | None = None
    verbose: int = 0
    quiet: bool = False


def _global_options(f: F) -> F:
    f = click.option("-q", "--quiet", is_flag=True, default=None, help="No progress bar, no summary, errors only.")(f)
    f = click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")(f)
    f = click.option(
        "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="TOML config file."
    )(f)
    f = click.option(
        "--db", type=click.Path(dir_okay=False, path_type=Path), help="SQLite database (default: state dir)."
    )(f)
    return f


def pass_obj(f: Callable[..., Any]) -> Callable[..., Any]:
    """click.pass_obj for dupwatch's commands: the global options are accepted after the command too (as users
    type them: `dupwatch scan --db x.db -q DIR`), and the config is loaded with what was given where."""

    @_global_options
    @click.pass_context
    @functools.wraps(f)
    def run(
        ctx: click.Context,
        *args: Any,
        db: Path | None,
        config_path: Path | None,
        verbose: int,
        quiet: bool | None,
        **kwargs: Any,
    ) -> Any:
        before = ctx.find_object(GlobalOptions) or GlobalOptions()
        merged = GlobalOptions(
            db or before.db, config_path or before.config_path, before.verbose + verbose, bool(quiet or before.quiet)
        )
        return f(_context(merged), *args, **kwargs)

    return run


def _context(opts: GlobalOptions) -> Context:
    _setup_logging(opts.verbose, opts.quiet)
    try:
        cfg = load_config(opts.config_path)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    cfg = cfg.with_overrides(db=opts.db.resolve() if opts.db else None)
    click.get_current_context().meta["dupwatch.db"] = cfg.db  # for the one-line database errors
    return Context(cfg, opts.quiet, opts.config_path, db_given=opts.db is not None)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@_global_options
@click.version_option(package_name="dupwatch")
@click.pass_context
def main(ctx: click.Context, db: Path | None, config_path: Path | None, verbose: int, quiet: bool | None) -> None:
    """Find near-duplicate photos: fingerprints, CNN embeddings and an HNSW index, recorded in SQLite.

    --db, --config, -v and -q may be given before or after the command."""
    _lossless_output()
    keep_freed_memory()
    ctx.obj = GlobalOptions(db, config_path, verbose, bool(quiet))


def _embedder(cfg: Config) -> Embedder:
    """The CNN, loaded when the first image needs it: torch is imported then, so that `report` and `status`
    start fast and a rescan that finds nothing new never loads it."""
    from dupwatch.hashing.embedder import LITE0, LazyEmbedder

    if cfg.model == "tinynet":
        from dupwatch.hashing.embedding import tiny_embedder

        return tiny_embedder()
    if cfg.model != LITE0:
        raise click.UsageError(f"unknown model {cfg.model!r} (efficientnet-lite0 or tinynet)")

    def load() -> Embedder:
        from dupwatch.hashing.torch_libraries import prepare_torch_import

        prepare_torch_import(cfg.device)  # libraries opened with the GIL released: the scan goes on meanwhile
        from dupwatch.hashing.embedding import default_embedder

        cores = len(os.sched_getaffinity(0))
        threads = cfg.cnn_threads(cores)
        return default_embedder(cfg.cnn_batch, cfg.device, cfg.precision, threads=threads)

    return LazyEmbedder(load)


def _store(cfg: Config, readonly: bool = False) -> Store:
    from dupwatch.daemon.store import Store

    try:
        return Store(cfg.db, readonly=readonly)
    except StoreError as e:
        _fail(str(e))


@contextmanager
def _writing(cfg: Config) -> Iterator[Store]:
    """The database opened for writing, holding the one-writer lock (a clear exit 1 if another process has it);
    closed before the lock is released, as the web app's Writer does."""
    try:
        lock = WriterLock(cfg.lock_path).acquire()
    except AlreadyRunning as e:
        _fail(str(e))
    try:
        with _store(cfg) as store:
            yield store
    finally:
        lock.release()


class _Progress:
    """A rich progress bar on stderr when it is a terminal (never with -q). While it shows, log lines are printed
    above it instead of being glued to it, and its label says what is going on (loading the model, ...)."""

    def __init__(self, quiet: bool) -> None:
        self.bar: Any = None
        self._handlers: list[logging.Handler] = []
        if quiet:  # nothing of rich's is imported (~25 ms of a scan's start, before anything else can run)
            return
        from rich.console import Console

        self.console = Console(stderr=True, soft_wrap=True)  # long paths wrap where the terminal wraps them
        if not self.console.is_terminal:
            return
        from rich.logging import RichHandler
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.bar.add_task("starting", total=None)
        root = logging.getLogger()
        self._handlers = root.handlers[:]
        handler = RichHandler(console=self.console, show_time=False, show_path=False, markup=False)
        handler.setLevel(root.level)
        root.handlers = [handler]
        self.bar.start()

    def label(self, text: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=text, refresh=True)  # shown even if it lasts a moment

    def update(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total, description="fingerprinting")

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            logging.getLogger().handlers = self._handlers
            self.bar = None


def matching_options(f: F) -> F:
    options = [
        click.option(
            "--threshold", "cosine_threshold", type=click.FloatRange(0, 1), help="CNN cosine that confirms a pair."
        ),
        click.option("--workers", type=click.IntRange(0, 64), help="Decoding processes (0: in this process)."),
        click.option(
            "--batch-size",
            type=click.IntRange(1, 1024),
            help="Files fingerprinted, matched and recorded together (one transaction).",
        ),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Where the CNN runs."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


@main.command()
@click.argument("dirs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@matching_options
@pass_obj
def scan(obj: Context, dirs: tuple[Path, ...], **overrides: Any) -> None:
    """Fingerprint DIRS, confirm near-duplicates and record them in the database."""
    cfg = obj.cfg.with_overrides(**overrides)
    _scan(cfg, list(dirs), obj.quiet)


def _scan(cfg: Config, dirs: list[Path], quiet: bool) -> None:
    from dupwatch.daemon.pipeline import open_pipeline
    from dupwatch.daemon.priority import one_math_thread

    one_math_thread()
    started = time.monotonic()
    with _writing(cfg) as store:
        progress = _Progress(quiet)
        try:
            progress.label("loading the CNN")
            embedder = _embedder(cfg)
            progress.label("looking at the folders")
            with open_pipeline(cfg, store, embedder) as pipeline:
                stats = pipeline.scan(dirs, progress=progress.update)
        except sqlite3.OperationalError as e:  # e.g. locked past the busy timeout by another program
            _fail(f"database {cfg.db}: {e}; nothing of the unfinished batch was recorded, run the scan again")
        finally:
            progress.stop()
        if quiet:
            return
        counts = store.read.counts()
        click.echo(
            f"scanned {stats.seen} files ({stats.unchanged} unchanged, {stats.fingerprinted} fingerprinted, "
            f"{stats.reused} identical copies, {stats.moved} moved, {stats.deleted} gone, {stats.errors} unreadable) "
            f"in {time.monotonic() - started:.1f}s; {counts['groups']} duplicate groups, "
            f"{counts['grouped_files']} files",
            err=True,
        )
        if stats.skipped:
            kinds = ", ".join(
                f"{suffix} x{n}" for suffix, n in sorted(stats.skipped.items(), key=lambda kv: (-kv[1], kv[0]))
            )
            click.echo(f"{sum(stats.skipped.values())} files skipped (not images dupwatch reads): {kinds}", err=True)


def keeper_options(f: F) -> F:
    f = click.option(
        "--keep-by",
        help="Keeper criteria in order, e.g. resolution,format,sharpness,exif,size,oldest "
        "(also folder, exposure, newest).",
    )(f)
    f = click.option(
        "--prefer-folder",
        "prefer_folders",
        multiple=True,
        help="For the 'folder' criterion: keep files under this folder name first (repeatable, in order).",
    )(f)
    f = click.option(
        "--reference",
        "reference_dirs",
        multiple=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="A folder whose files are never proposed for removal (repeatable).",
    )(f)
    return f


def _keeper_cfg(
    cfg: Config, keep_by: str | None, reference_dirs: tuple[Path, ...], prefer_folders: tuple[str, ...] = ()
) -> Config:
    from dupwatch.daemon.keeper import RuleError, parse_rules

    try:
        rules = parse_rules(keep_by) if keep_by else parse_rules(cfg.keeper_rules)
    except RuleError as e:
        raise click.UsageError(str(e)) from None
    refs = tuple(p.resolve() for p in reference_dirs) or cfg.reference_dirs
    folders = prefer_folders or cfg.keeper_folders
    if prefer_folders and "folder" not in rules:  # asking for a folder preference means using it
        rules = (*rules[:1], parse_rules("folder")[0], *rules[1:])
    return cfg.with_overrides(keeper_rules=rules, reference_dirs=refs, keeper_folders=folders)


def _write_table(rep: Report, fh: IO[str]) -> None:
    """The table report: boxed and fitted for a terminal, plain and parseable for a pipe or a file."""
    from dupwatch.daemon.reports import write_plain, write_table

    if fh.isatty():
        from rich.console import Console

        write_table(rep, Console(file=fh))
    else:
        write_plain(rep, fh)


def _build_report(cfg: Config, tier: str = "copy", filters: Filters | None = None) -> Report:
    from dupwatch.daemon.keeper import KeeperPolicy
    from dupwatch.daemon.reports import build_report

    similar = tier == "similar"
    policy = KeeperPolicy.from_config(cfg)
    return build_report(_store(cfg, readonly=True), policy, similar, filters)


def tier_option(what: str) -> Callable[[F], F]:
    """--tier copy|similar, with what the choice means to the command."""
    return click.option("--tier", type=click.Choice(["copy", "similar"]), default="copy", show_default=True, help=what)


@main.command()
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv", "html"]), default="table", show_default=True
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file instead of stdout.")
@tier_option(
    "copy: duplicate groups (exact copies and edited copies of one capture); similar: similar-shot groups "
    "(bursts, other takes of one scene), each holding its duplicate groups."
)
@click.option(
    "--min-cosine",
    type=click.FloatRange(0.0, 1.0),
    help="Only pairs at least this similar (CNN cosine) make groups: re-decides from the stored evidence, no rescan.",
)
@click.option("--min-inliers", type=click.IntRange(0), help="Only pairs with this much geometric agreement.")
@keeper_options
@pass_obj
def report(
    obj: Context,
    fmt: str,
    out: Path | None,
    tier: str,
    min_cosine: float | None,
    min_inliers: int | None,
    keep_by: str | None,
    reference_dirs: tuple[Path, ...],
    prefer_folders: tuple[str, ...],
) -> None:
    """Print the duplicate groups (largest reclaimable space first) with the evidence for each match, the file
    each group would keep, and the files that could not be read; --tier similar prints the similar-shot groups
    instead, keeping the best shot. --format html needs --out."""
    from dupwatch.daemon.reports import Filters, to_json, write_csv

    cfg = _keeper_cfg(obj.cfg, keep_by, reference_dirs, prefer_folders)
    rep = _build_report(cfg, tier, Filters(min_cosine, min_inliers))
    if fmt == "html":
        if out is None:
            raise click.UsageError("--format html writes a file: give --out report.html")
        from dupwatch.daemon.html import write_html
        from dupwatch.daemon.thumbnails import ThumbnailCache

        write_html(rep, out, ThumbnailCache(cfg.thumbs_path))
        click.echo(f"wrote {out}", err=True)
        return
    with contextlib.ExitStack() as stack:
        fh: IO[str] = stack.enter_context(open(out, "w", newline="", errors="surrogateescape")) if out else sys.stdout
        if fmt == "json":
            json.dump(to_json(rep), fh, indent=1)
            fh.write("\n")
        elif fmt == "csv":
            write_csv(rep, fh)
        else:
            _write_table(rep, fh)


@main.command()
@click.argument("dirs", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--k", "k", type=click.IntRange(1, 10_000), help="Make exactly this many clusters (default: --auto).")
@click.option("--auto", "auto", is_flag=True, help="Choose the number of clusters (silhouette over 2..--k-max).")
@click.option("--k-max", type=click.IntRange(2, 1000), default=40, show_default=True, help="Largest k --auto tries.")
@click.option("--min-size", type=click.IntRange(1), default=1, show_default=True, help="Leave out smaller clusters.")
@click.option("--bursts", is_flag=True, help="Bursts instead: photos moments apart that look alike.")
@click.option(
    "--gap", type=click.FloatRange(0), default=2.0, show_default=True, help="--bursts: seconds between frames."
)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--export", "export_to", type=click.Path(file_okay=False, path_type=Path), help="One folder per cluster.")
@click.option(
    "--link/--copy", "link", default=True, show_default=True, help="--export symlinks or copies (originals never move)."
)
@click.option("--html", "html_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the cluster page.")
@click.option("--png", "png_dir", type=click.Path(file_okay=False, path_type=Path), help="Contact sheets + scatter.")
@keeper_options
@pass_obj
def cluster(
    obj: Context,
    dirs: tuple[Path, ...],
    k: int | None,
    auto: bool,
    k_max: int,
    min_size: int,
    bursts: bool,
    gap: float,
    fmt: str,
    export_to: Path | None,
    link: bool,
    html_out: Path | None,
    png_dir: Path | None,
    keep_by: str | None,
    reference_dirs: tuple[Path, ...],
    prefer_folders: tuple[str, ...],
) -> None:
    """Sort the photos under DIRS (default: every live photo) into clusters of what they show, from their stored
    embeddings (nothing is decoded again), each with its best shot; or, with --bursts, into bursts."""
    from dupwatch.daemon import clustering
    from dupwatch.daemon.keeper import KeeperPolicy
    from dupwatch.daemon.store.graph import SHOTS

    if k is not None and auto:
        raise click.UsageError("--k and --auto exclude each other")
    if bursts and (html_out or png_dir):
        raise click.UsageError("--html and --png show clusters, not --bursts")
    cfg = _keeper_cfg(obj.cfg, keep_by, reference_dirs, prefer_folders)
    store = _store(cfg, readonly=True)
    files = clustering.stored_photos(store, dirs)
    policy = KeeperPolicy.from_config(cfg)
    if bursts:
        shots = {r.id: gid for gid, recs in store.read.groups(SHOTS) for r in recs}
        found = clustering.bursts(files, gap_s=gap, min_size=max(2, min_size), policy=policy, shots=shots)
        method, explained = f"bursts: frames at most {gap:g} s apart with CNN cosine >= 0.75", []
    else:
        result = clustering.cluster(files, k=k, k_max=k_max, min_size=min_size, policy=policy)
        found, method, explained = result.clusters, result.method, result.explained
        if html_out or png_dir:
            from dupwatch.daemon.cluster_pages import write_html, write_pngs

            if html_out:
                write_html(result, html_out)
                click.echo(f"wrote {html_out}", err=True)
            if png_dir:
                click.echo(f"wrote {len(write_pngs(result, png_dir))} PNGs under {png_dir}", err=True)
    if export_to is not None:
        try:
            made = clustering.export(found, export_to, copy=not link, roots=store.decisions.roots())
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        click.echo(f"{made} {'links' if link else 'copies'} made under {export_to}", err=True)
    if fmt == "json":
        out = {
            "k": len(found),
            "method": method,
            "explained_variance": explained,
            "clusters": [
                {
                    "id": c.id,
                    "size": len(c.members),
                    "best": c.best.path,
                    "best_reason": c.best_reason,
                    "members": [{"path": m.path, "sharpness": m.sharpness, "taken_at": m.taken_at} for m in c.members],
                }
                for c in found
            ],
        }
        click.echo(json.dumps(out, indent=1))
    elif fmt == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(["cluster", "path", "best"])
        for c in found:
            for m in c.members:
                w.writerow([c.id, m.path, int(m is c.best)])
    else:
        kind = "bursts" if bursts else "clusters"
        click.echo(f"{len(found)} {kind} of {len(files)} photos ({method})")
        for c in found:
            click.echo(f"{kind[:-1]} {c.id}: {len(c.members)} photos, best {c.best.path} ({c.best_reason})")


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True, help="How many look-alikes.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_obj
def query(obj: Context, image: Path, k: int, fmt: str) -> None:
    """Show the indexed images most like IMAGE (which need not be indexed itself)."""
    from dupwatch.daemon.pipeline import open_pipeline
    from dupwatch.hashing.errors import DecodeError
    from dupwatch.hashing.views import describe

    cfg = obj.cfg.with_overrides(workers=0)
    store = _store(cfg, readonly=True)
    with open_pipeline(cfg, store, _embedder(cfg)) as pipeline:
        try:
            probe = pipeline.probe_file(str(image.resolve()))
        except DecodeError as e:
            _fail(f"{image}: {e.reason}")
        hits = pipeline.matcher.lookalikes(probe, k)
        confirmed = {m.other: m for m in pipeline.matcher.confirm(probe, hits)}
        recs = store.files.many(fid for fid, _, _ in hits)
        results = [
            {
                "path": recs[fid].path,
                "cosine": round(sim, 4),
                "view": describe(view),
                "duplicate": fid in confirmed,
                "inliers": confirmed[fid].inliers if fid in confirmed else None,
                "group": store.graph.group_of(fid),
            }
            for fid, sim, view in hits
            if recs[fid].path != str(image.resolve())
        ]
    if fmt == "json":
        click.echo(json.dumps({"query": str(image.resolve()), "results": results}, indent=1))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    t = Table(title=Text(f"look-alikes of {image}"), title_justify="left")
    for col in ("cosine", "view", "duplicate", "group", "path"):
        t.add_column(col, overflow="fold")
    for r in results:
        t.add_row(
            f"{r['cosine']:.3f}",
            str(r["view"]),
            "yes" if r["duplicate"] else "",
            str(r["group"] or ""),
            Text(str(r["path"])),
        )
    Console().print(t)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_obj
def status(obj: Context, as_json: bool) -> None:
    """Counts of files, groups and errors; and, while `dupwatch watch` runs, its queue, uptime and last events."""

    from dupwatch.daemon.service import read_status

    store = _store(obj.cfg, readonly=True)
    counts: dict[str, Any] = {"database": str(obj.cfg.db), **store.read.counts()}
    daemon = read_status(obj.cfg)
    if as_json:
        click.echo(json.dumps({**counts, "daemon": daemon}, indent=1))
        return
    for key, value in counts.items():
        click.echo(f"{key:>14}: {value}")
    if daemon is None:
        click.echo(f"{'daemon':>14}: not running")
        return
    click.echo(f"{'daemon':>14}: pid {daemon['pid']}, {daemon['state']}, up {time.time() - daemon['started_at']:.0f}s")
    click.echo(f"{'queue':>14}: {daemon['queue']} events, {daemon['pending']} files waiting to settle")
    click.echo(f"{'processed':>14}: {daemon['processed']} files, {daemon['duplicates']} duplicates found")
    settings = ", ".join(f"{k} {v}" for k, v in daemon.get("settings", {}).items())
    click.echo(f"{'settings':>14}: {settings}")
    for e in daemon["last_events"][-5:]:
        when = time.strftime("%H:%M:%S", time.localtime(e["time"]))
        click.echo(f"{'':>14}  {when} {e['event']}: {e.get('path', '')}")


def serve_options(f: F) -> F:
    f = click.option("--token", help="Needed by every request (made and printed when a non-local --host has none).")(f)
    f = click.option("--port", type=click.IntRange(0, 65535), help="Port (default 8765; 0: any free one).")(f)
    f = click.option("--host", help="Address to listen on (default 127.0.0.1; any other needs a token).")(f)
    return f


def _start_server(cfg: Config, token: str | None, inside_daemon: bool) -> Any:
    from dupwatch.daemon.web.server import ServeError, make_server

    try:
        server = make_server(cfg, token, lambda: _embedder(cfg), inside_daemon=inside_daemon)
    except ServeError as e:
        _fail(str(e))
    click.echo(f"dupwatch serve: open {server.url}", err=True)
    if server.access.token is not None:
        click.echo("every request needs the token above (the link sets it in a cookie)", err=True)
    return server


@main.command()
@click.argument("dirs", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--polling", is_flag=True, help="Poll instead of inotify (network filesystems).")
@click.option(
    "--on-duplicate",
    help="Shell command run for each new duplicate, the event as JSON on stdin (5 per 10 s at most, then a summary).",
)
@click.option("--serve", "web", is_flag=True, help="Also serve the web app (dupwatch serve) from this process.")
@serve_options
@matching_options
@pass_obj
def watch(
    obj: Context,
    dirs: tuple[Path, ...],
    polling: bool,
    on_duplicate: str | None,
    web: bool,
    host: str | None,
    port: int | None,
    token: str | None,
    **overrides: Any,
) -> None:
    """Reconcile DIRS with the database, then follow them live: each new or changed photo is checked as soon as it
    is complete. This is what the systemd service runs. SIGTERM stops it cleanly, SIGHUP reloads the config.
    --serve also serves the web app, whose changes the daemon follows at once."""
    from dupwatch.daemon.lock import AlreadyRunning
    from dupwatch.daemon.service import Service

    cfg = obj.cfg.with_overrides(on_duplicate=on_duplicate, **overrides)
    roots = list(dirs or cfg.roots)
    if not roots:
        raise click.UsageError("name the folders to watch (or set roots in the config file)")

    def reload() -> Config:
        return load_config(obj.config_path).with_overrides(on_duplicate=on_duplicate, **overrides)

    from dupwatch.daemon.priority import lower_priority, one_math_thread

    one_math_thread()
    for change in lower_priority(cfg.nice, io_idle=cfg.nice > 0):  # before the workers start: they inherit it
        log.info("priority: %s", change)
    service = Service(cfg, roots, _embedder(cfg), polling=polling, reload_config=reload)
    service.install_signal_handlers()
    server = None
    if web:
        if not cfg.db.exists():  # the app reads it from its first request; the service would make it a moment later
            _store(cfg).close()
        server = _start_server(cfg.with_overrides(host=host, port=port), token, inside_daemon=True)
        server.start()
    try:
        sys.exit(service.run())
    except AlreadyRunning as e:
        _fail(str(e))
    except (StoreError, RuntimeError) as e:
        _fail(str(e))
    finally:
        if server is not None:
            server.stop()


@main.command()
@serve_options
@click.option(
    "--move-to",
    "quarantine",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where 'resolve' moves files (default: the quarantine folder beside the database).",
)
@pass_obj
def serve(obj: Context, host: str | None, port: int | None, token: str | None, quarantine: Path | None) -> None:
    """A local web app over the database: search by image, review the groups side by side, change the keeper,
    mark "not duplicates", resolve and undo (the same journal and refusals as the CLI). Runs beside `watch`
    (changes then need `watch --serve`, which serves from inside the daemon). Ctrl-C stops it."""
    cfg = obj.cfg.with_overrides(host=host, port=port, quarantine=quarantine.resolve() if quarantine else None)
    _store(cfg, readonly=True).close()  # a clear error when there is no database yet
    # bring an older database up to this schema (a running daemon did so already)
    with contextlib.suppress(AlreadyRunning), WriterLock(cfg.lock_path):
        _store(cfg).close()
    _start_server(cfg, token, inside_daemon=False).run()


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@tier_option("copy: the keeper of PATH's duplicate group; similar: of its similar-shot group.")
@pass_obj
def keep(obj: Context, path: Path, tier: str) -> None:
    """Make PATH the keeper of its group (its similar-shot group with --tier similar), over the keeper rules:
    `report` and `resolve` keep it. Kept by content, so it survives renames and rescans."""
    from dupwatch.daemon.keeping import KeepError
    from dupwatch.daemon.keeping import keep as keep_file
    from dupwatch.daemon.store.graph import DUPLICATES, SHOTS

    with _writing(obj.cfg) as store:
        [rec] = _records(store, (path,))
        try:
            gid = keep_file(store, rec, SHOTS if tier == "similar" else DUPLICATES)
        except KeepError as e:
            _fail(str(e))
    click.echo(f"group {gid} keeps {rec.path}", err=True)


@main.command()
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path))
@pass_obj
def demo(obj: Context, folder: Path | None) -> None:
    """Make a demo folder of real sample photos and near-duplicate variants (if absent), scan it into the demo's
    own database (demo.db in the state folder, unless --db names one), report."""
    folder = folder or default_state_dir() / "demo-photos"
    if not (folder / "images").is_dir():
        try:
            from dupwatch.daemon.demo import generate
        except ImportError as e:  # scikit-image ships the sample photos
            _fail(f"the demo needs scikit-image for its sample photos ({e}); run ./quickstart run")
        click.echo(f"writing demo photos to {folder} ...", err=True)
        generate(folder, size=1600, photos=("chelsea", "coffee", "astronaut", "rocket"), split=("gravel",))
    cfg = obj.cfg if obj.db_given else obj.cfg.with_overrides(db=default_state_dir() / "demo.db")
    _scan(cfg, [folder / "images"], obj.quiet)
    _write_table(_build_report(cfg), sys.stdout)
    click.echo(f"the demo's database is {cfg.db}; your own library's database is untouched", err=True)


@main.command()
@click.argument("groups", nargs=-1, type=int)
@click.option(
    "--move-to",
    "quarantine",
    type=click.Path(file_okay=False, path_type=Path),
    help="Quarantine folder: non-keepers are moved here, keeping their full paths.",
)
@click.option("--trash", "mode", flag_value="trash", help="Send non-keepers to the desktop trash instead.")
@click.option(
    "--hardlink", "mode", flag_value="hardlink", help="Move to the quarantine and leave a hard link to the keeper."
)
@click.option(
    "--symlink", "mode", flag_value="symlink", help="Move to the quarantine and leave a symlink to the keeper."
)
@click.option("--dry-run", is_flag=True, help="Print what would happen; change nothing (no --move-to needed).")
@click.option("--yes", "-y", is_flag=True, help="Act on every group without asking (for scripts).")
@tier_option(
    "copy: duplicate groups only; similar: the similar-shot groups of `report --tier similar` (keeps the best "
    "shot of each and moves the other takes: say so explicitly)."
)
@keeper_options
@pass_obj
def resolve(
    obj: Context,
    groups: tuple[int, ...],
    quarantine: Path | None,
    mode: str | None,
    dry_run: bool,
    yes: bool,
    tier: str,
    keep_by: str | None,
    reference_dirs: tuple[Path, ...],
    prefer_folders: tuple[str, ...],
) -> None:
    """Keep the best file of each group (or of GROUPS) and move the others away. Nothing is ever deleted: every
    move is journaled and `dupwatch undo` puts it back."""
    from dupwatch.daemon.actions import ActionError, execute, plan
    from dupwatch.daemon.keeper import KeeperPolicy
    from dupwatch.daemon.store import ActionMode

    action_mode = ActionMode(mode or ActionMode.MOVE)
    cfg = _keeper_cfg(obj.cfg, keep_by, reference_dirs, prefer_folders)
    quarantine = quarantine.resolve() if quarantine else None
    if not dry_run and action_mode != ActionMode.TRASH and quarantine is None:
        raise click.UsageError("--move-to QUARANTINE is required (files are moved there, never deleted)")
    with _writing(cfg) as store:
        try:
            policy = KeeperPolicy.from_config(cfg)
            steps = plan(store, action_mode, quarantine, groups, policy, similar=tier == "similar")
        except ActionError as e:
            raise click.UsageError(str(e)) from None
        ready = [s for s in steps if s.refused is None]
        where = "the trash" if action_mode == ActionMode.TRASH else str(quarantine or "the quarantine")
        if dry_run:
            for s in steps:
                line = f"refused {s.file.path}: {s.refused}" if s.refused else f"would move {s.file.path} -> {where}"
                click.echo(f"{line}  (keeping {s.keeper.path})")
            click.echo(f"{len(ready)} files would be moved, {len(steps) - len(ready)} refused (dry run)", err=True)
            return
        if not ready:
            for s in steps:
                click.echo(f"refused {s.file.path}: {s.refused}")
            click.echo("nothing to do" if not steps else f"nothing to do: all {len(steps)} files refused", err=True)
            sys.exit(1 if steps else 0)
        if not groups and not yes:
            size = sum(s.file.size for s in ready)
            summary = f"{len(ready)} files ({size / 1e6:.1f} MB) of every group would be moved to {where}"
            if not (sys.stdin.isatty() and sys.stdout.isatty()):
                raise click.UsageError(f"{summary}: name the groups, or pass --yes (nothing is asked off a terminal)")
            if not click.confirm(f"{summary}; {len(steps) - len(ready)} refused. Go ahead?", err=True):
                click.echo("nothing moved", err=True)
                return
        out = execute(store, steps, action_mode, quarantine)
        for s in steps:
            if s.refused:
                click.echo(f"{'failed' if s in out.failed else 'refused'} {s.file.path}: {s.refused}")
            else:
                click.echo(f"moved {s.file.path} -> {s.dst or 'the trash'}  (keeping {s.keeper.path})")
        click.echo(
            f"action #{out.action_id}: {out.moved} files moved, {len(out.refused)} refused, {len(out.failed)} failed; "
            f"undo with: dupwatch undo {out.action_id}",
            err=True,
        )
        if out.failed or out.refused:
            sys.exit(1)


@main.command()
@click.argument("action_id", required=False, type=int)
@pass_obj
def undo(obj: Context, action_id: int | None) -> None:
    """Put the files of an action (default: the latest) back exactly where they were."""
    from dupwatch.daemon.actions import ActionError
    from dupwatch.daemon.actions import undo as undo_action

    with _writing(obj.cfg) as store:
        try:
            out = undo_action(store, action_id)
        except ActionError as e:
            _fail(str(e))
        for r in out.refusals:
            click.echo(f"refused: {r}", err=True)
        if not out.complete:
            _fail(
                f"action #{out.action_id} is not undone: {out.restored} files put back, {len(out.refusals)} could not "
                f"be; deal with the reasons above and run 'dupwatch undo {out.action_id}' again"
            )
        click.echo(f"action #{out.action_id} undone: {out.restored} files put back", err=True)


@main.command()
@pass_obj
def actions(obj: Context) -> None:
    """The journal of resolve actions."""
    store = _store(obj.cfg, readonly=True)
    for a in store.journal.actions():
        state = "undone" if a.undone_at else "active"
        click.echo(f"#{a.id} {a.mode:8} {a.done}/{a.items} files, {a.bytes} bytes, {state}, target {a.target or '-'}")


def _records(store: Store, paths: tuple[Path, ...]) -> list[FileRecord]:
    found = {p: store.files.by_path(str(p.absolute())) for p in paths}
    unknown = [str(p) for p, r in found.items() if r is None]
    if unknown:
        _fail(f"not in the database: {', '.join(unknown)}")
    return [r for r in found.values() if r is not None]


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--group", "group_id", type=int, help="No two files of group N are duplicates: the group dissolves.")
@click.option("--member", type=click.Path(path_type=Path), help="This file is not a duplicate of its group's others.")
@pass_obj
def ignore(obj: Context, paths: tuple[Path, ...], group_id: int | None, member: Path | None) -> None:
    """Mark files as not duplicates: A B (A is not a duplicate of B, nor of any further path named), --member A
    (A leaves its group), or --group N (the whole group). Decisions are kept by content, so they survive renames,
    rescans and the daemon; 'dupwatch ignored' lists them and 'dupwatch unignore' takes one back."""
    from dupwatch.daemon.ignoring import IgnoreError, ignore_group, ignore_member, ignore_pair

    if sum((bool(paths), group_id is not None, member is not None)) != 1 or (paths and len(paths) < 2):
        raise click.UsageError("give two or more paths, --member PATH, or --group N")
    with _writing(obj.cfg) as store:
        try:
            if group_id is not None:
                out = ignore_group(store, group_id)
                click.echo(f"group {group_id} dissolved: {out.pairs} pairs marked as not duplicates", err=True)
            elif member is not None:
                [rec] = _records(store, (member,))
                out = ignore_member(store, rec)
                click.echo(f"{rec.path} is no duplicate of the {out.pairs} other files of its group", err=True)
            else:
                first, *rest = _records(store, paths)
                for other in rest:
                    out = ignore_pair(store, first, other)
                    click.echo(f"not duplicates: {first.path} and {other.path}", err=True)
                    if out.still_grouped is not None:
                        click.echo(
                            f"  both are still in group {out.still_grouped} through other files: "
                            f"'dupwatch ignore --member {other.path}' takes one out of it",
                            err=True,
                        )
        except IgnoreError as e:
            _fail(str(e))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_obj
def ignored(obj: Context, as_json: bool) -> None:
    """The "not duplicates" decisions, with the files that hold each content now."""
    from dupwatch.daemon.ignoring import list_ignored

    entries = list_ignored(_store(obj.cfg, readonly=True))
    if as_json:
        click.echo(json.dumps([asdict(e) for e in entries], indent=1))
        return
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created_at))
        a = ", ".join(e.paths_a) or "(no file now)"
        b = ", ".join(e.paths_b) or "(no file now)"
        click.echo(f"#{e.id} {when}  {a}  <>  {b}")
    if not entries:
        click.echo("no decisions", err=True)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--id", "decision_id", type=int, help="The decision's number in 'dupwatch ignored'.")
@pass_obj
def unignore(obj: Context, paths: tuple[Path, ...], decision_id: int | None) -> None:
    """Take back a "not duplicates" decision: A B, or --id N. The files' groups are recomputed at once."""
    from dupwatch.daemon.ignoring import IgnoreError, unignore_id, unignore_pair

    if not ((decision_id is not None and not paths) or (decision_id is None and len(paths) == 2)):
        raise click.UsageError("give two paths, or --id N")
    with _writing(obj.cfg) as store:
        try:
            if decision_id is not None:
                unignore_id(store, decision_id)
                click.echo(f"decision #{decision_id} taken back", err=True)
                return
            a, b = _records(store, paths)
            if not unignore_pair(store, a, b):
                _fail(f"no decision about {a.path} and {b.path}")
            click.echo(f"taken back: {a.path} and {b.path} may be duplicates again", err=True)
        except IgnoreError as e:
            _fail(str(e))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_obj
def roots(obj: Context, as_json: bool) -> None:
    """The folders this database holds (those given to scan or watch), with their live files."""
    from dupwatch.daemon.records import FileStatus

    store = _store(obj.cfg, readonly=True)
    rows = []
    for r in store.decisions.roots():
        known = store.files.stat_index([r])
        live = sum(k.status == FileStatus.OK for k in known.values())
        rows.append({"path": r, "files": live, "exists": os.path.isdir(r)})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for row in rows:
        gone = "" if row["exists"] else "  (gone: 'dupwatch forget' drops it)"
        click.echo(f"{row['path']}  {row['files']} files{gone}")


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@pass_obj
def forget(obj: Context, folder: Path) -> None:
    """Drop FOLDER (one that is gone, typically) and everything recorded under it: its files leave their groups
    and the indexes. Files on disk are never touched."""
    from dupwatch.daemon.records import FileStatus

    path = str(folder.absolute())
    with _writing(obj.cfg) as store:
        live = (FileStatus.OK, FileStatus.ERROR)  # resolved files stay as the journal knows them
        ids = [k.id for k in store.files.stat_index([path]).values() if k.status in live]
        with store.atomic():
            dropped = store.decisions.remove_roots_under(path)
            store.files.set_status(ids, FileStatus.DELETED, store.next_gen())
            store.graph.regroup(ids)
    if not ids and not dropped:
        _fail(f"nothing is recorded under {path} ('dupwatch roots' lists the folders)")
    click.echo(
        f"forgot {len(ids)} files under {path}" + (f" and the folder {', '.join(dropped)}" if dropped else ""), err=True
    )
    if folder.exists():
        click.echo("the folder still exists: the next scan of it records its files again", err=True)


@main.command("help")
@click.argument("topic", required=False)
@click.pass_context
def help_(ctx: click.Context, topic: str | None) -> None:
    """Help on a command (dupwatch help scan) or a topic: matching, safety, config, service."""
    from dupwatch.daemon.helptext import TOPICS

    parent = ctx.parent
    assert parent is not None
    if topic is None:
        click.echo(main.get_help(parent))
        click.echo("\nTopics: " + ", ".join(TOPICS) + " (dupwatch help TOPIC)")
        return
    if topic in TOPICS:
        click.echo(TOPICS[topic])
        return
    command = main.get_command(parent, topic)
    if command is None:
        raise click.UsageError(f"no command or topic {topic!r}; topics: {', '.join(TOPICS)}")
    with click.Context(command, info_name=topic, parent=parent) as sub:
        click.echo(command.get_help(sub))


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(dupwatch completion bash)" in ~/.bashrc (zsh, fish alike)."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(main, {}, "dupwatch", "_DUPWATCH_COMPLETE").source())


@main.group()
def service() -> None:
    """The systemd user service."""


def user_unit_path() -> Path:
    import os

    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "systemd" / "user" / "dupwatch.service"


def render_unit(dupwatch: str, db: Path, roots: list[Path], config_path: Path | None) -> str:
    """The user unit of systemd/dupwatch.service with this installation's paths filled in, under a header that
    says what it is (the template's own instructions for filling it in by hand are dropped)."""
    import shlex
    from importlib import resources

    template = resources.files("dupwatch.daemon").joinpath("templates/dupwatch.service").read_text()
    exe = shlex.join([dupwatch, "--db", str(db)] + (["--config", str(config_path)] if config_path else []))
    readme = Path(__file__).resolve().parents[1] / "README.md"
    body = "\n".join(line for line in template.splitlines() if not line.startswith("#"))
    header = [
        "# dupwatch, as a systemd user service: written by `dupwatch service install`.",
        f"# Watches: {shlex.join(str(r) for r in roots)}",
        f"# Database: {db}",
        "# After editing: systemctl --user daemon-reload && systemctl --user restart dupwatch",
        "# To keep watching while you are logged out: loginctl enable-linger $USER",
    ]
    filled = (
        body.replace("@DUPWATCH@", exe)
        .replace("@ROOTS@", shlex.join(str(r) for r in roots))
        .replace("@README@", str(readme))
    )
    return "\n".join(header) + "\n" + filled.lstrip("\n") + "\n"


@service.command("install")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--enable", is_flag=True, help="Also run systemctl --user daemon-reload and enable --now.")
@pass_obj
def service_install(obj: Context, dirs: tuple[Path, ...], enable: bool) -> None:
    """Write the user unit for DIRS to ~/.config/systemd/user/dupwatch.service."""
    import shutil
    import subprocess

    exe = shutil.which("dupwatch") or str(Path(sys.argv[0]).resolve())
    unit = render_unit(exe, obj.cfg.db, [d.resolve() for d in dirs], obj.config_path)
    path = user_unit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(unit)
    click.echo(f"wrote {path}", err=True)
    commands = [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", "dupwatch"]]
    if enable:
        for cmd in commands:
            if subprocess.run(cmd).returncode != 0:
                _fail(f"{' '.join(cmd)} failed")
    else:
        click.echo("start it with:\n  " + "\n  ".join(" ".join(c) for c in commands), err=True)
    click.echo("to keep it running while you are logged out: loginctl enable-linger $USER", err=True)


@service.command("status")
@click.option("--lines", "-n", default=20, show_default=True, help="Journal lines to show.")
@pass_obj
def service_status(obj: Context, lines: int) -> None:
    """The unit's state and its last journal lines (where systemd is there), and the daemon's own status."""
    import shutil
    import subprocess

    if shutil.which("systemctl") is None:
        click.echo("systemd is not available here: no unit to show", err=True)
    else:
        for cmd in (
            ["systemctl", "--user", "status", "dupwatch", "--no-pager", "--lines=0"],
            ["journalctl", "--user", "-u", "dupwatch", "-n", str(lines), "--no-pager"],
        ):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            text = (r.stdout or r.stderr).rstrip()
            click.echo(text or f"({' '.join(cmd[:2])}: nothing to show)")
    from dupwatch.daemon.service import read_status

    daemon = read_status(obj.cfg)
    click.echo("daemon: " + ("not running" if daemon is None else f"pid {daemon['pid']}, {daemon['state']}"))


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="dupwatch")
