"""From a trained run to circuits: the pipeline behind ``experiments/prune.py``.

For the selected tasks (a task the full model does not solve to the target is reported, not
pruned), every stage running all tasks at once:

1. **Node search** (:class:`search.Searcher`) — ``candidates`` mask learners per task trained in
   ``rounds`` of vmapped calls, PBT between rounds with ``search="pbt"``; the best member per
   task, and its bisected circuit (:mod:`bisection`): the smallest top-k nodes by τ at the target
   on val pairs. Its control: the chosen member's training replayed on shuffled labels.
2. **Edge search** (:mod:`edge_pruning`) — the same search over edge masks inside each node
   circuit (and its control's); bisected by τ: the essential edges. The node circuit keeps only
   the nodes they touch when that (every edge between them kept) still reaches the target.
3. **Clean-up** (:mod:`cleanup`) — greedy single-edge removals from the essential edges, then
   single-node removals (of nodes no essential edge touches) from the node circuit.
4. **Checks** (:mod:`checks`) on test pairs, for the node circuit and its essential-edge circuit:
   loss (raw and calibrated), inverse, random same-size, shuffled-label control at the same size;
   the summary (:mod:`report`) leads with the geometric means of both edge counts.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.circuits import checks as checks_lib
from sparsejax.circuits import edge_pruning
from sparsejax.circuits import faithfulness
from sparsejax.circuits import masks
from sparsejax.circuits import report
from sparsejax.circuits import search
from sparsejax.circuits.bisection import topk_masks
from sparsejax.circuits.calibration import numpy_loss
from sparsejax.circuits.cleanup import greedy_cleanup
from sparsejax.circuits.edges import circuit_edges, slots
from sparsejax.circuits.evaluate import CircuitModel, EdgeMask, TaskData, TaskGroups
from sparsejax.circuits.graph import Circuit, find_edges
from sparsejax.circuits.population import stable_seed
from sparsejax.circuits.prune import PruneConfig, preset as preset_config
from sparsejax.data import dataset as data_lib
from sparsejax.tasks import evaluation as task_eval
from sparsejax.model.gpt import merge, rms, with_config
from sparsejax.tasks import generators as tasks_lib
from sparsejax.tasks.batch import encode_pairs
from sparsejax.train.runs import TrainedRun, load_run
from sparsejax.utils.errors import ConfigError, PathError
from sparsejax.utils.files import atomic_save_npy, atomic_write_json, remove_stale_files


def shuffled_labels(data: TaskData, seed: int) -> TaskData:
  """A control task: for a random half of the pairs the two completions trade places, so which
  token is right no longer follows from the context."""
  b = data.batch
  rng = np.random.default_rng([seed, 5])
  flip = (rng.random(len(b.correct)) < 0.5)[:, None]
  return data.with_labels(np.where(flip, b.alt, b.correct), np.where(flip, b.correct, b.alt))


@dataclasses.dataclass
class PruneResult:
  circuits: dict[str, Circuit]  # solved tasks
  unsolved: dict[str, dict]  # tasks the full model does not solve to the target: their losses
  summary: dict


def _final_rms(graphdef, layout, params, buffers, values, tokens_PST, last_PS):
  """The unpruned model's ln_f normaliser at the scored positions (P, S)."""
  model = merge(graphdef, params, buffers)
  P, S, T = tokens_PST.shape
  ones = jnp.ones(layout.n_nodes)
  _, cache = model.run_with_cache(tokens_PST.reshape(P * S, T), ["final_resid"],
                                  interventions=layout.interventions(ones, values))
  x = cache["final_resid"].reshape(P, S, T, -1)
  return rms(jnp.take_along_axis(x, last_PS[..., None, None], axis=2)[:, :, 0])


@dataclasses.dataclass
class _Work:
  """One task's circuit as it goes through the stages."""

  name: str
  member: int  # the chosen member
  k: int  # its bisected size (-1: not reached)
  val_loss: float  # at that size
  tau: np.ndarray  # its node τ
  node_mask: np.ndarray  # the current node circuit
  bisected: int  # nodes after the bisection
  control_tau: np.ndarray | None  # node τ of its twin control member
  essential: set | None = None  # edge keys (slot, row, col) of the essential edges
  edge_list: list | None = None  # the Edges the essential keys refer to
  edges_skipped: bool = False  # too many edges to edge-prune: every edge is essential
  edge_tau: dict | None = None  # learned edge τ by key
  control_edge_tau: dict | None = None  # the control's edge τ by key
  hyperparameters: list | None = None  # the chosen node member's, per round
  hyperparameters_edges: list | None = None  # the chosen edge member's, per round
  notes: dict = dataclasses.field(default_factory=dict)  # stage statistics for the metrics


