"""From a trained run to circuits: the pipeline behind ``experiments/prune.py``.

For the selected tasks: check the full model solves each (else report it, do not prune it), learn
masks for every task (and its shuffled-label control) × candidate in one vmapped run, bisect each
member's circuit size on held-out pairs, keep per task the smallest circuit among its candidates,
and measure on test pairs: the circuit's loss (raw and logit-calibrated), the loss when only the
circuit is ablated (inverse), random circuits with the same nodes per site, and the control.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsejax.data import dataset as data_lib
from sparsejax.circuits import prune
from sparsejax.tasks import generators as tasks_lib
from sparsejax.tasks.batch import TaskBatch, encode_pairs
from sparsejax.circuits.graph import Circuit, find_edges, geometric_mean_edges
from sparsejax.model.gpt import merge, rms
from sparsejax.train.runs import TrainedRun
from sparsejax.utils.errors import ConfigError, PathError
from sparsejax.utils.files import atomic_save_npy, atomic_write_json, remove_stale_files


def _stable_seed(name: str) -> int:
  return int.from_bytes(hashlib.sha256(name.encode()).digest()[:3], "little")


def _arrays(batch: TaskBatch) -> dict:
  return {"tokens": batch.tokens, "last": batch.last, "correct": batch.correct, "alt": batch.alt}


def shuffled_labels(arrays: dict, seed: int) -> dict:
  """A control task: for a random half of the pairs the two completions trade places, so which
  token is right no longer follows from the context."""
  rng = np.random.default_rng([seed, 5])
  flip = rng.random(len(arrays["correct"])) < 0.5
  out = dict(arrays)
  out["correct"] = np.where(flip[:, None], arrays["alt"], arrays["correct"])
  out["alt"] = np.where(flip[:, None], arrays["correct"], arrays["alt"])
  return out


@dataclasses.dataclass
class PruneResult:
  circuits: dict[str, Circuit]  # solved tasks
  unsolved: dict[str, dict]  # tasks the full model does not solve to the target: their losses
  summary: dict


class _Queue:
  """Collects (mask, task arrays) requests and runs them through one jitted vmapped function in
  fixed-size chunks, grouped by pair count and sorted by needed sequence length, each chunk's
  tokens cut to what it needs (:func:`sparsejax.prune.needed_length`): a handful of compiles
  however many requests."""

  def __init__(self, fn, chunk: int = 16):
    self.fn, self.chunk, self.requests = fn, chunk, []

  def add(self, mask, arrays: dict) -> int:
    self.requests.append((np.asarray(mask, np.float32), arrays))
    return len(self.requests) - 1

  def run(self) -> list:
    out = [None] * len(self.requests)
    by_pairs: dict[int, list[int]] = {}
    need = []
    for i, (_, arrays) in enumerate(self.requests):
      by_pairs.setdefault(len(arrays["tokens"]), []).append(i)
      need.append(prune.needed_length(arrays["last"], arrays["tokens"].shape[-1]))
    for ids in by_pairs.values():
      ids = sorted(ids, key=lambda i: need[i])
      for start in range(0, len(ids), self.chunk):
        part = ids[start:start + self.chunk]
        rows = part + [part[-1]] * (self.chunk - len(part))  # pad: one shape per pair count
        masks = jnp.asarray(np.stack([self.requests[i][0] for i in rows]))
        arrays = {k: jnp.asarray(np.stack([self.requests[i][1][k] for i in rows]))
                  for k in self.requests[rows[0]][1]}
        arrays = prune.trim_tokens(arrays, max(need[i] for i in part))
        result = np.asarray(self.fn(masks, arrays))
        for j, i in enumerate(part):
          out[i] = result[j]
    self.requests = []
    return out


class Pruner:
  """Holds the frozen model, node layout and ablation values of one trained run."""

  def __init__(self, run: TrainedRun, cfg: prune.PruneConfig,
               progress: Callable[[str], None] = print):
    self.run, self.cfg, self.progress = run, cfg, progress
    self.model_cfg = run.config.model
    if cfg.freeze_final_norm and not self.model_cfg.rms_norm:
      raise ConfigError("freeze_final_norm: needs an RMSNorm model")
    self.layout = prune.NodeLayout.for_model(self.model_cfg)
    self.params = jax.device_put(run.params)
    self.buffers = jax.device_put(run.buffers)
    self.values = jnp.asarray(self._ablation_values())
    evaluator = prune.make_evaluator(run.graphdef, self.layout)
    self._loss_fn = lambda masks, arrays: evaluator(self.params, self.buffers, self.values, masks,
                                                    arrays)
    graphdef, layout = run.graphdef, self.layout

    @jax.jit
    def diffs(params, buffers, values, masks, arrays):
      def one(mask, a):
        logits = prune.circuit_logits(graphdef, params, buffers, layout, mask, values,
                                      a["tokens"], a["last"], a.get("rms"))
        pick = lambda tok: jnp.take_along_axis(
            logits, jnp.broadcast_to(tok[:, None, None], logits.shape[:2] + (1,)), -1)[..., 0]
        return pick(a["correct"][:, 0]) - pick(a["alt"][:, 0])
      return jax.vmap(one)(masks, arrays)

    self._diff_fn = lambda masks, arrays: diffs(self.params, self.buffers, self.values, masks,
                                                arrays)

  def loss_queue(self) -> _Queue:
    return _Queue(self._loss_fn)

  def diff_queue(self) -> _Queue:
    """Requests return l(token of completion A) − l(token of completion B) per sequence, (P, 2)."""
    return _Queue(self._diff_fn)

  # ---------------------------------------------------------------- ablation values
  def _ablation_values(self) -> np.ndarray:
    if self.cfg.ablation == "zero":
      return np.zeros(self.layout.n_nodes, np.float32)
    run, cfg = self.run, self.cfg
    cache_dir = os.path.join(run.workdir, "prune")
    path = os.path.join(cache_dir, f"means_step{run.step}_{cfg.mean_tokens}.npy")
    if os.path.exists(path):
      means = np.load(path)
      if means.shape == (self.layout.n_nodes,):
        return means
    dataset = data_lib.load(os.path.join(run.workdir, "data"))
    seq = min(self.model_cfg.block_size, run.config.train.seq_len)
    rows = max(1, cfg.mean_tokens // seq)
    sampler = data_lib.BatchSampler(dataset.eval, batch_size=min(rows, 32), seq_len=seq - 1,
                                    seed=cfg.seed + 99)
    batches = [sampler.batch(i) for i in range(max(1, -(-rows // sampler.local_batch)))]
    t0 = time.time()
    means = prune.node_means(run.graphdef, self.params, self.buffers, self.layout, batches)
    self.progress(f"prune: node means over {sum(b.size for b in batches):,} held-out tokens "
                  f"({time.time() - t0:.1f}s), cached in {path}")
    try:
      os.makedirs(cache_dir, exist_ok=True)
      atomic_save_npy(path, means)
    except (OSError, PathError) as e:  # a read-only run: pruning it does not need the cache
      reason = getattr(e, "strerror", None) or e
      self.progress(f"prune: node means not cached ({path}: {reason})")
    return means

  def _with_rms(self, arrays: dict) -> dict:
    """Adds the unpruned model's ln_f normaliser at the scored positions (freeze_final_norm)."""
    if not self.cfg.freeze_final_norm:
      return arrays
    graphdef, layout = self.run.graphdef, self.layout
    ones = jnp.ones(layout.n_nodes)

    @jax.jit
    def final_rms(params, buffers, values, tokens, last):
      model = merge(graphdef, params, buffers)
      P, S, T = tokens.shape
      _, cache = model.run_with_cache(tokens.reshape(P * S, T), ["final_resid"],
                                      interventions=layout.interventions(ones, values))
      x = cache["final_resid"].reshape(P, S, T, -1)
      return rms(jnp.take_along_axis(x, last[..., None, None], axis=2)[:, :, 0])

    return dict(arrays, rms=np.asarray(final_rms(self.params, self.buffers, self.values,
                                                 jnp.asarray(arrays["tokens"]),
                                                 jnp.asarray(arrays["last"]))))

  # ---------------------------------------------------------------- the whole pipeline
  def task_splits(self, names: list[str]) -> dict:
    """{task: {"train"|"val"|"test": arrays}}, every task padded to one length."""
    cfg, tok = self.cfg, self.run.tokenizer
    max_len = self.model_cfg.block_size
    n = cfg.train_pairs + cfg.val_pairs
    raw = {}
    for name in names:
      task = tasks_lib.get_task(name)
      raw[name] = (encode_pairs(task, task.pairs(n, split="train", seed=cfg.seed), tok,
                                          max_len),
                   encode_pairs(task, task.pairs(cfg.test_pairs, split="test",
                                                           seed=cfg.seed), tok, max_len))
    T = max(b.seq_len for pair in raw.values() for b in pair)
    splits = {}
    for name, (train_val, test) in raw.items():
      tv, te = _arrays(train_val.pad_to(T)), _arrays(test.pad_to(T))
      parts = {"train": {k: v[:cfg.train_pairs] for k, v in tv.items()},
               "val": {k: v[cfg.train_pairs:] for k, v in tv.items()}, "test": te}
      splits[name] = {s: self._with_rms(a) for s, a in parts.items()}
    return splits

  def prune_tasks(self, names: list[str]) -> PruneResult:
    cfg, layout = self.cfg, self.layout
    splits = self.task_splits(names)
    ones = np.ones(layout.n_nodes, np.float32)
    q = self.loss_queue()
    tickets = {(n_, s): q.add(ones, splits[n_][s]) for n_ in names for s in ("val", "test")}
    res = q.run()
    full = {n_: {s: float(res[tickets[(n_, s)]]) for s in ("val", "test")} for n_ in names}
    solvable = [n_ for n_ in names if max(full[n_].values()) <= cfg.target_loss]
    unsolved = {n_: {"full_model_loss_val": full[n_]["val"],
                     "full_model_loss_test": full[n_]["test"]}
                for n_ in names if n_ not in solvable}
    for n_ in unsolved:
      self.progress(f"prune: {n_}: the full model does not solve it (test loss "
                    f"{full[n_]['test']:.3f} > target {cfg.target_loss}); not pruned")
    if not solvable:
      return PruneResult({}, unsolved, self._summary({}, unsolved))

    groups = [(n_, False) for n_ in solvable]
    if cfg.control:
      groups += [(n_, True) for n_ in solvable]
    group_data = []
    for n_, control in groups:
      d = splits[n_]
      if control:
        d = {s: shuffled_labels(a, _stable_seed(n_) + i) for i, (s, a) in enumerate(d.items())}
      group_data.append(d)
    stack = lambda split: {k: np.stack([g[split][k] for g in group_data])
                           for k in group_data[0][split]}
    pop = prune.make_population(cfg, len(groups), [_stable_seed(n_) + (1 << 24) * c
                                                   for n_, c in groups])
    self.progress(f"prune: {len(solvable)} tasks{' + their controls' if cfg.control else ''} × "
                  f"{cfg.candidates} candidates = {len(pop)} members, {layout.n_nodes} nodes "
                  f"each, {cfg.steps} steps")
    t0 = time.time()
    tau = prune.learn_masks(self.run.graphdef, self.params, self.buffers, layout, self.values,
                            stack("train"), pop, cfg, self.progress)
    train_secs = time.time() - t0
    t0 = time.time()
    # Bisect the real tasks' members only; a control is judged at its task's circuit size.
    val = stack("val")
    real = np.nonzero(pop.group < len(solvable))[0]
    val_rows = [{k_: v[g] for k_, v in val.items()} for g in pop.group[real]]

    def evaluate(masks, members):
      q = self.loss_queue()
      for m, i in zip(np.asarray(masks), members):
        q.add(m, val_rows[i])
      return np.asarray(q.run())

    k = np.full(len(pop), -1)
    val_loss = np.full(len(pop), np.inf)
    k[real], val_loss[real] = prune.bisect_k(evaluate, tau[real], cfg.target_loss,
                                             layout.n_nodes, cfg.bisect_rtol,
                                             cfg.bisect_grid)
    self.progress(f"prune: circuit sizes bisected on held-out pairs ({time.time() - t0:.1f}s)")
    circuits = self._circuits(solvable, splits, groups, group_data, pop, tau, k, val_loss, full)
    for name, c in circuits.items():
      self.progress(f"prune: {name}: {c.n_nodes} nodes, {c.n_edges} edges, test loss "
                    f"{c.metrics['loss']:.3f}")
    summary = self._summary(circuits, unsolved)
    summary["timing"] = {"mask_learning_seconds": train_secs}
    return PruneResult(circuits, unsolved, summary)

  def _best(self, members, k, val_loss) -> int:
    return int(min(members, key=lambda m: (k[m] if k[m] >= 0 else 1 << 30, val_loss[m])))

  def _circuits(self, solvable, splits, groups, group_data, pop, tau, k, val_loss, full) -> dict:
    cfg, layout = self.cfg, self.layout
    losses, diffs = self.loss_queue(), self.diff_queue()
    plans = {}
    for name in solvable:
      best = self._best(np.nonzero(pop.group == groups.index((name, False)))[0], k, val_loss)
      kb = int(k[best])
      mask = np.asarray(prune.topk_masks(jnp.asarray(tau[best][None]), jnp.asarray([kb])))[0]
      nodes = {s: np.nonzero(m)[0].tolist() for s, m in layout.split(mask).items()}
      test = splits[name]["test"]
      plan = {"best": best, "k": kb, "mask": mask, "nodes": nodes,
              "loss": losses.add(mask, test), "inverse": losses.add(1.0 - mask, test)}
      rng = np.random.default_rng([cfg.seed, _stable_seed(name), 3])
      plan["random"] = []
      for _ in range(cfg.random_circuits):
        rmask = np.zeros(layout.n_nodes, np.float32)
        for s, o, w in zip(layout.sites, layout.offsets, layout.widths):
          if nodes[s]:
            rmask[o + rng.choice(w, len(nodes[s]), replace=False)] = 1.0
        plan["random"].append(losses.add(rmask, test))
      curve_ks = sorted({0, kb, layout.n_nodes} | {
          int(round(x)) for x in np.geomspace(1, layout.n_nodes, 7)})
      curve_masks = np.asarray(prune.topk_masks(
          jnp.asarray(np.repeat(tau[best][None], len(curve_ks), 0)), jnp.asarray(curve_ks)))
      plan["curve"] = [(k_, losses.add(m, test)) for k_, m in zip(curve_ks, curve_masks)]
      if cfg.calibrate:
        plan["diff_val"] = diffs.add(mask, splits[name]["val"])
        plan["diff_test"] = diffs.add(mask, test)
      if cfg.control:  # the control member with the same hyperparameters, at the same size
        gi = groups.index((name, True))
        cbest = int(np.nonzero(pop.group == gi)[0][np.nonzero(
            pop.group == groups.index((name, False)))[0].tolist().index(best)])
        cmask = np.asarray(prune.topk_masks(jnp.asarray(tau[cbest][None]), jnp.asarray([kb])))[0]
        # Judged on as many training pairs as there are test pairs (one batch shape).
        ctrl_train = {k_: v[:cfg.test_pairs] for k_, v in group_data[gi]["train"].items()}
        plan["control"] = {"train": losses.add(cmask, ctrl_train),
                           "test": losses.add(cmask, group_data[gi]["test"])}
      plans[name] = plan
    lres, dres = losses.run(), diffs.run()
    circuits = {}
    for name, plan in plans.items():
      best = plan["best"]
      metrics = {"loss": float(lres[plan["loss"]]), "loss_val": float(val_loss[best]),
                 "full_model_loss": full[name]["test"],
                 "inverse_loss": float(lres[plan["inverse"]]), "target_loss": cfg.target_loss}
      if cfg.calibrate:
        scale, shift = fit_logit_calibration(dres[plan["diff_val"]])
        metrics["loss_calibrated"] = float(calibrated_loss(dres[plan["diff_test"]], scale, shift))
        metrics["calibration"] = {"scale": scale, "shift": shift}
      if plan["random"]:
        rand = [float(lres[t]) for t in plan["random"]]
        metrics["random_circuit_losses"] = rand
        metrics["random_circuit_loss_mean"] = float(np.mean(rand))
      if "control" in plan:
        c = plan["control"]
        c_train, c_test = float(lres[c["train"]]), float(lres[c["test"]])
        metrics["control"] = {
            "kind": "shuffled_labels", "nodes": plan["k"], "loss_train": c_train,
            "loss_test": c_test, "solves_train": bool(c_train <= cfg.target_loss),
            "solves_test": bool(c_test <= cfg.target_loss)}
      metrics["pruning_curve"] = [[k_, float(lres[t])] for k_, t in plan["curve"]]
      edges, links = find_edges(plan["nodes"], self.run.params, self.model_cfg)
      info = {"hyperparameters": pop.member(best), "member": best, "k": plan["k"],
              "n_nodes_total": layout.n_nodes, "ablation": cfg.ablation,
              "freeze_final_norm": cfg.freeze_final_norm, "run": self.run.workdir,
              "step": self.run.step, "pairs": {"train": cfg.train_pairs, "val": cfg.val_pairs,
                                               "test": cfg.test_pairs}}
      circuits[name] = Circuit(name, plan["nodes"], edges, links, metrics, info)
    return circuits

  def _summary(self, circuits: dict, unsolved: dict) -> dict:
    rows = {}
    for name, c in circuits.items():
      m = c.metrics
      rows[name] = {"nodes": c.n_nodes, "edges": c.n_edges, "loss": m["loss"],
                    "loss_calibrated": m.get("loss_calibrated"),
                    "full_model_loss": m["full_model_loss"], "inverse_loss": m["inverse_loss"],
                    "random_circuit_loss_mean": m.get("random_circuit_loss_mean"),
                    "control": m.get("control")}
    return {"tasks": rows, "unsolved": unsolved,
            "geometric_mean_edges": geometric_mean_edges(list(circuits.values())),
            "config": dataclasses.asdict(self.cfg), "run": self.run.workdir,
            "step": self.run.step}


