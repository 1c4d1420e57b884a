"""Edges of a circuit as arrays, and edge ablation as a parameter transform of the model.

An **edge** is a nonzero weight entry between two kept nodes along one of the model's own matrices
(paper §2, fn. 3). Per layer L there are four *slots*, one per matrix:

  ``L.attn.c_attn``  ``L.attn.act_in`` → ``L.attn.q|k|v``     (columns offset by 0, A, 2A)
  ``L.attn.c_proj``  ``L.attn.v``      → ``L.attn.resid_delta`` (row j: head output channel j, the
                                                                  attention average of v channel j)
  ``L.mlp.c_fc``     ``L.mlp.act_in``  → ``L.mlp.post_act``
  ``L.mlp.c_proj``   ``L.mlp.post_act`` → ``L.mlp.resid_delta``

**Edge ablation** is mean ablation of one weight's contribution: output j of a matrix computes
Σ_i w_ij x_i + b_j; a removed edge (i, j) contributes w_ij · μ_i instead of w_ij · x_i, where μ_i is
the pretraining mean of the source node i — the same value node ablation gives it. As a transform
of the parameters:

  W'_ij = W_ij · keep_ij,      b'_j = b_j + Σ_i (1 − keep_ij) · W_ij · μ_i

so the forward pass is the model's own, jit-compiled, with transformed parameters (differentiable
in keep, which is how edge masks are learned). It is consistent with node ablation: removing every
edge out of a node gives its targets the inputs they get when the node is mean-ablated (for a v
channel: the head's output channel is then the attention average of a constant, the constant
itself — exactly so without attention sinks); removing every edge into q, k, v or an MLP
resid_delta (linear in their inputs, without AbsTopK) makes it the constant E[node], its mean.
(Not for an attention resid_delta: its inputs are head outputs, whose mean is not v's.) Models
without biases get zero biases added (:func:`with_biases`), which changes nothing until an edge is
removed.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparsejax.model.config import GPTConfig
from sparsejax.model.gpt import GPT

PAD = 32  # slot capacities are rounded up to this (few distinct shapes: few compiles)


class Slot(NamedTuple):
  """One matrix whose nonzero entries between kept nodes are edges."""

  name: str  # "L.attn.c_attn" | "L.attn.c_proj" | "L.mlp.c_fc" | "L.mlp.c_proj"
  layer: int
  module: str  # "attn" | "mlp"
  linear: str  # "c_attn" | "c_proj" | "c_fc"
  src: str  # node site of the rows (its node means replace a removed edge's input)
  dsts: tuple[tuple[str, int], ...]  # (node site, column offset) of the columns


def slots(cfg: GPTConfig) -> tuple[Slot, ...]:
  """Every slot of a model, in forward order."""
  A = cfg.attn_dim
  out = []
  for L in range(cfg.n_layer):
    out += [
        Slot(f"{L}.attn.c_attn", L, "attn", "c_attn", f"{L}.attn.act_in",
             ((f"{L}.attn.q", 0), (f"{L}.attn.k", A), (f"{L}.attn.v", 2 * A))),
        Slot(f"{L}.attn.c_proj", L, "attn", "c_proj", f"{L}.attn.v",
             ((f"{L}.attn.resid_delta", 0),)),
        Slot(f"{L}.mlp.c_fc", L, "mlp", "c_fc", f"{L}.mlp.act_in", ((f"{L}.mlp.post_act", 0),)),
        Slot(f"{L}.mlp.c_proj", L, "mlp", "c_proj", f"{L}.mlp.post_act",
             ((f"{L}.mlp.resid_delta", 0),)),
    ]
  return tuple(out)


def kernel(params, slot: Slot):
  return params["blocks"][slot.layer][slot.module][slot.linear]["kernel"]


@dataclasses.dataclass(frozen=True)
class Edge:
  """One edge: matrix entry (row, col) of ``slot``, from node src[src_index] to dst[dst_index]."""

  slot: str
  row: int
  col: int
  src: str
  src_index: int
  dst: str
  dst_index: int
  weight: float

  @property
  def key(self) -> tuple[str, int, int]:
    """(slot, row, col): the matrix entry, the same in any circuit that has this edge."""
    return (self.slot, self.row, self.col)


def circuit_edges(nodes: dict[str, list[int]], params, cfg: GPTConfig) -> list[Edge]:
  """Every nonzero weight between kept nodes (the paper-comparable edges), slot by slot."""
  out = []
  for slot in slots(cfg):
    rows = sorted(nodes.get(slot.src, []))
    if not rows:
      continue
    w = np.asarray(kernel(params, slot))
    for dst, off in slot.dsts:
      cols = sorted(nodes.get(dst, []))
      if not cols:
        continue
      sub = w[np.ix_(rows, [off + c for c in cols])]
      for i, j in zip(*np.nonzero(sub)):
        out.append(Edge(slot.name, rows[i], off + cols[j], slot.src, rows[i], dst, cols[j],
                        float(sub[i, j])))
  return out


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EdgeTable:
  """A set of edges as padded index arrays per slot (a pytree: stackable, vmappable).

  A flat vector over the table's edges (a mask, τ) runs slot by slot in ``sorted(rows)`` order,
  each slot's part as long as its capacity; padding entries have ``valid`` 0 and no effect.
  """

  rows: dict  # slot name → int32 (E_s,)
  cols: dict  # slot name → int32 (E_s,)
  valid: dict  # slot name → float32 (E_s,)

  @property
  def slot_names(self) -> list[str]:
    return sorted(self.rows)

  @property
  def size(self) -> int:
    """Capacity: the length of a flat vector over this table."""
    return sum(self.rows[s].shape[-1] for s in self.slot_names)

  def slot_ranges(self) -> dict[str, tuple[int, int]]:
    """{slot: (start, stop)} of each slot's part of a flat vector."""
    out, off = {}, 0
    for s in self.slot_names:
      n = self.rows[s].shape[-1]
      out[s] = (off, off + n)
      off += n
    return out

  def flat_valid(self):
    return jnp.concatenate([jnp.asarray(self.valid[s]) for s in self.slot_names], axis=-1)

  @classmethod
  def build(cls, edges: list[Edge], capacity: dict[str, int]) -> "EdgeTable":
    """The table of ``edges`` padded to ``capacity`` (slot → entries; every slot listed)."""
    rows, cols, valid = {}, {}, {}
    for s, cap in capacity.items():
      mine = [e for e in edges if e.slot == s]
      if len(mine) > cap:
        raise ValueError(f"slot {s}: {len(mine)} edges exceed its capacity {cap}")
      rows[s] = np.zeros(cap, np.int32)
      cols[s] = np.zeros(cap, np.int32)
      valid[s] = np.zeros(cap, np.float32)
      rows[s][:len(mine)] = [e.row for e in mine]
      cols[s][:len(mine)] = [e.col for e in mine]
      valid[s][:len(mine)] = 1.0
    return cls(rows, cols, valid)


