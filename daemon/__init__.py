"""dupwatch's daemon: the watcher, the pipeline, the store, the index and what users run (CLI, reports, web).

One process-wide setting is made here, before any module of the package imports numpy: numpy's BLAS (OpenBLAS)
starts a thread per core when numpy is first imported, and each one spins for a while after every call. dupwatch's
matrices are small (the matcher's, one photo at a time) and its cores belong to the decoding workers and the CNN, so
every dupwatch process (the CLI, the forkserver, the decoding workers it forks) runs one BLAS thread unless the
environment already asks for more. On the 2-core camera scan the spinning cost 0.21-0.37 s of CPU and up to
0.15 s of wall time (README, Speed); `daemon.priority.one_math_thread` still limits a process that imported numpy
first, and OpenCV's pool with it.
"""

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# numpy's OpenBLAS, not loaded yet, will start with one thread: nothing is left for daemon.priority to limit
ONE_BLAS_THREAD_FROM_THE_START = "numpy" not in sys.modules and os.environ["OPENBLAS_NUM_THREADS"] == "1"
