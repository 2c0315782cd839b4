"""Peak memory of one stage, recorded in its manifest: resident memory (RSS) and, on a GPU, CUDA memory.

On Linux, writing "5" to `/proc/self/clear_refs` resets the process's peak resident set size, so
`VmHWM` in `/proc/self/status` read after the stage is that stage's own peak (`peak_rss_scope: stage`),
even when an earlier stage of the same process held more. Where that is not possible (another OS, a
kernel that refuses the write), the process's lifetime peak from `getrusage` is recorded instead and
said so (`peak_rss_scope: process`). CUDA's peak allocated memory is reset the same way through torch
when torch is loaded and a GPU is present.
"""

from __future__ import annotations

import sys
from pathlib import Path

_CLEAR_REFS, _STATUS = Path("/proc/self/clear_refs"), Path("/proc/self/status")


def _cuda():
    """torch when it is already imported and sees a GPU (a stage that never loaded torch costs nothing)."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and torch.cuda.is_available() else None


def reset_peaks() -> str:
    """Start measuring a stage's peaks; returns the RSS scope that `peaks` will report ("stage" or "process")."""
    torch = _cuda()
    if torch is not None:
        torch.cuda.reset_peak_memory_stats()
    try:
        _CLEAR_REFS.write_text("5")
        return "stage"
    except OSError:
        return "process"


def _hwm_bytes() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _rusage_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kB on Linux


def peaks(scope: str) -> dict:
    """The manifest fields: `peak_rss_mb`, `peak_rss_scope` and, on a GPU, `peak_cuda_mb` (allocated)."""
    rss = _hwm_bytes() if scope == "stage" else None
    if rss is None:
        rss, scope = _rusage_bytes(), "process"
    out = {"peak_rss_mb": round(rss / 2**20, 1) if rss else None, "peak_rss_scope": scope}
    torch = _cuda()
    if torch is not None:
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out
