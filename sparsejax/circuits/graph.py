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
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

import numpy as np

from sparsejax.model.config import GPTConfig
from sparsejax.utils.files import atomic_write

SCHEMA = "sparsejax.circuit/v1"
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
    return len(self.edges)

  def to_dict(self) -> dict:
    return {"schema": SCHEMA, "task": self.task,
            "counts": {"nodes": self.n_nodes, "edges": self.n_edges,
                       "nodes_by_site": {s: len(v) for s, v in self.nodes.items() if v}},
            "nodes": {s: list(map(int, v)) for s, v in self.nodes.items() if v},
            "edges": self.edges, "residual_links": self.residual_links,
            "metrics": self.metrics, "info": self.info}

  @classmethod
  def from_dict(cls, d: dict) -> "Circuit":
    if d.get("schema") != SCHEMA:
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


def _pairs(w: np.ndarray, rows: list[int], cols: list[int], col_offset: int = 0):
  """Nonzero entries of w[rows, col_offset + cols] as (row, col, value)."""
  if not rows or not cols:
    return []
  sub = np.asarray(w)[np.ix_(rows, [col_offset + c for c in cols])]
  r, c = np.nonzero(sub)
  return [(rows[i], cols[j], float(sub[i, j])) for i, j in zip(r, c)]


def find_edges(nodes: dict[str, list[int]], params: dict, cfg: GPTConfig):
  """(edges, residual_links) of kept nodes; ``params`` is the model's pure param dict."""
  A = cfg.attn_dim
  edges = []

  def add(src, dst, entries):
    edges.extend({"src": src, "src_index": int(i), "dst": dst, "dst_index": int(j),
                  "weight": float(v)} for i, j, v in entries)

  get = lambda s: sorted(nodes.get(s, []))
  for layer in range(cfg.n_layer):
    blk = params["blocks"][layer]
    c_attn = np.asarray(blk["attn"]["c_attn"]["kernel"])
    for part, off in (("q", 0), ("k", A), ("v", 2 * A)):
      add(f"{layer}.attn.act_in", f"{layer}.attn.{part}",
          _pairs(c_attn, get(f"{layer}.attn.act_in"), get(f"{layer}.attn.{part}"), off))
    add(f"{layer}.attn.v", f"{layer}.attn.resid_delta",
        _pairs(np.asarray(blk["attn"]["c_proj"]["kernel"]), get(f"{layer}.attn.v"),
               get(f"{layer}.attn.resid_delta")))
    add(f"{layer}.mlp.act_in", f"{layer}.mlp.post_act",
        _pairs(np.asarray(blk["mlp"]["c_fc"]["kernel"]), get(f"{layer}.mlp.act_in"),
               get(f"{layer}.mlp.post_act")))
    add(f"{layer}.mlp.post_act", f"{layer}.mlp.resid_delta",
        _pairs(np.asarray(blk["mlp"]["c_proj"]["kernel"]), get(f"{layer}.mlp.post_act"),
               get(f"{layer}.mlp.resid_delta")))
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


def geometric_mean_edges(circuits: list[Circuit]) -> float | None:
  """The paper's headline metric: geometric mean over tasks of the edge count (a circuit with
  zero edges counts as 1, so one trivially solved task cannot make the mean zero)."""
  if not circuits:
    return None
  return float(math.exp(np.mean([math.log(max(c.n_edges, 1)) for c in circuits])))
