"""Automated clean-up: from a bloated circuit to exactly the nodes that matter."""

import numpy as np

from planted import CFG, EXPECTED, hand_built_model, synthetic_task
from sparsejax.circuits.cleanup import greedy_cleanup
from sparsejax.circuits.evaluate import CircuitModel
from sparsejax.circuits.masks import NodeLayout


def test_cleanup_of_a_planted_circuit_keeps_exactly_the_nodes_that_matter():
  graphdef, params, buffers = hand_built_model()
  layout = NodeLayout.for_model(CFG)
  model = CircuitModel(graphdef, params, buffers, CFG, np.zeros(layout.n_nodes))
  rng = np.random.default_rng(0)
  truth = layout.mask_of(EXPECTED)
  bloated = []
  for extra in (10, 25, layout.n_nodes):  # two random supersets and the full model
    m = truth.copy()
    m[rng.choice(layout.n_nodes, min(extra, layout.n_nodes), replace=False)] = 1.0
    bloated.append(m)
  data = [synthetic_task(32, 0), synthetic_task(32, 1), synthetic_task(32, 2)]
  evaluate = model.loss_evaluator(data)
  assert (evaluate(np.stack(bloated), np.arange(3)) <= 0.15).all()
  res = greedy_cleanup(evaluate, model.removal_estimator(data), np.stack(bloated), 0.15,
                       batch=8, max_rounds=30, exhaustive=True)
  for i in range(3):
    assert layout.nodes_of(res.masks[i]) == {s: EXPECTED.get(s, []) for s in layout.sites}, i
  assert res.converged.all() and (res.losses <= 0.15).all()
  np.testing.assert_allclose(res.losses, evaluate(res.masks, np.arange(3)), rtol=1e-6)
  assert (res.removed == np.stack(bloated).sum(1) - 4).all()


def test_cleanup_stops_when_no_single_removal_passes():
  """An additive loss model: removing unit i adds cost_i. Exhaustive clean-up must remove units
  while the total stays at the target and end where no single further removal fits."""
  cost = np.asarray([0.0, 0.0, 0.06, 0.06, 0.06, 0.3, 0.01, 0.0, 0.2, 0.04])
  start = np.ones((1, len(cost)), np.float32)
  calls = []

  def evaluate(masks, members):
    calls.append(len(members))
    return 0.05 + ((1 - np.asarray(masks)) * cost).sum(1)

  def estimate(masks, members):
    return np.tile(cost, (len(members), 1))

  res = greedy_cleanup(evaluate, estimate, start, 0.15, batch=3, max_rounds=20, exhaustive=True,
                       bulk=False)
  kept = res.masks[0] > 0
  assert res.losses[0] <= 0.15 + 1e-12
  # No single kept unit could still be removed within the target...
  assert (res.losses[0] + cost[kept] > 0.15 + 1e-12).all()
  # ...and the cheap units went first: everything that costs <= 0.04 is gone.
  assert not kept[cost <= 0.04].any()
  assert res.converged[0]
  np.testing.assert_allclose(res.losses[0], 0.10)
  # A member that starts above the target is left alone.
  worse = greedy_cleanup(lambda m, i: np.full(len(i), 1.0), estimate, start, 0.15)
  np.testing.assert_array_equal(worse.masks, start)
  assert not worse.converged[0] and worse.removed[0] == 0


def test_a_budget_stops_cleanup_early_and_says_so():
  cost = np.zeros(40)
  evaluate = lambda masks, members: 0.05 + ((1 - np.asarray(masks)) * cost).sum(1)
  estimate = lambda masks, members: np.zeros((len(members), 40))
  res = greedy_cleanup(evaluate, estimate, np.ones((1, 40), np.float32), 0.15, batch=2,
                       max_rounds=2, exhaustive=True, bulk=False)
  assert res.rounds == 2 and 0 < res.removed[0] <= 4 and not res.converged[0]
