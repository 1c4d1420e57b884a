"""The pure, jit-compiled training step: next-token cross-entropy + the sparse optimizer chain.

The model is split once into a static ``graphdef`` and pure-dict pytrees (trained ``params``,
untrained ``buffers``); the step is a pure function of a :class:`TrainState` and a batch, so it
runs the same on one device and, given shardings, under a mesh. The state buffers are donated.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sparsejax.sparse import sparsity as sparsity_lib
from sparsejax.model.config import GPTConfig
from sparsejax.model.gpt import GPT, merge
from sparsejax.sparse.optim import global_rms


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: Any  # pure dict of the model's nnx.Param values
  opt_state: Any  # optax state of the chain
  buffers: Any  # pure dict of the model's other (untrained) state


def init_model(cfg: GPTConfig, seed: int = 0):
  """(graphdef, params, buffers) of a freshly initialised model, params as a pure dict."""
  model = GPT(cfg, rngs=nnx.Rngs(seed))
  graphdef, params, buffers = nnx.split(model, nnx.Param, ...)
  return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(buffers)


def abstract_train_state(cfg: GPTConfig, tx: optax.GradientTransformation, seed: int = 0):
  """(graphdef, TrainState of ShapeDtypeStructs): the structure to restore a checkpoint into,
  without allocating any parameter."""

  def init():
    _, params, buffers = init_model(cfg, seed)
    return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params),
                      buffers=buffers)

  graphdef = nnx.graphdef(nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(seed))))
  return graphdef, jax.eval_shape(init)


def create_train_state(cfg: GPTConfig, tx: optax.GradientTransformation, seed: int = 0,
                       mesh=None):
  """(graphdef, TrainState at step 0). With a mesh, the state is created directly in its
  shardings (:mod:`sparsejax.distributed`), never whole on one device."""

  def init():
    _, params, buffers = init_model(cfg, seed)
    return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params),
                      buffers=buffers)

  graphdef = nnx.graphdef(nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(seed))))
  if mesh is None:
    return graphdef, jax.jit(init)()
  from sparsejax.train import distributed
  shardings = distributed.tree_shardings(jax.eval_shape(init), mesh)
  return graphdef, jax.jit(init, out_shardings=shardings)()


def next_token_loss(logits_BTV, targets_BT, weights_BT=None):
  """Mean cross-entropy of the targets (float32), optionally weighted per position."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits_BTV.astype(jnp.float32), targets_BT)
  if weights_BT is None:
    return jnp.mean(ce)
  weights_BT = weights_BT.astype(jnp.float32)
  return jnp.sum(ce * weights_BT) / jnp.maximum(jnp.sum(weights_BT), 1.0)


def loss_fn(params, buffers, graphdef, tokens_BT1):
  """Next-token loss of a (B, T + 1) token batch."""
  model = merge(graphdef, params, buffers)
  logits = model(tokens_BT1[:, :-1])
  return next_token_loss(logits, tokens_BT1[:, 1:])


def make_train_step(graphdef, tx: optax.GradientTransformation, *,
                    sparsity: sparsity_lib.SparsityConfig, total_steps: int,
                    learning_rate: Callable | None = None, donate: bool = True, jit: bool = True,
                    mesh=None, state=None, skip_nonfinite: bool = False):
  """Returns ``step_fn(state, tokens_BT1) -> (state, metrics)``.

  Metrics (device scalars): ``loss``, ``grad_rms`` (before normalisation), ``lr`` (when
  ``learning_rate`` is given), ``l0`` and ``l0_fraction`` (nonzeros the projection keeps in the
  projected parameters after this step, and their fraction), ``density`` (hidden-matrix target),
  ``skipped`` (1 when ``skip_nonfinite`` dropped this step's update because the loss or the
  gradients were not finite).

  With ``mesh`` (and an example ``state`` for the shapes), the step is compiled for the sharded
  state and the (data × fsdp)-sharded batch, and traced with the mesh in context so that the
  model keeps its activations split over the batch axes (``gpt.constrain_batch``).
  """

  def step_fn(state: TrainState, tokens_BT1):
    loss, grads = jax.value_and_grad(loss_fn)(state.params, state.buffers, graphdef, tokens_BT1)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    total = sparsity_lib.sparse_numel(params, sparsity)
    # The projection's own count (recomputing k here could round differently in float32).
    kept = optax.tree_utils.tree_get(opt_state, "l0") if sparsity.enabled else jnp.int32(total)
    metrics = {
        "loss": loss,
        "grad_rms": global_rms(grads),
        "l0": kept,
        "l0_fraction": kept.astype(jnp.float32) / max(total, 1),
        "density": sparsity.hidden_density(state.step, total_steps),
    }
    if learning_rate is not None:
      metrics["lr"] = learning_rate(state.step)
    if skip_nonfinite:
      ok = jnp.isfinite(loss) & jnp.isfinite(metrics["grad_rms"])
      params = jax.tree.map(lambda new, old: jnp.where(ok, new, old), params, state.params)
      opt_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), opt_state,
                               state.opt_state)
      metrics["skipped"] = 1 - ok.astype(jnp.int32)
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                           buffers=state.buffers)
    return new_state, metrics

  if not jit:
    return step_fn
  donate_argnums = (0,) if donate else ()
  if mesh is None:
    return jax.jit(step_fn, donate_argnums=donate_argnums)
  from jax.sharding import NamedSharding, PartitionSpec
  from sparsejax.train import distributed
  state_shardings = distributed.tree_shardings(state, mesh)

  def step_in_mesh(state, tokens_BT1):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return step_fn(state, tokens_BT1)

  return jax.jit(step_in_mesh, donate_argnums=donate_argnums,
                 in_shardings=(state_shardings, distributed.batch_sharding(mesh)),
                 out_shardings=(state_shardings, NamedSharding(mesh, PartitionSpec())))


def make_eval_step(graphdef, *, jit: bool = True):
  """Returns ``eval_fn(params, buffers, tokens_BT1) -> loss``."""
  fn = lambda params, buffers, tokens: loss_fn(params, buffers, graphdef, tokens)
  return jax.jit(fn) if jit else fn
