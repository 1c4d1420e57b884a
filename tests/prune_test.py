"""Circuit pruning on a hand-built model where exactly four nodes matter; the pieces under it."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from planted import CFG, EXPECTED, hand_built_model, synthetic_task
from sparsejax.circuits import masks, population, search
from sparsejax.circuits.bisection import bisect_k, topk_masks
from sparsejax.circuits.calibration import calibrated_loss, fit_logit_calibration, numpy_loss
from sparsejax.circuits.evaluate import (CircuitModel, EvalQueue, TaskData, needed_length,
                                         stack)
from sparsejax.circuits.graph import Circuit, _json_default, find_edges, geometric_mean_edges
from sparsejax.circuits.prune import PruneConfig
from sparsejax.circuits.prune_run import shuffled_labels
from sparsejax.model.gpt import GPT
from sparsejax.tasks.batch import TaskBatch
from sparsejax.tasks.evaluation import pair_loss

CENTRES = dict(k_coef=1e-4, lr=0.05, init_noise_scale=0.01, init_noise_bias=0.1,
               weight_decay=1e-3, inv_beta2=5e-2, warmup_frac=5e-2, heaviside_temp=1.0)
SETTINGS = search.TrainSettings(steps=150, batch_pairs=8, grad_clip=1.0, chunk_steps=50)


def node_trainer(model: CircuitModel, data: TaskData, group, settings=SETTINGS):
  n = model.layout.n_nodes
  return search.PopulationTrainer(model.node_member_loss, model.shared, data, group, None,
                                  np.ones((len(group), n), np.float32), settings)


def run_search(graphdef, params, buffers, groups: list[TaskData], seeds: list[int],
               candidates: int = 2):
  """The node search (random population, one round) and the bisection, on zero ablation."""
  layout = masks.NodeLayout.for_model(CFG)
  model = CircuitModel(graphdef, params, buffers, CFG, np.zeros(layout.n_nodes))
  pop = population.initial(CENTRES, candidates, 0.5, 0, seeds)
  trainer = node_trainer(model, stack(groups), pop.group)
  state, _, _ = search.run_rounds(trainer, search.init_state(pop, layout.n_nodes), pop, rounds=1)
  tau = state[0]
  evaluate = model.loss_evaluator([groups[g] for g in pop.group])
  k, loss = bisect_k(evaluate, tau, 0.15, layout.n_nodes)
  return layout, pop, tau, k, loss


def circuit_nodes(layout, tau_N, k) -> dict:
  mask = topk_masks(tau_N[None], [k])[0]
  return {s: ids for s, ids in layout.nodes_of(mask).items() if ids}


def test_the_pruner_finds_exactly_the_nodes_that_matter():
  graphdef, params, buffers = hand_built_model()
  layout, pop, tau, k, loss = run_search(graphdef, params, buffers, [synthetic_task(64, 0)], [5])
  assert (k >= 0).all() and (loss <= 0.15).all()
  best = int(np.argmin(k))
  assert circuit_nodes(layout, tau[best], int(k[best])) == EXPECTED
  # Each of the four nodes is necessary: dropping any one breaks the task.
  model = CircuitModel(graphdef, params, buffers, CFG, np.zeros(layout.n_nodes))
  evaluate = model.loss_evaluator([synthetic_task(64, 0)])
  for site, idx in [(s, i) for s, ids in EXPECTED.items() for i in ids]:
    mask = layout.mask_of(EXPECTED)
    mask[layout.offsets[layout.sites.index(site)] + idx] = 0
    assert evaluate(mask[None], np.asarray([0]))[0] > 0.3, (site, idx)


def test_vmapped_search_equals_each_task_alone():
  graphdef, params, buffers = hand_built_model()
  tasks_ = [synthetic_task(64, 0), synthetic_task(64, 1)]
  layout, pop, tau, k, _ = run_search(graphdef, params, buffers, tasks_, [5, 9])
  for g, seed in enumerate([5, 9]):
    _, pop1, tau1, k1, _ = run_search(graphdef, params, buffers, [tasks_[g]], [seed])
    members = pop.members_of(g)
    np.testing.assert_allclose(tau[members], tau1, atol=1e-5)
    np.testing.assert_array_equal(k[members], k1)
    for m, m1 in zip(members, range(len(pop1))):
      assert circuit_nodes(layout, tau[m], int(k[m])) == circuit_nodes(layout, tau1[m1],
                                                                       int(k1[m1]))


def test_the_margins_give_the_official_task_loss():
  graphdef, params, buffers = hand_built_model()
  layout = masks.NodeLayout.for_model(CFG)
  model = CircuitModel(graphdef, params, buffers, CFG, np.zeros(layout.n_nodes))
  d = synthetic_task(16, 3)
  mask = (np.random.default_rng(0).random(layout.n_nodes) < 0.8).astype(np.float32)
  z = model.margins(model.shared, jax.tree.map(jnp.asarray, d), jnp.asarray(mask), None)
  logits = masks.merge(graphdef, params, buffers)(
      jnp.asarray(d.batch.tokens.reshape(32, 6)), interventions=layout.interventions(
          jnp.asarray(mask), jnp.zeros(layout.n_nodes)),
      positions_B=jnp.asarray(d.batch.last.reshape(32))).reshape(16, 2, -1)
  official, _ = pair_loss(logits, jnp.asarray(d.batch.correct), jnp.asarray(d.batch.alt))
  np.testing.assert_allclose(float(masks.task_loss(z)), float(official.mean()), rtol=1e-6)
  np.testing.assert_allclose(numpy_loss(np.asarray(z)), float(official.mean()), rtol=1e-6)


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
  layout = masks.NodeLayout.for_model(cfg)
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
  layout = masks.NodeLayout.for_model(model.config)
  tokens = jax.random.randint(jax.random.key(0), (4, 6), 0, 8)
  means = masks.node_means(graphdef, params, buffers, layout, [np.asarray(tokens)])
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
  assert (again.n_nodes, again.n_edges, again.n_essential_edges) == (4, 4, 4)
  assert geometric_mean_edges([again, dataclasses.replace(again, edges=edges[:1])]) == 2.0
  # Edge-pruned: every edge carries "essential"; the paper-comparable count keeps all of them.
  pruned = [dict(e, essential=i < 2) for i, e in enumerate(edges)]
  c2 = Circuit.from_dict(json.loads(json.dumps(dataclasses.replace(c, edges=pruned).to_dict(),
                                               default=_json_default)))
  assert (c2.n_edges, c2.n_essential_edges) == (4, 2)
  assert c2.n_essential_nodes == len({(e[a], e[f"{a}_index"]) for e in pruned[:2]
                                      for a in ("src", "dst")})
  assert geometric_mean_edges([c2], essential=True) == 2.0
  old = c.to_dict() | {"schema": "sparsejax.circuit/v1"}  # files written before edge pruning
  assert Circuit.from_dict(json.loads(json.dumps(old, default=_json_default))).n_edges == 4


def test_shuffled_label_control_flips_half_the_pairs():
  d = synthetic_task(400, 0)
  s = shuffled_labels(d, 1)
  flipped = (s.batch.correct != d.batch.correct).all(axis=1)
  assert 0.4 < flipped.mean() < 0.6
  np.testing.assert_array_equal(s.batch.correct[flipped], d.batch.alt[flipped])
  np.testing.assert_array_equal(s.batch.alt[flipped], d.batch.correct[flipped])
  np.testing.assert_array_equal(s.batch.tokens, d.batch.tokens)


def test_logit_calibration_improves_an_uncalibrated_circuit():
  rng = np.random.default_rng(0)
  margins = np.stack([rng.normal(0.3, 0.2, 200), -rng.normal(-0.3, 0.2, 200)], axis=1)
  scale, shift = fit_logit_calibration(margins)
  assert scale > 1.5
  assert float(calibrated_loss(margins, scale, shift)) < float(calibrated_loss(margins, 1.0, 0.0))
  np.testing.assert_allclose(numpy_loss(margins, scale, shift),
                             float(calibrated_loss(margins, scale, shift)), rtol=1e-5)


def test_calibrated_bisection_is_an_option_and_the_raw_loss_stays():
  with pytest.raises(ValueError, match="bisect_on"):
    PruneConfig(bisect_on="logits")
  assert PruneConfig(bisect_on="calibrated").bisect_on == "calibrated"
  # The calibrated loss of a circuit that ranks right but is too flat is far below its raw loss,
  # so bisecting on it keeps fewer nodes.
  graphdef, params, buffers = hand_built_model()
  layout = masks.NodeLayout.for_model(CFG)
  d = synthetic_task(32, 0)
  weak = dict(params, lm_head={"kernel": params["lm_head"]["kernel"] * 0.2})
  weak_model = CircuitModel(graphdef, weak, buffers, CFG, np.zeros(layout.n_nodes))
  mask = layout.mask_of(EXPECTED)
  raw = weak_model.loss_evaluator([d])(mask[None], np.asarray([0]))[0]
  cal = weak_model.loss_evaluator([d], calibrated=True)(mask[None], np.asarray([0]))[0]
  assert raw > 0.2 and cal < 0.15, (raw, cal)


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
    groups.append(TaskData(TaskBatch(tokens, last, correct, correct + 4)))
  return cfg, graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(buffers), groups


def test_needed_length_rounds_up_to_the_bucket_and_stops_at_the_cap():
  assert needed_length(np.array([[0, 9]]), 40) == 16
  assert needed_length(np.array([[15]]), 40) == 16
  assert needed_length(np.array([[16]]), 40) == 32
  assert needed_length(np.array([[39]]), 40) == 40


def test_members_split_over_calls_learn_the_same_masks():
  cfg, graphdef, params, buffers, groups = random_model_and_tasks(lengths=(10, 40))
  layout = masks.NodeLayout.for_model(cfg)
  model = CircuitModel(graphdef, params, buffers, cfg, np.zeros(layout.n_nodes))
  pop = population.initial(CENTRES, 2, 0.5, 0, [1, 2])
  base = search.TrainSettings(steps=10, batch_pairs=8, grad_clip=1.0, chunk_steps=5)

  def run(settings, log=None):
    trainer = node_trainer(model, stack(groups), pop.group, settings)
    trainer.progress = (lambda _: None) if log is None else log.append
    return trainer.run(search.init_state(pop, layout.n_nodes), pop, 0, 10)[0]

  together = run(base)
  log_one, log_budget = [], []
  one_each = run(dataclasses.replace(base, members_per_call=1), log_one)
  by_budget = run(dataclasses.replace(base, memory_budget_gib=1e-6), log_budget)
  assert "4 members in 4 vmapped calls of up to 1 (members_per_call)" in log_one[0]
  assert "4 members in 4 vmapped calls of up to 1" in log_budget[0]
  assert "MiB per member (XLA estimate)" in log_budget[0]
  np.testing.assert_allclose(one_each, together, atol=1e-5)
  np.testing.assert_allclose(by_budget, together, atol=1e-5)
  # One call per length needs enough members per length; here 2 each, so one call.
  by_length = run(dataclasses.replace(base, group_by_length=True))
  np.testing.assert_allclose(by_length, together, atol=1e-5)
  assert np.abs(together - search.init_state(pop, layout.n_nodes)[0]).max() > 1e-3  # learned


def test_evaluation_queue_cuts_tokens_without_changing_losses():
  cfg, graphdef, params, buffers, groups = random_model_and_tasks()
  layout = masks.NodeLayout.for_model(cfg)
  values = np.random.default_rng(1).normal(size=layout.n_nodes).astype(np.float32)
  model = CircuitModel(graphdef, params, buffers, cfg, values)
  node_masks = (np.random.default_rng(2).random((len(groups), layout.n_nodes)) < 0.7).astype(
      np.float32)
  q = EvalQueue(model.margins_queue().fn, chunk=2)
  tickets = [q.add(g, m, None) for m, g in zip(node_masks, groups)]
  got = q.run()
  full = model.margins_fn(model.shared, jax.tree.map(jnp.asarray, stack(groups)),
                          jnp.asarray(node_masks), None)
  np.testing.assert_allclose(np.stack([got[t] for t in tickets]), np.asarray(full), rtol=1e-5,
                             atol=1e-5)
  assert {g.needed_length() for g in groups} == {16, 32, 40}


def test_grid_before_bisection_finds_the_small_circuit_a_loss_bump_hides():
  n = 1000
  tau = np.linspace(1.0, -1.0, n, dtype=np.float32)[None].repeat(3, 0)  # top-k = the first k
  calls = []

  def evaluate(masks, members):  # passes from k = 30 on, except at 300..700; member 2 never
    k = np.asarray(masks).sum(axis=1)
    calls.append(len(members))
    loss = np.where((k >= 30) & ((k < 300) | (k > 700)), 0.1, 0.3)
    return np.where(np.asarray(members) == 2, 0.5, loss)

  k_plain, _ = bisect_k(evaluate, tau, 0.15, n)
  k_grid, loss = bisect_k(evaluate, tau, 0.15, n, grid=8)
  np.testing.assert_array_equal(k_plain, [701, 701, -1])
  np.testing.assert_array_equal(k_grid, [30, 30, -1])
  np.testing.assert_allclose(loss, [0.1, 0.1, 0.5])
  calls.clear()
  k_rtol, _ = bisect_k(evaluate, tau, 0.15, n, rtol=0.2, grid=8)
  assert (k_rtol[:2] >= 30).all() and (k_rtol[:2] - 30 <= 0.2 * k_rtol[:2]).all()
  assert len(calls) < 12
  assert calls[0] == 3 and max(calls[1:]) == 2  # member 2 is not searched, nothing re-evaluated


def test_a_warm_start_brackets_the_size_from_a_guess_with_few_evaluations():
  n = 1000
  tau = np.linspace(1.0, -1.0, n, dtype=np.float32)[None].repeat(4, 0)
  crossing = np.asarray([30, 400, 5, 999])
  calls = []

  def evaluate(masks, members):
    calls.append(len(members))
    return np.where(np.asarray(masks).sum(1) >= crossing[np.asarray(members)], 0.1, 0.3)

  full = np.full(4, 0.1)  # known: the full set passes, so it is not evaluated again
  guess = np.asarray([100, 100, 100, 100])
  k, loss = bisect_k(evaluate, tau, 0.15, n, start=guess, full_loss=full)
  np.testing.assert_array_equal(k, crossing)
  np.testing.assert_allclose(loss, 0.1)
  assert calls[0] == 4  # the guesses, all members in one call (no evaluation of the full set)
  exact_calls = len(calls)
  calls.clear()
  k, _ = bisect_k(evaluate, tau, 0.15, n, start=guess, full_loss=full, rtol=0.25)
  assert (k >= crossing).all() and (k - crossing <= 0.25 * k).all()
  assert len(calls) < exact_calls
  calls.clear()
  k_grid, _ = bisect_k(evaluate, tau, 0.15, n, grid=8, rtol=0.25)
  assert len(calls) > 0 and (k_grid >= crossing).all()