# ------------------------------------------------------------------ calibration
def calibrated_loss(diffs_P2, scale, shift):
  """Task loss with logit difference d → scale·d + shift (A wants d > 0, B wants d < 0)."""
  d = scale * jnp.asarray(diffs_P2) + shift
  return (jax.nn.softplus(-d[:, 0]) + jax.nn.softplus(d[:, 1])).mean() / 2


CALIBRATION_RIDGE = 1e-2


def fit_logit_calibration(diffs_P2, steps: int = 16) -> tuple[float, float]:
  """Scale and shift of the circuit's final logits fitted with 16 L-BFGS steps (paper §A.5).

  In a binary loss over two tokens only their logit difference matters, so the fit acts on it: a
  scale (how sharp) and a shift (towards completion A's token). A small ridge penalty towards
  (1, 0) keeps the fit finite when the held-out pairs are perfectly separated (the unpenalised
  optimum is then an infinite scale)."""
  scale, shift = _fit_calibration(jnp.asarray(diffs_P2, jnp.float32), steps)
  return float(scale), float(shift)


@functools.partial(jax.jit, static_argnums=1)
def _fit_calibration(diffs, steps):
  fn = lambda p: calibrated_loss(diffs, p[0], p[1]) + CALIBRATION_RIDGE * (
      (p[0] - 1.0) ** 2 + p[1] ** 2)
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(fn)

  def step(_, carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fn)
    return optax.apply_updates(params, updates), state

  params = jnp.array([1.0, 0.0])
  params, _ = jax.lax.fori_loop(0, steps, step, (params, opt.init(params)))
  return params[0], params[1]


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
  s = result.summary
  lines = [f"{'task':<28} {'nodes':>6} {'edges':>6} {'loss':>7} {'calib':>7} {'full':>7} "
           f"{'inverse':>8} {'random':>7} {'control(train/test)':>20}"]
  for name, r in s["tasks"].items():
    ctrl = r.get("control")
    ctrl_s = (f"{ctrl['loss_train']:.3f}/{ctrl['loss_test']:.3f}"
              + (" SOLVES" if ctrl["solves_train"] else "")) if ctrl else "-"
    fmt = lambda x: f"{x:.3f}" if x is not None else "-"
    lines.append(f"{name:<28} {r['nodes']:>6} {r['edges']:>6} {fmt(r['loss']):>7} "
                 f"{fmt(r['loss_calibrated']):>7} {fmt(r['full_model_loss']):>7} "
                 f"{fmt(r['inverse_loss']):>8} {fmt(r['random_circuit_loss_mean']):>7} "
                 f"{ctrl_s:>20}")
  for name, u in s["unsolved"].items():
    lines.append(f"{name:<28} {'not solved by the full model (test loss '}"
                 f"{u['full_model_loss_test']:.3f})")
  gm = s["geometric_mean_edges"]
  lines.append(f"geometric mean of edges over {len(s['tasks'])} circuits: "
               f"{gm:.1f}" if gm is not None else "no circuits")
  return "\n".join(lines)
