import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.sparse import optim
from sparsejax.sparse import sparsity as sp
from sparsejax.train import step as ts
from conftest import ALL_LOCTYPES, tiny_config

STEPS = 40


@pytest.mark.parametrize("model_overrides", [{}, dict(afrac=0.25, afrac_loctypes=ALL_LOCTYPES)],
                         ids=["weights_only", "abstopk_all_sites"])
def test_steps_on_a_fixed_batch_lower_the_loss_while_l0_follows_the_schedule(model_overrides):
  cfg = tiny_config(**model_overrides)
  s_cfg = sp.SparsityConfig(target_density=1 / 8, embed_density_factor=2, min_alive=2,
                            anneal_start=0.05, anneal_end=0.5)
  o_cfg = optim.OptimConfig(lr=0.02)
  tx = optim.sparse_adam(o_cfg, s_cfg, STEPS)
  graphdef, state = ts.create_train_state(cfg, tx, seed=0)
  step_fn = ts.make_train_step(graphdef, tx, sparsity=s_cfg, total_steps=STEPS,
                               learning_rate=optim.learning_rate_schedule(o_cfg, s_cfg, STEPS))
  eval_fn = ts.make_eval_step(graphdef)
  batch = jax.random.randint(jax.random.key(0), (8, 17), 0, cfg.vocab_size)
  initial = float(eval_fn(state.params, state.buffers, batch))
  losses = []
  for t in range(STEPS):
    state, metrics = step_fn(state, batch)
    losses.append(float(metrics["loss"]))
    # The reported L0 is what the projection kept: check it against the parameters themselves.
    kept = sum(int(jnp.count_nonzero(w)) for s, w in zip(
        jax.tree.leaves(sp.sparsity_spec(state.params),
                        is_leaf=lambda x: isinstance(x, sp.LeafSpec)),
        jax.tree.leaves(state.params)) if sp.is_projected(s, s_cfg))
    assert kept == int(metrics["l0"]), t
    assert float(metrics["density"]) == pytest.approx(float(s_cfg.hidden_density(t, STEPS)))
  assert int(state.step) == STEPS
  final = float(eval_fn(state.params, state.buffers, batch))
  assert final < initial - 1.0, (initial, final)
  dens = sp.measured_density(state.params, s_cfg)
  assert dens["hidden"] == pytest.approx(1 / 8, abs=1e-3)
  assert dens["embed"] == pytest.approx(2 / 8, abs=1e-3)
  assert dens["dense"] == 1.0


def test_dense_baseline_reports_full_l0():
  cfg = tiny_config()
  s_cfg = sp.SparsityConfig(enabled=False)
  tx = optim.sparse_adam(optim.OptimConfig(), s_cfg, 10)
  graphdef, state = ts.create_train_state(cfg, tx)
  step_fn = ts.make_train_step(graphdef, tx, sparsity=s_cfg, total_steps=10)
  state, metrics = step_fn(state, jnp.zeros((2, 9), jnp.int32))
  assert float(metrics["l0_fraction"]) == 1.0


def test_step_donates_the_state():
  cfg = tiny_config()
  s_cfg = sp.SparsityConfig()
  tx = optim.sparse_adam(optim.OptimConfig(), s_cfg, 10)
  graphdef, state = ts.create_train_state(cfg, tx)
  step_fn = ts.make_train_step(graphdef, tx, sparsity=s_cfg, total_steps=10)
  old_leaf = jax.tree.leaves(state.params)[0]
  new_state, _ = step_fn(state, jnp.zeros((2, 9), jnp.int32))
  assert old_leaf.is_deleted()
  assert not jax.tree.leaves(new_state.params)[0].is_deleted()


def test_next_token_loss_weights():
  logits = jnp.log(jnp.array([[[0.5, 0.5], [0.9, 0.1]]]))
  targets = jnp.array([[0, 1]])
  full = float(ts.next_token_loss(logits, targets))
  assert full == pytest.approx((np.log(2) - np.log(0.1)) / 2, rel=1e-5)
  first = float(ts.next_token_loss(logits, targets, jnp.array([[1.0, 0.0]])))
  assert first == pytest.approx(np.log(2), rel=1e-5)
