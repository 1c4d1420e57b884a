"""Sparse train step ÷ dense train step, same shapes, same run.

Four configurations of one model share shapes and batch:
  dense                 no projection, no AbsTopK (the baseline)
  sparse weights        top-k projection of every weight matrix after each step
  sparse + AbsTopK x8   the projection plus AbsTopK at all 8 activation sites (afrac 0.25)
  dense + AbsTopK x8    AbsTopK alone (its share of the cost)
Each is timed as the median of jitted, donated steps after warm-up, in one process, the
configurations taking turns step by step (so drift of a shared machine hits all alike). Prints
tokens/s, the first call's seconds (compilation included) and, with ``--peak_tflops`` (e.g. the in-run matmul peak of ``gpu/calibrate.py``), the
dense-equivalent MFU: (6 N + 12 L H Q T) FLOPs per token (nanoGPT / PaLM; N = the matmul
parameters, masked weights counted) ÷ the peak. Ends with ``sparse_over_dense_step: X`` (weights
only).

  python benchmarks/step.py [--d_model=256 --n_layer=8 --batch=8 --seq=256 --repeats=10]
  python benchmarks/step.py --e=4 --batch=64 --dtype=bfloat16 --remat=True   # the paper's e=4

Defaults are the paper's 1x model (8 layers, d_model 256, d_head 16, d_mlp 1024, vocab 2048)
with a CPU-sized batch in float32 without remat; ``--e`` sets d_model = 256 e (d_mlp 4x, heads of
16), as ``experiments/configs/csp.py``.
"""

from __future__ import annotations

import statistics
import time

import jax
from absl import app, flags

from common import device_line, median_time
from sparsejax import GPTConfig, OptimConfig, SparsityConfig, create_train_state, make_train_step
from sparsejax import sparse_adam
from sparsejax.model.gpt import resolve_attention, resolve_compute_dtype

