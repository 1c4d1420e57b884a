"""Pruning N tasks in one vmapped run vs the same tasks one after another (same steps).

Times the compiled mask-learning scan (compilation excluded for both) of N members — one per task —
against N runs of one member each, and reports XLA's memory estimate of each compiled program
(arguments + outputs + temporaries) and its FLOP rate. Tokens are cut to what the tasks need
(``needed_length``): the vmapped run to the longest task's, each lone run to its own task's.
Ends with ``prune_vmap_speedup: X``.

  python benchmarks/prune_vmap.py [--workdir=runs/tiny] [--tasks=20] [--steps=20]

Without --workdir a freshly initialised model of the tiny config is used (speed does not depend on
the weights) with a BPE trained on the built-in corpus.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from common import device_line
from sparsejax.circuits import masks, population, search
from sparsejax.circuits.evaluate import CircuitModel, TaskData, needed_length, stack, to_device
from sparsejax.circuits.prune import PruneConfig
from sparsejax.data import corpus
from sparsejax.data import tokenizer as tok_lib
from sparsejax.model.config import GPTConfig
from sparsejax.tasks import generators as tasks_lib
from sparsejax.tasks.batch import encode_pairs
from sparsejax.train import step as train_step

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run (default: a fresh tiny model).")
_N = flags.DEFINE_integer("tasks", 20, "Number of tasks N.")
_STEPS = flags.DEFINE_integer("steps", 20, "Mask-learning steps per member.")
_PAIRS = flags.DEFINE_integer("batch_pairs", 8, "Pairs per step per member.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions (median).")

TINY = dict(block_size=128, vocab_size=2048, n_layer=3, n_head=8, d_head=16, d_model=128,
            d_mlp=512, rms_norm=True, tied_unembed=False, enable_bigram_table=True,
            learnable_bigram_table=True, grad_checkpointing=False, nope=True)


def load_model():
  if _WORKDIR.value:
    from sparsejax.train.runs import load_run
    run = load_run(_WORKDIR.value)
    return run.config.model, run.graphdef, run.params, run.buffers, run.tokenizer
  cfg = GPTConfig(**TINY)
  graphdef, params, buffers = train_step.init_model(cfg, seed=0)
  tok = tok_lib.train_bpe(corpus.generate_documents(0, 3000), cfg.vocab_size)
  return cfg, graphdef, params, buffers, tok


def memory_bytes(compiled) -> int | None:
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)
  except Exception:  # not every backend reports it
    return None


def flops(compiled) -> float | None:
  try:
    c = compiled.cost_analysis()
    c = c[0] if isinstance(c, (list, tuple)) else c
    return float(c["flops"])
  except Exception:
    return None


def main(argv):
  del argv
  cfg, graphdef, params, buffers, tok = load_model()
  names = list(tasks_lib.TASK_NAMES)[:_N.value]
  batches = {n: encode_pairs(tasks_lib.get_task(n),
                                       tasks_lib.get_task(n).pairs(64, split="train"), tok,
                                       cfg.block_size) for n in names}
  T = max(b.seq_len for b in batches.values())
  data = stack([TaskData(b.pad_to(T)) for b in batches.values()])
  need = [needed_length(b.last, T) for b in batches.values()]
  layout = masks.NodeLayout.for_model(cfg)
  model = CircuitModel(graphdef, params, buffers, cfg, np.zeros(layout.n_nodes, np.float32))

  pcfg = PruneConfig(steps=_STEPS.value, batch_pairs=_PAIRS.value, candidates=1)
  run = search.make_trainer(model.node_member_loss, steps_per_call=_STEPS.value,
                            total_steps=_STEPS.value,
                            batch_pairs=_PAIRS.value, grad_clip=pcfg.grad_clip)

  def make_args(group_ids):
    pop = population.initial(pcfg.centres, 1, pcfg.spread, 0, [7 + g for g in group_ids])
    length = max(need[g] for g in group_ids)
    d = data.take(np.asarray(group_ids)).trim(length)
    ones = np.ones((len(group_ids), layout.n_nodes), np.float32)
    return to_device((search.init_state(pop, layout.n_nodes), model.shared, d, pop.hypers,
                      pop.group.astype(np.int32), pop.seed.astype(np.int32), None, ones)) + (
                          jnp.int32(0),)

  def timed(compiled, args):
    jax.block_until_ready(compiled(*args))  # warm
    ts = []
    for _ in range(_REPEATS.value):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(*args))
      ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

  print(device_line())
  print(f"model: {cfg.n_layer} layers, d_model {cfg.d_model}, {layout.n_nodes} nodes; "
        f"{len(names)} tasks, {_STEPS.value} steps x {_PAIRS.value} pairs, sequence length "
        f"{max(need)} (lone runs: {min(need)}..{max(need)})")
  args_all = make_args(list(range(len(names))))
  compiled_all = run.lower(*args_all).compile()
  t_all = timed(compiled_all, args_all)
  compiled = {}  # one compile per distinct length
  singles = []
  for g in range(len(names)):
    args = make_args([g])
    if need[g] not in compiled:
      compiled[need[g]] = run.lower(*args).compile()
    singles.append(timed(compiled[need[g]], args))
  t_seq = sum(singles)
  t_by_length = 0.0  # one vmapped call per needed length (PruneConfig.group_by_length)
  for n in sorted(set(need)):
    args = make_args([g for g in range(len(names)) if need[g] == n])
    t_by_length += timed(run.lower(*args).compile(), args)
  compiled_one = compiled[max(need)]
  mem_all, mem_one = memory_bytes(compiled_all), memory_bytes(compiled_one)
  fmt = lambda b: f"{b / 2**20:.0f} MiB" if b is not None else "n/a"
  print(f"{'run':<34} {'seconds':>9} {'memory (XLA estimate)':>22}")
  print(f"{f'{len(names)} tasks vmapped, one run':<34} {t_all:>9.2f} {fmt(mem_all):>22}")
  print(f"{f'{len(names)} tasks one after another':<34} {t_seq:>9.2f} {fmt(mem_one):>22}")
  print(f"{f'vmapped, one call per length ({len(set(need))})':<34} {t_by_length:>9.2f}")
  # XLA counts a scan's body once: x steps for the whole run.
  f_all = flops(compiled_all)
  f_seq = [flops(compiled[need[g]]) for g in range(len(names))]
  if f_all and all(f_seq):
    f_all, f_seq = f_all * _STEPS.value, sum(f_seq) * _STEPS.value
    print(f"XLA flops: vmapped {f_all / 1e9:.0f} G ({f_all / 1e9 / t_all:.0f} GFLOP/s), one "
          f"after another {f_seq / 1e9:.0f} G ({f_seq / 1e9 / t_seq:.0f} GFLOP/s)")
  print(f"vmapped by length vs one after another: {t_seq / t_by_length:.2f}x")
  print(f"prune_vmap_speedup: {t_seq / t_all:.2f}")


if __name__ == "__main__":
  app.run(main)
