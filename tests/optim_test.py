import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax.sparse import optim
from sparsejax.sparse import sparsity as sp
from sparsejax.train.step import init_model
from conftest import tiny_config

TOTAL = 10


@pytest.fixture(scope="module")
def params():
  _, params, _ = init_model(tiny_config(sink=True), seed=0)
  return params


def random_grads(params, seed):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape) * 1e-3
                                      for k, x in zip(keys, leaves)])


def names(path):
  return sp.path_names(path)


def test_spec_groups(params):
  spec = sp.sparsity_spec(params)
  flat = {"/".join(names(p)): s for p, s in jax.tree_util.tree_leaves_with_path(
      spec, is_leaf=lambda x: isinstance(x, sp.LeafSpec))}
  assert flat["blocks/0/attn/c_attn/kernel"] == sp.LeafSpec("hidden", 0)
  assert flat["blocks/1/attn/c_proj/kernel"] == sp.LeafSpec("hidden", 1)
  assert flat["blocks/0/mlp/c_fc/kernel"] == sp.LeafSpec("hidden", 0)
  assert flat["blocks/0/mlp/c_proj/kernel"] == sp.LeafSpec("hidden", 1)
  for name in ("wte", "wpe", "lm_head/kernel"):
    assert flat[name].group == "embed"
  assert flat["blocks/0/mlp/c_fc/bias"].group == "bias"
  for name in ("bigram_table", "blocks/0/ln_1/scale", "blocks/0/attn/sink_logit", "ln_f/scale"):
    assert flat[name].group == "dense"


def test_normalize_by_global_rms(params):
  g = random_grads(params, 1)
  tx = optim.normalize_by_global_rms()
  out, _ = tx.update(g, tx.init(params))
  rms = float(optim.global_rms(g))
  assert rms == pytest.approx(1e-3, rel=0.05)
  assert float(optim.global_rms(out)) == pytest.approx(rms / (rms + 1e-5), rel=1e-5)
  big = jax.tree.map(lambda x: x * 1e4, g)
  out, _ = tx.update(big, tx.init(params))
  assert float(optim.global_rms(out)) == pytest.approx(1.0, rel=1e-5)


def test_decay_after_update_only_matrices_not_bigram(params):
  lr = lambda step: 0.5
  tx = optim.decay_after_update(0.1, lr)
  updates = jax.tree.map(jnp.zeros_like, params)
  out, _ = tx.update(updates, tx.init(params), params)
  new = optax.apply_updates(params, out)
  for path, p in jax.tree_util.tree_leaves_with_path(params):
    n = new
    for k in path:
      n = n[k.key]
    if p.ndim > 1 and "bigram_table" not in names(path):
      np.testing.assert_allclose(n, p * (1 - 0.05), rtol=1e-6)
    else:
      np.testing.assert_array_equal(n, p)


def numpy_reference_step(p, g, m, v, t, lr, cfg_o, cfg_s, spec_leaf):
  """The official per-step order for one leaf, in float64 numpy (given the global grad scale)."""
  m = cfg_o.b1 * m + (1 - cfg_o.b1) * g
  v = cfg_o.b2 * v + (1 - cfg_o.b2) * g * g
  mhat, vhat = m / (1 - cfg_o.b1 ** (t + 1)), v / (1 - cfg_o.b2 ** (t + 1))
  new = p - lr * mhat / (np.sqrt(vhat) + cfg_o.eps)
  if sp.is_projected(spec_leaf, cfg_s):
    k = int(sp.leaf_k(spec_leaf, p.size, cfg_s, t, TOTAL))
    j = cfg_s.min_alive if spec_leaf.group == "hidden" else 0
    keep = np.zeros(p.shape, bool)
    score = np.abs(new).copy()
    if j:
      ax = spec_leaf.min_alive_axis
      order = np.argsort(-np.abs(new), axis=ax, kind="stable")
      forced = np.zeros(p.shape, bool)
      np.put_along_axis(forced, np.take(order, range(j), axis=ax), True, axis=ax)
      score = np.where(forced, np.inf, score)
    flat = np.argsort(-score.ravel(), kind="stable")[:k]
    keep.ravel()[flat] = True
    new = np.where(keep, new, 0.0)
  return new, m, v


