"""Evaluating circuits: the typed task data, the frozen model they run on, and one shared queue.

* :class:`TaskData` — a task's pairs as one pytree (a :class:`~sparsejax.tasks.batch.TaskBatch`
  plus, with ``freeze_final_norm``, the unpruned model's ln_f normaliser at the scored positions);
  groups of tasks stack into one TaskData with a leading axis.
* :class:`CircuitModel` — the frozen model of a run with its node layout and ablation values, and
  the jitted, vmapped functions every stage uses: the margins of a circuit (node mask, optionally
  with ablated edges) and the gradient of its task loss with respect to a mask.
* :class:`EvalQueue` — collects requests (one circuit on one task's pairs each) and runs them
  through one of those functions in fixed-size chunks, grouped by shape and sorted by the sequence
  length they need, each chunk's tokens cut to what it needs: a handful of compiles however many
  requests. Every check of a circuit report adds its requests to one queue (see
  :mod:`sparsejax.circuits.checks`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.circuits import calibration
from sparsejax.circuits import edges as edges_lib
from sparsejax.circuits import masks
from sparsejax.model.gpt import with_config
from sparsejax.tasks.batch import TaskBatch

LENGTH_BUCKET = 16


def needed_length(last, cap: int) -> int:
  """Tokens a batch of sequences needs: later positions cannot change the scored ones' logits
  (the model is causal and position-wise elsewhere). Rounded up to a multiple of LENGTH_BUCKET
  (few distinct shapes, so few compiles) and at most ``cap``."""
  n = int(np.max(last)) + 1
  return min(cap, -(-n // LENGTH_BUCKET) * LENGTH_BUCKET)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TaskData:
  """Pairs a circuit is trained or judged on (leading axes: [groups,] pairs, 2 sequences)."""

  batch: TaskBatch
  rms: Any = None  # float32 (..., N, 2): frozen ln_f normaliser at the scored positions, or None

  @property
  def n_pairs(self) -> int:
    return self.batch.last.shape[-2]

  @property
  def seq_len(self) -> int:
    return self.batch.tokens.shape[-1]

  def take(self, idx) -> "TaskData":
    """Rows ``idx`` of the leading axis (pairs, or groups of a stack)."""
    return jax.tree.map(lambda a: a[idx], self)

  def pairs(self, start: int, stop: int) -> "TaskData":
    """Pairs start..stop (the pair axis is the one before the 2 sequences)."""
    b = self.batch
    cut = lambda a, tail: a[(Ellipsis, slice(start, stop)) + (slice(None),) * tail]
    return TaskData(TaskBatch(cut(b.tokens, 2), cut(b.last, 1), cut(b.correct, 1), cut(b.alt, 1)),
                    None if self.rms is None else cut(self.rms, 1))

  def trim(self, length: int) -> "TaskData":
    """Tokens cut to ``length`` positions (see :func:`needed_length`)."""
    return dataclasses.replace(self, batch=dataclasses.replace(
        self.batch, tokens=self.batch.tokens[..., :length]))

  def needed_length(self) -> int:
    return needed_length(np.asarray(self.batch.last), self.seq_len)

  def with_labels(self, correct, alt) -> "TaskData":
    return dataclasses.replace(self, batch=dataclasses.replace(self.batch, correct=correct,
                                                               alt=alt))


def stack(items: list) -> Any:
  """Stacks equal-shaped pytrees (TaskData, masks, edge tables) along a new leading axis."""
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *items)


def to_device(tree):
  return jax.tree.map(jnp.asarray, tree)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EdgeMask:
  """Edges of a circuit and which of them are kept (the others are mean-ablated)."""

  table: edges_lib.EdgeTable
  keep: Any  # float (E,) over the table's flat order


class CircuitModel:
  """The frozen model of a run, its node layout and ablation values, and jitted functions of
  circuits on it. ``input_means`` (slot → row means of the slot's matrix input) enables edges."""

  def __init__(self, graphdef, params, buffers, cfg, values, input_means: dict | None = None):
    if cfg.grad_checkpointing:
      # Masks are learned by differentiating through activations only (the weights are frozen):
      # rematerialisation inherited from training would add ~49 % FLOPs for memory a mask learner
      # rarely needs (members per call are planned from XLA's memory estimate instead).
      cfg = dataclasses.replace(cfg, grad_checkpointing=False)
      graphdef = with_config(graphdef, params, buffers, grad_checkpointing=False)
    self.cfg = cfg
    self.layout = masks.NodeLayout.for_model(cfg)
    self.graphdef, self.params, self.buffers = graphdef, params, buffers
    self.values = jnp.asarray(values)
    self.input_means = None if input_means is None else {k: jnp.asarray(v)
                                                          for k, v in input_means.items()}
    self.edge_graphdef, self.edge_params = edges_lib.with_biases(graphdef, params, cfg)
    self.margins_fn = jax.jit(jax.vmap(self._margins, in_axes=(None, 0, 0, 0)))
    self.node_grad_fn = jax.jit(jax.vmap(jax.grad(self._loss, argnums=2),
                                         in_axes=(None, 0, 0, 0)))
    self.edge_grad_fn = jax.jit(jax.vmap(jax.grad(self._edge_loss, argnums=4),
                                         in_axes=(None, 0, 0, 0, 0)))

  @property
  def shared(self):
    """What every call shares (passed as an argument: not baked into the compiled program)."""
    return (self.params, self.buffers, self.values, self.edge_params, self.input_means)

  def margins(self, shared, data: TaskData, node_mask, edge_mask: EdgeMask | None):
    """(P, 2) margins of one circuit on one task's pairs (pure; vmap over circuits)."""
    params, buffers, values, edge_params, input_means = shared
    graphdef = self.graphdef
    if edge_mask is not None:
      graphdef = self.edge_graphdef
      params = edges_lib.ablate_edges(edge_params, edge_mask.table, edge_mask.keep, input_means,
                                      self.cfg)
    return masks.circuit_margins(graphdef, params, buffers, self.layout, node_mask, values, data)

  def node_member_loss(self, mask, shared, extra, batch):
    """A mask learner's task loss over node masks (``extra`` unused): for
    :class:`sparsejax.circuits.search.PopulationTrainer`."""
    del extra
    return masks.task_loss(self.margins(shared, batch, mask, None))

  def edge_member_loss(self, keep, shared, extra, batch):
    """A mask learner's task loss over edge keeps; ``extra`` = (node mask, EdgeTable)."""
    node_mask, table = extra
    return masks.task_loss(self.margins(shared, batch, node_mask, EdgeMask(table, keep)))

  def _margins(self, shared, data, node_mask, edge_mask):
    return self.margins(shared, data, node_mask, edge_mask)

  def _loss(self, shared, data, node_mask, edge_mask):
    return masks.task_loss(self.margins(shared, data, node_mask, edge_mask))

  def _edge_loss(self, shared, data, node_mask, table, keep):
    return masks.task_loss(self.margins(shared, data, node_mask, EdgeMask(table, keep)))

  def margins_queue(self, chunk: int = 16) -> "EvalQueue":
    """Requests (data, node_mask, edge_mask or None) → margins (P, 2)."""
    return EvalQueue(lambda d, m, e: self.margins_fn(self.shared, d, m, e), chunk)

  def node_grad_queue(self, chunk: int = 16) -> "EvalQueue":
    """Requests (data, node_mask, edge_mask or None) → ∂ task loss / ∂ node mask (n_nodes,)."""
    return EvalQueue(lambda d, m, e: self.node_grad_fn(self.shared, d, m, e), chunk)

  def edge_grad_queue(self, chunk: int = 16) -> "EvalQueue":
    """Requests (data, node_mask, edge_mask) → ∂ task loss / ∂ edge keep (E,)."""
    return EvalQueue(lambda d, m, e: self.edge_grad_fn(self.shared, d, m, e.table, e.keep),
                     chunk)


  # ---------------------------------------------------------------- callbacks for the searches
  def loss_evaluator(self, datas: list, *, calibrated: bool = False, node_masks=None,
                     tables: list | None = None):
    """``evaluate(masks (S, N), members (S,)) -> loss (S,)`` on member i's pairs ``datas[i]``,
    through one queue per call. Without ``tables`` the masks are node masks; with them they are
    edge keeps of member i's table ``tables[i]`` inside its node circuit ``node_masks[i]``.
    ``calibrated``: the loss after fitting the logit scale + shift on the same pairs."""

    def evaluate(masks_SN, members):
      q = self.margins_queue()
      for m, i in zip(np.asarray(masks_SN), np.asarray(members)):
        if tables is None:
          q.add(datas[i], m, None)
        else:
          q.add(datas[i], node_masks[i], EdgeMask(tables[i], m))
      margins = q.run()
      if calibrated:
        return calibration.calibrated_losses(margins)[0]
      return np.asarray([calibration.numpy_loss(z) for z in margins])

    return evaluate

  def removal_estimator(self, datas: list, *, node_masks=None, tables: list | None = None):
    """``estimate(masks (S, N), members) -> (S, N)``: the first-order estimate −∂L/∂m_i of the
    loss change when unit i is removed (nodes, or edges with ``tables`` as above)."""

    def estimate(masks_SN, members):
      q = self.node_grad_queue() if tables is None else self.edge_grad_queue()
      for m, i in zip(np.asarray(masks_SN), np.asarray(members)):
        if tables is None:
          q.add(datas[i], m, None)
        else:
          q.add(datas[i], node_masks[i], EdgeMask(tables[i], m))
      return -np.stack(q.run())

    return estimate


def _signature(tree) -> tuple:
  leaves, treedef = jax.tree.flatten(tree)
  return (str(treedef),) + tuple(np.shape(x) for x in leaves)


class EvalQueue:
  """Collects requests ``(data: TaskData, *inputs)`` and runs them through ``fn(data_R, *inputs_R)``
  (vmapped over R) in chunks of at most ``chunk``: requests with the same shapes (pairs, mask and
  table sizes) are sorted by the sequence length they need and each chunk's tokens are cut to it.
  A chunk is padded (by repeating a request) to ``chunk`` / 4 or ``chunk``: at most two compiles
  per shape and length, and little padded work when a few requests are left (a bisection's later
  rounds).
  """

  def __init__(self, fn: Callable, chunk: int = 16):
    self.fn, self.chunk, self.requests = fn, chunk, []

  def add(self, data: TaskData, *inputs) -> int:
    self.requests.append((data, inputs))
    return len(self.requests) - 1

  def __len__(self) -> int:
    return len(self.requests)

  def run(self) -> list:
    """Outputs in request order (NumPy); the queue is empty afterwards."""
    out: list = [None] * len(self.requests)
    by_shape: dict[tuple, list[int]] = {}
    need = []
    for i, (data, inputs) in enumerate(self.requests):
      key = (data.n_pairs, data.rms is None, _signature(inputs))
      by_shape.setdefault(key, []).append(i)
      need.append(data.needed_length())
    for ids in by_shape.values():
      ids = sorted(ids, key=lambda i: need[i])
      for start in range(0, len(ids), self.chunk):
        part = ids[start:start + self.chunk]
        size = next(c for c in (max(1, self.chunk // 4), self.chunk) if c >= len(part))
        rows = part + [part[-1]] * (size - len(part))
        length = max(need[i] for i in part)
        data = stack([self.requests[i][0].trim(length) for i in rows])
        inputs = [stack([self.requests[i][1][j] for i in rows])
                  for j in range(len(self.requests[rows[0]][1]))]
        result = jax.tree.map(np.asarray, self.fn(to_device(data), *map(to_device, inputs)))
        for j, i in enumerate(part):
          out[i] = jax.tree.map(lambda a: a[j], result)
    self.requests = []
    return out


@dataclasses.dataclass
class TaskGroups:
  """The task groups masks are learned on: the tasks, then (with controls) their shuffled-label
  copies; ``splits[g]`` holds group g's "train" / "val" / "test" TaskData."""

  names: list[str]  # the tasks
  splits: list[dict[str, TaskData]]  # per group: tasks first, then their controls
  full_val_loss: list[float]  # the full model's val loss per task

  @property
  def n_tasks(self) -> int:
    return len(self.names)

  def control_of(self, t: int) -> int:
    """The group of task t's control."""
    return self.n_tasks + t

  def stacked(self, split: str) -> TaskData:
    return stack([g[split] for g in self.splits])
