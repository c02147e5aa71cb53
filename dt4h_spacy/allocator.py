"""Keep the CPU forward pass's freed buffers in the process instead of handing them back.

A base-sized encoder allocates and frees about 100 MB of activations per 512-subword window
(each feed-forward output alone is 6 MB). glibc's malloc returns such blocks to the kernel
(``mmap``/``munmap``, or trimming the heap top) and the next window page-faults all of them
back in: about 27,000 minor faults per fp32 window on a 2-core AMD EPYC, where keeping them
made the window 1.07x faster (``benchmarks/allocator.py``; how many blocks go back depends on
the heap's history, so the gain varies between runs and processes). This is why PyTorch's CPU
performance guides preload jemalloc or tcmalloc. Raising glibc's two thresholds does the same
without a preload; peak memory is unchanged, because the blocks are reused, not added.

The setting is process-wide and applied once, by the first CPU tagger. It is left alone where
the user already chose: glibc's own ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or
``GLIBC_TUNABLES`` malloc settings, or a preloaded allocator in ``LD_PRELOAD``. Setting
``MALLOC_TRIM_THRESHOLD_=131072`` (glibc's starting value) opts out.
"""

import ctypes
import os
import platform
import sys
from typing import Optional

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 1024 * 1024 * 1024
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
ENVIRONMENT = (*USER_SETTINGS, "GLIBC_TUNABLES", "LD_PRELOAD")  # every variable that can choose

_kept: Optional[bool] = None


def on_glibc() -> bool:
    """Whether this process's malloc is glibc's, the only one these settings reach."""
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def user_chose_allocator() -> bool:
    """Whether the environment already says how malloc should behave."""
    if any(name in os.environ for name in USER_SETTINGS):
        return True
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return True
    return "malloc" in os.environ.get("LD_PRELOAD", "")


def keep_freed_memory() -> bool:
    """Have glibc keep freed blocks below 32 MB for reuse; True where that is in effect.

    A no-op returning False off glibc (macOS, Windows, musl) and where the user chose.
    """
    global _kept
    if _kept is None:
        _kept = _apply()
    return _kept


def _apply() -> bool:
    if not on_glibc() or user_chose_allocator():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # mallopt returns 1 on success; the mmap threshold first, so a refused one leaves both alone.
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