def test_chain_matches_official_order_and_keeps_exactly_k(params):
  cfg_o = optim.OptimConfig(lr=0.05, weight_decay=0.1)
  cfg_s = sp.SparsityConfig(target_density=1 / 8, embed_density_factor=2, min_alive=2,
                            anneal_start=0.1, anneal_end=0.5)
  tx = optim.sparse_adam(cfg_o, cfg_s, TOTAL)
  lr_fn = optim.learning_rate_schedule(cfg_o, cfg_s, TOTAL)
  state = tx.init(params)
  update = jax.jit(tx.update)
  spec_leaves = jax.tree.leaves(sp.sparsity_spec(params),
                                is_leaf=lambda x: isinstance(x, sp.LeafSpec))
  paths = [names(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  ref = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
  ms = [np.zeros_like(x) for x in ref]
  vs = [np.zeros_like(x) for x in ref]
  p = params
  for t in range(7):
    g = random_grads(p, 100 + t)
    updates, state = update(g, state, p)
    p = optax.apply_updates(p, updates)
    # Reference, leaf by leaf, with the global RMS normalisation of the official script.
    gl = [np.asarray(x, np.float64) for x in jax.tree.leaves(g)]
    rms = np.sqrt(sum((x ** 2).sum() for x in gl) / sum(x.size for x in gl))
    lr = float(lr_fn(t))
    for i, (s, path) in enumerate(zip(spec_leaves, paths)):
      new, ms[i], vs[i] = numpy_reference_step(ref[i], gl[i] / (rms + 1e-5), ms[i], vs[i], t, lr,
                                               cfg_o, cfg_s, s)
      if ref[i].ndim > 1 and "bigram_table" not in path:
        new = new * (1 - cfg_o.weight_decay * lr)
      ref[i] = new
    for s, path, got, want in zip(spec_leaves, paths, jax.tree.leaves(p), ref):
      got = np.asarray(got)
      np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7, err_msg=f"{path} step {t}")
      if sp.is_projected(s, cfg_s):
        k = int(sp.leaf_k(s, got.size, cfg_s, t, TOTAL))
        assert np.count_nonzero(got) == k, (path, t)
        if s.group == "hidden":
          assert (np.count_nonzero(got, axis=s.min_alive_axis) >= 2).all()
  # By step 6 the anneal is over: hidden matrices are at 1/8 density.
  c_fc = np.asarray(p["blocks"][0]["mlp"]["c_fc"]["kernel"])
  assert np.count_nonzero(c_fc) == int(c_fc.size / 8)


def test_adam_moments_stay_dense_and_pruned_weights_can_return(params):
  cfg_s = sp.SparsityConfig(target_density=1 / 16, anneal_start=0.0, anneal_end=0.0)
  tx = optim.sparse_adam(optim.OptimConfig(lr=0.01), cfg_s, TOTAL)
  state = tx.init(params)
  p = params
  masks = []
  for t in range(4):
    updates, state = tx.update(random_grads(p, t), state, p)
    p = optax.apply_updates(p, updates)
    masks.append(np.asarray(p["blocks"][0]["mlp"]["c_fc"]["kernel"]) != 0)
  adam = state[1]
  mu = np.asarray(adam.mu["blocks"][0]["mlp"]["c_fc"]["kernel"])
  assert np.count_nonzero(mu) == mu.size  # moments of pruned weights keep updating
  # Some weight pruned at one step is alive at a later one.
  assert (masks[1] & ~masks[0]).any() or (masks[3] & ~masks[1]).any()


def test_dense_exempt_parameters_still_train(params):
  cfg_s = sp.SparsityConfig(target_density=1 / 16)
  tx = optim.sparse_adam(optim.OptimConfig(lr=0.01, warmup_frac=0.0), cfg_s, TOTAL)
  updates, _ = tx.update(random_grads(params, 0), tx.init(params), params)
  p = optax.apply_updates(params, updates)
  for name in ("bigram_table",):
    assert not np.array_equal(np.asarray(p[name]), np.asarray(params[name]))
  assert not np.array_equal(np.asarray(p["blocks"][0]["attn"]["sink_logit"]),
                            np.asarray(params["blocks"][0]["attn"]["sink_logit"]))


def test_dense_baseline_chain_has_no_projection(params):
  tx = optim.sparse_adam(optim.OptimConfig(), sp.SparsityConfig(enabled=False), TOTAL)
  updates, _ = tx.update(random_grads(params, 0), tx.init(params), params)
  p = optax.apply_updates(params, updates)
  w = np.asarray(p["blocks"][0]["mlp"]["c_fc"]["kernel"])
  assert np.count_nonzero(w) == w.size


def _keep_state(state):
  return [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optim.KeepTopkState))
          if isinstance(s, optim.KeepTopkState)][0]


def test_warm_started_projection_is_exact_and_takes_fewer_passes(params):
  """The projection's search starts at the previous step's thresholds (kept in the optimizer
  state): same parameters as a search from scratch every step, in fewer passes; a bracket miss
  (thresholds far from the answer) still gives the exact projection."""
  kw = dict(target_density=1 / 8, embed_density_factor=2, min_alive=2, anneal_start=0.1,
            anneal_end=0.5, candidates_per_pass=7)
  o_cfg = optim.OptimConfig(lr=0.05)
  txs = {w: optim.sparse_adam(o_cfg, sp.SparsityConfig(warm_start=w, **kw), TOTAL)
         for w in (True, False)}
  updates = {w: jax.jit(tx.update) for w, tx in txs.items()}
  states = {w: tx.init(params) for w, tx in txs.items()}
  ps = {True: params, False: params}
  passes = {True: 0, False: 0}
  for t in range(8):
    g = random_grads(params, 200 + t)
    for w in (True, False):
      u, states[w] = updates[w](g, states[w], ps[w])
      ps[w] = optax.apply_updates(ps[w], u)
      passes[w] += int(_keep_state(states[w]).passes)
    for a, b in zip(jax.tree.leaves(ps[True]), jax.tree.leaves(ps[False])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"step {t}")
  assert passes[True] < passes[False], passes
  # Misses: thresholds of other matrices, all zero, all +inf.
  keep = _keep_state(states[True])
  g = random_grads(params, 300)
  u_cold, _ = updates[False](g, states[False], ps[False])
  want = optax.apply_updates(ps[False], u_cold)
  for bad in (keep.threshold[::-1], jnp.zeros_like(keep.threshold),
              jnp.full_like(keep.threshold, 0x7F800000)):
    is_keep = lambda x: isinstance(x, optim.KeepTopkState)
    state = jax.tree.map(lambda x: x._replace(threshold=bad) if is_keep(x) else x, states[True],
                         is_leaf=is_keep)
    u, new_state = updates[True](g, state, ps[True])
    got = optax.apply_updates(ps[True], u)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(_keep_state(new_state).l0) == int(_keep_state(
        updates[False](g, states[False], ps[False])[1]).l0)
