"""Shared test setup: strict numpy semantics, small models."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

from sparsejax.model.config import GPTConfig  # noqa: E402

ALL_LOCTYPES = "attn_in,attn_q,attn_k,attn_v,attn_out,mlp_in,mlp_neuron,mlp_out"


def tiny_config(**overrides) -> GPTConfig:
  """A paper-style model small enough for unit tests."""
  base = dict(block_size=32, vocab_size=64, n_layer=2, n_head=4, d_head=8, d_model=32, d_mlp=64,
              rms_norm=True, tied_unembed=False, enable_bigram_table=True,
              learnable_bigram_table=True, grad_checkpointing=False)
  base.update(overrides)
  return GPTConfig(**base)


@pytest.fixture
def tiny_cfg():
  return tiny_config()


def train_tiny_bpe_run(workdir, steps: int = 4, checkpoint_every: int | None = None) -> None:
  """Trains a 1-layer model with the default (BPE) tokenizer for a few steps into ``workdir``:
  enough for the binaries and pipelines that read a run (not enough to solve tasks). Checkpoints
  at the end (and every ``checkpoint_every`` steps)."""
  from sparsejax.train.run_config import RunConfig
  from sparsejax.train.loop import train
  cfg = RunConfig.from_dict({
      "model": dict(block_size=96, vocab_size=2048, n_layer=1, n_head=2, d_head=8, d_model=16,
                    d_mlp=32, rms_norm=True, tied_unembed=False, enable_bigram_table=True,
                    learnable_bigram_table=True, grad_checkpointing=False, nope=True),
      "data": dict(train_tokens=50_000, eval_tokens=5_000, tokenizer_train_chars=1_000_000),
      "train": dict(steps=steps, batch_size=4, seq_len=64, log_every=1, eval_every=steps,
                    eval_batches=1, checkpoint_every=checkpoint_every or steps),
  })
  train(cfg, str(workdir), progress=lambda _: None)


def fake_pruning(run_dir, out, tasks, step):
  """Pruning outputs as experiments/prune.py writes them, for hand-made circuits of ``tasks`` in
  the run ``run_dir`` at checkpoint ``step``. Returns ``out``."""
  import dataclasses

  from sparsejax.circuits import prune, prune_run
  from sparsejax.circuits.graph import Circuit, find_edges
  from sparsejax.train.runs import load_run
  run = load_run(str(run_dir), step, progress=None)
  pcfg = prune.PruneConfig(test_pairs=4, val_pairs=4, train_pairs=4, mean_tokens=512)
  nodes = {"0.mlp.act_in": [0, 3], "0.mlp.post_act": [1, 2, 5], "0.mlp.resid_delta": [4]}
  edges, links = find_edges(nodes, run.params, run.config.model)
  circuits, rows = {}, {}
  for name in tasks:
    circuits[name] = Circuit(name, nodes, edges, links,
                             {"loss": 0.5, "full_model_loss": 0.6, "inverse_loss": 0.7,
                              "target_loss": 0.15, "pruning_curve": [[0, 0.69], [6, 0.5]]},
                             {"step": run.step})
    rows[name] = {"nodes": 6, "edges": len(edges), "loss": 0.5, "loss_calibrated": None,
                  "full_model_loss": 0.6, "inverse_loss": 0.7, "random_circuit_loss_mean": None,
                  "control": None}
  summary = {"tasks": rows, "unsolved": {}, "geometric_mean_edges": float(max(len(edges), 1)),
             "config": dataclasses.asdict(pcfg), "run": str(run_dir), "step": run.step}
  prune_run.write_outputs(prune_run.PruneResult(circuits, {}, summary), str(out))
  return out
