"""Causal attention forward + backward at the paper's head shape: the materialised einsum
reference against ``jax.nn.dot_product_attention`` (xla, cudnn), with and without the sink.
Checks that cuDNN accepts d_head = 16 (and 24, the width with the sink slot).

  python benchmarks/gpu/attention_bench.py [--batch=64] [--seq=256] [--heads=64] [--d_head=16]

Ends with ``cudnn_speedup_vs_einsum: X`` (0 when cuDNN is not available for this shape). Adopt
cuDNN (the "auto" default on GPU) if it is >= 5x at forward + backward.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402

from common import device_line, median_time  # noqa: E402
from sparsejax.model.config import GPTConfig  # noqa: E402
from sparsejax.model.gpt import Attention  # noqa: E402

_BATCH = flags.DEFINE_integer("batch", 64, "Sequences.")
_SEQ = flags.DEFINE_integer("seq", 256, "Sequence length.")
_HEADS = flags.DEFINE_integer("heads", 64, "Heads.")
_D_HEAD = flags.DEFINE_integer("d_head", 16, "Head width.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed repetitions (median).")


def main(argv):
  del argv
  print(device_line())
  B, T, H, K = _BATCH.value, _SEQ.value, _HEADS.value, _D_HEAD.value
  shape = (B, T, H * K)
  q, k, v, g = (jax.random.normal(jax.random.key(i), shape, jnp.bfloat16) for i in range(4))
  print(f"batch {B}, seq {T}, {H} heads x {K}, bf16; fwd+bwd ms (8 layers x batch 512: x"
        f"{8 * 512 / B:.0f})")
  print(f"{'sink':<5} {'implementation':<15} {'ms':>8} {'÷ einsum':>9} {'max |Δ|':>9}")
  speedup = 0.0
  for sink in (False, True):
    cfg = GPTConfig(block_size=T, vocab_size=8, n_layer=1, n_head=H, d_head=K, d_model=H * K,
                    sink=sink)
    attn = Attention(cfg, rngs=nnx.Rngs(0))
    if sink:
      attn.sink_logit[...] = jnp.linspace(-1.0, 1.0, H)

    def run(impl):
      def f(q, k, v):
        y = attn._attend(q, k, v) if impl == "einsum" else attn._attend_fused(q, k, v, impl)
        return jnp.sum((y * g).astype(jnp.float32))
      return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))

    ref = run("einsum")
    t_ref = median_time(ref, q, k, v, repeats=_REPEATS.value)
    want = ref(q, k, v)[1][0]
    print(f"{str(sink):<5} {'einsum':<15} {t_ref * 1e3:>8.2f} {1.0:>9.2f} {0.0:>9.3f}")
    for impl in ("xla", "cudnn"):
      try:
        fn = run(impl)
        err = float(jnp.max(jnp.abs(fn(q, k, v)[1][0].astype(jnp.float32)
                                    - want.astype(jnp.float32))))
        t = median_time(fn, q, k, v, repeats=_REPEATS.value)
      except Exception as e:
        print(f"{str(sink):<5} {impl:<15} unsupported: {str(e).splitlines()[0][:120]}")
        continue
      print(f"{str(sink):<5} {impl:<15} {t * 1e3:>8.2f} {t_ref / t:>9.2f} {err:>9.3f}")
      if impl == "cudnn" and not sink:
        speedup = t_ref / t
  print(f"cudnn_speedup_vs_einsum: {speedup:.2f}")


if __name__ == "__main__":
  app.run(main)
