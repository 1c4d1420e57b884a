"""The pruning pipeline end to end on a tiny trained run: every stage, every control, the files."""

import json

import numpy as np
import pytest

from conftest import train_tiny_bpe_run
from sparsejax.circuits import prune_run
from sparsejax.circuits.graph import Circuit
from sparsejax.circuits.prune import PruneConfig
from sparsejax.train.runs import load_run

TASKS = ["single_double_quote", "var_if"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  work = tmp_path_factory.mktemp("run")
  train_tiny_bpe_run(work, steps=3)
  return load_run(str(work))


def tiny_config(**kw) -> PruneConfig:
  # A 3-step model solves nothing at 0.15: a loose target makes every stage run.
  base = dict(target_loss=0.7, train_pairs=16, val_pairs=8, test_pairs=8, batch_pairs=2,
              steps=4, rounds=2, candidates=2, chunk_steps=2, mean_tokens=512, edge_steps=4,
              edge_candidates=2, edge_rounds=2, cleanup_rounds=2, cleanup_batch=4,
              random_circuits=1, bisect_grid=4)
  return PruneConfig(**(base | kw))


def test_the_pipeline_writes_circuits_with_controls_for_nodes_and_edges(run, tmp_path):
  log = []
  result = prune_run.Pruner(run, tiny_config(bisect_on="calibrated"), log.append).prune_tasks(
      TASKS)
  s = result.summary
  assert set(result.circuits) | set(result.unsolved) == set(TASKS) and result.circuits
  # The headline: both geometric means, first.
  assert list(s)[:3] == ["geometric_mean_edges", "geometric_mean_essential_edges",
                         "geometric_mean_nodes"]
  assert s["search"]["strategy"] == "pbt" and s["search"]["history"]["nodes"]
  for name, c in result.circuits.items():
    m = c.metrics
    for metrics in (m, m["essential"]):  # the node circuit and its essential-edge circuit
      assert {"loss", "loss_calibrated", "inverse_loss", "random_circuit_loss_mean",
              "control"} <= set(metrics)
      assert metrics["control"]["kind"] == "shuffled_labels"
    assert m["essential"]["control"]["edges"] == c.n_essential_edges
    assert m["control"]["nodes"] == c.n_nodes
    assert c.edge_pruned and c.n_essential_edges <= c.n_edges
    assert all("essential" in e for e in c.edges)
    assert {"bisected", "node_reduction", "edges"} <= set(m)
    assert c.info["hyperparameters_by_round"] and len(c.info["hyperparameters_by_round"]) == 2
    row = s["tasks"][name]
    assert (row["nodes"], row["edges"], row["essential_edges"]) == (
        c.n_nodes, c.n_edges, c.n_essential_edges)
    # Bisected on the calibrated loss; the raw loss is reported all the same.
    assert c.info["bisect_on"] == "calibrated" and isinstance(m["loss"], float)
  assert sum("shuffled-label controls" in line for line in log) == 2  # nodes and edges
  assert any(line.startswith("prune: essential edges:") for line in log)
  out = tmp_path / "prune"
  prune_run.write_outputs(result, str(out))
  for name in result.circuits:
    again = Circuit.load(str(out / "circuits" / f"{name}.json"))
    assert again.n_essential_edges == result.circuits[name].n_essential_edges
  assert json.loads((out / "summary.json").read_text())["geometric_mean_essential_edges"] == \
      pytest.approx(s["geometric_mean_essential_edges"])
  table = prune_run.format_summary(result)
  assert "essential edges" in table and TASKS[0] in table


def test_a_random_search_spends_the_same_steps_and_does_not_adapt(run):
  log = []
  cfg = tiny_config(search="random", edges=False, control=False)
  result = prune_run.Pruner(run, cfg, log.append).prune_tasks(TASKS[:1])
  assert len([line for line in log if "prune nodes: step" in line]) == 2  # 2 rounds, as PBT
  assert not any("fitness" in line for line in log)  # no adaptation between rounds
  history = result.summary["search"]["history"]["nodes"]
  assert len(history) == 1 and "selection" in history[0]  # only the final choice
  for c in result.circuits.values():
    assert not c.edge_pruned and c.n_essential_edges == c.n_edges and "essential" not in c.metrics


def test_the_frozen_final_norm_compiles_once(run):
  pruner = prune_run.Pruner(run, tiny_config(freeze_final_norm=True, train_pairs=8),
                            lambda _: None)
  a = pruner.task_splits(TASKS)
  b = pruner.task_splits(TASKS)
  assert a[TASKS[0]]["test"].rms is not None
  np.testing.assert_array_equal(a[TASKS[0]]["val"].rms, b[TASKS[0]]["val"].rms)
  assert pruner._final_rms._cache_size() == 1  # one compile for every split of every task
