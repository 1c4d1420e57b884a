"""Timing helpers shared by the benchmark scripts (not a test: benchmarks only print)."""

from __future__ import annotations

import statistics
import time

import jax


def median_time(fn, *args, repeats: int = 10, warmup: int = 2) -> float:
  """Median wall time of ``fn(*args)`` in seconds, after warm-up, blocking on the result."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def device_line() -> str:
  d = jax.devices()[0]
  return (f"device: {d.platform} {getattr(d, 'device_kind', '')} x{jax.device_count()}, "
          f"jax {jax.__version__}")