def _group_nodes(pairs) -> dict[str, list[int]]:
  out: dict[str, list[int]] = {}
  for site, i in pairs:
    out.setdefault(site, []).append(int(i))
  return {s: sorted(v) for s, v in out.items()}


class Pruner:
  """Holds the frozen model of one trained run (its layout and ablation values) and prunes."""

  def __init__(self, run: TrainedRun, cfg: PruneConfig,
               progress: Callable[[str], None] = print):
    self.run, self.cfg, self.progress = run, cfg, progress
    self.model_cfg = run.config.model
    if cfg.freeze_final_norm and not self.model_cfg.rms_norm:
      raise ConfigError("freeze_final_norm: needs an RMSNorm model")
    self.layout = masks.NodeLayout.for_model(self.model_cfg)
    params, buffers = jax.device_put(run.params), jax.device_put(run.buffers)
    values, input_means = self._ablation_values(params, buffers)
    # Mask learning differentiates through activations only, so rematerialisation inherited from
    # training adds ~49 % FLOPs (main's throughput work): drop it where the backend reports no
    # memory limit (CPU). With a limit it is kept (main decides per member from XLA's memory
    # estimate; that plan is not yet ported into the split search).
    graphdef = run.graphdef
    if self.model_cfg.grad_checkpointing and search._memory_budget(
        search.TrainSettings(steps=1, batch_pairs=1, grad_clip=cfg.grad_clip,
                             chunk_steps=1, members_per_call=0,
                             memory_budget_gib=cfg.memory_budget_gib,
                             group_by_length=False)) is None:
      graphdef = with_config(graphdef, params, buffers, grad_checkpointing=False)
    self.model = CircuitModel(graphdef, params, buffers, self.model_cfg, values, input_means)
    self.searcher = search.Searcher(self.model, cfg, progress)
    # One compile for the life of the pruner (not one per call).
    self._final_rms = jax.jit(functools.partial(_final_rms, run.graphdef, self.layout))

  @property
  def params(self):
    return self.model.params

  @property
  def buffers(self):
    return self.model.buffers

  @property
  def values(self):
    return self.model.values

  # ---------------------------------------------------------------- ablation values
  def _ablation_values(self, params, buffers) -> tuple[np.ndarray, dict]:
    """Node ablation values (n_nodes,) and each edge slot's source-node means (slot → (rows,))."""
    layout, cfg = self.layout, self.cfg
    means = self._node_means(params, buffers) if cfg.ablation == "mean" else np.zeros(
        layout.n_nodes, np.float32)
    by_site = layout.split(means)
    return means, {s.name: by_site[s.src] for s in slots(self.model_cfg)}

  def _node_means(self, params, buffers) -> np.ndarray:
    layout, cfg, run = self.layout, self.cfg, self.run
    cache_dir = os.path.join(run.workdir, "prune")
    path = os.path.join(cache_dir, f"means_step{run.step}_{cfg.mean_tokens}.npy")
    if os.path.exists(path):
      means = np.load(path)
      if means.shape == (layout.n_nodes,):
        return means
    dataset = data_lib.load(os.path.join(run.workdir, "data"))
    seq = min(self.model_cfg.block_size, run.config.train.seq_len)
    rows = max(1, cfg.mean_tokens // seq)
    sampler = data_lib.BatchSampler(dataset.eval, batch_size=min(rows, 32), seq_len=seq - 1,
                                    seed=cfg.seed + 99)
    batches = [sampler.batch(i) for i in range(max(1, -(-rows // sampler.local_batch)))]
    t0 = time.time()
    means = masks.node_means(run.graphdef, params, buffers, layout, batches)
    self.progress(f"prune: node means over {sum(b.size for b in batches):,} held-out tokens "
                  f"({time.time() - t0:.1f}s), cached in {path}")
    try:
      os.makedirs(cache_dir, exist_ok=True)
      atomic_save_npy(path, means)
    except (OSError, PathError) as e:  # a read-only run: pruning it does not need the cache
      reason = getattr(e, "strerror", None) or e
      self.progress(f"prune: node means not cached ({path}: {reason})")
    return means

  # ---------------------------------------------------------------- tasks
  def task_splits(self, names: list[str]) -> dict[str, dict[str, TaskData]]:
    """{task: {"train" | "val" | "test": TaskData}}, every task padded to one length."""
    cfg, tok = self.cfg, self.run.tokenizer
    max_len = self.model_cfg.block_size
    n = cfg.train_pairs + cfg.val_pairs
    raw = {}
    for name in names:
      task = tasks_lib.get_task(name)
      raw[name] = (encode_pairs(task, task.pairs(n, split="train", seed=cfg.seed), tok, max_len),
                   encode_pairs(task, task.pairs(cfg.test_pairs, split="test", seed=cfg.seed),
                                tok, max_len))
    T = max(b.seq_len for pair in raw.values() for b in pair)
    splits = {}
    for name, (train_val, test) in raw.items():
      tv, te = TaskData(train_val.pad_to(T)), TaskData(test.pad_to(T))
      parts = {"train": tv.pairs(0, cfg.train_pairs), "val": tv.pairs(cfg.train_pairs, n),
               "test": te}
      splits[name] = {s: self._with_rms(d) for s, d in parts.items()}
    return splits

  def _with_rms(self, data: TaskData) -> TaskData:
    """Adds the unpruned model's ln_f normaliser at the scored positions (freeze_final_norm)."""
    if not self.cfg.freeze_final_norm:
      return data
    rms_PS = self._final_rms(self.params, self.buffers, self.values,
                             jnp.asarray(data.batch.tokens), jnp.asarray(data.batch.last))
    return dataclasses.replace(data, rms=np.asarray(rms_PS))

  def _evaluator(self, datas, **kw):
    return self.searcher.loss_evaluator(datas, **kw)

  # ---------------------------------------------------------------- the whole pipeline
  def prune_tasks(self, names: list[str]) -> PruneResult:
    cfg, layout = self.cfg, self.layout
    splits = self.task_splits(names)
    ones = np.ones(layout.n_nodes, np.float32)
    q = self.model.margins_queue()
    tickets = {(n_, s): q.add(splits[n_][s], ones, None) for n_ in names for s in ("val", "test")}
    res = q.run()
    full = {n_: {s: numpy_loss(res[tickets[(n_, s)]]) for s in ("val", "test")} for n_ in names}
    verdicts = {n_: task_eval.solved(full[n_], cfg.target_loss) for n_ in names}
    solvable = [n_ for n_ in names if verdicts[n_]]
    unsolved = {n_: {"full_model_loss_val": full[n_]["val"],
                     "full_model_loss_test": full[n_]["test"]}
                for n_ in names if n_ not in solvable}
    for n_ in unsolved:
      self.progress(f"prune: {n_}: the full model is {verdicts[n_]}; not pruned")
    if not solvable:
      return PruneResult({}, unsolved, self._summary({}, unsolved))
    groups = TaskGroups(solvable, [splits[n_] for n_ in solvable],
                        [full[n_]["val"] for n_ in solvable])
    if cfg.control:
      for t, n_ in enumerate(solvable):
        seed = stable_seed(n_)
        groups.splits.append({s: shuffled_labels(d, seed + i)
                              for i, (s, d) in enumerate(splits[n_].items())})
    timing, history = {}, {}
    t0 = time.time()
    work = self._prune_nodes(groups, history)
    timing["nodes_seconds"] = time.time() - t0
    if cfg.edges:
      t0 = time.time()
      self._learn_edges(groups, work, history)
      self._essential_edges(groups, work)
      self._reduce_nodes(groups, work)
      timing["edges_seconds"] = time.time() - t0
      t0 = time.time()
      self._clean_edges(groups, work)
      timing["edge_cleanup_seconds"] = time.time() - t0
    t0 = time.time()
    self._cleanup(groups, work)
    timing["cleanup_seconds"] = time.time() - t0
    t0 = time.time()
    circuits = self._report(groups, work, full)
    timing["checks_seconds"] = time.time() - t0
    t0 = time.time()
    suite = faithfulness.run(self, circuits, splits)
    timing["faithfulness_seconds"] = time.time() - t0
    for name, c in circuits.items():
      self.progress(f"prune: {name}: {c.n_nodes} nodes, {c.n_edges} edges "
                    f"({c.n_essential_edges} essential), test loss {c.metrics['loss']:.3f}")
    summary = self._summary(circuits, unsolved, search={"strategy": cfg.search,
                                                        "history": history}, timing=timing,
                            faithfulness=suite)
    faithfulness.summary_rows(summary, circuits)
    return PruneResult(circuits, unsolved, summary)

  # ---------------------------------------------------------------- stages
  def _prune_nodes(self, groups: TaskGroups, history: dict) -> list["_Work"]:
    """The node search, its controls and the bisection: one :class:`_Work` per task."""
    cfg, T, N = self.cfg, groups.n_tasks, self.layout.n_nodes
    problem = search.Problem.nodes(cfg, N, [groups.full_val_loss[t % T] for t in range(2 * T)])
    found = self.searcher.search(groups, problem)
    history["nodes"] = found.history
    control_tau = self.searcher.replay_controls(groups, problem, found) if cfg.control else None
    best = found.best
    k, val_loss = self.searcher.bisect_chosen(groups, problem, found.tau[best])
    work = []
    for t, name in enumerate(groups.names):
      b = int(best[t])
      size = int(k[t]) if k[t] >= 0 else N
      work.append(_Work(name, b, int(k[t]), float(val_loss[t]), found.tau[b],
                        topk_masks(found.tau[b][None], [size])[0], size,
                        None if control_tau is None else control_tau[t],
                        hyperparameters=found.hyperparameters(t)))
    self.progress(f"prune: node circuits bisected on held-out pairs: "
                  f"{', '.join(str(w.k) for w in work)}")
    return work

  def _cleanup(self, groups: TaskGroups, work: list["_Work"]) -> None:
    """Greedy single-node removals from every node circuit (all edges between its nodes kept)
    while it stays at the target on val. With edge pruning, the nodes the essential edges touch
    are not candidates: the essential circuit inside stays exactly as it was."""
    cfg = self.cfg
    if not cfg.cleanup or not cfg.cleanup_rounds:
      return
    vals = [groups.splits[t]["val"] for t in range(groups.n_tasks)]
    removable = None
    if cfg.edges:
      removable = np.stack([1.0 - self.layout.mask_of(_group_nodes(self._touched(w)))
                            for w in work]) > 0
    res = greedy_cleanup(self._evaluator(vals), self.model.removal_estimator(vals),
                         np.stack([w.node_mask for w in work]), cfg.target_loss,
                         batch=cfg.cleanup_batch, max_rounds=cfg.cleanup_rounds,
                         exhaustive=cfg.cleanup_exhaustive, removable_MN=removable,
                         progress=self.progress, label="prune: clean-up")
    for t, w in enumerate(work):
      w.node_mask = res.masks[t]
      w.notes["cleanup"] = {"removed": int(res.removed[t]), "converged": bool(res.converged[t]),
                            "loss_val": float(res.losses[t])}

  def _control_mask(self, w: "_Work") -> np.ndarray | None:
    """The control at the task circuit's size: the control's top nodes by its τ."""
    if w.control_tau is None:
      return None
    return topk_masks(w.control_tau[None], [int(w.node_mask.sum())])[0]

  def _edge_lists(self, node_masks) -> list[list]:
    return [circuit_edges(self.layout.nodes_of(m), self.run.params, self.model_cfg)
            for m in node_masks]

  def _edge_problem(self, work: list["_Work"], control_masks,
                    full_val_loss=None) -> "search.Problem":
    """Edge masks over every task's node circuit (slots 0..T-1) and its control's (T..2T-1);
    circuits with more than ``edge_max_edges`` edges get no units (not edge-pruned)."""
    node_masks = [w.node_mask for w in work]
    node_masks += [m if m is not None else w.node_mask for m, w in zip(control_masks, work)]
    lists = self._edge_lists(node_masks)
    for i, w in enumerate(work + work):
      if w.edges_skipped or len(lists[i]) > self.cfg.edge_max_edges:
        lists[i] = []
    return search.Problem.edges(self.cfg, node_masks, lists,
                                edge_pruning.EdgeSets.build(lists, self.model_cfg), full_val_loss)

  def _learn_edges(self, groups: TaskGroups, work: list["_Work"], history: dict) -> None:
    """Edge τ inside every task's bisected node circuit (the edge search, as for nodes), and
    inside its control's circuit of the same size (the chosen member's training replayed);
    stored by edge key (slot, row, col)."""
    cfg, T = self.cfg, groups.n_tasks
    for w, edges in zip(work, self._edge_lists([w.node_mask for w in work])):
      w.edges_skipped = len(edges) > cfg.edge_max_edges
      if w.edges_skipped:
        self.progress(f"prune: {w.name}: {len(edges)} edges > edge_max_edges "
                      f"({cfg.edge_max_edges}); not edge-pruned")
    problem = self._edge_problem(work, [self._control_mask(w) for w in work],
                                 [w.val_loss for w in work] * 2)
    found = self.searcher.search(groups, problem)
    history["edges"] = found.history
    tau = found.tau[found.best]
    control_tau = self.searcher.replay_controls(groups, problem, found) if cfg.control else None
    sets, lists = problem.sets, problem.lists
    for t, w in enumerate(work):
      w.edge_tau = {e.key: float(tau[t][j]) for e, j in zip(lists[t], sets.index[t])}
      if control_tau is not None:
        w.control_edge_tau = {e.key: float(control_tau[t][j])
                              for e, j in zip(lists[T + t], sets.index[T + t])}
      w.hyperparameters_edges = found.hyperparameters(t)

  def _edge_tau(self, problem: "search.Problem", work: list["_Work"]) -> np.ndarray:
    """(T, E) learned τ of each task's node-circuit edges (by key; -inf where unknown)."""
    tau = np.full((len(work), problem.sets.size), -np.inf, np.float32)
    for t, w in enumerate(work):
      tau[t, problem.sets.index[t]] = [w.edge_tau.get(e.key, -np.inf) for e in problem.lists[t]]
    return tau

  def _essential_edges(self, groups: TaskGroups, work: list["_Work"]) -> None:
    """Per task, the smallest top-k set of its node circuit's edges by τ at the target (val)."""
    T = groups.n_tasks
    problem = self._edge_problem(work, [None] * T)
    tau = self._edge_tau(problem, work)
    k, _ = self.searcher.bisect_chosen(groups, problem, tau)
    n = problem.n_units[:T]
    keep = topk_masks(tau, np.where(k >= 0, k, n), problem.valid[:T])
    full_lists = self._edge_lists([w.node_mask for w in work])
    for t, w in enumerate(work):
      w.edge_list = full_lists[t]
      w.essential = {problem.lists[t][i].key for i in problem.sets.chosen(t, keep[t])}
      if w.edges_skipped:
        w.essential = {e.key for e in full_lists[t]}
      w.notes["edges"] = {"paper_comparable_in_bisected_circuit": len(full_lists[t]),
                          "bisected": len(w.essential), "skipped": w.edges_skipped}
    self.progress(f"prune: edges bisected: {', '.join(str(len(w.essential)) for w in work)} "
                  f"(of {', '.join(map(str, n))})")

  @staticmethod
  def _touched(w: "_Work") -> set:
    """(site, index) of the nodes an essential edge of ``w`` touches."""
    edges = [e for e in w.edge_list if e.key in w.essential]
    return {(e.src, e.src_index) for e in edges} | {(e.dst, e.dst_index) for e in edges}

  def _reduce_nodes(self, groups: TaskGroups, work: list["_Work"]) -> None:
    """The node circuit without the nodes no essential edge touches (they carry nothing through
    the circuit's matrices), where that circuit — every edge between its nodes kept — stays at
    the target on val."""
    cfg, T = self.cfg, groups.n_tasks
    reduced = [self.layout.mask_of(_group_nodes(self._touched(w))) for w in work]
    vals = [groups.splits[t]["val"] for t in range(T)]
    losses = self._evaluator(vals)(np.stack(reduced), np.arange(T))
    for t, w in enumerate(work):
      adopted = bool(reduced[t].sum() < w.node_mask.sum() and losses[t] <= cfg.target_loss)
      w.notes["node_reduction"] = {"nodes_before": int(w.node_mask.sum()),
                                   "nodes_after": int(reduced[t].sum()),
                                   "loss_val": float(losses[t]), "adopted": adopted}
      if adopted:
        w.node_mask = reduced[t]
    self.progress(f"prune: node circuits reduced to the nodes their essential edges touch: "
                  f"{', '.join(str(int(w.node_mask.sum())) for w in work)} "
                  f"({sum(w.notes['node_reduction']['adopted'] for w in work)} of {T} adopted)")

  def _clean_edges(self, groups: TaskGroups, work: list["_Work"]) -> None:
    """Greedy single-edge removals from every essential edge set (inside its node circuit)
    while it stays at the target on val."""
    cfg, T = self.cfg, groups.n_tasks
    if not cfg.edge_cleanup or not cfg.cleanup_rounds:
      return
    problem = self._edge_problem(work, [None] * T)
    keep = np.stack([problem.sets.keep_of(t, [i for i, e in enumerate(problem.lists[t])
                                              if e.key in w.essential])
                     for t, w in enumerate(work)])
    slots = np.arange(T)
    vals = [groups.splits[t]["val"] for t in slots]
    clean = greedy_cleanup(
        self.searcher.evaluator(groups, problem, slots),
        self.model.removal_estimator(vals, node_masks=problem.node_masks[:T],
                                     tables=problem.tables[:T]),
        keep, cfg.target_loss, batch=cfg.cleanup_batch, max_rounds=cfg.cleanup_rounds,
        exhaustive=cfg.cleanup_exhaustive, progress=self.progress, label="prune: edge clean-up")
    for t, w in enumerate(work):
      if w.edges_skipped:
        continue
      w.essential = {problem.lists[t][i].key for i in problem.sets.chosen(t, clean.masks[t])}
      w.notes["edges"].update(essential=len(w.essential),
                              cleanup_converged=bool(clean.converged[t]))
    self.progress(f"prune: essential edges: {', '.join(str(len(w.essential)) for w in work)}")

  def _report(self, groups: TaskGroups, work: list["_Work"], full) -> dict[str, Circuit]:
    """Checks on test pairs of every node circuit and its essential-edge circuit, as Circuits."""
    cfg, layout, T = self.cfg, self.layout, groups.n_tasks
    control_masks = [self._control_mask(w) for w in work]
    lists = self._edge_lists([w.node_mask for w in work])
    ctrl_lists = [l if m is not None else [] for m, l in zip(
        control_masks, self._edge_lists([m if m is not None else w.node_mask
                                         for m, w in zip(control_masks, work)]))]
    edge_pruned = cfg.edges
    # Circuits not edge-pruned (too many edges) are their own essential circuit: left out of the
    # edge tables (which are padded to the largest), their essential metrics are the node ones.
    pruned = [edge_pruned and not w.edges_skipped for w in work]
    sets = edge_pruning.EdgeSets.build(
        [l if p else [] for l, p in zip(lists + ctrl_lists, pruned + pruned)],
        self.model_cfg) if edge_pruned else None
    subjects, essential, essential_of = [], [], {}
    for t, (w, name) in enumerate(zip(work, groups.names)):
      seed = int(stable_seed(name)) + cfg.seed
      control = None
      if control_masks[t] is not None:
        control = checks_lib.Subject(f"{name}/control", control_masks[t],
                                     groups.splits[groups.control_of(t)])
      subjects.append(checks_lib.Subject(name, w.node_mask, groups.splits[t], None, control,
                                         w.tau, seed))
      if pruned[t]:
        essential_of[t] = len(essential)
        keep = sets.keep_of(t, [i for i, e in enumerate(lists[t]) if e.key in w.essential])
        ctrl_e = None
        if control is not None:
          n_keep = int(keep.sum())
          score = np.asarray([w.control_edge_tau.get(e.key, -np.inf) for e in ctrl_lists[t]])
          order = np.argsort(-score, kind="stable")[:n_keep]
          ctrl_e = dataclasses.replace(control, edge_mask=EdgeMask(
              sets.tables[T + t], sets.keep_of(T + t, order)))
        essential.append(checks_lib.Subject(name, w.node_mask, groups.splits[t],
                                            EdgeMask(sets.tables[t], keep), ctrl_e, None, seed))
    ctx = checks_lib.Context(layout, cfg.target_loss, cfg.calibrate, cfg.random_circuits,
                             cfg.test_pairs)
    metrics = checks_lib.run_checks(ctx, subjects + essential, self.model.margins_queue())
    circuits = {}
    for t, (w, name) in enumerate(zip(work, groups.names)):
      m = metrics[t]
      m["full_model_loss"] = full[name]["test"]
      m["loss_val"] = w.val_loss
      m["bisected"] = {"nodes": w.bisected}
      m.update(w.notes)
      nodes = layout.nodes_of(w.node_mask)
      edges, links = find_edges(nodes, self.run.params, self.model_cfg)
      if edge_pruned:
        m["essential"] = (metrics[T + essential_of[t]] if t in essential_of else
                          {k: v for k, v in m.items() if k in report.ROW_KEYS} | {
                              "not_edge_pruned": True})
        for e, d in zip(lists[t], edges):
          d["essential"] = e.key in w.essential
      info = {"edge_pruned": pruned[t], "hyperparameters_by_round": w.hyperparameters,
              "member": w.member, "k": w.k,
              "edge_hyperparameters_by_round": w.hyperparameters_edges,
              "n_nodes_total": layout.n_nodes, "ablation": cfg.ablation,
              "freeze_final_norm": cfg.freeze_final_norm, "bisect_on": cfg.bisect_on,
              "run": self.run.workdir, "step": self.run.step,
              "pairs": {"train": cfg.train_pairs, "val": cfg.val_pairs, "test": cfg.test_pairs}}
      circuits[name] = Circuit(name, nodes, edges, links, m, info)
    return circuits

  def _summary(self, circuits: dict, unsolved: dict, **extra) -> dict:
    return report.summary(circuits, unsolved, self.cfg, self.run.workdir, self.run.step, **extra)


def write_outputs(result: PruneResult, out_dir: str) -> None:
  """OUT/circuits/<task>.json and OUT/summary.json (atomic writes). Circuits of an earlier run
  that this one did not produce are removed: OUT describes this run only. The summary is written
  last; it lists the circuits that belong to it."""
  circuits_dir = os.path.join(out_dir, "circuits")
  os.makedirs(circuits_dir, exist_ok=True)
  for name, c in result.circuits.items():
    c.save(os.path.join(circuits_dir, f"{name}.json"))
  remove_stale_files(circuits_dir, {f"{name}.json" for name in result.circuits}, "*.json")
  path = os.path.join(out_dir, "summary.json")
  atomic_write_json(path, result.summary, indent=2,
                    default=lambda x: x.item() if hasattr(x, "item") else str(x))


def format_summary(result: PruneResult) -> str:
  table = faithfulness.format_table(result.summary)
  return report.format_summary(result.summary) + (f"\n{table}" if table else "")


def prune(run: TrainedRun | str, tasks="all", *, preset: str = "quick",
          config: PruneConfig | None = None, progress: Callable[[str], None] | None = print,
          **overrides) -> dict[str, Circuit]:
  """Circuits of ``tasks`` in a trained run: the whole pipeline in one call.

  Args:
    run: a :class:`TrainedRun` (``sparsejax.load_run``) or a run directory.
    tasks: "all", a comma-separated string or a list of task names.
    preset: the budget, one of :data:`sparsejax.circuits.prune.PRESETS` ("quick": minutes on a
      CPU; "default"; "paper": the paper's budget, for an accelerator).
    config: a full PruneConfig instead of ``preset`` (``overrides`` then apply on top of it).
    progress: gets one line per stage (None: silent).
    **overrides: PruneConfig fields, e.g. ``target_loss=0.1``.

  Returns:
    {task: Circuit} for every task the full model solves to the target; the others are named
    through ``progress`` and left out (``Pruner(...).prune_tasks`` returns them, with the summary).
  """
  if config is not None:
    cfg = dataclasses.replace(config, **overrides) if overrides else config
  else:
    cfg = preset_config(preset, **overrides)
  if isinstance(run, (str, os.PathLike)):
    run = load_run(os.fspath(run), progress=progress)
  names = tasks_lib.resolve_names(tasks)
  if not names:
    raise ConfigError("tasks: no task names given (use 'all' or a list)")
  run.require_tokenizer("pruning")
  return Pruner(run, cfg, progress or (lambda _: None)).prune_tasks(names).circuits
