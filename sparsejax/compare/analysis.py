"""The numbers of the comparison, from the members' losses, sizes and circuits (pure functions).

**Averaging over tasks.** Circuit sizes are averaged geometrically over tasks (the paper's
headline metric), a zero counting as 1. Every member is averaged over the *same* tasks: those
every member reaches at the target (``tasks_reached``), and among them those no member's circuit
is flagged on (``tasks_clean``). The headline uses the clean tasks; the numbers over all reached
tasks are reported next to it ("with failures").

**Search failures** (flags on one member's circuit for one task at one target):

* ``misses_target_on_test``: the circuit, sized on held-out val pairs, has test loss above
  ``target · (1 + miss_tolerance)``.
* ``random_reaches_target``: random circuits with the same nodes per site already reach the
  target on test, so the search kept far more than the task needs (the issue's var_if case: a
  3,540-node dense circuit where a random one of that size does as well).

A target the full model itself misses on val is *unreached* for that member (no circuit), which
removes the task at that target for everyone, but is not a failure.

**Matched pretraining loss.** A sparse member is compared with the dense family at its own
held-out loss L. The dense members, ordered by total params N, define piecewise-linear curves of
loss and of log(circuit size) in log N; the first segment whose losses bracket L gives log N* by
linear interpolation, and the dense circuit size at N* by the same interpolation in log N
(a dense model with exactly loss L is used as is). A sparse member outside the dense losses'
range is not matched (no extrapolation): widen the dense widths instead.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

MISSES = "misses_target_on_test"
RANDOM = "random_reaches_target"


@dataclasses.dataclass
class MemberResult:
  """What the analysis needs of one trained and pruned member."""

  name: str
  kind: str  # "sparse" or "dense"
  heldout_loss: float  # the kept sweep point's held-out pretraining loss
  total_params: int  # hidden matrices + embeddings
  l0: int  # their nonzero entries
  # {task: {"primary": entry, "sweep": {str(target): entry}}}; an entry has nodes, edges, (maybe)
  # essential_edges, loss_test, random_loss_mean, and in the sweep k (-1: target unreached).
  tasks: dict


def geometric_mean(values: Sequence[float]) -> float | None:
  """exp(mean(log(max(v, 1)))); None for no values."""
  if not values:
    return None
  return float(math.exp(sum(math.log(max(float(v), 1.0)) for v in values) / len(values)))


def failure_flags(entry: dict, target: float, miss_tolerance: float = 0.0) -> list[str]:
  """The search-failure flags of one circuit at ``target`` (see the module docstring)."""
  flags = []
  if entry.get("loss_test") is not None and entry["loss_test"] > target * (1 + miss_tolerance):
    flags.append(MISSES)
  rand = entry.get("random_loss_mean")
  if rand is not None and rand <= target:
    flags.append(RANDOM)
  return flags


def reached(entry: dict | None) -> bool:
  return entry is not None and entry.get("edges") is not None and entry.get("k", 0) >= 0


def sweep_entry(target: float) -> Callable[[MemberResult, str], dict | None]:
  """Reads a member's Fig. 2 sweep entry for a task at ``target``."""
  key = str(float(target))
  return lambda m, task: m.tasks.get(task, {}).get("sweep", {}).get(key)


def primary_entry(m: MemberResult, task: str) -> dict | None:
  """Reads a member's full-pipeline circuit for a task (the primary target)."""
  return m.tasks.get(task, {}).get("primary")


def sizes_at(members: Sequence[MemberResult], target: float, entry_of, *,
             miss_tolerance: float = 0.0) -> dict:
  """Per member, the geometric-mean circuit size over the clean tasks and over all reached ones,
  with the flags that decided which tasks are clean."""
  tasks = sorted(set.intersection(*[set(m.tasks) for m in members])) if members else []
  reached_tasks = [t for t in tasks if all(reached(entry_of(m, t)) for m in members)]
  flags = {m.name: {} for m in members}
  for m in members:
    for t in reached_tasks:
      f = failure_flags(entry_of(m, t), target, miss_tolerance)
      if f:
        flags[m.name][t] = f
  clean = [t for t in reached_tasks if not any(t in flags[m.name] for m in members)]
  out = {}
  for m in members:
    row = {}
    for suffix, ts in (("", clean), ("_with_failures", reached_tasks)):
      entries = [entry_of(m, t) for t in ts]
      row["edges" + suffix] = geometric_mean([e["edges"] for e in entries])
      row["nodes" + suffix] = geometric_mean([e["nodes"] for e in entries])
      essential = [e.get("essential_edges") for e in entries]
      row["essential_edges" + suffix] = (geometric_mean(essential) if entries and all(
          x is not None for x in essential) else None)
    out[m.name] = row
  return {"target": target, "tasks_reached": reached_tasks, "tasks_clean": clean,
          "flags": {k: v for k, v in flags.items() if v}, "members": out}


