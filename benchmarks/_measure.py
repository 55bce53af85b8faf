"""Measurement helpers shared by the benchmarks: peak RSS, torch's allocator trace, the machine.

* Peak RSS of a step: glibc ``malloc_trim(0)`` returns freed heap pages to the OS, then
  ``/proc/self/clear_refs`` (``5``) resets the kernel's peak mark ``VmHWM`` to the current RSS;
  after the step ``VmHWM`` minus the RSS before it is the step's own peak (Linux >= 4.0).
* torch's allocator peak on CPU: ``torch.profiler`` with ``profile_memory=True``; the running sum
  of each op's SELF memory (allocations positive, ``[memory]`` frees negative) in time order.
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["gpu_info", "machine_info", "profiler_peak_bytes", "reset_peak_rss", "status_kib"]


def time_steps(step: Callable[[], None], repeats: int) -> list[float]:
    """Wall seconds of each of ``repeats`` calls of ``step`` (which must block until done)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    """Return freed heap pages to the OS (glibc ``malloc_trim``), so the step's allocations show
    up as new RSS instead of reusing cached pages, then reset the kernel's peak-RSS mark (VmHWM)
    to the current RSS. ``False`` where ``clear_refs`` is not writable (the peak then includes
    the set-up)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def profiler_peak_bytes(prof: Any) -> int:
    """Peak of the running sum of allocations minus frees in a ``torch.profiler`` trace. An op's
    allocations are its SELF memory (``cpu_memory_usage`` is inclusive of child ops); frees are
    ``[memory]`` events with negative size."""
    events = [e for e in prof.events() if e.self_cpu_memory_usage != 0]
    events.sort(key=lambda e: e.time_range.start)
    current = peak = 0
    for event in events:
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores, memory, load average, Python and library versions (read
    without importing jax or torch, so the parent process stays small)."""
    try:
        with open("/proc/meminfo") as handle:
            mem_kib = int(handle.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "load_average": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {name: _version(name) for name in (
            "jax", "jaxlib", "equinox", "optimistix", "optax", "torch", "numpy", "ocean4dvarnet", "kornia",
            "pytorch-lightning")},
        "git_commit": _git_commit(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def gpu_info() -> str | None:
    """``name, memory, driver`` of each GPU from ``nvidia-smi`` (``None`` without one)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return "; ".join(line.strip() for line in out.stdout.splitlines() if line.strip()) or None
