"""Edge-level pruning: which weights between a circuit's kept nodes it actually needs.

A node circuit's *paper-comparable* edges are all nonzero weights between its kept nodes (the
paper's count). Most of them carry little: edge pruning learns a mask over them, exactly as node
pruning does over nodes — one τ per edge, m = H(τ) with the sigmoid-derivative surrogate,
objective task loss + k_coef · Σ H(τ) — where a removed edge contributes its mean
(:func:`sparsejax.circuits.edges.ablate_edges`, a parameter transform inside the jitted forward
pass) and the node mask stays fixed. The edges are then ranked by τ, the smallest top-k set that
reaches the target loss is bisected on held-out pairs, and the greedy clean-up
(:mod:`sparsejax.circuits.cleanup`) removes what is left to remove. The result is the circuit's
**essential edges**.

All circuits (every task and its shuffled-label control) learn their edge masks in one vmapped
population (:class:`sparsejax.circuits.search.PopulationTrainer`), each with its own padded
:class:`~sparsejax.circuits.edges.EdgeTable`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from sparsejax.circuits import masks
from sparsejax.circuits import search
from sparsejax.circuits.edges import Edge, EdgeTable, capacity_for, flat_index
from sparsejax.circuits.evaluate import CircuitModel, TaskData, stack
from sparsejax.circuits.population import Population


@dataclasses.dataclass
class EdgeSets:
  """Edge tables of many node circuits, padded to common capacities (one compiled shape)."""

  edges: list[list[Edge]]  # per circuit: its paper-comparable edges
  tables: list[EdgeTable]  # per circuit, padded
  index: list[np.ndarray]  # per circuit: flat position of each edge in its table
  size: int  # flat length of every table

  @classmethod
  def build(cls, edge_lists: list[list[Edge]], cfg) -> "EdgeSets":
    cap = capacity_for(edge_lists, cfg)
    tables = [EdgeTable.build(e, cap) for e in edge_lists]
    index = [np.asarray(flat_index(e, cap), np.int64) for e in edge_lists]
    return cls(edge_lists, tables, index, sum(cap.values()))

  def keep_all(self, i: int) -> np.ndarray:
    """The flat keep vector of circuit i with every edge kept (its paper-comparable circuit)."""
    keep = np.zeros(self.size, np.float32)
    keep[self.index[i]] = 1.0
    return keep

  def keep_of(self, i: int, chosen) -> np.ndarray:
    """Flat keep vector of circuit i keeping its edges ``chosen`` (indices into edges[i])."""
    keep = np.zeros(self.size, np.float32)
    keep[self.index[i][np.asarray(chosen, np.int64)]] = 1.0
    return keep

  def chosen(self, i: int, keep) -> np.ndarray:
    """Indices into edges[i] of the edges a flat keep vector keeps."""
    return np.nonzero(np.asarray(keep)[self.index[i]] > 0)[0]

  def valid(self) -> np.ndarray:
    return np.stack([self.keep_all(i) for i in range(len(self.tables))])


def learn_edge_masks(model: CircuitModel, sets: EdgeSets, node_masks: np.ndarray,
                     data: TaskData, group: np.ndarray, hypers: masks.Hypers, seeds: np.ndarray,
                     settings: search.TrainSettings,
                     progress: Callable[[str], None] = lambda _: None) -> np.ndarray:
  """τ over every circuit's edge table (M, E) after ``settings.steps`` steps. Circuit i keeps
  ``node_masks[i]`` and trains on task group ``group[i]`` of the stacked ``data``."""
  M = len(sets.tables)
  pop = Population(hypers, np.asarray(group, np.int32), np.arange(M, dtype=np.int32),
                   np.zeros(M, np.int32), np.asarray(seeds, np.int64))

  extra = (np.asarray(node_masks, np.float32), stack(sets.tables))
  trainer = search.PopulationTrainer(model.edge_member_loss, model.shared, data, pop.group, extra,
                                     sets.valid(), settings, progress, label="edges")
  state = search.init_state(pop, sets.size)
  state, _, _ = search.run_rounds(trainer, state, pop, rounds=1)
  return state[0]