def interpolate_dense(loss: float, dense: Sequence[tuple[float, float, float | None, str]]
                      ) -> dict | None:
  """The dense family at pretraining loss ``loss``. ``dense``: (total params N, loss, size, name)
  per dense member. Returns {"size", "params", "members", "exact"} or None when no two consecutive
  dense members (by N) bracket ``loss`` (see the module docstring)."""
  pts = sorted((p for p in dense if p[2] is not None and p[2] > 0), key=lambda p: (p[0], p[1]))
  for n, l, s, name in pts:
    if l == loss:
      return {"size": s, "params": n, "members": [name], "exact": True}
  for (n0, l0, s0, a), (n1, l1, s1, b) in zip(pts, pts[1:]):
    if (l0 - loss) * (l1 - loss) < 0:
      w = (loss - l0) / (l1 - l0)
      log_n = (1 - w) * math.log(n0) + w * math.log(n1)
      log_s = (1 - w) * math.log(s0) + w * math.log(s1)
      return {"size": math.exp(log_s), "params": math.exp(log_n), "members": [a, b],
              "exact": False}
  return None


def matched_ratios(members: Sequence[MemberResult], sizes: dict, key: str = "edges") -> dict:
  """{sparse member: dense size at its loss ÷ its size} for the ``key`` size of :func:`sizes_at`
  (``edges``, ``nodes``, ``essential_edges``, each also ``..._with_failures``)."""
  dense = [(m.total_params, m.heldout_loss, sizes["members"][m.name][key], m.name)
           for m in members if m.kind == "dense"]
  out = {}
  for s in (m for m in members if m.kind == "sparse"):
    own = sizes["members"][s.name][key]
    match = interpolate_dense(s.heldout_loss, dense)
    if own is None or match is None:
      out[s.name] = {"ratio": None, "sparse": own, "dense": None, "reason": (
          "no circuits on the tasks compared" if own is None else
          "no two dense members bracket its held-out loss")}
      continue
    out[s.name] = {"ratio": match["size"] / own, "sparse": own, "dense": match["size"],
                   "dense_params": match["params"], "exact": match["exact"],
                   "dense_members": match["members"]}
  return out


def headline(ratios: dict) -> float | None:
  """The geometric mean of the matched ratios over the sparse members that have one."""
  values = [r["ratio"] for r in ratios.values() if r["ratio"] is not None]
  return float(math.exp(sum(map(math.log, values)) / len(values))) if values else None


def frontier_lines(members: Sequence[MemberResult], rtol: float = 0.05) -> dict:
  """Fig. 3's lines: groups of two or more members with equal total params (exactly) and with
  equal L0 (within ``rtol`` of the group's smallest, and of more than one size), each sorted by
  the other quantity. A dense member's L0 is its total."""
  by_total: dict[int, list[MemberResult]] = {}
  for m in members:
    by_total.setdefault(m.total_params, []).append(m)
  total_lines = [[m.name for m in sorted(ms, key=lambda m: m.l0)]
                 for _, ms in sorted(by_total.items()) if len(ms) > 1]
  l0_lines, group = [], []
  for m in sorted(members, key=lambda m: m.l0):
    if group and m.l0 > group[0].l0 * (1 + rtol):
      l0_lines.append(group)
      group = []
    group.append(m)
  if group:
    l0_lines.append(group)
  l0_lines = [[m.name for m in sorted(g, key=lambda m: m.total_params)] for g in l0_lines
              if len(g) > 1 and len({m.total_params for m in g}) > 1]
  return {"equal_total_params": total_lines, "equal_l0": l0_lines}


def analyse(members: Sequence[MemberResult], targets: Sequence[float], primary: float, *,
            miss_tolerance: float = 0.0) -> dict:
  """Everything the report shows: Fig. 2 (the sweep), Fig. 3 (the primary circuits), the
  matched-loss ratios and the headline."""
  fig2 = []
  for t in targets:
    sizes = sizes_at(members, t, sweep_entry(t), miss_tolerance=miss_tolerance)
    sizes["matched"] = {k: matched_ratios(members, sizes, k)
                        for k in ("edges", "edges_with_failures", "nodes")}
    fig2.append(sizes)
  primary_sizes = sizes_at(members, primary, primary_entry, miss_tolerance=miss_tolerance)
  matched = {k: matched_ratios(members, primary_sizes, k)
             for k in ("edges", "edges_with_failures", "nodes", "nodes_with_failures",
                       "essential_edges", "essential_edges_with_failures")}
  primary_sizes["matched"] = matched
  return {
      "primary_target": primary, "fig2": fig2, "fig3": primary_sizes,
      "frontier_lines": frontier_lines(members),
      "headline": {k: headline(v) for k, v in matched.items()},
      "headline_by_target": {str(s["target"]): headline(s["matched"]["edges"]) for s in fig2},
  }
