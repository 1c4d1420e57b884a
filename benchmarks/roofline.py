"""Roofline of the compiled training step, from XLA's own cost analysis: dense vs sparse.

Compiles (never runs) the training step of the paper's model family (``experiments/configs/csp.py``,
its defaults: bf16 compute, its remat setting, AbsTopK 0.25 at all 8 sites, hidden density
pfrac / e²) on the current backend, for three variants at each expansion factor e:

  dense          ``csp.py:Nx,dense`` (no projection, no AbsTopK)
  sparse weights ``csp.py:Nx,afrac=none`` (the top-k projection after every step)
  full sparse    ``csp.py:Nx`` (projection + AbsTopK at the 8 sites)

and reads per-kernel FLOPs and bytes with ``hlo_cost`` (XLA's HloCostAnalysis per kernel, while
bodies multiplied by their known trip counts; ``cost_analysis()`` alone counts a loop body once).
The estimated H100 time of a step is Σ over executed kernels of max(FLOPs / 989e12, bytes /
3.35e12): every kernel at peak and no overlap, so it ranks the variants rather than predicting a
wall time — and on a CPU backend it is an upper bound, since XLA:CPU fuses less than XLA:GPU.
A second estimate charges non-matmul FLOPs at 60 TFLOP/s (the H100's non-tensor-core rate, paper
App. B fn. 19), for kernels that are compute- rather than memory-bound on CUDA cores.

Settings that csp.py leaves to the backend (candidate thresholds per search pass) are resolved
for ``--target`` (default gpu), as an H100 run would; cuDNN attention cannot be traced without a
GPU, so attention is the einsum reference here. The projection's warm-started search is a loop
with a data-dependent trip count: it is charged ``--dynamic_passes`` passes (the median measured
in training, BUILD.md) and its worst case is printed too.

Ends with ``roofline_sparse_over_dense: X`` (full sparse ÷ dense at e = 4, or the middle e given).

  python benchmarks/roofline.py [--e=1,4,8] [--batch=512] [--breakdown]
      [--override=model.remat_policy=full,sparsity.warm_start=false]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from absl import app, flags

import hlo_cost
from common import device_line

from sparsejax.configs import csp
from sparsejax.sparse import optim
from sparsejax.sparse import topk
from sparsejax.train import step as train_step
from sparsejax.train.run_config import RunConfig


_E = flags.DEFINE_list("e", ["1", "4", "8"], "Expansion factors.")
_BATCH = flags.DEFINE_integer("batch", 512, "Sequences per step (compiled only: nothing is "
                              "allocated).")
_VARIANTS = flags.DEFINE_list("variants", ["dense", "sparse weights", "full sparse"],
                              "Which of: dense, sparse weights, full sparse.")
_BREAKDOWN = flags.DEFINE_bool("breakdown", True, "Per-category table for the middle e.")
_OVERRIDES = flags.DEFINE_list("override", [], "Extra field overrides, e.g. "
                               "model.remat_policy=full (applied to every variant).")
_TARGET = flags.DEFINE_enum("target", "gpu", ["gpu", "tpu", "cpu"],
                            "Backend whose defaults resolve the settings left to the backend.")
_DYNAMIC = flags.DEFINE_integer("dynamic_passes", 6, "Passes charged to data-dependent loops.")

PEAK_FLOPS, PEAK_BW = 989e12, 3.35e12  # H100 SXM: bf16 dense tensor-core FLOP/s, HBM bytes/s
VECTOR_FLOPS = 60e12  # H100 non-tensor-core FLOP/s (paper App. B fn. 19)
VARIANT_ARGS = {"dense": ",dense", "sparse weights": ",afrac=none", "full sparse": ""}


def run_config(e: int, variant: str) -> RunConfig:
  cfg = csp.get_config(f"{e}x{VARIANT_ARGS[variant]}").to_dict()
  candidates = topk.default_candidates(_TARGET.value)
  for section, field in (("model", "abstopk_candidates"), ("sparsity", "candidates_per_pass")):
    if cfg[section].get(field, 0) is None:
      cfg[section][field] = candidates
  for item in _OVERRIDES.value:
    key, value = item.split("=", 1)
    section, field = key.split(".", 1)
    cfg[section][field] = _parse(value)
  return RunConfig.from_dict(cfg)


def _parse(value: str):
  for kind in (int, float):
    try:
      return kind(value)
    except ValueError:
      pass
  return {"true": True, "false": False, "none": None}.get(value.lower(), value)


def worst_case_passes(cfg: RunConfig) -> int:
  """Bound of the warm-started projection loop (topk.topk_masks_many)."""
  p = topk.resolve_candidates(cfg.sparsity.candidates_per_pass)
  return topk.num_bisection_passes(0x7F800001, max(1, p // 2))


def compile_step(cfg: RunConfig, batch: int):
  """The jitted, donated training step of ``cfg`` compiled for abstract inputs."""
  steps = cfg.train.steps
  tx = optim.sparse_adam(cfg.optim, cfg.sparsity, steps)
  graphdef, state = train_step.abstract_train_state(cfg.model, tx, seed=0)
  step = train_step.make_train_step(
      graphdef, tx, sparsity=cfg.sparsity, total_steps=steps,
      learning_rate=optim.learning_rate_schedule(cfg.optim, cfg.sparsity, steps))
  tokens = jax.ShapeDtypeStruct((batch, cfg.train.seq_len + 1), jnp.int32)
  return step.lower(state, tokens).compile()


def category(kernel: hlo_cost.Kernel) -> str:
  """Which part of the step a kernel belongs to, from its op_name (the named scopes of
  sparsejax: ``abstopk``, ``projection``, ``attention``, or older code's jitted functions)."""
  label = kernel.label
  if "weight_topk_mask" in label or "projection" in label:
    return "projection"
  if "abstopk" in label or "topk_mask" in label:
    return "AbsTopK"
  if ("attention" in label or "bqhk,bshk" in label or "bhqs,bshk" in label):
    return "attention core"
  if kernel.matmul:
    return "matmuls (linear)"
  if not label:
    return "unlabelled (copies)"
  return "other"


def vector_time(cost: hlo_cost.ProgramCost) -> float:
  """Σ max(F / rate, B / BW) with non-matmul FLOPs at the vector rate."""
  return sum(k.multiplicity * max(k.flops / (PEAK_FLOPS if k.matmul else VECTOR_FLOPS),
                                  k.bytes / PEAK_BW) for k in cost.kernels)


def main(argv):
  del argv
  print(device_line())
  es = [int(e) for e in _E.value]
  batch = _BATCH.value
  example = run_config(es[0], "full sparse").model
  print(f"compiled training steps of csp.py:Nx, batch {batch} x 256 tokens, settings for "
        f"{_TARGET.value}: {example.compute_dtype}, remat "
        f"{example.remat_policy if example.grad_checkpointing else 'off'}, scan "
        f"{example.scan_layers}, search candidates {example.abstopk_candidates}; attention "
        "einsum" + (f"; overrides {_OVERRIDES.value}" if _OVERRIDES.value else ""))
  header = (f"{'variant':<15} {'e':>2} {'XLA TF':>7} {'XLA GB':>8} {'TF':>7} {'GB':>8} "
            f"{'kernels':>7} {'executed':>9} {'whiles':>6} {'iters':>6} {'conds':>5} "
            f"{'H100 ms':>8} {'÷ dense':>7} {'ms@60TF':>8} {'compile s':>9}")
  rows, results, notes = [], {}, []
  for e in es:
    for variant in _VARIANTS.value:
      cfg = run_config(e, variant)
      t0 = time.perf_counter()
      compiled = compile_step(cfg, batch)
      t_compile = time.perf_counter() - t0
      cost = hlo_cost.program_cost(compiled, dynamic_trip_count=_DYNAMIC.value)
      xla = hlo_cost.xla_totals(compiled)
      results[(e, variant)] = cost
      if cost.dynamic_loops:
        worst = hlo_cost.program_cost(compiled, dynamic_trip_count=worst_case_passes(cfg))
        notes.append(f"{variant} e={e}: {cost.dynamic_loops} data-dependent loop(s) charged "
                     f"{_DYNAMIC.value} passes; at the worst case ({worst_case_passes(cfg)}) "
                     f"{worst.time(PEAK_FLOPS, PEAK_BW) * 1e3:.1f} ms")
      t = cost.time(PEAK_FLOPS, PEAK_BW)
      dense = results.get((e, "dense"))
      ratio = t / dense.time(PEAK_FLOPS, PEAK_BW) if dense else float("nan")
      rows.append(f"{variant:<15} {e:>2} {xla['flops'] / 1e12:>7.2f} {xla['bytes'] / 1e9:>8.1f} "
                  f"{cost.flops / 1e12:>7.2f} {cost.bytes / 1e9:>8.1f} {len(cost.kernels):>7} "
                  f"{cost.kernels_executed:>9} {cost.while_loops:>6} {cost.while_iterations:>6} "
                  f"{cost.conditionals:>5} {t * 1e3:>8.1f} {ratio:>7.2f} "
                  f"{vector_time(cost) * 1e3:>8.1f} {t_compile:>9.1f}")
      print(rows[-1] if len(rows) > 1 else header + "\n" + rows[-1], flush=True)
  print()
  print("XLA TF/GB: cost_analysis() totals (loop bodies once); TF/GB: loop bodies x trip count;")
  print("kernels: distinct top-level kernels; executed: x trip counts; whiles/conds: instructions")
  print("in the compiled step; iters: loop iterations per step; H100 ms: sum over executed kernels")
  print("of max(FLOPs/989e12, bytes/3.35e12); ms@60TF: the same with non-matmul FLOPs at 60e12.")
  for note in notes:
    print(note)
  mid = es[len(es) // 2]
  if _BREAKDOWN.value and all((mid, v) in results for v in _VARIANTS.value):
    print(f"\nwhere the estimated time goes at e = {mid} (H100 ms / GB):")
    tables = {v: results[(mid, v)].by_label(category, PEAK_FLOPS, PEAK_BW)
              for v in _VARIANTS.value}
    cats = sorted({c for t in tables.values() for c in t},
                  key=lambda c: -max(t.get(c, [0])[0] for t in tables.values()))
    print(f"{'category':<22}" + "".join(f" {v:>22}" for v in _VARIANTS.value))
    for c in cats:
      cells = [tables[v].get(c, [0.0, 0.0, 0.0]) for v in _VARIANTS.value]
      print(f"{c:<22}" + "".join(f" {ms * 1e3:>10.1f} / {gb / 1e9:>8.1f}" for ms, gb, _ in cells))
  if (mid, "dense") in results and (mid, "full sparse") in results:
    t = {v: results[(mid, v)].time(PEAK_FLOPS, PEAK_BW) for v in ("dense", "full sparse")}
    # What a fused (flash) attention kernel would cost instead of the materialised core here:
    # q, k, v, o read/written once forward, and q, k, v, o, dO read and dq, dk, dv written
    # backward (bf16), causal FLOPs (half the score matrix), 2.5x forward for the backward.
    m = run_config(mid, "dense").model
    elems = batch * m.block_size * m.attn_dim * m.n_layer
    flash_bytes = elems * 2 * (4 + 8)
    flash_flops = 3.5 * 2 * batch * m.block_size**2 * m.attn_dim * m.n_layer
    flash = max(flash_flops / PEAK_FLOPS, flash_bytes / PEAK_BW)
    core = {v: results[(mid, v)].by_label(category, PEAK_FLOPS, PEAK_BW).get(
        "attention core", [0.0])[0] for v in t}
    fused = {v: t[v] - core[v] + flash for v in t}
    print(f"\nestimate [not XLA's]: with a flash-attention kernel ({flash * 1e3:.0f} ms) in place "
          f"of the materialised attention core, dense {fused['dense'] * 1e3:.0f} ms, full sparse "
          f"{fused['full sparse'] * 1e3:.0f} ms: full sparse / dense = "
          f"{fused['full sparse'] / fused['dense']:.2f}")
    print(f"roofline_sparse_over_dense: {t['full sparse'] / t['dense']:.2f}")


if __name__ == "__main__":
  app.run(main)
