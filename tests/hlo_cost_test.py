"""benchmarks/hlo_cost.py: per-kernel XLA costs that sum to XLA's totals, loops x trip count."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import hlo_cost  # noqa: E402


def test_kernel_costs_sum_to_xla_totals_and_loops_count_their_trips():
  x = jnp.ones((64, 128))
  w = jnp.ones((128, 32))
  body = lambda i, a: a * 1.5 + jnp.sum(a)
  straight = jax.jit(lambda x, w: jax.nn.softmax(x @ w, axis=-1)).lower(x, w).compile()
  cost = hlo_cost.program_cost(straight)
  totals = hlo_cost.xla_totals(straight)
  assert cost.flops == pytest.approx(totals["flops"], rel=1e-6)
  assert cost.bytes == pytest.approx(totals["bytes"], rel=1e-6)
  assert cost.while_loops == cost.conditionals == 0

  def looped(n):
    return jax.jit(lambda x: jax.lax.fori_loop(0, n, body, x)).lower(x).compile()

  three, seven = hlo_cost.program_cost(looped(3)), hlo_cost.program_cost(looped(7))
  # XLA's own total is the same for any trip count; ours grows with it.
  assert hlo_cost.xla_totals(looped(7))["bytes"] == pytest.approx(
      hlo_cost.xla_totals(looped(3))["bytes"], rel=1e-6)
  assert seven.while_loops == 1 and seven.while_iterations == 7
  body = [k for k in seven.kernels if k.multiplicity == 7]
  assert body
  per_trip = sum(k.bytes for k in body)
  assert seven.bytes - three.bytes == pytest.approx(4 * per_trip, rel=0.01)

  branchy = jax.jit(lambda x: jax.lax.cond(x[0, 0] > 0, lambda: x @ x.T, lambda: x[:, :64])
                    ).lower(x).compile()
  cost = hlo_cost.program_cost(branchy)
  assert cost.conditionals == 1 and cost.flops >= 2 * 64 * 64 * 128  # the dearer branch
