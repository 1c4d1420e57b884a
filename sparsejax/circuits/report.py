"""The pruning summary: one row per circuit, the headline geometric means first, and its table.

Two edge counts per circuit: ``edges`` — every nonzero weight between kept nodes, the count the
paper reports (comparable with its figures) — and ``essential_edges`` — the edges the circuit needs
to stay at the target loss (:mod:`sparsejax.circuits.edge_pruning`). The summary leads with the
geometric mean over tasks of both (a circuit with no edges counts as 1).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sparsejax.circuits.graph import Circuit, geometric_mean, geometric_mean_edges
from sparsejax.tasks.evaluation import solved

ROW_KEYS = ("loss", "loss_calibrated", "full_model_loss", "inverse_loss",
            "random_circuit_loss_mean", "control")


def summary(circuits: dict[str, Circuit], unsolved: dict, cfg, run_dir: str, step: int,
            **extra: Any) -> dict:
  rows = {}
  for name, c in circuits.items():
    m = c.metrics
    row = {"nodes": c.n_nodes, "edges": c.n_edges, "essential_edges": c.n_essential_edges,
           "essential_nodes": c.n_essential_nodes}
    row |= {k: m.get(k) for k in ROW_KEYS}
    if "essential" in m:
      row["essential"] = {k: m["essential"].get(k) for k in ROW_KEYS if k != "full_model_loss"}
    if "bisected" in m:
      row["bisected_nodes"] = m["bisected"]["nodes"]
    # The search stops at the target on the validation pairs; the test pairs may disagree.
    if m.get("loss") is not None:
      row["meets_target_on_test"] = solved({"test": m["loss"]}, cfg.target_loss).solved
    rows[name] = row
  out = {"geometric_mean_edges": geometric_mean_edges(list(circuits.values())),
         "geometric_mean_essential_edges": geometric_mean_edges(list(circuits.values()),
                                                                essential=True),
         "geometric_mean_nodes": geometric_mean(c.n_nodes for c in circuits.values()),
         "tasks": rows, "unsolved": unsolved,
         "misses_target_on_test": [n for n, r in rows.items()
                                   if r.get("meets_target_on_test") is False]}
  out |= extra
  out |= {"config": dataclasses.asdict(cfg), "run": run_dir, "step": step}
  return out


def _fmt(x) -> str:
  return f"{x:.3f}" if isinstance(x, (int, float)) else "-"


def format_summary(s: dict) -> str:
  """The summary as a table (what the binaries print)."""
  lines = [f"{'task':<28} {'nodes':>6} {'edges':>6} {'essent':>6} {'loss':>7} {'calib':>7} "
           f"{'full':>7} {'inverse':>8} {'random':>7} {'ess.loss':>8} {'ess.inv':>8} "
           f"{'ess.rand':>8} {'control(train/test)':>20}"]
  for name, r in s["tasks"].items():
    ctrl = r.get("control")
    ctrl_s = (f"{ctrl['loss_train']:.3f}/{ctrl['loss_test']:.3f}"
              + (" SOLVES" if ctrl["solves_train"] else "")) if ctrl else "-"
    e = r.get("essential") or {}
    lines.append(f"{name:<28} {r['nodes']:>6} {r['edges']:>6} {r['essential_edges']:>6} "
                 f"{_fmt(r['loss']):>7} {_fmt(r['loss_calibrated']):>7} "
                 f"{_fmt(r['full_model_loss']):>7} {_fmt(r['inverse_loss']):>8} "
                 f"{_fmt(r['random_circuit_loss_mean']):>7} {_fmt(e.get('loss')):>8} "
                 f"{_fmt(e.get('inverse_loss')):>8} {_fmt(e.get('random_circuit_loss_mean')):>8} "
                 f"{ctrl_s:>20}")
  missed = s.get("misses_target_on_test") or []
  if missed:
    target = s["config"]["target_loss"]
    lines.append(f"over the target ({target:g}) on its test pairs, though at it on validation: "
                 + ", ".join(f"{n} ({s['tasks'][n]['loss']:.3f})" for n in missed))
  for name, u in s["unsolved"].items():
    verdict = solved({"val": u["full_model_loss_val"], "test": u["full_model_loss_test"]},
                     s["config"]["target_loss"])
    lines.append(f"{name:<28} the full model is {verdict}")
  # Trivially solvable tasks are left out of the headline (sparsejax.circuits.faithfulness).
  n = len(s["tasks"]) - len(s.get("headline_excludes", ()))
  if n:
    lines.append(f"geometric mean over {n} circuits: edges "
                 f"{s['geometric_mean_edges']:.1f} (paper-comparable), essential edges "
                 f"{s['geometric_mean_essential_edges']:.1f}, nodes "
                 f"{s['geometric_mean_nodes']:.1f}")
  elif s["tasks"]:
    lines.append(f"no circuit left for the headline (every task trivially solvable); over all "
                 f"{len(s['tasks'])}: edges {s['geometric_mean_edges_all_circuits']:.1f} "
                 f"(paper-comparable), essential edges "
                 f"{s['geometric_mean_essential_edges_all_circuits']:.1f}")
  else:
    lines.append("no circuits")
  return "\n".join(lines)
