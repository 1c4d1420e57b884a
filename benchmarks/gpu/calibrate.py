"""In-run peaks of this device: a bf16 matmul's TFLOP/s and a copy's GB/s (the MFU and bandwidth
denominators of the GPU suite), with the device string and versions.

  python benchmarks/gpu/calibrate.py [--n=8192] [--copy_mb=2048] [--repeats=10]

Ends with ``calibrate_matmul_tflops: X``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402

from common import device_line, median_time  # noqa: E402

_N = flags.DEFINE_integer("n", 8192, "Square matmul size.")
_COPY_MB = flags.DEFINE_integer("copy_mb", 2048, "Array size of the copy test (MiB).")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed repetitions (median).")


def main(argv):
  del argv
  print(device_line())
  import jaxlib
  print(f"jaxlib {jaxlib.__version__}; devices {jax.devices()}")
  n = _N.value
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
  matmul = jax.jit(lambda a, b: a @ b)
  t = median_time(matmul, a, b, repeats=_REPEATS.value)
  tflops = 2 * n**3 / t / 1e12
  x = jnp.zeros((_COPY_MB.value * 2**20 // 4,), jnp.float32)
  copy = jax.jit(lambda x: x + 1.0)
  t_copy = median_time(copy, x, repeats=_REPEATS.value)
  gbps = 2 * x.nbytes / t_copy / 1e9  # read + write
  print(f"bf16 matmul {n}^3: {t * 1e3:.2f} ms = {tflops:.1f} TFLOP/s")
  print(f"copy {x.nbytes / 2**20:.0f} MiB: {t_copy * 1e3:.2f} ms = {gbps:.1f} GB/s (read + write)")
  print(f"calibrate_copy_gbps: {gbps:.1f}")
  print(f"calibrate_matmul_tflops: {tflops:.1f}")


if __name__ == "__main__":
  app.run(main)
