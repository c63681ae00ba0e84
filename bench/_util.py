"""Helpers shared by the benchmarks."""

from __future__ import annotations

import argparse
import threading
import time

import psutil


class PeakRss:
    """Samples this process' RSS in a thread; ``peak`` is the maximum seen."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRss:
        self.start = self.peak = self.proc.memory_info().rss
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def grew(self) -> int:
        """Bytes the peak rose above the RSS at entry."""
        return self.peak - self.start


def sizes_arguments(doc: str | None) -> argparse.Namespace:
    """``--sizes N [N ...]`` (default 10k, 100k, 1M), with the module docstring as help."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    return ap.parse_args()
