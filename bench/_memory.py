"""Peak resident-memory growth of a call, sampled from /proc (a process's own peak cannot be reset)."""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable
from typing import Any


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_growth_mib(fn: Callable[[], Any], interval: float = 0.002) -> tuple[float, Any]:
    """Run ``fn`` while a thread samples the resident set; return (peak MiB above the start, fn's result)."""
    start = resident_mib()
    peak = start
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, resident_mib())
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = fn()
    finally:
        done.set()
        sampler.join()
    return max(peak, resident_mib()) - start, result
