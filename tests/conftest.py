"""Shared test setup: strict numpy semantics, small models."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

from sparsejax.config import GPTConfig  # noqa: E402

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
