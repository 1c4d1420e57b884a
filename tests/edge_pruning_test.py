"""Edge ablation as a parameter transform, and edge pruning of a planted circuit."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from planted import (CFG, DECOY_NODES, EXPECTED_EDGES, hand_built_model, synthetic_task)
from sparsejax.circuits import edges as edges_lib
from sparsejax.circuits import masks, search
from sparsejax.circuits.bisection import bisect_k, topk_masks
from sparsejax.circuits.cleanup import greedy_cleanup
from sparsejax.circuits.edge_pruning import EdgeSets, learn_edge_masks
from sparsejax.circuits.evaluate import CircuitModel, EdgeMask, TaskData, stack
from sparsejax.model.gpt import GPT
from sparsejax.tasks.batch import TaskBatch


def random_sparse_model(bias: bool, seed: int = 3):
  cfg = dataclasses.replace(CFG, n_layer=2, n_head=2, d_head=4, bias=bias, block_size=8,
                            activation_type="gelu")
  model = GPT(cfg, rngs=nnx.Rngs(seed))
  graphdef, params, buffers = nnx.split(model, nnx.Param, ...)
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda w: jnp.asarray(np.where(rng.random(w.shape) < 0.5, np.asarray(w)
                                                       * 8, 0.0), jnp.float32),
                        nnx.to_pure_dict(params))
  return cfg, graphdef, params, nnx.to_pure_dict(buffers)


def random_task(cfg, n_pairs=6, seed=0) -> TaskData:
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, cfg.vocab_size, (n_pairs, 2, 8)).astype(np.int32)
  last = rng.integers(3, 8, (n_pairs, 2)).astype(np.int32)
  correct = rng.integers(0, 4, (n_pairs, 2)).astype(np.int32)
  return TaskData(TaskBatch(tokens, last, correct, correct + 4))


def _model_and_means(bias: bool):
  cfg, graphdef, params, buffers = random_sparse_model(bias)
  layout = masks.NodeLayout.for_model(cfg)
  tokens = np.random.default_rng(9).integers(0, cfg.vocab_size, (16, 8))
  means = masks.node_means(graphdef, params, buffers, layout, [tokens])
  by_site = layout.split(means)
  input_means = {s.name: by_site[s.src] for s in edges_lib.slots(cfg)}
  return cfg, layout, CircuitModel(graphdef, params, buffers, cfg, means, input_means)


def _margins(model, data, node_mask, edge_mask):
  return np.asarray(model.margins(model.shared, jax.tree.map(jnp.asarray, data),
                                  jnp.asarray(node_mask), edge_mask))


def test_keeping_every_edge_changes_nothing_with_and_without_biases():
  for bias in (True, False):
    cfg, layout, model = _model_and_means(bias)
    data = random_task(cfg)
    ones = np.ones(layout.n_nodes, np.float32)
    edges = edges_lib.circuit_edges(layout.nodes_of(ones), model.params, cfg)
    sets = EdgeSets.build([edges], cfg)
    np.testing.assert_allclose(
        _margins(model, data, ones, EdgeMask(sets.tables[0], sets.keep_all(0))),
        _margins(model, data, ones, None), rtol=1e-5, atol=1e-5)


def test_removing_a_nodes_edges_equals_mean_ablating_the_node():
  """Edge ablation is consistent with node ablation: all edges out of an act_in / v / post_act
  node removed = the node mean-ablated; all edges into q, k, v or an MLP resid_delta removed =
  the node mean-ablated (its mean is the matrix applied to its inputs' means)."""
  cfg, layout, model = _model_and_means(bias=True)
  data = random_task(cfg)
  ones = np.ones(layout.n_nodes, np.float32)
  all_edges = edges_lib.circuit_edges(layout.nodes_of(ones), model.params, cfg)
  sets = EdgeSets.build([all_edges], cfg)
  base = _margins(model, data, ones, None)
  for site, side in [("0.attn.act_in", "src"), ("1.attn.v", "src"), ("0.mlp.post_act", "src"),
                     ("1.mlp.act_in", "src"), ("1.attn.q", "dst"), ("0.attn.k", "dst"),
                     ("1.attn.v", "dst"), ("0.mlp.resid_delta", "dst")]:
    # The node of this site whose ablation matters most (among those with 2+ such edges).
    o = layout.offsets[layout.sites.index(site)]
    best, index, drop = 0.0, None, None
    for i in range(layout.widths[layout.sites.index(site)]):
      d = [j for j, e in enumerate(all_edges)
           if (getattr(e, side), getattr(e, f"{side}_index")) == (site, i)]
      node_off = ones.copy()
      node_off[o + i] = 0.0
      effect = np.abs(_margins(model, data, node_off, None) - base).max()
      if len(d) >= 2 and effect > best:
        best, index, drop = effect, i, d
    assert best > 1e-2, site
    keep = sets.keep_all(0)
    keep[sets.index[0][drop]] = 0.0
    node_off = ones.copy()
    node_off[o + index] = 0.0
    np.testing.assert_allclose(_margins(model, data, ones, EdgeMask(sets.tables[0], keep)),
                               _margins(model, data, node_off, None), rtol=2e-4, atol=2e-4,
                               err_msg=f"{site}[{index}] ({side})")
    # ...and removing only some of those edges is not the same as removing the node.
    keep1 = sets.keep_all(0)
    keep1[sets.index[0][drop[:1]]] = 0.0
    keep2 = sets.keep_all(0)
    keep2[sets.index[0][drop[1:]]] = 0.0
    assert max(np.abs(_margins(model, data, ones, EdgeMask(sets.tables[0], k))
                      - _margins(model, data, node_off, None)).max() for k in (keep1, keep2)) > 1e-3


def test_a_removed_edge_contributes_its_mean():
  """One removed weight w_ij: output j changes by w_ij · (μ_i − x_i), nothing else changes."""
  cfg, layout, model = _model_and_means(bias=False)
  params = model.edge_params
  slot = edges_lib.slots(cfg)[2]  # 0.mlp.c_fc
  w = np.asarray(edges_lib.kernel(params, slot))
  i, j = map(int, np.argwhere(w != 0)[0])
  edge = edges_lib.Edge(slot.name, i, j, slot.src, i, "0.mlp.post_act", j, float(w[i, j]))
  cap = {s.name: edges_lib.PAD for s in edges_lib.slots(cfg)}
  table = edges_lib.EdgeTable.build([edge], cap)
  keep = np.ones(sum(cap.values()), np.float32)
  keep[edges_lib.flat_index([edge], cap)[0]] = 0.0
  new = edges_lib.ablate_edges(params, table, jnp.asarray(keep), model.input_means, cfg)
  lin, lin0 = new["blocks"][0]["mlp"]["c_fc"], params["blocks"][0]["mlp"]["c_fc"]
  x = np.random.default_rng(0).normal(size=(5, w.shape[0])).astype(np.float32)
  y = x @ np.asarray(lin["kernel"]) + np.asarray(lin["bias"])
  y0 = x @ np.asarray(lin0["kernel"]) + np.asarray(lin0["bias"])
  mu = float(model.input_means[slot.name][i])
  expected = y0.copy()
  expected[:, j] += w[i, j] * (mu - x[:, i])
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_edge_pruning_of_a_planted_circuit_finds_exactly_the_edges_that_matter():
  """The kept nodes carry 8 edges; 4 of them carry nothing at the scored position. Learning edge
  masks, bisecting and cleaning must leave exactly the 4 that matter, for two tasks at once."""
  graphdef, params, buffers = hand_built_model(decoys=True)
  layout = masks.NodeLayout.for_model(CFG)
  zeros = np.zeros(layout.n_nodes, np.float32)
  input_means = {s.name: np.zeros(np.shape(edges_lib.kernel(params, s))[0], np.float32)
                 for s in edges_lib.slots(CFG)}  # zero ablation, for nodes and edges alike
  model = CircuitModel(graphdef, params, buffers, CFG, zeros, input_means)
  node_mask = layout.mask_of(DECOY_NODES)
  lists = [edges_lib.circuit_edges(DECOY_NODES, params, CFG)] * 2
  assert len(lists[0]) == 8 and EXPECTED_EDGES < {e.key for e in lists[0]}
  sets = EdgeSets.build(lists, CFG)
  train = stack([synthetic_task(64, 0), synthetic_task(64, 1)])
  val = [synthetic_task(32, 5), synthetic_task(32, 6)]
  hp = dict(k_coef=1e-3, lr=5e-2, init_noise_scale=1e-2, init_noise_bias=1e-1, weight_decay=0.0,
            inv_beta2=5e-2, warmup_frac=5e-2, heaviside_temp=1.0)
  hypers = masks.Hypers(**{k: np.full(2, v, np.float32) for k, v in hp.items()})
  settings = search.TrainSettings(steps=120, batch_pairs=8, grad_clip=1.0, chunk_steps=60)
  tau = learn_edge_masks(model, sets, np.stack([node_mask] * 2), train, np.arange(2), hypers,
                         np.asarray([1, 2]), settings)
  node_masks = [node_mask] * 2
  evaluate = model.loss_evaluator(val, node_masks=node_masks, tables=sets.tables)
  assert (evaluate(np.stack([sets.keep_all(0), sets.keep_all(1)]), np.arange(2)) <= 0.15).all()
  k, _ = bisect_k(evaluate, tau, 0.15, [8, 8], valid_MN=sets.valid())
  keep = topk_masks(tau, k, sets.valid())
  res = greedy_cleanup(evaluate, model.removal_estimator(val, node_masks=node_masks,
                                                         tables=sets.tables),
                       keep, 0.15, batch=4, exhaustive=True)
  for i in range(2):
    assert {lists[i][j].key for j in sets.chosen(i, res.masks[i])} == EXPECTED_EDGES
  assert res.converged.all()
  # Each of the four is necessary: without any one the task fails.
  for i in range(4):
    keep = res.masks[0].copy()
    keep[sets.index[0][[j for j, e in enumerate(lists[0]) if e.key in EXPECTED_EDGES][i]]] = 0
    assert evaluate(keep[None], np.asarray([0]))[0] > 0.3
