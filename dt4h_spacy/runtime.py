"""What this process may use: how many cores (torch threads) and which number formats the CPU
runs fast (``precision = "auto"``).

torch starts with one thread per core of the *machine*; in a container limited to a few CPUs
(an affinity mask, a cgroup CPU quota) or beside other work, that oversubscribes the cores,
and threads that wait on each other at every layer made a run several times slower (issue 23).
The default here counts the cores this process may use instead. bf16 is fast only where the
CPU multiplies bf16 itself (AVX512-BF16, AMX); elsewhere torch emulates it, slower than fp32.
"""

import math
import os
from pathlib import Path
from typing import FrozenSet, Optional

import torch

# torch's own choice at start-up (one per core it sees, or OMP_NUM_THREADS), before anyone set it.
TORCH_DEFAULT_THREADS = torch.get_num_threads()
CPU_QUOTA_FILE = Path("/sys/fs/cgroup/cpu.max")
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota
    (``cpu.max``: a container given 2 CPUs of a 64-core host), and by torch's own start-up
    count (physical cores, or ``OMP_NUM_THREADS`` when the user set it)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, quota)
    return max(1, min(cores, TORCH_DEFAULT_THREADS))


def _cgroup_quota() -> Optional[int]:
    """CPUs a cgroup v2 quota allows (rounded up), or None without one."""
    try:
        quota, period = CPU_QUOTA_FILE.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def default_threads(processes: int = 1) -> int:
    """torch threads for each of ``processes`` processes sharing this one's cores: the usable
    cores divided among them, at least one each."""
    return max(1, usable_cores() // max(1, processes))


def cpu_flags() -> FrozenSet[str]:
    """The CPU's feature flags as Linux lists them (``/proc/cpuinfo``); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def auto_precision(device: torch.device, quantize: bool = False) -> str:
    """What ``precision = "auto"`` means on ``device``: bf16 on a CPU with AVX512-BF16 or AMX
    and on a CUDA GPU that supports bf16, else fp32 (int8 ``quantize`` keeps fp32 autocast)."""
    if quantize:
        return "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if BF16_FLAGS & cpu_flags() else "fp32"