_E = flags.DEFINE_integer("e", None, "Expansion factor of the paper's family (sets d_model).")
_D_MODEL = flags.DEFINE_integer("d_model", 256, "Residual width (d_mlp = 4x, d_head 16).")
_N_LAYER = flags.DEFINE_integer("n_layer", 8, "Layers.")
_VOCAB = flags.DEFINE_integer("vocab", 2048, "Vocabulary.")
_BATCH = flags.DEFINE_integer("batch", 8, "Sequences per step.")
_SEQ = flags.DEFINE_integer("seq", 256, "Tokens per sequence.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed steps (median reported).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "auto"], "Compute dtype.")
_REMAT = flags.DEFINE_bool("remat", False, "Rematerialise blocks (grad_checkpointing).")
_REMAT_POLICY = flags.DEFINE_enum("remat_policy", "dots", ["full", "dots", "qkv_abstopk", "none"],
                                  "What remat saves (GPTConfig.remat_policy).")
_ATTENTION = flags.DEFINE_enum("attention", "auto", ["auto", "einsum", "xla", "cudnn"],
                               "GPTConfig.attention_impl.")
_SCAN = flags.DEFINE_bool("scan", False, "GPTConfig.scan_layers.")
_CANDIDATES = flags.DEFINE_integer("candidates", None, "Search candidates per pass (AbsTopK and "
                                   "projection); default: the backend's.")
_WARM = flags.DEFINE_bool("warm_start", True, "Warm-started projection search.")
_CONFIGS = flags.DEFINE_list("configs", ["dense", "sparse weights", "sparse weights + AbsTopK x8",
                                         "dense + AbsTopK x8"], "Which configurations to time.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Matmul peak (TFLOP/s) for the MFU column.")

ALL_SITES = "attn_in,attn_q,attn_k,attn_v,attn_out,mlp_in,mlp_neuron,mlp_out"
TOTAL_STEPS = 1000


def make_runner(model_cfg: GPTConfig, sparsity: SparsityConfig, tokens):
  """A zero-argument function running one donated train step (compiled and warmed up), and the
  seconds its first call took (compilation included)."""
  tx = sparse_adam(OptimConfig(), sparsity, TOTAL_STEPS)
  graphdef, state = create_train_state(model_cfg, tx, seed=0)
  step = make_train_step(graphdef, tx, sparsity=sparsity, total_steps=TOTAL_STEPS)
  holder = [state]

  def run():
    holder[0], metrics = step(holder[0], tokens)
    return metrics["loss"]

  t0 = time.perf_counter()
  jax.block_until_ready(run())
  first = time.perf_counter() - t0
  for _ in range(2):
    jax.block_until_ready(run())
  return run, first


def interleaved_medians(runners: dict, rounds: int) -> dict:
  """Times each runner once per round, round-robin, so machine drift hits all alike."""
  times = {name: [] for name in runners}
  for _ in range(rounds):
    for name, run in runners.items():
      times[name].append(median_time(run, repeats=1, warmup=0))
  return {name: statistics.median(ts) for name, ts in times.items()}


def model_flops_per_token(cfg: GPTConfig) -> float:
  """6 N + 12 L H Q T: N the matmul parameters (blocks and unembedding), then attention."""
  d, f, a = cfg.block_in_dim, cfg.mlp_dim, cfg.attn_dim
  n = cfg.n_layer * (d * 3 * a + a * cfg.d_model + d * f + f * cfg.d_model)
  n += 0 if cfg.tied_unembed else cfg.d_model * cfg.vocab_size
  return 6 * n + 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * _SEQ.value


def main(argv):
  del argv
  d = 256 * _E.value if _E.value else _D_MODEL.value
  base = GPTConfig(block_size=_SEQ.value, vocab_size=_VOCAB.value, n_layer=_N_LAYER.value,
                   n_head=d // 16, d_head=16, d_model=d, d_mlp=4 * d, rms_norm=True,
                   tied_unembed=False, enable_bigram_table=True, learnable_bigram_table=True,
                   grad_checkpointing=_REMAT.value, compute_dtype=_DTYPE.value,
                   remat_policy=_REMAT_POLICY.value, attention_impl=_ATTENTION.value,
                   scan_layers=_SCAN.value, abstopk_candidates=_CANDIDATES.value)
  # Annealing already over (start = end = 0): the projection runs at its target density.
  sparse = SparsityConfig(target_density=1 / 16, embed_density_factor=4, anneal_start=0.0,
                          anneal_end=0.0, candidates_per_pass=_CANDIDATES.value,
                          warm_start=_WARM.value)
  dense = SparsityConfig(enabled=False)
  tokens = jax.random.randint(jax.random.key(0), (_BATCH.value, _SEQ.value + 1), 0, _VOCAB.value)
  dtype = resolve_compute_dtype(_DTYPE.value)
  print(device_line())
  print(f"model: {_N_LAYER.value} layers, d_model {d}, d_mlp {4 * d}, vocab {_VOCAB.value}, "
        f"batch {_BATCH.value}x{_SEQ.value}, {dtype.name}, remat={_REMAT.value}"
        + (f" ({_REMAT_POLICY.value})" if _REMAT.value else "")
        + f", attention {resolve_attention(base, dtype)}, scan {_SCAN.value}")
  abstopk = base.replace(afrac=0.25, afrac_loctypes=ALL_SITES)
  makers = {
      "dense": lambda: make_runner(base, dense, tokens),
      "sparse weights": lambda: make_runner(base, sparse, tokens),
      "sparse weights + AbsTopK x8": lambda: make_runner(abstopk, sparse, tokens),
      "dense + AbsTopK x8": lambda: make_runner(abstopk, dense, tokens),
  }
  built = {name: makers[name]() for name in _CONFIGS.value}
  runners = {name: run for name, (run, _) in built.items()}
  med = interleaved_medians(runners, _REPEATS.value)
  t_dense = med.get("dense")
  tokens_per_step = _BATCH.value * _SEQ.value
  flops = model_flops_per_token(base) * tokens_per_step
  print(f"{'configuration':<28} {'step ms':>9} {'÷ dense':>8} {'tokens/s':>11} {'TFLOP/s':>8}"
        f" {'first s':>8}" + (f" {'MFU':>6}" if _PEAK.value else ""))
  for name, t in med.items():
    ratio = f"{t / t_dense:>8.2f}" if t_dense else f"{'':>8}"
    line = (f"{name:<28} {t * 1e3:>9.1f} {ratio} {tokens_per_step / t:>11,.0f} "
            f"{flops / t / 1e12:>8.2f} {built[name][1]:>8.1f}")
    if _PEAK.value:
      line += f" {flops / t / 1e12 / _PEAK.value:>6.1%}"
    print(line)
  if t_dense and "sparse weights + AbsTopK x8" in med:
    print(f"sparse_abstopk_over_dense_step: {med['sparse weights + AbsTopK x8'] / t_dense:.2f}")
  if t_dense and "sparse weights" in med:
    print(f"sparse_over_dense_step: {med['sparse weights'] / t_dense:.2f}")


if __name__ == "__main__":
  app.run(main)
