"""Training a population of mask learners: one vmapped scan per call, calls planned by memory,
rounds between which the population may adapt.

* :func:`make_trainer` — one jitted ``run`` that advances every member of a call ``steps_per_call``
  steps: ``jax.vmap`` over members (each with its own τ, optimizer state, hyperparameters, seed,
  task group and per-member inputs), ``lax.scan`` over steps; the frozen model is shared. A step
  samples ``batch_pairs`` pairs of the member's task from its seed and the step number, so a
  member's trajectory does not depend on which call it ran in.
* :class:`PopulationTrainer` — splits the members into calls (the memory plan: as many as fit
  ``memory_budget_gib`` by XLA's estimate, or ``members_per_call``; with ``group_by_length`` one
  call per needed sequence length), cuts each call's tokens to what its tasks need, and keeps the
  state of all members on the host between calls.
* :func:`run_rounds` — ``steps`` split into ``rounds``; after every round but the last an
  ``adapt`` callback may rank the members and return a new population and which member's state
  each continues from (population-based training, :mod:`sparsejax.circuits.population`).
* :class:`Searcher` — the whole search for a :class:`Problem` (node masks, or edge masks inside
  given node circuits): ``candidates`` members per task trained in rounds, PBT between them
  ranked by a cheap fitness (the circuit size at the target on val pairs), the best member per
  task and its lineage; the lineage replayed on shuffled labels (the control); the chosen
  members' precise bisection.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.circuits import masks
from sparsejax.circuits import population as population_lib
from sparsejax.circuits.bisection import bisect_k
from sparsejax.circuits.evaluate import (CircuitModel, TaskData, TaskGroups, needed_length,
                                         stack, to_device)
from sparsejax.circuits.population import Population, stable_seed

MemberLoss = Callable[[Any, Any, Any, TaskData], Any]  # (mask, shared, extra, batch) -> loss


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """How a population is trained (taken from :class:`sparsejax.circuits.prune.PruneConfig`)."""

  steps: int  # total steps per member (all rounds)
  batch_pairs: int  # task pairs per step
  grad_clip: float  # global-norm gradient clip
  chunk_steps: int  # steps per compiled scan (progress is reported between chunks)
  members_per_call: int = 0  # 0: plan from the memory budget
  memory_budget_gib: float = 0.0  # 0: 75% of the accelerator's memory (none on a CPU)
  group_by_length: bool = False  # one call per needed sequence length


def make_trainer(member_loss: MemberLoss, *, steps_per_call: int, total_steps: int,
                 batch_pairs: int, grad_clip: float):
  """A jitted ``run(state, shared, data, hp, group, seed, extra, valid, start) -> (state, (task
  loss, units on) per step and member)``; ``data`` stacks the call's task groups."""

  def member(carry, step, shared, data, hp, group, seed, extra, valid):
    tau, opt = carry
    key = jax.random.fold_in(jax.random.key(seed), step)
    idx = jax.random.randint(key, (batch_pairs,), 0, data.n_pairs)
    batch = data.take(group).take(idx)
    tau, opt, task, kept = masks.mask_step(
        tau, opt, step, lambda m: member_loss(m, shared, extra, batch), hp,
        total_steps=total_steps, grad_clip=grad_clip, valid=valid)
    return (tau, opt), (task, kept)

  def run(state, shared, data, hp, group, seed, extra, valid, start):
    step_all = jax.vmap(member, in_axes=(0, None, None, None, 0, 0, 0, 0, 0))

    def one(carry, step):
      return step_all(carry, step, shared, data, hp, group, seed, extra, valid)

    return jax.lax.scan(one, state, start + jnp.arange(steps_per_call))

  return jax.jit(run)


def init_state(pop: Population, n_units: int):
  """Host state of every member: (τ (M, N), optimizer state with a leading M axis)."""
  tau = np.stack([masks.init_tau(int(pop.seed[i]), float(pop.hypers.init_noise_bias[i]),
                                 float(pop.hypers.init_noise_scale[i]), n_units)
                  for i in range(len(pop))])
  opt = jax.vmap(masks.init_opt_state)(jnp.asarray(tau))
  return tau, jax.tree.map(np.asarray, opt)


def take(tree, idx):
  return jax.tree.map(lambda a: a[idx], tree)


