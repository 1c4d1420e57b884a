"""The pruning pipeline end to end on a tiny trained run: every stage, every control, the files."""

import dataclasses
import json
import os

import numpy as np
import pytest

from conftest import train_tiny_bpe_run
from sparsejax.circuits import prune_run
from sparsejax.circuits.graph import Circuit
from sparsejax.circuits.prune import PruneConfig
from sparsejax.pipeline import build_viewer
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
              random_circuits=1, bisect_grid=4, ood_pairs=8)
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
  # The faithfulness suite: in every circuit's metrics, its summary row, the table and the viewer.
  for name, c in result.circuits.items():
    f = c.metrics["faithfulness"]
    assert {"zero_nodes_loss", "loss_frozen_norms", "norm_ratio", "ood", "repurposing",
            "attention", "flags"} <= set(f)
    assert f["ood"]["pairs"] == 8 and f["ood"]["loss"] >= 0  # held-out templates, both models
    assert f["repurposing"]["kept"] == c.n_nodes
    assert set(f["norm_ratio"]) == {"0.ln_1", "0.ln_2", "ln_f"}
    assert s["tasks"][name]["faithfulness"]["flags"] == f["flags"]
    assert Circuit.load(str(out / "circuits" / f"{name}.json")).metrics["faithfulness"] == \
        json.loads(json.dumps(f))
  assert "faithfulness" in table and "frozen" in table
  assert s["timing"]["faithfulness_seconds"] > 0
  index = build_viewer(run.workdir, str(out), progress=lambda _: None)
  page = open(os.path.join(os.path.dirname(index), f"task_{next(iter(result.circuits))}.html"))
  assert 'id="faithfulness"' in page.read()


def test_seed_variance_repeats_the_pruning_under_other_seeds(run):
  log = []
  cfg = tiny_config(edges=False, control=False, seeds=2, ood_pairs=0)
  result = prune_run.Pruner(run, cfg, log.append).prune_tasks(TASKS[:1])
  assert any(line.startswith("[seed +1] prune:") for line in log)
  for c in result.circuits.values():
    sv = c.metrics["faithfulness"]["seed_variance"]
    assert sv["seeds"] == [0, 1] and sv["sizes"][0] == c.n_nodes
    assert 0.0 <= sv["jaccard_mean"] <= 1.0
    assert "ood" not in c.metrics["faithfulness"]
  assert result.summary["faithfulness"]["seeds"] == 2


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


def test_sj_prune_in_one_call_with_a_preset(run):
  """``sparsejax.prune(run directory, tasks, preset=...)``: the preset's values under the
  overrides (quick's learning-rate and size-penalty centres reach the single member)."""
  import sparsejax as sj
  small = {k: v for k, v in dataclasses.asdict(tiny_config()).items()
           if k not in ("lr", "k_coef")}
  small.update(candidates=1, edges=False, control=False, cleanup=False)
  log = []
  circuits = sj.prune(run.workdir, TASKS[:1], preset="quick", progress=log.append, **small)
  assert set(circuits) == set(TASKS[:1]) and isinstance(circuits[TASKS[0]], sj.Circuit)
  first = circuits[TASKS[0]].info["hyperparameters_by_round"][0]
  assert first["lr"] == pytest.approx(3e-2) and first["k_coef"] == pytest.approx(3e-4)
  assert any(line.startswith("prune: node circuits bisected") for line in log)
