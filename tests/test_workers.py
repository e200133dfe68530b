"""The decoding workers beside the process they feed: they run below it, leave a core to the CNN while it loads,
hand their results over without waiting for a reader (daemon.pool), and every process keeps freed memory for its
arrays (daemon.allocator)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from dupwatch.daemon.allocator import keep_freed_memory
from dupwatch.daemon.config import Config
from dupwatch.daemon.pipeline import Duplicate, NoHooks, open_pipeline
from dupwatch.daemon.pool import RESULT_PIPE_BYTES, decoding_context
from dupwatch.daemon.store import Store
from dupwatch.hashing.embedding import tiny_embedder
from dupwatch.hashing.fingerprint import fingerprint_file
from tests.helpers import (
    marking_fingerprinter,
    noise_png,
    overlap_fingerprinter,
    photo_jpeg,
    reporting_fingerprinter,
    run_python,
)

_COMPARISONS = """
import resource, sys
import numpy as np
from dupwatch.daemon.allocator import keep_freed_memory
from dupwatch.hashing.detail import compare
from dupwatch.hashing.geometry import GRID
if sys.argv[1] == "kept":
    assert keep_freed_memory()
image = (np.random.default_rng(0).random((456, 456)) * 255).astype(np.uint8)
a, b = image[:448, :448], image[5:453, 3:451]  # b: a shifted by a fraction of a cell, refined in full
model = np.array([[1.0, 0.0], [0.0, 1.0], [-3 * GRID / 448, -5 * GRID / 448]])
compare(a, b, model)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    compare(a, b, model)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def _faults_per_comparison(mode: str) -> float:
    return float(run_python(_COMPARISONS, mode, timeout=None).stdout)


def test_array_temporaries_reuse_freed_memory_instead_of_faulting_in_new_pages() -> None:
    """A detail comparison of two 448x448 images (warps, band-passes, blocks: dozens of temporaries of 800 KiB)
    faults in ~1,100 fresh pages each time under glibc's default thresholds; with the allocator set, freed memory
    is reused."""
    if not keep_freed_memory():
        pytest.skip("not glibc: the allocator is left as it is")
    default, kept = _faults_per_comparison("default"), _faults_per_comparison("kept")
    assert default > 500, default  # what the setting is for (if glibc changes its defaults, this says so)
    assert kept < default / 20, (kept, default)


_BLAS_THREADS = """
import dupwatch.daemon.cli, numpy
from threadpoolctl import threadpool_info
print(max([i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"], default=0))
"""


def _blas_threads(env: dict[str, str]) -> int:
    return int(run_python(_BLAS_THREADS, env=env, timeout=None).stdout)


def test_a_dupwatch_process_starts_numpy_with_one_blas_thread_unless_told_otherwise() -> None:
    """OpenBLAS starts a spinning thread per core at numpy's import, before anything can limit it: the package
    asks for one first. A user's own OPENBLAS_NUM_THREADS is kept."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: OpenBLAS starts one thread anyway")
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
    }
    threads = _blas_threads(env)
    if threads == 0:
        pytest.skip("this numpy does not use OpenBLAS")
    assert threads == 1
    assert _blas_threads({**env, "OPENBLAS_NUM_THREADS": "2"}) == 2


def test_a_process_whose_blas_started_with_one_thread_limits_nothing_more() -> None:
    """A dupwatch process (a decoding worker too) loads numpy after the package asked OpenBLAS for one thread:
    `one_math_thread` then has nothing to limit and leaves threadpoolctl unimported (~9 ms of each start);
    OpenBLAS runs one thread all the same, and OpenCV one."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
    }
    code = (
        "import sys, dupwatch.daemon.workers, numpy, cv2\n"
        "from dupwatch.daemon.priority import one_math_thread; one_math_thread()\n"
        "print('threadpoolctl' in sys.modules, cv2.getNumThreads())\n"
        "from threadpoolctl import threadpool_info\n"
        "print(sorted({i['num_threads'] for i in threadpool_info() if i['internal_api'] == 'openblas'}))"
    )
    out = run_python(code, env=env, timeout=None).stdout
    if out.split()[2:] == ["[]"]:
        pytest.skip("this numpy does not use OpenBLAS")
    assert out.split() == ["False", "1", "[1]"], out


def test_decoding_workers_run_below_the_process_they_feed_with_the_allocator_set(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(2):
        (root / f"img{i}.png").write_bytes(noise_png(200 + i))
    cfg = Config(db=tmp_path / "d.db", workers=1, worker_nice=7, model="tinynet")
    store = Store(cfg.db)
    with open_pipeline(cfg, store, tiny_embedder(), fingerprinter=reporting_fingerprinter) as p:
        p.scan([root])
    seen = {r.error for r in store.read.errors()}
    nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 7)
    assert seen == {f"nice={nice} kept={keep_freed_memory()}"}


