"""Peak resident-set-size sampling for benchmark phases."""

from __future__ import annotations

import ctypes
import threading

import psutil


def release_free_heap() -> None:
    """Return freed heap pages to the OS (glibc keeps them otherwise), so a phase's peak RSS
    measures what that phase needs, not what an earlier phase freed. Applied to both engines."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: peaks then include earlier phases' freed memory
        pass


class PeakRSS:
    """Context manager sampling this process's RSS every `interval` seconds in a background thread.

    `.peak_mb` is the largest sample (MiB) seen between `__enter__` and `__exit__`. Sampling can miss
    spikes shorter than `interval`; the entry and exit values are always included.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakRSS:
        release_free_heap()
        self._sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
