"""torch's shared libraries, opened ahead of `import torch` without holding the GIL.

`import torch` first opens libtorch_python.so and what it links (libtorch_cpu.so: hundreds of MB of code whose
relocations and static initialisers, the registration of every operator, take ~0.2 s). Python's import does that
holding the GIL, so no other thread of the process runs meanwhile: during a scan the CNN loads in the background,
and the threads that hand files to the decoding workers and take their results back stood still for those 0.2 s,
and so did the worker waiting for its next file. Opening the same libraries first through libc's `dlopen`, called
through ctypes (which releases the GIL around a foreign call), does the same work while the other threads run; the
import then finds them loaded. Where that cannot be done (another platform, another layout of the torch package),
nothing is opened and the import does it as it always did.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

ENTRY_LIBRARY = "libtorch_python.so"  # what torch's extension module links: the rest comes with it

# void *dlopen(const char *filename, int flags)
_DLOPEN = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int)


def torch_library() -> Path | None:
    """Where the installed torch keeps the library its extension module links, found without importing torch."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "lib" / ENTRY_LIBRARY
    return path if path.is_file() else None


def open_torch_libraries() -> bool:
    """Open torch's shared libraries with the GIL released (see the module's note); False where they were not
    opened, which only costs that time."""
    path = torch_library()
    if path is None:
        return False
    try:
        dlopen = _DLOPEN(("dlopen", ctypes.CDLL(None)))
    except (OSError, AttributeError) as e:  # no dlopen in this process's namespace
        log.debug("torch's libraries not opened ahead: %s", e)
        return False
    if not dlopen(os.fsencode(path), os.RTLD_NOW):  # never closed: torch keeps them for the process's life
        log.debug("torch's libraries not opened ahead: dlopen(%s) failed", path)
        return False
    return True
