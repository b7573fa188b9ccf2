"""What this CPU can do, detected (never assumed): its instruction-set flags, a one-line summary printed next to
every CPU figure, and how many cores this process may use.

The machines reason2rank runs on differ (AVX2 only, AVX-512, AVX512-BF16/VNNI, AMX), so the engine's dtype
choice, ONNX Runtime's thread count and the benchmarks all read what is here.
"""

from __future__ import annotations

import functools
import os
import platform
import sys

__all__ = ["cpu_flags", "cpu_isa_summary", "inference_threads", "set_inference_threads", "usable_cores"]

#: flag -> the name a figure is labelled with, in the order they are listed
_NAMED_FLAGS = (
    ("avx2", "AVX2"),
    ("avx512f", "AVX-512"),
    ("avx512_vnni", "AVX512-VNNI"),
    ("avx512_bf16", "AVX512-BF16"),
    ("amx_bf16", "AMX-BF16"),
    ("amx_int8", "AMX-INT8"),
)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (``/proc/cpuinfo``; empty where there is none to read)."""
    if not sys.platform.startswith("linux"):
        return frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_THREADS: int | None = None


def set_inference_threads(threads: int | None) -> None:
    """Threads the ONNX Runtime and OpenVINO models opened from now on in this process use (``None``: every usable
    core again). A Ray actor holding ``n`` CPUs sets ``n`` here and in torch, so that actors sharing a node do not
    each run a thread per core."""
    global _THREADS
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    _THREADS = threads


def inference_threads() -> int:
    """The threads an exported model runs on: ``set_inference_threads``'s value, else ``usable_cores()``."""
    return _THREADS or usable_cores()


def cpu_isa_summary() -> str:
    """E.g. ``"x86_64, AVX2, AVX-512, AVX512-VNNI, AVX512-BF16, no AMX; 2 cores; torch capability AVX512"``."""
    flags = cpu_flags()
    parts = [platform.machine() or "unknown machine"]
    if flags:
        parts += [name for flag, name in _NAMED_FLAGS if flag in flags]
        if not any(f.startswith("amx") for f in flags):
            parts.append("no AMX")
    else:
        parts.append("flags unknown")
    summary = ", ".join(parts) + f"; {usable_cores()} cores"
    try:
        import torch

        summary += f"; torch capability {torch.backends.cpu.get_cpu_capability()}"
    except (ImportError, AttributeError):  # pragma: no cover - torch is a core dependency
        pass
    return summary
