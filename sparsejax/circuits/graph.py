"""Circuits: the kept nodes of a pruned model, the nonzero weights between them, and JSON I/O.

Edges are the nonzero weight entries connecting two kept nodes along the model's own matrices
(paper §2, fn. 3; the official viewer's pairs):

  ``{L}.attn.act_in`` → ``{L}.attn.q|k|v``    through c_attn        (one entry per edge)
  ``{L}.attn.v``      → ``{L}.attn.resid_delta`` through attention c_proj (v channel j feeds output
                                                  channel j of its head, then c_proj row j)
  ``{L}.mlp.act_in``  → ``{L}.mlp.post_act``  through c_fc
  ``{L}.mlp.post_act`` → ``{L}.mlp.resid_delta`` through MLP c_proj

Not counted as edges (this matches the paper's 12-node / 9-edge string-closing circuit): the q·k
interaction inside a head, residual-stream links from a write (``resid_delta`` channel c) to later
reads (``act_in`` channel c) — these are identities, listed separately as ``residual_links`` —
and embedding / unembedding entries. Weights are the raw kernel entries (norm gains not folded).

After edge pruning (:mod:`sparsejax.circuits.edge_pruning`) every edge carries ``essential``:
whether the circuit needs it to stay at the target loss. ``counts.edges`` stays the
paper-comparable count (every edge); ``counts.essential_edges`` counts the essential ones, and
``counts.essential_nodes`` the nodes they touch. Schema v2 adds these; v1 files (no edge pruning) still load.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

import numpy as np

from sparsejax.circuits.edges import circuit_edges
from sparsejax.model.config import GPTConfig
from sparsejax.utils.files import atomic_write

SCHEMA = "sparsejax.circuit/v2"
READABLE = ("sparsejax.circuit/v1", SCHEMA)
_SITE = re.compile(r"^(\d+)\.(attn|mlp)\.(\w+)$")


@dataclasses.dataclass
class Circuit:
  """A task's circuit. ``nodes`` maps official site names to sorted kept indices."""

  task: str
  nodes: dict[str, list[int]]
  edges: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  residual_links: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  metrics: dict[str, Any] = dataclasses.field(default_factory=dict)  # losses, controls, ...
  info: dict[str, Any] = dataclasses.field(default_factory=dict)  # hyperparameters, model, ...

  @property
  def n_nodes(self) -> int:
    return sum(len(v) for v in self.nodes.values())

  @property
  def n_edges(self) -> int:
    """Paper-comparable: every nonzero weight between kept nodes."""
    return len(self.edges)

  @property
  def edge_pruned(self) -> bool:
    return bool(self.info.get("edge_pruned", any("essential" in e for e in self.edges)))

  @property
  def essential(self) -> list[dict[str, Any]]:
    """The essential edges (every edge when the circuit was not edge-pruned)."""
    return [e for e in self.edges if e.get("essential", True)]

  @property
  def n_essential_edges(self) -> int:
    return len(self.essential)

  @property
  def n_essential_nodes(self) -> int:
    """Nodes an essential edge touches (every node when the circuit was not edge-pruned)."""
    if not self.edge_pruned:
      return self.n_nodes
    return len({(e[a], e[f"{a}_index"]) for e in self.essential for a in ("src", "dst")})

  def to_dict(self) -> dict:
    return {"schema": SCHEMA, "task": self.task,
            "counts": {"nodes": self.n_nodes, "edges": self.n_edges,
                       "essential_edges": self.n_essential_edges,
                       "essential_nodes": self.n_essential_nodes,
                       "nodes_by_site": {s: len(v) for s, v in self.nodes.items() if v}},
            "nodes": {s: list(map(int, v)) for s, v in self.nodes.items() if v},
            "edges": self.edges, "residual_links": self.residual_links,
            "metrics": self.metrics, "info": self.info}

  @classmethod
  def from_dict(cls, d: dict) -> "Circuit":
    if d.get("schema") not in READABLE:
      raise ValueError(f"not a {SCHEMA} circuit (schema {d.get('schema')!r})")
    c = cls(d["task"], {s: list(v) for s, v in d["nodes"].items()}, list(d["edges"]),
            list(d.get("residual_links", [])), dict(d.get("metrics", {})), dict(d.get("info", {})))
    if c.n_nodes != d["counts"]["nodes"] or c.n_edges != d["counts"]["edges"]:
      raise ValueError(f"circuit {c.task}: counts do not match its nodes / edges")
    return c

  def save(self, path: str) -> None:
    atomic_write(path, json.dumps(self.to_dict(), indent=1, default=_json_default))

  @classmethod
  def load(cls, path: str) -> "Circuit":
    with open(path) as f:
      return cls.from_dict(json.load(f))


def _json_default(x):
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating,)):
    return float(x)
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def find_edges(nodes: dict[str, list[int]], params: dict, cfg: GPTConfig):
  """(edges, residual_links) of kept nodes; ``params`` is the model's pure param dict."""
  edges = [{"src": e.src, "src_index": e.src_index, "dst": e.dst, "dst_index": e.dst_index,
            "weight": e.weight} for e in circuit_edges(nodes, params, cfg)]
  get = lambda s: sorted(nodes.get(s, []))
  # Residual links: a write at sublayer s, channel c, reaches every later read of channel c.
  order = [(layer, kind) for layer in range(cfg.n_layer) for kind in ("attn", "mlp")]
  links = []
  for i, (wl, wk) in enumerate(order):
    for c in get(f"{wl}.{wk}.resid_delta"):
      for rl, rk in order[i + 1:]:
        if c in nodes.get(f"{rl}.{rk}.act_in", []):
          links.append({"src": f"{wl}.{wk}.resid_delta", "dst": f"{rl}.{rk}.act_in",
                        "index": int(c)})
  return edges, links


def geometric_mean(counts) -> float | None:
  """Geometric mean of counts, a zero counting as 1 (so one trivially solved task cannot make the
  mean zero); None for no counts."""
  counts = list(counts)
  if not counts:
    return None
  return float(math.exp(np.mean([math.log(max(int(c), 1)) for c in counts])))


def geometric_mean_edges(circuits: list[Circuit], essential: bool = False) -> float | None:
  """The paper's headline metric: geometric mean over tasks of the edge count; with
  ``essential``, of the essential edges."""
  return geometric_mean(c.n_essential_edges if essential else c.n_edges for c in circuits)
