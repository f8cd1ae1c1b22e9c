"""Keep freed memory in the process instead of handing it back to the system after every tensor.

glibc's malloc serves a large request (above a threshold that adapts up to 32 MiB) with a fresh
``mmap`` and unmaps it again on ``free``; smaller freed memory at the top of the heap is trimmed
back to the system. PyTorch on the CPU allocates and frees its activations layer by layer, so a
picking or training loop maps, touches and unmaps the same few hundred MiB again and again: every
first touch of a page is a page fault in the kernel. On the AMD EPYC of docs/benchmarks/topaz.md,
tzl-pick with resnet8 on the bench's 16 micrographs spent 10.8 s of its 83 s of CPU in the kernel
(5.7 million minor page faults); with the two settings below 1.0 s, and 71 s in all
(``/usr/bin/time -v``, one run each; docs/benchmarks/topaz.md, "Outcome of the latest runs").

:func:`keep_freed_memory` raises both thresholds to :data:`KEEP_BYTES` with ``mallopt`` at the
start of every command (``cli._hydra.entry_point``). Memory is then reused, not returned: the
peak resident size is that of the largest working set plus what fragmentation keeps (+13 % in
the run above). It changes nothing where the C library is not glibc, and nothing when the
environment sets glibc's own settings (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
malloc's ``GLIBC_TUNABLES``) or ``TOPAZ_LIGHTNING_MALLOC=system``: the user's choice wins.
"""

from __future__ import annotations

import ctypes
import os
import platform

#: glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: requests up to this size come from the heap, and up to this much free memory stays at its top
KEEP_BYTES = 1 << 30
#: environment variable: ``system`` leaves the C library's own settings
OPT_OUT_VARIABLE = "TOPAZ_LIGHTNING_MALLOC"
#: glibc's own environment variables for the same settings (and its tunables, when they name
#: malloc's)
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory(environ: dict[str, str] | None = None) -> bool:
    """Set glibc's mmap and trim thresholds to :data:`KEEP_BYTES` (module docstring). Returns
    whether both were set: False on a C library other than glibc, when the environment
    ``environ`` (default ``os.environ``) opts out or sets glibc's own variables, or when glibc
    refuses a value."""
    env = os.environ if environ is None else environ
    if env.get(OPT_OUT_VARIABLE, "").strip().lower() == "system":
        return False
    if any(name in env for name in GLIBC_VARIABLES) or "glibc.malloc" in env.get(
        "GLIBC_TUNABLES", ""
    ):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: the glibc it runs on
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)
    )
