"""Progress lines while the job runs: records read so far and images/s, per worker.

A pass-through step right after reading; it runs fused with reading, batching and hashing, so its
rate is the rate of the whole fused stage;
each worker process prints to stderr at most once every ``every_seconds``. It adds one cheap call
per record and copies nothing.
"""
from __future__ import annotations

import os
import sys
import time

import apache_beam as beam


class ProgressDoFn(beam.DoFn):
    def __init__(self, every_seconds: float = 5.0):
        self._every = every_seconds

    def setup(self):
        self._count = 0
        self._started = time.monotonic()
        self._last = self._started

    def process(self, record):
        self._count += 1
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self._report(now)
        yield record

    def teardown(self):
        if getattr(self, "_count", 0):
            self._report(time.monotonic())

    def _report(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        print(f"beam-phash: progress [pid {os.getpid()}]: {self._count} records read, "
              f"{self._count / elapsed:.0f} images/s", file=sys.stderr, flush=True)
