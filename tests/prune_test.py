"""Circuit pruning on a model built by hand, where exactly four nodes matter."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparsejax.circuits import prune
from sparsejax.circuits.graph import Circuit, _json_default, find_edges, geometric_mean_edges
from sparsejax.model.config import GPTConfig
from sparsejax.model.gpt import GPT
from sparsejax.circuits.prune_run import calibrated_loss, fit_logit_calibration, shuffled_labels

CFG = GPTConfig(block_size=8, vocab_size=8, n_layer=1, n_head=1, d_head=4, d_model=8, d_mlp=8,
                rms_norm=True, tied_unembed=False, enable_bigram_table=False, bias=False,
                activation_type="relu", nope=True, grad_checkpointing=False)
EXPECTED = {"0.mlp.act_in": [0], "0.mlp.post_act": [3, 4], "0.mlp.resid_delta": [5]}


def hand_built_model():
  """Token 1 → residual channel 0 = +1, token 2 → −1 (fillers 3, 4 use channels 1, 2).
  MLP neuron 3 reads +channel 0, neuron 4 reads −channel 0 (ReLU), both write channel 5 with
  opposite signs; the unembedding reads channel 5: + for token 6, − for token 7. Attention is 0."""
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
  blk["mlp"]["c_fc"]["kernel"] = jnp.zeros((8, 8)).at[0, 3].set(1.0).at[0, 4].set(-1.0)
  blk["mlp"]["c_proj"]["kernel"] = jnp.zeros((8, 8)).at[3, 5].set(1.0).at[4, 5].set(-1.0)
  params["lm_head"]["kernel"] = jnp.zeros((8, 8)).at[5, 6].set(1.0).at[5, 7].set(-1.0)
  return graphdef, params, nnx.to_pure_dict(buffers)


def synthetic_task(n_pairs: int, seed: int, flip: bool = False) -> dict:
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
  return {"tokens": tokens, "last": last, "correct": correct, "alt": correct[:, ::-1].copy()}


PRUNE = prune.PruneConfig(steps=150, batch_pairs=8, candidates=2, lr=0.05, k_coef=1e-4,
                          init_noise_bias=0.1, init_noise_scale=0.01, ablation="zero",
                          chunk_steps=50, target_loss=0.15)


def run_search(graphdef, params, buffers, groups: list[dict], seeds: list[int]):
  layout = prune.NodeLayout.for_model(CFG)
  values = jnp.zeros(layout.n_nodes)
  data = {k: np.stack([g[k] for g in groups]) for k in groups[0]}
  pop = prune.make_population(PRUNE, len(groups), seeds)
  tau = prune.learn_masks(graphdef, params, buffers, layout, values, data, pop, PRUNE)
  evaluator = prune.make_evaluator(graphdef, layout)
  data_m = {k: jnp.asarray(v[pop.group]) for k, v in data.items()}
  evaluate = lambda m, idx: evaluator(params, buffers, values, m,
                                     {k_: v[np.asarray(idx)] for k_, v in data_m.items()})
  k, loss = prune.bisect_k(evaluate, tau,
                           PRUNE.target_loss, layout.n_nodes)
  return layout, pop, tau, k, loss


def circuit_nodes(layout, tau_N, k) -> dict:
  mask = np.asarray(prune.topk_masks(jnp.asarray(tau_N[None]), jnp.asarray([k])))[0]
  return {s: np.nonzero(m)[0].tolist() for s, m in layout.split(mask).items() if m.any()}


def test_the_pruner_finds_exactly_the_nodes_that_matter():
  graphdef, params, buffers = hand_built_model()
  layout, pop, tau, k, loss = run_search(graphdef, params, buffers, [synthetic_task(64, 0)], [5])
  assert (k >= 0).all() and (loss <= PRUNE.target_loss).all()
  best = int(np.argmin(k))
  assert circuit_nodes(layout, tau[best], int(k[best])) == EXPECTED
  # Each of the four nodes is necessary: dropping any one breaks the task.
  evaluator = prune.make_evaluator(graphdef, layout)
  data = {k_: jnp.asarray(v[None]) for k_, v in synthetic_task(64, 0).items()}
  for site, idx in [(s, i) for s, ids in EXPECTED.items() for i in ids]:
    mask = np.zeros(layout.n_nodes, np.float32)
    for s, ids in EXPECTED.items():
      mask[layout.offsets[layout.sites.index(s)] + np.asarray(ids)] = 1
    mask[layout.offsets[layout.sites.index(site)] + idx] = 0
    assert float(evaluator(params, buffers, jnp.zeros(layout.n_nodes), jnp.asarray(mask[None]),
                           data)[0]) > 0.3, (site, idx)


def test_vmapped_search_equals_each_task_alone():
  graphdef, params, buffers = hand_built_model()
  tasks_ = [synthetic_task(64, 0), synthetic_task(64, 1, flip=True)]
  layout, pop, tau, k, _ = run_search(graphdef, params, buffers, tasks_, [5, 9])
  for g, seed in enumerate([5, 9]):
    _, pop1, tau1, k1, _ = run_search(graphdef, params, buffers, [tasks_[g]], [seed])
    members = np.nonzero(pop.group == g)[0]
    np.testing.assert_allclose(tau[members], tau1, atol=1e-5)
    np.testing.assert_array_equal(k[members], k1)
    for m, m1 in zip(members, range(len(pop1))):
      assert circuit_nodes(layout, tau[m], int(k[m])) == circuit_nodes(layout, tau1[m1],
                                                                       int(k1[m1]))


def test_edges_match_a_hand_count():
  graphdef, params, buffers = hand_built_model()
  edges, links = find_edges(EXPECTED, params, CFG)
  got = sorted((e["src"], e["src_index"], e["dst"], e["dst_index"], e["weight"]) for e in edges)
  assert got == [("0.mlp.act_in", 0, "0.mlp.post_act", 3, 1.0),
                 ("0.mlp.act_in", 0, "0.mlp.post_act", 4, -1.0),
                 ("0.mlp.post_act", 3, "0.mlp.resid_delta", 5, 1.0),
                 ("0.mlp.post_act", 4, "0.mlp.resid_delta", 5, -1.0)]
  assert links == []


def test_edges_on_a_random_sparse_model_match_brute_force():
  cfg = dataclasses.replace(CFG, n_layer=2, n_head=2, d_head=4)
  model = GPT(cfg, rngs=nnx.Rngs(3))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda w: np.where(rng.random(w.shape) < 0.3, np.asarray(w), 0.0), params)
  layout = prune.NodeLayout.for_model(cfg)
  nodes = {s: sorted(rng.choice(w, size=3, replace=False).tolist())
           for s, w in zip(layout.sites, layout.widths)}
  edges, links = find_edges(nodes, params, cfg)
  count = 0
  for L in range(2):
    b = params["blocks"][L]
    A = cfg.attn_dim
    for i in nodes[f"{L}.attn.act_in"]:
      for part, off in (("q", 0), ("k", A), ("v", 2 * A)):
        count += sum(b["attn"]["c_attn"]["kernel"][i, off + j] != 0
                     for j in nodes[f"{L}.attn.{part}"])
    count += sum(b["attn"]["c_proj"]["kernel"][i, j] != 0 for i in nodes[f"{L}.attn.v"]
                 for j in nodes[f"{L}.attn.resid_delta"])
    count += sum(b["mlp"]["c_fc"]["kernel"][i, j] != 0 for i in nodes[f"{L}.mlp.act_in"]
                 for j in nodes[f"{L}.mlp.post_act"])
    count += sum(b["mlp"]["c_proj"]["kernel"][i, j] != 0 for i in nodes[f"{L}.mlp.post_act"]
                 for j in nodes[f"{L}.mlp.resid_delta"])
  assert len(edges) == count > 0
  for link in links:
    assert link["index"] in nodes[link["src"]] and link["index"] in nodes[link["dst"]]


def test_mean_ablation_with_everything_kept_reproduces_the_model():
  model = GPT(dataclasses.replace(CFG, enable_bigram_table=True, learnable_bigram_table=True,
                                  afrac=0.5, afrac_loctypes="mlp_neuron,attn_q"),
              rngs=nnx.Rngs(1))
  graphdef, params, buffers = nnx.split(model, nnx.Param, ...)
  params, buffers = nnx.to_pure_dict(params), nnx.to_pure_dict(buffers)
  layout = prune.NodeLayout.for_model(model.config)
  tokens = jax.random.randint(jax.random.key(0), (4, 6), 0, 8)
  means = prune.node_means(graphdef, params, buffers, layout, [np.asarray(tokens)])
  ones = jnp.ones(layout.n_nodes)
  np.testing.assert_array_equal(
      np.asarray(model(tokens, interventions=layout.interventions(ones, jnp.asarray(means)))),
      np.asarray(model(tokens)))
  _, cache = model.run_with_cache(tokens, ["0.mlp.post_act"])
  np.testing.assert_allclose(layout.split(means)["0.mlp.post_act"],
                             np.asarray(cache["0.mlp.post_act"]).mean(axis=(0, 1)), rtol=1e-5)


def test_circuit_json_round_trip(tmp_path):
  graphdef, params, buffers = hand_built_model()
  edges, links = find_edges(EXPECTED, params, CFG)
  c = Circuit("synthetic", EXPECTED, edges, links,
              {"loss": np.float32(0.01), "pruning_curve": [[0, 0.69], [4, 0.01]]},
              {"k": np.int64(4)})
  c.save(str(tmp_path / "c.json"))
  again = Circuit.load(str(tmp_path / "c.json"))
  assert again.to_dict() == json.loads(json.dumps(c.to_dict(), default=_json_default))
  assert again.nodes == EXPECTED and again.edges == edges and again.metrics["loss"] == \
      pytest.approx(0.01)
  assert (again.n_nodes, again.n_edges) == (4, 4)
  assert geometric_mean_edges([again, dataclasses.replace(again, edges=edges[:1])]) == 2.0


def test_shuffled_label_control_flips_half_the_pairs():
  d = synthetic_task(400, 0)
  s = shuffled_labels(d, 1)
  flipped = (s["correct"] != d["correct"]).all(axis=1)
  assert 0.4 < flipped.mean() < 0.6
  np.testing.assert_array_equal(s["correct"][flipped], d["alt"][flipped])
  np.testing.assert_array_equal(s["tokens"], d["tokens"])


def test_logit_calibration_improves_an_uncalibrated_circuit():
  rng = np.random.default_rng(0)
  diffs = np.stack([rng.normal(0.3, 0.2, 200), rng.normal(-0.3, 0.2, 200)], axis=1)
  scale, shift = fit_logit_calibration(diffs)
  assert scale > 1.5
  assert float(calibrated_loss(diffs, scale, shift)) < float(calibrated_loss(diffs, 1.0, 0.0))


def random_model_and_tasks(lengths=(10, 30, 40), n_pairs=16):
  """A random 2-layer model and one random task per length (the longest context of each)."""
  cfg = dataclasses.replace(CFG, block_size=40, n_layer=2, n_head=2, enable_bigram_table=True,
                            learnable_bigram_table=True)
  model = GPT(cfg, rngs=nnx.Rngs(2))
  graphdef, params, buffers = nnx.split(model, nnx.Param, ...)
  rng = np.random.default_rng(0)
  groups = []
  for n in lengths:
    tokens = np.zeros((n_pairs, 2, 40), np.int32)
    last = rng.integers(0, n, (n_pairs, 2)).astype(np.int32)
    last[0, 0] = n - 1
    for i in range(n_pairs):
      for s in range(2):
        tokens[i, s, :last[i, s] + 1] = rng.integers(0, 8, last[i, s] + 1)
    correct = rng.integers(0, 4, (n_pairs, 2)).astype(np.int32)
    groups.append({"tokens": tokens, "last": last, "correct": correct, "alt": correct + 4})
  return cfg, graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(buffers), groups


def test_needed_length_rounds_up_to_the_bucket_and_stops_at_the_cap():
  assert prune.needed_length(np.array([[0, 9]]), 40) == 16
  assert prune.needed_length(np.array([[15]]), 40) == 16
  assert prune.needed_length(np.array([[16]]), 40) == 32
  assert prune.needed_length(np.array([[39]]), 40) == 40


def test_members_split_over_calls_learn_the_same_masks():
  cfg, graphdef, params, buffers, groups = random_model_and_tasks(lengths=(10, 40))
  layout = prune.NodeLayout.for_model(cfg)
  values = jnp.zeros(layout.n_nodes)
  data = {k: np.stack([g[k] for g in groups]) for k in groups[0]}
  pcfg = dataclasses.replace(PRUNE, steps=10, chunk_steps=5, candidates=2)
  pop = prune.make_population(pcfg, len(groups), [1, 2])
  run = lambda c, log=None: prune.learn_masks(graphdef, params, buffers, layout, values, data,
                                              pop, c, [].append if log is None else log.append)
  together = run(pcfg)
  log_one, log_budget = [], []
  one_each = run(dataclasses.replace(pcfg, members_per_call=1), log_one)
  by_budget = run(dataclasses.replace(pcfg, memory_budget_gib=1e-6), log_budget)
  assert "4 members in 4 vmapped calls of up to 1 (members_per_call)" in log_one[0]
  assert "4 members in 4 vmapped calls of up to 1" in log_budget[0]
  assert "MiB per member (XLA estimate)" in log_budget[0]
  np.testing.assert_allclose(one_each, together, atol=1e-5)
  np.testing.assert_allclose(by_budget, together, atol=1e-5)
  log_length = []
  by_length = run(dataclasses.replace(pcfg, group_by_length=True), log_length)
  assert "4 members in 2 vmapped calls of up to 4" in log_length[0]
  np.testing.assert_allclose(by_length, together, atol=1e-5)
  assert np.abs(together - prune.init_tau(pop, layout.n_nodes)).max() > 1e-3  # they learned


def test_evaluation_queue_cuts_tokens_without_changing_losses():
  from sparsejax.circuits.prune_run import _Queue
  cfg, graphdef, params, buffers, groups = random_model_and_tasks()
  layout = prune.NodeLayout.for_model(cfg)
  values = jnp.asarray(np.random.default_rng(1).normal(size=layout.n_nodes), jnp.float32)
  evaluator = prune.make_evaluator(graphdef, layout)
  masks = np.random.default_rng(2).random((len(groups), layout.n_nodes)) < 0.7
  q = _Queue(lambda m, a: evaluator(params, buffers, values, m, a), chunk=2)
  tickets = [q.add(m, g) for m, g in zip(masks, groups)]
  got = q.run()
  full = evaluator(params, buffers, values, jnp.asarray(masks, jnp.float32),
                   {k: jnp.asarray(np.stack([g[k] for g in groups])) for k in groups[0]})
  np.testing.assert_allclose([got[t] for t in tickets], np.asarray(full), rtol=1e-5, atol=1e-6)


def test_grid_before_bisection_finds_the_small_circuit_a_loss_bump_hides():
  n = 1000
  tau = np.linspace(1.0, -1.0, n, dtype=np.float32)[None].repeat(3, 0)  # top-k = the first k
  calls = []

  def evaluate(masks, members):  # passes from k = 30 on, except at 300..700; member 2 never
    k = np.asarray(masks).sum(axis=1)
    calls.append(len(members))
    loss = np.where((k >= 30) & ((k < 300) | (k > 700)), 0.1, 0.3)
    return np.where(np.asarray(members) == 2, 0.5, loss)

  k_plain, _ = prune.bisect_k(evaluate, tau, 0.15, n)
  k_grid, loss = prune.bisect_k(evaluate, tau, 0.15, n, grid=8)
  np.testing.assert_array_equal(k_plain, [701, 701, -1])
  np.testing.assert_array_equal(k_grid, [30, 30, -1])
  np.testing.assert_allclose(loss, [0.1, 0.1, 0.5])
  calls.clear()
  k_rtol, _ = prune.bisect_k(evaluate, tau, 0.15, n, rtol=0.2, grid=8)
  assert (k_rtol[:2] >= 30).all() and (k_rtol[:2] - 30 <= 0.2 * k_rtol[:2]).all()
  assert len(calls) < 12
  assert calls[0] == 3 and max(calls[1:-1]) == 2 and calls[-1] == 3  # member 2 is not searched