class _Loading:
    """The tiny network, reporting that its load is under way (or not) for as long as the test says."""

    def __init__(self, loading: bool) -> None:
        self.real = tiny_embedder()
        self.dim, self.name, self.busy = self.real.dim, self.real.name, loading
        self.batch_size = self.real.batch_size

    def preload(self) -> None:
        pass

    def loading(self) -> bool:
        return self.busy

    def embed(self, pixels):  # type: ignore[no-untyped-def]
        return self.real.embed(pixels)

    def embed_with_local(self, pixels):  # type: ignore[no-untyped-def]
        return self.real.embed_with_local(pixels)


@pytest.mark.parametrize("loading", [True, False])
def test_while_the_cnn_loads_the_workers_leave_it_a_core(tmp_path: Path, loading: bool) -> None:
    """torch's import and the network's load are the start of the scan's serial part: while they run, one worker
    fewer decodes (here 1 of 2); once loaded, all of them."""
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(8):
        (root / f"img{i}.png").write_bytes(noise_png(200 + i))
    cfg = Config(db=tmp_path / "d.db", workers=2, model="tinynet")
    store = Store(cfg.db)
    with open_pipeline(cfg, store, _Loading(loading), fingerprinter=overlap_fingerprinter) as p:
        p.scan([root])
    others = {r.error for r in store.read.errors()}
    assert others == {"others=0"} if loading else "others=1" in others, others


def test_decoding_workers_started_by_the_dupwatch_program_do_not_import_its_command_line(tmp_path: Path) -> None:
    """multiprocessing starts each worker by importing the program's main script again: pip's `dupwatch` script
    imports the module of its entry point, which must not be the CLI (click, rich, the store: ~0.1 s of CPU per
    worker before its first file). Python's import-time report names each module every time a process imports it:
    the CLI must be there once (the program itself), not once more per worker."""
    program = Path(sys.executable).parent / "dupwatch"
    if not program.exists():
        pytest.skip("the dupwatch script is not installed beside this interpreter")
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(4):
        (root / f"img{i}.png").write_bytes(noise_png(300 + i))
    (tmp_path / "c.toml").write_text('model = "tinynet"\nworkers = 2\n')
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    cmd = [str(program), "--config", str(tmp_path / "c.toml"), "--db", str(tmp_path / "d.db"), "scan", str(root)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    imported = [line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert imported.count("dupwatch.daemon.cli") == 1, imported.count("dupwatch.daemon.cli")
    assert "scanned 4 files" in done.stderr


class _DecodedWhenWritten(NoHooks):
    """Hooks that note, when a batch with duplicates has been written, which files had been decoded by then."""

    def __init__(self, marks: Path) -> None:
        self.marks = marks
        self.decoded: list[set[str]] = []

    def duplicates_found(self, found: list[Duplicate]) -> None:
        self.decoded.append({p.name for p in self.marks.iterdir()})


def test_a_batch_is_written_while_the_next_one_is_still_being_decoded(tmp_path: Path) -> None:
    """Waiting for a file of the next batch, the pipeline writes the batch in hand instead of idling: the next
    batch's CNN cannot start before it is decoded anyway. At the start of a camera scan the first batch waited
    0.2-0.4 s for the second one's decoding; now it is matched meanwhile."""
    root = tmp_path / "photos"
    root.mkdir()
    for name, seed in (("1", 400), ("2", 400), ("3", 401), ("4", 402)):  # 1 and 2: the same picture
        (root / f"{name}.png").write_bytes(noise_png(seed))
    cfg = Config(db=tmp_path / "d.db", workers=1, batch_size=2, model="tinynet")
    hooks = _DecodedWhenWritten(tmp_path / "marks")
    with open_pipeline(cfg, Store(cfg.db), tiny_embedder(), hooks, marking_fingerprinter) as p:
        p.scan([root])
    assert len(hooks.decoded) == 1  # the batch of 1 and 2 (an exact pair)
    assert {"1.png", "2.png"} <= hooks.decoded[0] and "4.png" not in hooks.decoded[0], hooks.decoded


def _pipe_max_size() -> int:
    try:
        return int(Path("/proc/sys/fs/pipe-max-size").read_text())
    except (OSError, ValueError):
        return 0


@pytest.mark.skipif(_pipe_max_size() < RESULT_PIPE_BYTES, reason="this system caps pipes below the result pipe's size")
def test_a_workers_result_goes_into_the_result_pipe_whole_without_a_reader(tmp_path: Path) -> None:
    """A worker hands a photo's result (CNN input and detail image: over a default pipe's 64 KiB) to the pipe
    without waiting for this process to read it: its reading thread may be waiting for the GIL while torch
    imports (daemon.pool)."""
    photo = tmp_path / "cat.jpg"
    photo.write_bytes(photo_jpeg("chelsea"))
    result = fingerprint_file(photo)
    assert result.fingerprint is not None
    assert len(pickle.dumps(result)) > 64 * 1024
    queue = decoding_context().SimpleQueue()
    handed = threading.Event()

    def hand() -> None:
        queue.put(result)
        handed.set()

    threading.Thread(target=hand, daemon=True).start()
    whole = handed.wait(10)  # nobody reads until then
    back = queue.get()
    assert whole, "the worker waited for a reader"
    assert back.fingerprint is not None
    assert np.array_equal(back.fingerprint.pixels, result.fingerprint.pixels)
