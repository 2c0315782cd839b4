"""glibc's allocator settings for PyTorch on a CPU: keep freed memory for the next training step.

By default glibc hands every freed block above a sliding threshold back to the kernel and trims the
heap's free top, so each training step of a real model maps its activations afresh and the kernel zeroes
every page again. On Gemma-3-270M on 2 cores, four training steps of batch 8 (about 1,100 tokens
each) took 9.5 to 36.7 s each with the defaults and 5.6 to 8.8 s with the settings below (BENCHMARKS.md,
"A real model on the CPU: speed and memory", has the stage-level numbers). PyTorch's CPU performance
guide names the same cause and suggests jemalloc or tcmalloc; these settings get most of it with the
allocator every Linux already has.

`tune_allocator()` sets, unless the user set any `MALLOC_*` variable already:
- the environment (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_`), which every
  process started from this one reads at its start (Bergson's workers, sweep jobs);
- the same three values in this process through `mallopt`, which glibc applies from then on.

Results do not change: only where freed memory goes. Within a stage the kept memory is what the next step
asks for again; between stages `release_free_memory()` (called where each stage's peak measurement starts,
`run.peak_memory.reset_peaks`) hands everything free back, so a stage's recorded peak is its own and not
what an earlier stage in the same process left. Elsewhere (macOS, musl) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

MMAP_THRESHOLD = 32 * 1024 * 1024
"""Blocks below this come from the heap, not a fresh mapping (glibc's largest allowed value, 32 MiB)."""
TRIM_THRESHOLD = 16 * 1024 ** 3
"""Free memory at the heap's top kept before trimming: effectively never trim between steps."""
TOP_PAD = 1024 ** 3
"""Extra memory taken with each heap growth, so growth happens rarely."""

_SETTINGS = {  # environment variable, mallopt parameter (glibc malloc.h), value
    "MALLOC_MMAP_THRESHOLD_": (-3, MMAP_THRESHOLD),
    "MALLOC_TRIM_THRESHOLD_": (-1, TRIM_THRESHOLD),
    "MALLOC_TOP_PAD_": (-2, TOP_PAD),
}


def tune_allocator() -> str:
    """Apply the settings (see the module docstring); returns what was done, for the log."""
    if not sys.platform.startswith("linux"):
        return "not linux: allocator left as it is"
    if any(name.startswith("MALLOC_") for name in os.environ):
        return "MALLOC_* set in the environment: allocator left as the user set it"
    libc = _glibc()
    if libc is None:
        return "no glibc mallopt: allocator left as it is"
    for name, (param, value) in _SETTINGS.items():
        os.environ[name] = str(value)
        libc.mallopt(param, ctypes.c_int(min(value, 2 ** 31 - 1)))
    return "glibc malloc keeps freed memory (mmap threshold 32 MiB, no trimming)"


def release_free_memory() -> bool:
    """Collect garbage and give every free heap page back to the kernel (glibc `malloc_trim(0)`); True if
    glibc did. Called between stages, never inside a training loop."""
    import gc

    gc.collect()
    libc = _glibc() if sys.platform.startswith("linux") else None
    return bool(libc is not None and libc.malloc_trim(0))


def _glibc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc
