"""Sparse train step ÷ dense train step, same shapes, same run.

Four configurations of one model share shapes and batch:
  dense                 no projection, no AbsTopK (the baseline)
  sparse weights        top-k projection of every weight matrix after each step
  sparse + AbsTopK x8   the projection plus AbsTopK at all 8 activation sites (afrac 0.25)
  dense + AbsTopK x8    AbsTopK alone (its share of the cost)
Each is timed as the median of jitted, donated steps after warm-up, in one process, the
configurations taking turns step by step (so drift of a shared machine hits all alike). Ends with
``sparse_over_dense_step: X`` (weights only).

  python benchmarks/step.py [--d_model=256 --n_layer=8 --batch=8 --seq=256 --repeats=10]

Defaults are the paper's 1x model (8 layers, d_model 256, d_head 16, d_mlp 1024, vocab 2048)
with a CPU-sized batch.
"""

from __future__ import annotations

import statistics

import jax
from absl import app, flags

from common import device_line, median_time
from sparsejax import GPTConfig, OptimConfig, SparsityConfig, create_train_state, make_train_step
from sparsejax import sparse_adam

_D_MODEL = flags.DEFINE_integer("d_model", 256, "Residual width (d_mlp = 4x, d_head 16).")
_N_LAYER = flags.DEFINE_integer("n_layer", 8, "Layers.")
_VOCAB = flags.DEFINE_integer("vocab", 2048, "Vocabulary.")
_BATCH = flags.DEFINE_integer("batch", 8, "Sequences per step.")
_SEQ = flags.DEFINE_integer("seq", 256, "Tokens per sequence.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed steps (median reported).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_REMAT = flags.DEFINE_bool("remat", False, "Rematerialise blocks (grad_checkpointing).")

ALL_SITES = "attn_in,attn_q,attn_k,attn_v,attn_out,mlp_in,mlp_neuron,mlp_out"
TOTAL_STEPS = 1000


def make_runner(model_cfg: GPTConfig, sparsity: SparsityConfig, tokens):
  """A zero-argument function running one donated train step (compiled and warmed up)."""
  tx = sparse_adam(OptimConfig(), sparsity, TOTAL_STEPS)
  graphdef, state = create_train_state(model_cfg, tx, seed=0)
  step = make_train_step(graphdef, tx, sparsity=sparsity, total_steps=TOTAL_STEPS)
  holder = [state]

  def run():
    holder[0], metrics = step(holder[0], tokens)
    return metrics["loss"]

  for _ in range(3):
    jax.block_until_ready(run())
  return run


def interleaved_medians(runners: dict, rounds: int) -> dict:
  """Times each runner once per round, round-robin, so machine drift hits all alike."""
  times = {name: [] for name in runners}
  for _ in range(rounds):
    for name, run in runners.items():
      times[name].append(median_time(run, repeats=1, warmup=0))
  return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv):
  del argv
  d = _D_MODEL.value
  base = GPTConfig(block_size=_SEQ.value, vocab_size=_VOCAB.value, n_layer=_N_LAYER.value,
                   n_head=d // 16, d_head=16, d_model=d, d_mlp=4 * d, rms_norm=True,
                   tied_unembed=False, enable_bigram_table=True, learnable_bigram_table=True,
                   grad_checkpointing=_REMAT.value, compute_dtype=_DTYPE.value)
  # Annealing already over (start = end = 0): the projection runs at its target density.
  sparse = SparsityConfig(target_density=1 / 16, embed_density_factor=4, anneal_start=0.0,
                          anneal_end=0.0)
  dense = SparsityConfig(enabled=False)
  tokens = jax.random.randint(jax.random.key(0), (_BATCH.value, _SEQ.value + 1), 0, _VOCAB.value)
  print(device_line())
  print(f"model: {_N_LAYER.value} layers, d_model {d}, d_mlp {4 * d}, vocab {_VOCAB.value}, "
        f"batch {_BATCH.value}x{_SEQ.value}, {_DTYPE.value}, remat={_REMAT.value}")
  abstopk = base.replace(afrac=0.25, afrac_loctypes=ALL_SITES)
  runners = {
      "dense": make_runner(base, dense, tokens),
      "sparse weights": make_runner(base, sparse, tokens),
      "sparse weights + AbsTopK x8": make_runner(abstopk, sparse, tokens),
      "dense + AbsTopK x8": make_runner(abstopk, dense, tokens),
  }
  med = interleaved_medians(runners, _REPEATS.value)
  t_dense = med["dense"]
  print(f"{'configuration':<28} {'step ms':>9} {'÷ dense':>8}")
  for name, t in med.items():
    print(f"{name:<28} {t * 1e3:>9.1f} {t / t_dense:>8.2f}")
  t_sparse, t_both = med["sparse weights"], med["sparse weights + AbsTopK x8"]
  print(f"sparse_abstopk_over_dense_step: {t_both / t_dense:.2f}")
  print(f"sparse_over_dense_step: {t_sparse / t_dense:.2f}")


if __name__ == "__main__":
  app.run(main)