def capacity_for(edge_lists: list[list[Edge]], cfg: GPTConfig) -> dict[str, int]:
  """Per-slot capacity that fits every list, rounded up to :data:`PAD` (at least PAD)."""
  cap = {}
  for slot in slots(cfg):
    n = max([sum(e.slot == slot.name for e in edges) for edges in edge_lists] + [1])
    cap[slot.name] = -(-n // PAD) * PAD
  return cap


def flat_index(table_edges: list[Edge], capacity: dict[str, int]) -> list[int]:
  """Position of each edge of ``table_edges`` (as given to :meth:`EdgeTable.build`) in the flat
  vector of its table."""
  offsets, off = {}, 0
  for s in sorted(capacity):
    offsets[s] = off
    off += capacity[s]
  seen: dict[str, int] = {}
  out = []
  for e in table_edges:
    out.append(offsets[e.slot] + seen.get(e.slot, 0))
    seen[e.slot] = seen.get(e.slot, 0) + 1
  return out


def _replace(tree: dict, path: tuple, value) -> dict:
  """A copy of nested dicts ``tree`` with ``tree[path]`` replaced (only the path is copied)."""
  out = dict(tree)
  out[path[0]] = value if len(path) == 1 else _replace(tree[path[0]], path[1:], value)
  return out


def ablate_edges(params, table: EdgeTable, keep_E, input_means: dict, cfg: GPTConfig):
  """Parameters with the table's edges where ``keep_E`` is 0 mean-ablated (see the module doc):
  W'_ij = W_ij − drop · W_ij, b'_j = b_j + drop · W_ij · μ_i with drop = (1 − keep) · valid.

  ``params`` must have biases on the four matrices (:func:`with_biases`); ``input_means`` maps a
  slot name to the means of its source nodes (its rows). Pure and differentiable in ``keep_E``."""
  by_name = {s.name: s for s in slots(cfg)}
  off = 0
  for name in table.slot_names:
    rows, cols = table.rows[name], table.cols[name]
    n = rows.shape[-1]
    drop = (1.0 - keep_E[off:off + n]) * table.valid[name]
    off += n
    slot = by_name[name]
    path = ("blocks", slot.layer, slot.module, slot.linear)
    lin = params["blocks"][slot.layer][slot.module][slot.linear]
    w = lin["kernel"][rows, cols]
    new = {"kernel": lin["kernel"].at[rows, cols].add(-drop * w),
           "bias": lin["bias"].at[cols].add(drop * w * input_means[name][rows])}
    params = _replace(params, path, dict(lin, **new))
  return params


def with_biases(graphdef, params, cfg: GPTConfig):
  """(graphdef, params) of the same model with zero biases on the four edge matrices when it has
  none (so removed edges have somewhere to put their mean); unchanged when it has them."""
  if cfg.bias:
    return graphdef, params
  biased = dataclasses.replace(cfg, bias=True)
  model = nnx.eval_shape(lambda: GPT(biased, rngs=nnx.Rngs(0)))
  graphdef_b, _, _ = nnx.split(model, nnx.Param, ...)
  for slot in slots(cfg):
    lin = params["blocks"][slot.layer][slot.module][slot.linear]
    if "bias" not in lin:
      params = _replace(params, ("blocks", slot.layer, slot.module, slot.linear),
                        dict(lin, bias=jnp.zeros(lin["kernel"].shape[1], jnp.float32)))
  return graphdef_b, params
