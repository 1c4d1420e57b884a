"""Hand-built models whose circuits are known exactly, for the pruning tests."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparsejax.circuits.evaluate import TaskData
from sparsejax.model.config import GPTConfig
from sparsejax.model.gpt import GPT
from sparsejax.tasks.batch import TaskBatch

CFG = GPTConfig(block_size=8, vocab_size=8, n_layer=1, n_head=1, d_head=4, d_model=8, d_mlp=8,
                rms_norm=True, tied_unembed=False, enable_bigram_table=False, bias=False,
                activation_type="relu", nope=True, grad_checkpointing=False)
# The four nodes the task needs, and the four weights between them it needs.
EXPECTED = {"0.mlp.act_in": [0], "0.mlp.post_act": [3, 4], "0.mlp.resid_delta": [5]}
EXPECTED_EDGES = {("0.mlp.c_fc", 0, 3), ("0.mlp.c_fc", 0, 4), ("0.mlp.c_proj", 3, 5),
                  ("0.mlp.c_proj", 4, 5)}


def hand_built_model(decoys: bool = False):
  """Token 1 → residual channel 0 = +1, token 2 → −1 (fillers 3, 4 use channels 1, 2).
  MLP neuron 3 reads +channel 0, neuron 4 reads −channel 0 (ReLU), both write channel 5 with
  opposite signs; the unembedding reads channel 5: + for token 6, − for token 7. Attention is 0.

  With ``decoys``, weights that carry nothing at the scored position join the kept nodes of
  :data:`DECOY_NODES`: channels 1 and 2 (zero at the scored token) into neurons 3 and 4, and the
  neurons into channel 6 at a hundredth of the size, which nothing reads (it only nudges ln_f's
  normaliser)."""
  model = GPT(CFG, rngs=nnx.Rngs(0))
  graphdef, params, buffers = nnx.split(model, nnx.Param, ...)
  params = jax.tree.map(jnp.zeros_like, nnx.to_pure_dict(params))
  for blk in params["blocks"].values():
    for norm in ("ln_1", "ln_2"):
      blk[norm]["scale"] = jnp.ones(8)
  params["ln_f"]["scale"] = jnp.ones(8)
  wte = np.zeros((8, 8), np.float32)
  wte[1, 0], wte[2, 0], wte[3, 1], wte[4, 2] = 1, -1, 1, 1
  params["wte"] = jnp.asarray(wte)
  blk = params["blocks"][0]
  c_fc = np.zeros((8, 8), np.float32)
  c_proj = np.zeros((8, 8), np.float32)
  c_fc[0, 3], c_fc[0, 4], c_proj[3, 5], c_proj[4, 5] = 1.0, -1.0, 1.0, -1.0
  if decoys:
    c_fc[1, 3], c_fc[2, 4], c_proj[3, 6], c_proj[4, 6] = 0.5, 0.5, 0.01, 0.01
  blk["mlp"]["c_fc"]["kernel"] = jnp.asarray(c_fc)
  blk["mlp"]["c_proj"]["kernel"] = jnp.asarray(c_proj)
  params["lm_head"]["kernel"] = jnp.zeros((8, 8)).at[5, 6].set(1.0).at[5, 7].set(-1.0)
  return graphdef, params, nnx.to_pure_dict(buffers)


DECOY_NODES = {"0.mlp.act_in": [0, 1, 2], "0.mlp.post_act": [3, 4],
               "0.mlp.resid_delta": [5, 6]}


def synthetic_task(n_pairs: int, seed: int, flip: bool = False) -> TaskData:
  """Context A ends in token 1 (next: 6, not 7), B in token 2 (next: 7, not 6)."""
  rng = np.random.default_rng(seed)
  tokens = np.zeros((n_pairs, 2, 6), np.int32)
  last = np.zeros((n_pairs, 2), np.int32)
  for i in range(n_pairs):
    n = rng.integers(1, 6)
    prefix = rng.choice([3, 4], size=n - 1)
    for s, final in enumerate((1, 2)):
      tokens[i, s, :n] = np.concatenate([prefix, [final]])
      last[i, s] = n - 1
  correct = np.tile([[6, 7]] if not flip else [[7, 6]], (n_pairs, 1)).astype(np.int32)
  return TaskData(TaskBatch(tokens, last, correct, correct[:, ::-1].copy()))