def _memory_budget(settings: TrainSettings) -> float | None:
  if settings.memory_budget_gib:
    return settings.memory_budget_gib * 2**30
  stats = jax.devices()[0].memory_stats() or {}
  return 0.75 * stats["bytes_limit"] if "bytes_limit" in stats else None


def plan_members_per_call(run, args_one, n_members: int,
                          settings: TrainSettings) -> tuple[int, str]:
  """How many members one vmapped call trains: ``members_per_call``, or as many as fit the
  memory budget by XLA's estimate for one member (arguments + outputs + temporaries, an upper
  bound per member: the frozen model is counted for each). Returns (count, how it was chosen)."""
  if settings.members_per_call:
    return min(settings.members_per_call, n_members), "members_per_call"
  budget = _memory_budget(settings)
  if budget is None:
    return n_members, "no memory limit reported by the backend"
  try:
    m = run.lower(*args_one).compile().memory_analysis()
    one = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
  except Exception:  # the backend gives no estimate: one call, as configured
    return n_members, "no memory estimate on this backend"
  fit = max(1, int(budget // max(one, 1)))
  return min(fit, n_members), (f"{one / 2**20:.0f} MiB per member (XLA estimate), budget "
                               f"{budget / 2**30:.1f} GiB")


def chunk_size(steps: int, most: int) -> int:
  """The largest divisor of ``steps`` that is at most ``most``: every chunk of a run has one
  length, so the scan compiles once."""
  return max(d for d in range(1, min(steps, most) + 1) if steps % d == 0)


def length_groups(need_sorted: np.ndarray, ids_sorted: np.ndarray) -> list[np.ndarray]:
  """Members (sorted by needed length) grouped by length, small groups merged into the next
  longer one (the last into the previous): a call per distinct length compiles its own program,
  which costs more than the padding saved for a handful of members. A group must hold at least
  max(4, M / 8) members."""
  least = max(4, -(-len(ids_sorted) // 8))
  groups: list[list[int]] = []
  current: list[int] = []
  for n in np.unique(need_sorted):
    current += ids_sorted[need_sorted == n].tolist()
    if len(current) >= least:
      groups.append(current)
      current = []
  if current:
    if groups:
      groups[-1] += current
    else:
      groups.append(current)
  return [np.asarray(g) for g in groups]


class PopulationTrainer:
  """Trains members in planned vmapped calls. ``data`` stacks every task group (host arrays);
  ``extra`` (per-member inputs of ``member_loss``, leading M axis, or None) and ``valid`` (M, N)
  are fixed for the trainer's life; hyperparameters and seeds come with each :meth:`run`."""

  def __init__(self, member_loss: MemberLoss, shared, data: TaskData, group: np.ndarray,
               extra, valid: np.ndarray, settings: TrainSettings,
               progress: Callable[[str], None] = lambda _: None, label: str = "prune"):
    self.member_loss, self.shared, self.data = member_loss, shared, data
    self.group, self.extra, self.valid = np.asarray(group), extra, np.asarray(valid, np.float32)
    self.settings, self.progress, self.label = settings, progress, label
    self._trainers: dict[int, Any] = {}
    cap = data.seq_len
    self.need = np.asarray([needed_length(np.asarray(data.batch.last[g]), cap)
                            for g in range(data.batch.last.shape[0])])
    self.calls: list[np.ndarray] | None = None

  def trainer(self, steps: int):
    if steps not in self._trainers:
      s = self.settings
      self._trainers[steps] = make_trainer(self.member_loss, steps_per_call=steps,
                                           total_steps=s.steps, batch_pairs=s.batch_pairs,
                                           grad_clip=s.grad_clip)
    return self._trainers[steps]

  def _inputs(self, members, state, pop: Population, start: int):
    groups, group = np.unique(self.group[members], return_inverse=True)
    data = self.data.take(groups).trim(int(self.need[groups].max()))
    sub = pop.subset(members)
    extra = None if self.extra is None else take(self.extra, members)
    return to_device((take(state, members), self.shared, data, sub.hypers,
                      group.astype(np.int32), sub.seed.astype(np.int32), extra,
                      self.valid[members])) + (jnp.int32(start),)

  def plan(self, state, pop: Population) -> list[np.ndarray]:
    """The calls (member index arrays), sorted by needed length; planned once."""
    if self.calls is not None:
      return self.calls
    M = len(pop)
    order = np.argsort(self.need[self.group], kind="stable")
    per_call, why = M, "one call"
    if M > 1:
      chunk = chunk_size(self.settings.steps, self.settings.chunk_steps)
      args = self._inputs(order[-1:], state, pop, 0)  # the longest member: the largest footprint
      per_call, why = plan_members_per_call(self.trainer(chunk), args, M, self.settings)
    split = lambda ids: [ids[i:i + per_call] for i in range(0, len(ids), per_call)]
    if self.settings.group_by_length:
      self.calls = [c for ids in length_groups(self.need[self.group[order]], order)
                    for c in split(ids)]
    else:
      self.calls = split(order)
    if len(self.calls) > 1:
      self.progress(f"{self.label}: {M} members in {len(self.calls)} vmapped calls of up to "
                    f"{per_call} ({why})")
    return self.calls

  def run(self, state, pop: Population, start: int, steps: int, note: str = ""):
    """Every member ``steps`` steps from global step ``start``; returns the new host state."""
    calls = self.plan(state, pop)
    chunk = chunk_size(steps, self.settings.chunk_steps)
    out = jax.tree.map(np.array, state)
    for c, members in enumerate(calls):
      where = f" | call {c + 1}/{len(calls)}, {len(members)} members" if len(calls) > 1 else ""
      args = list(self._inputs(members, state, pop, start))
      done = 0
      while done < steps:
        n = min(chunk, steps - done)
        args[-1] = jnp.int32(start + done)
        new_state, (task, kept) = self.trainer(n)(*args)
        args[0] = new_state
        done += n
        task, kept = np.asarray(task[-1]), np.asarray(kept[-1])
        self.progress(f"{self.label}: step {start + done}/{self.settings.steps}{note}{where} | "
                      f"task loss median {np.median(task):.3f} | kept median "
                      f"{int(np.median(kept))} of {self.valid.shape[1]}")
      for leaf_out, leaf_new in zip(jax.tree.leaves(out), jax.tree.leaves(args[0])):
        leaf_out[members] = np.asarray(leaf_new)
    return out


Adapt = Callable[[Any, Population, int], tuple[Population, np.ndarray, dict]]


def round_steps(steps: int, rounds: int) -> list[int]:
  """``steps`` split into ``rounds`` near-equal parts (earlier rounds get the remainder; equal
  parts share one compiled scan)."""
  rounds = max(1, min(rounds, steps))
  return [steps // rounds + (r < steps % rounds) for r in range(rounds)]


def run_rounds(trainer: PopulationTrainer, state, pop: Population, *, rounds: int,
               adapt: Adapt | None = None) -> tuple[Any, Population, list[dict]]:
  """Trains ``trainer.settings.steps`` steps in ``rounds``; between rounds ``adapt(state, pop,
  round) -> (population, source, info)`` may replace members (state rows follow ``source``)."""
  parts = round_steps(trainer.settings.steps, rounds)
  history, done = [], 0
  for r, steps in enumerate(parts):
    note = f" (round {r + 1}/{len(parts)})" if len(parts) > 1 else ""
    state = trainer.run(state, pop, done, steps, note)
    done += steps
    if adapt is not None and r < len(parts) - 1:
      pop, source, info = adapt(state, pop, r)
      state = take(state, source)
      history.append(info)
  return state, pop, history


@dataclasses.dataclass
class Problem:
  """What a search learns masks over. Circuits ("slots") 0..T-1 are the tasks', T..2T-1 their
  controls'; for edges each slot has its own node circuit and edge table."""

  kind: str  # "nodes" | "edges"
  n_units: np.ndarray  # (slots,) rankable units per slot
  valid: np.ndarray  # (slots, N) 0/1: which mask entries are units (padding: 0)
  extra: object  # per-slot inputs of the member loss (stacked; None for nodes)
  centres: dict  # hyperparameter centres
  candidates: int
  rounds: int
  steps: int
  node_masks: list | None = None  # edges: per slot
  tables: list | None = None  # edges: per slot
  lists: list | None = None  # edges: per slot, the Edge list
  sets: object = None  # edges: the EdgeSets
  full_val_loss: np.ndarray | None = None  # (slots,) val loss with every unit kept, if known

  @property
  def n_units_max(self) -> int:
    return self.valid.shape[1]

  @classmethod
  def nodes(cls, cfg, n_nodes: int, full_val_loss) -> "Problem":
    slots = len(full_val_loss)
    return cls("nodes", np.full(slots, n_nodes), np.ones((slots, n_nodes), np.float32), None,
               cfg.centres, cfg.candidates, cfg.rounds, cfg.steps,
               full_val_loss=np.asarray(full_val_loss))

  @classmethod
  def edges(cls, cfg, node_masks, lists, sets, full_val_loss=None) -> "Problem":
    centres = dict(cfg.centres, lr=cfg.edge_lr, k_coef=cfg.edge_k_coef)
    return cls("edges", np.asarray([len(l) for l in lists]), sets.valid(),
               (np.stack(node_masks), stack(sets.tables)), centres, cfg.edge_candidates,
               cfg.edge_rounds, cfg.edge_steps, list(node_masks), sets.tables, lists, sets,
               None if full_val_loss is None else np.asarray(full_val_loss))


@dataclasses.dataclass
class Found:
  """What a search found."""

  pop: Population  # the population after the last round
  tau: np.ndarray  # (M, N) every member's τ
  best: np.ndarray  # (T,) the chosen member per task
  history: list  # per round (and the final selection): best size per task
  pops: list  # the population of every round
  lineage: list  # per round, (T,): the member each chosen member continued in that round

  def hyperparameters(self, t: int) -> list[dict]:
    """Task t's chosen member: its hyperparameters and seed in every round."""
    return [p.member(int(m[t])) for p, m in zip(self.pops, self.lineage)]


class Searcher:
  """Runs searches on one frozen model (:class:`CircuitModel`) with one config
  (:class:`sparsejax.circuits.prune.PruneConfig`)."""

  def __init__(self, model: CircuitModel, cfg, progress: Callable[[str], None] = print):
    self.model, self.cfg, self.progress = model, cfg, progress

  def settings(self, steps: int) -> TrainSettings:
    c = self.cfg
    return TrainSettings(steps=steps, batch_pairs=c.batch_pairs, grad_clip=c.grad_clip,
                         chunk_steps=c.chunk_steps, members_per_call=c.members_per_call,
                         memory_budget_gib=c.memory_budget_gib,
                         group_by_length=c.group_by_length)

  def loss_evaluator(self, datas, **kw):
    """The val-loss callback of the bisections (raw or calibrated, per ``bisect_on``)."""
    return self.model.loss_evaluator(datas, calibrated=self.cfg.bisect_on == "calibrated", **kw)

  def trainer(self, problem: Problem, slots, groups_of, data: TaskData, label: str):
    model = self.model
    member_loss = model.edge_member_loss if problem.kind == "edges" else model.node_member_loss
    extra = None if problem.extra is None else take(problem.extra, np.asarray(slots))
    return PopulationTrainer(member_loss, model.shared, data, groups_of, extra,
                             problem.valid[np.asarray(slots)], self.settings(problem.steps),
                             self.progress, label)

  def evaluator(self, groups: TaskGroups, problem: Problem, slots, pairs: int = 0):
    """``evaluate(masks, members)`` for members on circuit slots ``slots`` (val pairs)."""
    vals = [groups.splits[s]["val"] for s in slots]
    if pairs:
      vals = [d.pairs(0, pairs) for d in vals]
    if problem.kind == "nodes":
      return self.loss_evaluator(vals)
    return self.loss_evaluator(vals, node_masks=[problem.node_masks[s] for s in slots],
                               tables=[problem.tables[s] for s in slots])

  def fitness(self, groups: TaskGroups, problem: Problem, pop, tau):
    """Cheap circuit size at the target on the first ``fitness_pairs`` val pairs (a coarse
    bisection started from each member's units with τ > 0): (score (M,), smaller is better)."""
    cfg = self.cfg
    evaluate = self.evaluator(groups, problem, pop.task, cfg.fitness_pairs)
    n = problem.n_units[pop.task]
    valid = problem.valid[pop.task]
    full = None
    if problem.full_val_loss is not None and cfg.fitness_pairs in (0, cfg.val_pairs):
      full = problem.full_val_loss[pop.task]
    start = ((tau > 0) & (valid > 0)).sum(1) if cfg.fitness_grid == 0 else None
    k, loss = bisect_k(evaluate, tau, cfg.target_loss, n, rtol=cfg.fitness_rtol,
                       grid=cfg.fitness_grid, valid_MN=valid, start=start, full_loss=full)
    return np.where(k >= 0, k, n * (1.0 + loss)), k

  def search(self, groups: TaskGroups, problem: Problem) -> Found:
    """Masks of ``candidates`` members per task, trained in rounds (PBT between them with
    ``search="pbt"``); the best member per task by the fitness, and its lineage (the member it
    continued in each round)."""
    cfg, T, N = self.cfg, groups.n_tasks, problem.n_units_max
    pop = population_lib.initial(problem.centres, problem.candidates, cfg.spread, cfg.seed,
                                 [stable_seed(f"{problem.kind}/{n_}") for n_ in groups.names])
    self.progress(f"prune: {problem.kind}: {T} tasks × {problem.candidates} candidates = "
                  f"{len(pop)} members, up to {N} units each, {problem.steps} steps × "
                  f"{cfg.batch_pairs} pairs in {problem.rounds} round(s), search: {cfg.search}")
    trainer = self.trainer(problem, pop.task, pop.group, groups.stacked("train"),
                           f"prune {problem.kind}")
    pops, sources, history = [pop], [], []

    def adapt(state, pop_, r):
      t0 = time.time()
      score, _ = self.fitness(groups, problem, pop_, state[0])
      new, source = population_lib.exploit_explore(pop_, score, r, fraction=cfg.pbt_fraction,
                                                   perturb=cfg.pbt_perturb, seed=cfg.seed)
      pops.append(new)
      sources.append(source)
      best = [int(score[pop_.members_of(t)].min()) for t in range(T)]
      moved = int((source != np.arange(len(pop_))).sum())
      self.progress(f"prune {problem.kind}: round {r + 1} fitness ({time.time() - t0:.1f}s): "
                    f"best size per task median {int(np.median(best))}; {moved} members "
                    f"continue from better ones")
      history.append({"round": r + 1, "best_size": dict(zip(groups.names, best))})
      return new, source, {}

    state = init_state(pop, N)
    state, pop, _ = run_rounds(trainer, state, pop, rounds=problem.rounds,
                               adapt=adapt if cfg.search == "pbt" else None)
    tau = state[0]
    if problem.candidates > 1:
      t0 = time.time()
      score, _ = self.fitness(groups, problem, pop, tau)
      best = np.asarray([min(pop.members_of(t), key=lambda m: (score[m], m)) for t in range(T)])
      self.progress(f"prune {problem.kind}: selection ({time.time() - t0:.1f}s): best size per "
                    f"task median {int(np.median(score[best]))}")
      history.append({"selection": dict(zip(groups.names, score[best].astype(int).tolist()))})
    else:
      best = np.asarray([pop.members_of(t)[0] for t in range(T)])
    while len(pops) < len(round_steps(problem.steps, problem.rounds)):
      pops.append(pop)  # no adaptation: the same population every round
      sources.append(np.arange(len(pop)))
    lineage = [best]
    for source in reversed(sources):
      lineage.insert(0, source[lineage[0]])
    return Found(pop, tau, best, history, pops, lineage)

  def replay_controls(self, groups: TaskGroups, problem: Problem, found: Found) -> np.ndarray:
    """τ of every task's shuffled-label control: the chosen member's whole training — initial
    τ, and in each round the hyperparameters and batch seed of the member whose state it
    continued — replayed on the control's labels (the same search, nonsense labels)."""
    T = groups.n_tasks
    rounds = [p.subset(m) for p, m in zip(found.pops, found.lineage)]
    rounds = [dataclasses.replace(p, group=np.asarray([groups.control_of(t) for t in range(T)],
                                                       np.int32)) for p in rounds]
    self.progress(f"prune {problem.kind}: shuffled-label controls: {T} members replay the "
                  f"chosen members' training")
    trainer = self.trainer(problem, [T + t for t in range(T)], rounds[0].group,
                           groups.stacked("train"), f"prune {problem.kind} control")
    adapt = lambda state, pop_, r: (rounds[r + 1], np.arange(T), {})
    state, _, _ = run_rounds(trainer, init_state(rounds[0], problem.n_units_max),
                             rounds[0], rounds=len(rounds), adapt=adapt)
    return state[0]

  def bisect_chosen(self, groups: TaskGroups, problem: Problem, tau_T) -> tuple:
    """The chosen members' circuits bisected precisely on val: (k (T,), loss (T,))."""
    cfg, T = self.cfg, groups.n_tasks
    slots = np.arange(T)
    return bisect_k(self.evaluator(groups, problem, slots), tau_T, cfg.target_loss,
                    problem.n_units[slots], rtol=cfg.bisect_rtol, grid=cfg.bisect_grid,
                    valid_MN=problem.valid[slots])
