"""`import torch` made cheaper for a process that runs the CNN: its shared libraries opened ahead without holding the
GIL, and the Python kernels it registers for the compiler stack left out.

`import torch` first opens libtorch_python.so and what it links (libtorch_cpu.so: hundreds of MB of code whose
relocations and static initialisers, the registration of every operator, take ~0.2 s). Python's import does that
holding the GIL, so no other thread of the process runs meanwhile: during a scan the CNN loads in the background,
and the threads that hand files to the decoding workers and take their results back stood still for those 0.2 s,
and so did the worker waiting for its next file. Opening the same libraries first through libc's `dlopen`, called
through ctypes (which releases the GIL around a foreign call), does the same work while the other threads run; the
import then finds them loaded. Where that cannot be done (another platform, another layout of the torch package),
nothing is opened and the import does it as it always did.

The last thing `import torch` does is import torch._meta_registrations: Python "meta" kernels (shapes and dtypes
without data) for several hundred operators, used by the compiler stack's fake tensors (torch.compile,
torch.export). dupwatch runs a frozen TorchScript graph, built by tracing real tensors, and makes its network on the
meta device only with factory functions that have C++ meta kernels; importing that module was ~0.2 s of the ~0.8 s
an `import torch` takes on the project's 2-core machine (a quarter of it, every command that loads the CNN).
`skip_meta_kernels` puts an empty module in its place before torch is imported (for the CPU path: see
`prepare_torch_import`). A process that needs the compiler stack must not call it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import sys
import types
from pathlib import Path

log = logging.getLogger(__name__)

META_KERNELS = "torch._meta_registrations"  # what `skip_meta_kernels` leaves out
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


def skip_meta_kernels() -> bool:
    """Have `import torch` leave out its Python meta kernels (see the module's note); False where torch is already
    imported, or its meta kernels are, and nothing changes."""
    if "torch" in sys.modules or META_KERNELS in sys.modules:
        return False
    placeholder = types.ModuleType(META_KERNELS, "left out by dupwatch: the compiler stack's meta kernels are not used")
    sys.modules[META_KERNELS] = placeholder
    return True


def prepare_torch_import(device: str | None) -> None:
    """Before the first `import torch` of a process that runs the CNN on `device` ("cpu", "cuda", None: CUDA where
    present): its libraries opened ahead, and its meta kernels left out where the CNN runs on a CPU (asked for, or
    no NVIDIA driver here): the CUDA path stays as it was measured."""
    if device == "cpu" or (device is None and not os.path.exists("/proc/driver/nvidia")):
        skip_meta_kernels()
    open_torch_libraries()
