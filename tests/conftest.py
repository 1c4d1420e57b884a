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


def train_tiny_bpe_run(workdir, steps: int = 4) -> None:
  """Trains a 1-layer model with the default (BPE) tokenizer for a few steps into ``workdir``:
  enough for the binaries and pipelines that read a run (not enough to solve tasks)."""
  from sparsejax.train.run_config import RunConfig
  from sparsejax.train.loop import train
  cfg = RunConfig.from_dict({
      "model": dict(block_size=96, vocab_size=2048, n_layer=1, n_head=2, d_head=8, d_model=16,
                    d_mlp=32, rms_norm=True, tied_unembed=False, enable_bigram_table=True,
                    learnable_bigram_table=True, grad_checkpointing=False, nope=True),
      "data": dict(train_tokens=50_000, eval_tokens=5_000, tokenizer_train_chars=1_000_000),
      "train": dict(steps=steps, batch_size=4, seq_len=64, log_every=1, eval_every=steps,
                    eval_batches=1, checkpoint_every=steps),
  })
  train(cfg, str(workdir), progress=lambda _: None)
