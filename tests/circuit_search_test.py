"""The mask-learning step (optax) and the search: population-based training adapts."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.circuits import masks, population, search
from sparsejax.circuits.evaluate import TaskData
from sparsejax.tasks.batch import TaskBatch

CENTRES = dict(k_coef=1e-4, lr=3e-2, init_noise_scale=1e-2, init_noise_bias=1e-1,
               weight_decay=1e-3, inv_beta2=5e-2, warmup_frac=5e-2, heaviside_temp=1.0)


def hand_written_adamw(tau, grads, hp, total, clip):
  """The update the optax chain replaced, written out (global-norm clip, AdamW, clamp)."""
  mu, nu = np.zeros_like(tau), np.zeros_like(tau)
  for step, g in enumerate(grads):
    g = g * min(1.0, clip / max(np.sqrt((g * g).sum()), 1e-12))
    b1, b2 = 0.9, 1.0 - hp["inv_beta2"]
    t = step + 1
    mu = b1 * mu + (1 - b1) * g
    nu = b2 * nu + (1 - b2) * g * g
    update = (mu / (1 - b1 ** t)) / (np.sqrt(nu / (1 - b2 ** t)) + 1e-8)
    w = max(hp["warmup_frac"] * total, 1e-6)
    lr = hp["lr"] * min(min(1.0, (step + 1) / w), np.clip(1.0 - step / total, 0.0, 1.0))
    tau = np.clip(tau - lr * (update + hp["weight_decay"] * tau), -1.0, 1.0)
  return tau


def test_the_optax_step_matches_the_hand_written_adamw():
  rng = np.random.default_rng(0)
  target = rng.normal(size=12).astype(np.float32)
  hp = dict(CENTRES, lr=0.05, inv_beta2=0.1, warmup_frac=0.3, weight_decay=0.01)
  hypers = masks.Hypers(**{k: jnp.float32(v) for k, v in hp.items()})
  loss_of_mask = lambda m: jnp.sum((m - target) ** 2)
  tau = jnp.asarray(masks.init_tau(3, 0.1, 0.2, 12))
  opt = masks.init_opt_state(tau)
  grads, taus = [], [np.asarray(tau)]
  step = jax.jit(lambda t, o, s: masks.mask_step(t, o, s, loss_of_mask, hypers, total_steps=10,
                                                 grad_clip=0.5))
  for s in range(10):
    objective = lambda t: loss_of_mask(masks.heaviside_ste(t, 1.0)) + 1e-4 * jnp.sum(
        masks.heaviside_ste(t, 1.0))
    grads.append(np.asarray(jax.grad(objective)(tau)))
    tau, opt, _, _ = step(tau, opt, jnp.int32(s))
    taus.append(np.asarray(tau))
  # Replay the recorded gradients through the written-out update.
  np.testing.assert_allclose(hand_written_adamw(taus[0], grads, hp, 10, 0.5), taus[-1],
                             rtol=1e-5, atol=1e-6)


def test_pbt_moves_the_population_towards_the_best_hyperparameters():
  """A synthetic fitness whose optimum is known (k_coef = 1e-2, lr = 1e-1, far from the centres):
  exploit/explore alone must carry every task's population there."""
  pop = population.initial(CENTRES, 8, 0.5, 0, [11, 12, 13])
  best = {"k_coef": 1e-2, "lr": 1e-1}
  distance = lambda p: sum(np.abs(np.log10(getattr(p.hypers, h)) - np.log10(v))
                           for h, v in best.items())
  start = distance(pop).mean()
  for r in range(40):
    pop, source = population.exploit_explore(pop, distance(pop), r, fraction=0.25, perturb=0.2,
                                             seed=0)
    # Members continue from better members of their own task only.
    assert (pop.task[source] == pop.task).all()
  end = distance(pop)
  assert start > 2.0 and end.mean() < 0.6, (start, end)
  for t in range(3):  # every task got there, not just on average
    assert np.median(end[pop.members_of(t)]) < 0.6


def test_a_random_population_does_not_adapt():
  pop = population.initial(CENTRES, 4, 0.5, 0, [1, 2])
  again = population.initial(CENTRES, 4, 0.5, 0, [1, 2])
  assert [pop.member(i) for i in range(len(pop))] == [again.member(i) for i in range(len(pop))]
  # Candidate 0 is the centres; the others are spread, the same for every task.
  assert pop.member(0) | {"seed": 0} == {k: np.float32(v) for k, v in CENTRES.items()} | {
      "seed": 0}
  np.testing.assert_array_equal(pop.hypers.k_coef[:4], pop.hypers.k_coef[4:])


def _toy_data(n_groups=2, n_pairs=8):
  tokens = np.zeros((n_groups, n_pairs, 2, 4), np.int32)
  last = np.zeros((n_groups, n_pairs, 2), np.int32)
  lab = np.zeros((n_groups, n_pairs, 2), np.int32)
  return TaskData(TaskBatch(tokens, last, lab, lab))


def test_rounds_continue_from_the_source_members_state():
  """run_rounds: after an adaptation every member continues from its source's τ and optimizer
  state, with its new hyperparameters; members that were not replaced are untouched."""
  # The loss pulls mask entries towards a per-group pattern: a real (if tiny) training problem.
  patterns = jnp.asarray(np.random.default_rng(0).random((2, 6)) > 0.5, jnp.float32)

  def member_loss(mask, shared, extra, batch):
    return jnp.sum((mask - patterns[extra]) ** 2)

  pop = population.initial(CENTRES | {"lr": 0.1}, 3, 0.5, 0, [1, 2])
  settings = search.TrainSettings(steps=20, batch_pairs=2, grad_clip=1.0, chunk_steps=5)
  trainer = search.PopulationTrainer(member_loss, None, _toy_data(), pop.group,
                                     pop.group.astype(np.int32), np.ones((len(pop), 6)),
                                     settings)
  seen = []

  def adapt(state, pop_, r):
    seen.append(jax.tree.map(np.copy, state))
    source = np.arange(len(pop_))
    source[0], source[4] = 2, 3  # member 0 continues from 2, member 4 from 3 (same tasks)
    return dataclasses.replace(pop_, seed=pop_.seed + 1), source, {}

  state = search.init_state(pop, 6)
  final, _, _ = search.run_rounds(trainer, state, pop, rounds=2, adapt=adapt)
  assert len(seen) == 1
  # Re-run the second round by hand from the copied state: identical.
  mid = search.take(seen[0], np.asarray([2, 1, 2, 3, 3, 5]))
  again = trainer.run(mid, dataclasses.replace(pop, seed=pop.seed + 1), 10, 10)
  np.testing.assert_allclose(final[0], again[0], atol=1e-6)
  # The problem was learned: masks moved to each group's pattern.
  hard = final[0] > 0
  np.testing.assert_array_equal(hard, np.asarray(patterns)[pop.group] > 0)


def test_round_and_chunk_sizes_compile_once():
  assert search.round_steps(100, 4) == [25, 25, 25, 25]
  assert search.chunk_size(25, 10) == 5 and search.chunk_size(100, 50) == 50
  need = np.asarray([32] * 8 + [48] * 20 + [64] * 2 + [69] * 3)  # a group needs >= 5 members
  groups = search.length_groups(need, np.arange(len(need)))
  assert [len(g) for g in groups] == [8, 20, 5]
  assert [need[g].max() for g in groups] == [32, 48, 69]
  few = search.length_groups(np.asarray([32, 48, 48, 64]), np.arange(4))  # too few to split
  assert [g.tolist() for g in few] == [[0, 1, 2, 3]]
